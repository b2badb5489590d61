"""Checkpoints a killed run can resume from, and that never hold a diverged model.

Each finished epoch is committed in one atomic step: the model (with its
optimizer state) is saved as ``checkpoints/epoch-NNNN.keras``, then
``state.json`` is replaced; it names that file, the best epoch so far and the
whole history. Only then are ``last.keras``, ``best.keras``, ``best.json`` and
``history.csv`` brought up to date from the state, which is idempotent: a run
killed at any point resumes from the last committed epoch with one history row
per epoch and a ``best.keras`` that is the best committed epoch's model.

A model with a NaN or infinite weight is never committed, so ``last.keras``
and ``best.keras`` always hold the last finite model.
"""
from __future__ import annotations

import csv
import filecmp
import io
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import keras
import numpy as np

from .files import atomic_write, atomic_write_json

__all__ = ["RunCheckpoint", "RunState", "StepClock", "StopOnNaN", "TimeBudget", "atomic_save", "weights_are_finite",
           "read_state"]

STATE_FILE = "state.json"
CHECKPOINT_DIR = "checkpoints"


def atomic_save(model: keras.Model, path: Path) -> None:
    """Saves a ``.keras`` file beside ``path`` first, then renames: never a half-written model."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".keras", dir=path.parent)
    os.close(fd)
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _atomic_copy(source: Path, target: Path) -> None:
    if target.is_file() and filecmp.cmp(source, target, shallow=False):
        return  # already up to date: a resumed run touches nothing it need not
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}-", suffix=target.suffix, dir=target.parent)
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def weights_are_finite(model: keras.Model) -> bool:
    """True when every weight of the model is a finite number."""
    return all(np.isfinite(keras.ops.convert_to_numpy(w)).all() for w in model.weights)


class RunState:
    """The committed progress of a run folder (``state.json``).

    Attributes:
        epoch: Epochs committed.
        checkpoint: File name (in ``checkpoints/``) of the last committed model.
        best: ``{"epoch", "monitor", "value", "checkpoint"}`` of the best epoch, or None.
        history: One dict of logs per committed epoch.
    """

    def __init__(self, epoch=0, checkpoint=None, best=None, history=None):
        self.epoch = int(epoch)
        self.checkpoint = checkpoint
        self.best = best
        self.history = list(history or [])

    def to_dict(self) -> dict:
        return {"epoch": self.epoch, "checkpoint": self.checkpoint, "best": self.best,
                "history": self.history}


def read_state(out: Path) -> RunState | None:
    """The committed state of a run folder, or None when no epoch was committed."""
    path = Path(out) / STATE_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        return RunState(**data)
    except (OSError, ValueError, TypeError) as err:
        raise ValueError(f"{path}: the run's state file is damaged ({err}); delete the run "
                         "folder or train into another --out") from None


def _history_csv(history: list[dict]) -> bytes:
    keys = ["epoch"] + sorted({k for row in history for k in row if k != "epoch"})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: row.get(k, "") for k in keys})
    return buffer.getvalue().encode()


def publish(out: Path, state: RunState) -> None:
    """Brings last.keras, best.keras, best.json and history.csv up to date with ``state``.

    Idempotent, so a resumed run calls it again after a kill in the middle.
    """
    out = Path(out)
    folder = out / CHECKPOINT_DIR
    if state.checkpoint:
        _atomic_copy(folder / state.checkpoint, out / "last.keras")
    if state.best:
        best_file = folder / state.best["checkpoint"]
        best_json = out / "best.json"
        recorded = json.loads(best_json.read_text()) if best_json.is_file() else {}
        if recorded.get("epoch") != state.best["epoch"] or not (out / "best.keras").is_file():
            _atomic_copy(best_file, out / "best.keras")
            atomic_write_json(best_json, {"epoch": state.best["epoch"],
                                          state.best["monitor"]: state.best["value"]})
    history = _history_csv(state.history)
    if not (out / "history.csv").is_file() or (out / "history.csv").read_bytes() != history:
        atomic_write(out / "history.csv", history)
    keep = {state.checkpoint, (state.best or {}).get("checkpoint")}
    for path in folder.glob("*.keras"):
        if path.name not in keep:
            path.unlink(missing_ok=True)


class RunCheckpoint(keras.callbacks.Callback):
    """Commits every finished epoch (see the module docstring).

    Args:
        out: The run folder.
        monitor: The log whose best value picks ``best.keras`` (``val_dice``).
        state: The committed state to continue from (resume), or None.
        write: False on non-chief workers, which train in step but write nothing.
    """

    def __init__(self, out: Path, monitor: str = "val_dice", state: RunState | None = None,
                 write: bool = True):
        super().__init__()
        self.out, self.monitor, self.write = Path(out), monitor, write
        self.state = state or RunState()
        self.diverged_at = None  # the epoch whose weights were not finite

    @property
    def best_value(self) -> float:
        return self.state.best["value"] if self.state.best else -math.inf

    def on_epoch_end(self, epoch, logs=None):
        if not weights_are_finite(self.model):
            self.diverged_at = epoch + 1
            self.model.stop_training = True
            return
        logs = {k: float(v) for k, v in (logs or {}).items() if np.ndim(v) == 0}
        state = RunState(epoch + 1, f"epoch-{epoch + 1:04d}.keras", self.state.best,
                         self.state.history + [{"epoch": epoch + 1, **logs}])
        value = logs.get(self.monitor)
        if value is not None and np.isfinite(value) and (value > self.best_value or not state.best):
            state.best = {"epoch": epoch + 1, "monitor": self.monitor, "value": value,
                          "checkpoint": state.checkpoint}
        if self.write:
            atomic_save(self.model, self.out / CHECKPOINT_DIR / state.checkpoint)
            atomic_write_json(self.out / STATE_FILE, state.to_dict())  # the commit
            publish(self.out, state)
        self.state = state


class StopOnNaN(keras.callbacks.Callback):
    """Like ``TerminateOnNaN``, but remembers where, so the run can say so."""

    def __init__(self):
        super().__init__()
        self.where = None
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(loss):
            self.where = (self.epoch + 1, batch + 1, float(loss))
            self.model.stop_training = True


class TimeBudget(keras.callbacks.Callback):
    """Stops training in time for the run to end within its budget.

    Training stops at the first point (after a batch, or after an epoch's
    validation) from which going on one more step could leave too little time
    for the rest of the run: an epoch's validation and checkpoint (as long as
    the last one took; ``first_epoch_end_s`` before any was measured) and
    ``reserve_s`` for what follows training (the final report). An epoch cut
    short is validated and committed like any other, so the run still ends
    with a checkpoint and a report. Under multi-worker training the workers
    agree on the batch to stop at (see :meth:`_agreed`).
    """

    def __init__(self, deadline: float, reserve_s: float = 0.0, first_epoch_end_s: float = 5.0,
                 log=print):
        super().__init__()
        self.deadline = deadline
        self.reserve_s = float(reserve_s)
        self.epoch_end_s = float(first_epoch_end_s)
        self.step_s = 0.0
        self.log = log
        self.stopped_at = None
        self._batch_started = self._validation_started = None
        self._traced = False
        self._shared_strategy = None

    def _must_stop(self) -> tuple[bool, float]:
        left = self.deadline - time.monotonic()
        return self._agreed(left - self.step_s <= self.epoch_end_s + self.reserve_s), left

    def _agreed(self, stop: bool) -> bool:
        """``stop`` of any worker (a sum over the workers) under multi-worker training: each
        worker has its own clock and timings (only the chief writes checkpoints), and one
        that stopped alone would leave the others waiting in their next all-reduce."""
        strategy = self._shared_strategy
        if strategy is None:
            return stop
        import tensorflow as tf
        flags = strategy.run(lambda: tf.constant(int(stop), tf.int32))
        return bool(strategy.reduce(tf.distribute.ReduceOp.SUM, flags, axis=None).numpy() > 0)

    def on_train_begin(self, logs=None):
        """Finds out once whether other workers train with this one."""
        strategy = getattr(self.model, "distribute_strategy", None)
        resolver = getattr(strategy, "cluster_resolver", None)
        spec = resolver.cluster_spec() if resolver is not None else None
        workers = sum(spec.num_tasks(job) for job in spec.jobs) if spec is not None else 1
        self._shared_strategy = strategy if workers > 1 else None

    def _stop(self, where, left: float, validated: bool) -> None:
        self.stopped_at = where
        self.model.stop_training = True
        rest = "" if validated else (f"this epoch's validation and checkpoint "
                                     f"(~{self.epoch_end_s:.0f} s) and ")
        self.log(f"Time budget: {max(left, 0):.0f} s left, kept for {rest}the report "
                 f"(~{self.reserve_s:.0f} s); training stops here")

    def on_train_batch_begin(self, batch, logs=None):
        self._batch_started = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        if self._traced:  # the first batch of a fit includes tracing: not a step time
            self.step_s = time.monotonic() - self._batch_started
        self._traced = True
        if self.stopped_at is None:
            stop, left = self._must_stop()
            if stop:
                self._stop(batch + 1, left, validated=False)

    def on_test_begin(self, logs=None):
        self._validation_started = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        if self._validation_started is not None:
            self.epoch_end_s = max(self.epoch_end_s, time.monotonic() - self._validation_started)
        last = epoch + 1 >= self.params.get("epochs", math.inf)
        if self.stopped_at is None and not last:
            # Another epoch would run at least a step and a validation before stopping.
            stop, left = self._must_stop()
            if stop:
                self._stop("end of epoch", left, validated=True)

    def on_epoch_begin(self, epoch, logs=None):
        if self._validation_started is not None:  # validation + checkpoint of the last epoch
            self.epoch_end_s = time.monotonic() - self._validation_started
            self._validation_started = None


class StepClock(keras.callbacks.Callback):
    """Seconds spent in training steps, validation left out (what a plan predicts)."""

    def __init__(self):
        super().__init__()
        self.seconds = 0.0
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.monotonic()

    def on_test_begin(self, logs=None):
        self._stop()

    def on_epoch_end(self, epoch, logs=None):
        self._stop()

    def _stop(self):
        if self._start is not None:
            self.seconds += time.monotonic() - self._start
            self._start = None
