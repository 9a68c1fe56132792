"""Checkpoints written at an epoch's edge, made to resume as the uninterrupted run went on.

Lightning records where its loops were in every checkpoint (``checkpoint["loops"]``: progress counters of the fit
loop's epochs, the training batches and the validation batches) and resumes from those counters. Two places where
a checkpoint is written at the edge of an epoch resume differently from the run that wrote it:

- **the end of the last training batch** (``on_train_batch_end``, e.g. ``every_n_train_steps`` reaching the end of
  an epoch): the batch is processed but not completed. Lightning counts the epoch as finished: it skips the epoch's
  validation and ``on_train_epoch_end`` hooks (end-of-epoch callbacks, a plateau scheduler's step) and the next
  epoch's ``on_train_epoch_start`` and progress counts, so that a checkpoint of that next epoch records one epoch
  too few and a second resume from it runs the epoch again from its start.
- **the end of an epoch** (``on_train_epoch_end``, where ``ModelCheckpoint`` saves when validation does not follow)
  in a run bounded by ``max_steps``: Lightning restarts such a run inside the finished epoch, runs its end hooks a
  second time and counts it twice, so every later epoch reads the data order of the epoch after it.

:func:`resume_at_epoch_edge` rewrites the counters of such a checkpoint (in place, before Lightning reads them) to
a state Lightning resumes the way the run went on: the first to the state Lightning writes when the epoch-end
validation begins, the second to the start of the next epoch. (One count is not restored exactly: when no
validation follows the last batch of the resumed epoch, the step number the loggers see is one lower after the
resume; weights, optimizer state, data order, validations and epoch hooks are those of the uninterrupted run.)
Lightning's loop counters are its own format: the resume tests in ``tests/faults/test_resume_edges.py`` fail when
a Lightning release changes how it reads them.
"""

from __future__ import annotations

from typing import Any

#: The keys of a :class:`~lightning_vae.data.common.ResumableLoader` state.
_LOADER_KEYS = frozenset({"epoch", "batches", "seed"})


def resume_at_epoch_edge(checkpoint: dict[str, Any], iteration_based: bool) -> str | None:
    """Rewrite the loop counters of a checkpoint written at an epoch's edge so that it resumes exactly.

    Only checkpoints whose training loaders resume mid-epoch (the built-in data modules' loaders,
    :class:`~lightning_vae.data.common.ResumableLoader`) are rewritten: with other loaders a resumed epoch cannot
    continue where it stopped anyway.

    Args:
        checkpoint: A Lightning checkpoint as ``Trainer.fit`` reads it (changed in place).
        iteration_based: Whether the resuming run is bounded by ``max_steps`` (Lightning resumes those differently).

    Returns:
        ``"last batch"`` or ``"epoch end"`` for the edge whose counters were rewritten, else ``None``.
    """
    fit = (checkpoint.get("loops") or {}).get("fit_loop")
    if not isinstance(fit, dict):
        return None
    epochs, batches = fit.get("epoch_progress"), fit.get("epoch_loop.batch_progress")
    val = fit.get("epoch_loop.val_loop.batch_progress")
    loaders = (fit.get("state_dict") or {}).get("combined_loader")
    if not (isinstance(epochs, dict) and isinstance(batches, dict) and isinstance(val, dict)):
        return None
    if not (
        isinstance(loaders, list) and loaders and all(isinstance(s, dict) and _LOADER_KEYS <= s.keys() for s in loaders)
    ):
        return None
    total, current = batches["total"], batches["current"]
    if (
        batches.get("is_last_batch")
        and _one_short(total, "completed", "processed")
        and _one_short(current, "completed", "processed")
    ):
        # Written in on_train_batch_end of the epoch's last batch: make it the start of the epoch-end validation
        # (the batch completed, a validation begun with no batch through), and let the loaders end the epoch.
        total["completed"], current["completed"] = total["processed"], current["processed"]
        done = val["total"]["completed"]
        val["total"].update(ready=done + 1, started=done + 1, processed=done, completed=done)
        val["current"].update(ready=1, started=1, processed=0, completed=0)
        for state in loaders:
            state["finish_epoch"] = True
        return "last batch"
    whole = epochs["total"]
    if (
        iteration_based
        and whole["ready"] == whole["started"] == whole["processed"]
        and _one_short(whole, "completed", "processed")
        and _one_short(epochs["current"], "completed", "processed")
    ):
        # Written in on_train_epoch_end: the epoch is over. Count it completed and start the next epoch afresh.
        for counts in (epochs["total"], epochs["current"]):
            counts["completed"] = counts["processed"]
        # The per-epoch counts start over, as at the start of an epoch (validation batches counted per epoch too).
        for counts in (current, val["total"], *_current_counts(fit, "epoch_loop.automatic_optimization.optim_progress"),
                       *_current_counts(fit, "epoch_loop.manual_optimization.optim_step_progress"),
                       *_current_counts(fit, "epoch_loop.scheduler_progress")):  # fmt: skip
            for key in counts:
                counts[key] = 0
        batches["is_last_batch"] = False
        # Lightning's restart spends one loop iteration on the validation check of a batch index of -1, which
        # counts one more stepped batch (the step number the loggers see); the count is lowered to make up for it.
        state = fit.get("epoch_loop.state_dict")
        if isinstance(state, dict) and isinstance(state.get("_batches_that_stepped"), int):
            state["_batches_that_stepped"] -= 1
        return "epoch end"
    return None


def _current_counts(fit: dict[str, Any], key: str) -> list[dict[str, int]]:
    """The ``current`` counters anywhere under ``fit[key]`` (an optimizer's step and zero_grad progress, ...)."""
    found: list[dict[str, int]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for name, value in node.items():
                if name == "current" and isinstance(value, dict):
                    found.append(value)
                else:
                    walk(value)

    walk(fit.get(key))
    return found


def _one_short(counts: dict[str, int], low: str, high: str) -> bool:
    return counts.get(low) == counts.get(high, 0) - 1


__all__ = ["resume_at_epoch_edge"]
