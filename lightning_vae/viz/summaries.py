"""TensorBoard ``Summary`` protobufs this package builds itself: images as PNG (no Pillow), HPARAMS sessions.

These only build the protobufs; :func:`~lightning_vae.viz.writers.add_summary` writes one to a run.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from torch import Tensor

from lightning_vae.checks import check_choice
from lightning_vae.viz.png import encode_png, to_uint8

__all__ = ["SessionStatus", "image_summary", "session_end_summary", "session_start_summary"]

#: How an HPARAMS session ended (TensorBoard's ``Status`` names).
SessionStatus = Literal["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]


def image_summary(tag: str, image: Tensor | np.ndarray) -> Any:
    """A TensorBoard ``Summary`` holding an image as PNG (what ``add_image`` writes).

    Args:
        tag: The image's tag.
        image: Float ``(C, H, W)`` in [0, 1], or ``uint8`` ``(H, W, C)``.

    Example::

        >>> import torch
        >>> value = image_summary("images/x", torch.zeros(1, 2, 3)).value[0]
        >>> value.tag, value.image.height, value.image.width, value.image.encoded_image_string[1:4]
        ('images/x', 2, 3, b'PNG')
    """
    from tensorboard.compat.proto.summary_pb2 import Summary

    array = to_uint8(image)
    h, w, c = array.shape
    png = encode_png(array)
    return Summary(
        value=[Summary.Value(tag=tag, image=Summary.Image(height=h, width=w, colorspace=c, encoded_image_string=png))]
    )


def _hparams_summary(tag: str, **plugin_data: Any) -> Any:
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams import metadata
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    content = HParamsPluginData(version=metadata.PLUGIN_DATA_VERSION, **plugin_data)
    smd = SummaryMetadata(
        plugin_data=SummaryMetadata.PluginData(plugin_name=metadata.PLUGIN_NAME, content=content.SerializeToString())
    )
    return Summary(value=[Summary.Value(tag=tag, metadata=smd)])


def session_start_summary(hparams: Mapping[str, bool | int | float | str], start_time: float | None = None) -> Any:
    """The ``Summary`` that opens an HPARAMS session with these (flat) hyperparameters."""
    from tensorboard.plugins.hparams import metadata
    from tensorboard.plugins.hparams.plugin_data_pb2 import SessionStartInfo

    info = SessionStartInfo(start_time_secs=time.time() if start_time is None else start_time)
    for key, value in hparams.items():
        if isinstance(value, bool):
            info.hparams[key].bool_value = value
        elif isinstance(value, (int, float)):
            info.hparams[key].number_value = float(value)
        else:
            info.hparams[key].string_value = str(value)
    return _hparams_summary(metadata.SESSION_START_INFO_TAG, session_start_info=info)


def session_end_summary(status: SessionStatus = "STATUS_SUCCESS", end_time: float | None = None) -> Any:
    """The ``Summary`` that closes an HPARAMS session (``status``: ``STATUS_SUCCESS``, ``STATUS_FAILURE``, ...).

    Raises:
        TypeError: For a status that is not a string.
        ValueError: For a status that is not one of :data:`SessionStatus`.
    """
    from tensorboard.plugins.hparams import metadata
    from tensorboard.plugins.hparams.api_pb2 import Status
    from tensorboard.plugins.hparams.plugin_data_pb2 import SessionEndInfo

    check_choice("status", status, SessionStatus)
    info = SessionEndInfo(status=Status.Value(status), end_time_secs=time.time() if end_time is None else end_time)
    return _hparams_summary(metadata.SESSION_END_INFO_TAG, session_end_info=info)
