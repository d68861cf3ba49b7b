"""History: what ``Trainer.fit`` measured, epoch by epoch and step by step.

* ``epochs``: one dict per completed epoch: ``epoch`` (1-based), ``loss`` and ``accuracy``
  (training, averaged over the epoch's samples as the weights moved), ``val_loss`` and
  ``val_accuracy`` (when validation data was given), ``seconds`` (wall time of the
  epoch, validation included), ``images_per_second``, ``updates``, ``lr``, and
  ``grad_norm`` / ``update_norm``: per parameter name, the mean over the epoch's
  sampled steps of ||grad|| and of ||theta_after - theta_before||.
* per update: ``step_loss``, ``step_accuracy``, ``step_epoch`` (1-based) and
  ``step_time`` (seconds of training since the run began).
* sampled updates (every few steps, chosen so that it stays cheap): ``stat_steps`` (the
  global update numbers, 1-based), and ``grad_norms[name]`` / ``update_norms[name]``,
  lists aligned with ``stat_steps``.

``history["val_accuracy"]`` is the list of that per-epoch value. ``to_dict`` /
``from_dict`` make it JSON-able for checkpoints.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np


class History:
    def __init__(self) -> None:
        self.epochs = []
        self.step_loss = []
        self.step_accuracy = []
        self.step_epoch = []
        self.step_time = []
        self.stat_steps = []
        self.grad_norms = {}
        self.update_norms = {}
        self.wall_time = 0.0

    def __getitem__(self, key: str) -> list[Any]:
        return [e.get(key) for e in self.epochs]

    def __len__(self) -> int:
        return len(self.epochs)

    @property
    def last(self) -> dict[str, Any]:
        return self.epochs[-1] if self.epochs else {}

    def record_step(self, loss: float, accuracy: float | None, epoch: int, elapsed: float) -> None:
        self.step_loss.append(loss)
        self.step_accuracy.append(accuracy)
        self.step_epoch.append(epoch)
        self.step_time.append(elapsed)

    def record_stats(self, step: int, grad_norms: dict[str, float], update_norms: dict[str, float]) -> None:
        self.stat_steps.append(step)
        for name, value in grad_norms.items():
            self.grad_norms.setdefault(name, []).append(value)
        for name, value in update_norms.items():
            self.update_norms.setdefault(name, []).append(value)

    def epoch_means(self, series: dict[str, list[float]], first_step: int, last_step: int) -> dict[str, float | None]:
        """Mean per name of ``series`` over sampled steps in [first_step, last_step]."""
        picks = [i for i, s in enumerate(self.stat_steps) if first_step <= s <= last_step]
        return {
            name: (math.fsum(values[i] for i in picks) / len(picks) if picks else None)
            for name, values in series.items()
        }

    _SERIES = ("step_loss", "step_accuracy", "step_epoch", "step_time", "stat_steps")

    def to_dict(self, arrays: bool = False) -> dict[str, Any]:
        """Everything as plain data. With ``arrays``, the long per-update series become
        numpy arrays (float64, or int64 for counters; a missing accuracy becomes NaN), which
        a checkpoint stores as tensors rather than as JSON text."""
        out = {k: getattr(self, k) for k in ("epochs", "wall_time") + self._SERIES}
        out["grad_norms"], out["update_norms"] = dict(self.grad_norms), dict(self.update_norms)
        if arrays:
            for key in ("step_epoch", "stat_steps"):
                out[key] = np.asarray(out[key], dtype=np.int64)
            for key in ("step_loss", "step_time"):
                out[key] = np.asarray(out[key], dtype=np.float64)
            out["step_accuracy"] = np.asarray(
                [np.nan if a is None else a for a in self.step_accuracy], dtype=np.float64
            )
            for key in ("grad_norms", "update_norms"):
                out[key] = {name: np.asarray(v, dtype=np.float64) for name, v in out[key].items()}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> History:
        """Inverse of ``to_dict`` (either form)."""
        h = cls()
        for key, value in data.items():
            if key in ("grad_norms", "update_norms"):
                value = {name: [float(x) for x in np.asarray(v).tolist()] for name, v in value.items()}
            elif key == "step_accuracy":
                value = [None if x is None or x != x else float(x) for x in np.asarray(value, dtype=object).tolist()]
            elif key in cls._SERIES:
                value = np.asarray(value).tolist()
            if hasattr(h, key):
                setattr(h, key, value)
        return h

    def __repr__(self) -> str:
        last = self.last
        bits = ", ".join(f"{k}={v:.4g}" for k, v in last.items() if isinstance(v, float))
        return f"History({len(self.epochs)} epochs, {len(self.step_loss)} updates{'; last: ' + bits if bits else ''})"
