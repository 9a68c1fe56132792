"""TensorBoard summaries built without Pillow or TensorBoard's writers: images and HPARAMS sessions, read back."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support.images import decode_png, quantize
from tensorboard.plugins.hparams import api_pb2, metadata
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from lightning_vae.viz import image_summary, session_end_summary, session_start_summary


def test_image_summary_is_what_tensorboard_reads_as_an_image() -> None:
    image = torch.rand(1, 4, 6)
    value = image_summary("a/tag", image).value[0]
    assert value.tag == "a/tag" and (value.image.height, value.image.width, value.image.colorspace) == (4, 6, 1)
    np.testing.assert_array_equal(decode_png(value.image.encoded_image_string), quantize(image))


def _plugin_data(summary) -> HParamsPluginData:
    (value,) = summary.value
    assert value.metadata.plugin_data.plugin_name == metadata.PLUGIN_NAME
    return HParamsPluginData.FromString(value.metadata.plugin_data.content)


def test_session_summaries_hold_the_hyperparameters_and_the_status() -> None:
    start = _plugin_data(session_start_summary({"beta": 4.0, "steps": 3, "prior": "vamp", "ok": True}, 10.0))
    hparams = start.session_start_info.hparams
    assert (hparams["beta"].number_value, hparams["steps"].number_value) == (4.0, 3.0)
    assert (hparams["prior"].string_value, hparams["ok"].bool_value) == ("vamp", True)
    assert start.session_start_info.start_time_secs == 10.0
    end = _plugin_data(session_end_summary("STATUS_FAILURE", 20.0)).session_end_info
    assert (end.status, end.end_time_secs) == (api_pb2.STATUS_FAILURE, 20.0)


def test_session_end_status_is_checked() -> None:
    with pytest.raises(ValueError, match="Expected `status` to be one of .*, got 'DONE'"):
        session_end_summary("DONE")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Expected `status` to be one of .*, got 1 \(int\)"):
        session_end_summary(1)  # type: ignore[arg-type]
