"""Callbacks: code the Trainer runs at fixed points of ``fit``.

Each hook receives the Trainer; ``logs`` is the epoch's record (see History) or the
step's ``{"loss", "accuracy", "epoch", "step"}``. A callback stops training by setting
``trainer.stop_training = True``; the Trainer checks it after every update, so the
current update always completes. Callbacks with ``state_dict`` / ``load_state_dict``
are saved in checkpoints and restored on resume.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..optim import lr_scheduler
    from .trainer import Trainer


class Callback:
    def on_train_begin(self, trainer: Trainer) -> None:
        pass

    def on_epoch_begin(self, trainer: Trainer, epoch: int) -> None:
        pass

    def on_batch_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        pass

    def on_epoch_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        pass

    def on_train_end(self, trainer: Trainer) -> None:
        pass


def _monitor_mode(monitor: str, mode: str) -> str:
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode == "auto":
        return "max" if "acc" in monitor else "min"
    return mode


def _monitored(logs: dict[str, Any], monitor: str, who: str) -> Any:
    value = logs.get(monitor)
    if value is None:
        have = ", ".join(k for k, v in logs.items() if isinstance(v, (int, float)))
        raise ValueError(
            f"{who}: {monitor!r} is not in the epoch's logs (have: {have}); pass val= to "
            "fit to get val_loss / val_accuracy, or monitor 'loss'"
        )
    return value


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience``
    epochs; with ``restore_best_weights``, put back the weights of the best epoch."""

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 3,
        min_delta: float = 0.0,
        mode: str = "auto",
        restore_best_weights: bool = False,
    ) -> None:
        if patience < 0:
            raise ValueError(f"EarlyStopping: patience must be >= 0, got {patience}")
        self.monitor, self.patience, self.min_delta = monitor, int(patience), abs(float(min_delta))
        self.mode = _monitor_mode(monitor, mode)
        self.restore_best_weights = restore_best_weights
        self.best, self.best_epoch, self.wait, self.stopped_epoch = None, None, 0, None
        self._best_state = None

    def _improved(self, value: float) -> bool:
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        value = _monitored(logs, self.monitor, "EarlyStopping")
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, logs["epoch"], 0
            if self.restore_best_weights:
                self._best_state = trainer.model.state_dict()
        else:
            self.wait += 1
            if self.wait > self.patience or self.patience == 0:
                self.stopped_epoch = logs["epoch"]
                trainer.stop_training = True

    def on_train_end(self, trainer: Trainer) -> None:
        if self.restore_best_weights and self._best_state is not None and self.stopped_epoch is not None:
            trainer.model.load_state_dict(self._best_state)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch, self.wait = state["best"], state["best_epoch"], state["wait"]


class ModelCheckpoint(Callback):
    """Save a checkpoint (``Trainer.save_checkpoint``) at the end of every
    ``every_n_epochs``-th epoch, or only when ``monitor`` improved (``save_best_only``).
    ``path`` may contain ``{epoch}`` and any epoch log key, e.g. "ck-{epoch:02d}.safetensors"."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        monitor: str = "val_loss",
        save_best_only: bool = False,
        mode: str = "auto",
        every_n_epochs: int = 1,
    ) -> None:
        self.path, self.monitor, self.save_best_only = str(path), monitor, save_best_only
        self.mode = _monitor_mode(monitor, mode)
        self.every_n_epochs = max(1, int(every_n_epochs))
        self.best = None
        self.saved = []

    def on_epoch_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        if logs["epoch"] % self.every_n_epochs:
            return
        if self.save_best_only:
            value = _monitored(logs, self.monitor, "ModelCheckpoint")
            better = self.best is None or (value < self.best if self.mode == "min" else value > self.best)
            if not better:
                return
            self.best = value
        path = self.path.format(**logs)
        trainer.save_checkpoint(path)
        self.saved.append(path)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = state["best"]


class LRScheduler(Callback):
    """Step a learning-rate scheduler (``fastgrad.optim.lr_scheduler``) after each epoch
    (``interval="epoch"``) or each update (``"step"``). Schedulers whose ``step`` takes a
    metric (ReduceLROnPlateau) are given ``logs[monitor]``."""

    def __init__(self, scheduler: lr_scheduler.LRScheduler, interval: str = "epoch", monitor: str = "val_loss") -> None:
        if interval not in ("epoch", "step"):
            raise ValueError(f"LRScheduler: interval must be 'epoch' or 'step', got {interval!r}")
        self.scheduler, self.interval, self.monitor = scheduler, interval, monitor
        self.needs_metric = type(scheduler).__name__ == "ReduceLROnPlateau"

    def _step(self, logs: dict[str, Any]) -> None:
        if self.needs_metric:
            self.scheduler.step(_monitored(logs, self.monitor, "LRScheduler"))
        else:
            self.scheduler.step()

    def on_batch_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        if self.interval == "step":
            self._step(logs)

    def on_epoch_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        if self.interval == "epoch":
            self._step(logs)

    def state_dict(self) -> dict[str, Any]:
        return self.scheduler.state_dict() if hasattr(self.scheduler, "state_dict") else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if hasattr(self.scheduler, "load_state_dict"):
            self.scheduler.load_state_dict(state)


class LambdaCallback(Callback):
    """A callback from plain functions: ``LambdaCallback(on_epoch_end=lambda t, logs: ...)``."""

    def __init__(self, **hooks: Callable[..., Any]) -> None:
        for name, fn in hooks.items():
            if not hasattr(Callback, name):
                raise ValueError(f"LambdaCallback: unknown hook {name!r}")
            setattr(self, name, fn)


class StopOnInterrupt(Callback):
    """Turn the first Ctrl-C (SIGINT) into a request to stop after the current update,
    so the run can end cleanly (and its caller save a checkpoint); a second Ctrl-C
    interrupts at once. ``interrupted`` tells whether it happened."""

    def __init__(self) -> None:
        self.interrupted = False
        self._previous = None
        self._trainer = None

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.interrupted:  # a second Ctrl-C: the user means it
            raise KeyboardInterrupt
        self.interrupted = True
        if self._trainer is not None:
            self._trainer.stop_training = True

    def on_train_begin(self, trainer: Trainer) -> None:
        self._trainer = trainer
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)

    def on_train_end(self, trainer: Trainer) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
