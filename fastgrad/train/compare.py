"""Batch, stochastic and mini-batch gradient descent side by side: the same model from
the same initial weights, trained with plain SGD (no momentum) under each mode.

The curves are of the full training-set loss, measured about ``points_per_epoch`` times
per epoch; the time spent measuring is kept out of the seconds axis, so the seconds are
training time only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from .. import manual_seed, nn
from ..nn.module import Module
from ..optim import SGD
from .callbacks import Callback
from .trainer import Trainer

LABELS = {
    "batch": "batch GD (all samples per update)",
    "sgd": "stochastic GD (1 sample per update)",
    "minibatch": "mini-batch GD ({batch_size} samples per update)",
}
# Learning rates that suit each mode on the built-in models: a full-set gradient is exact
# and allows a large step; a one-sample gradient is noisy and needs a small one.
DEFAULT_LR = {"batch": 0.5, "sgd": 0.01, "minibatch": 0.05}


class LossProbe(Callback):
    """Record (epochs done, training seconds, full training-set loss) at evenly spaced updates."""

    def __init__(self, data: Any, steps_per_epoch: int, points_per_epoch: int, start_loss: float) -> None:
        self.data, self.steps_per_epoch = data, steps_per_epoch
        self.every = max(1, steps_per_epoch // points_per_epoch)
        self.points = [(0.0, 0.0, start_loss)]

    def on_train_begin(self, trainer: Trainer) -> None:
        self.start, self.paused = time.perf_counter(), 0.0

    def on_batch_end(self, trainer: Trainer, logs: dict[str, Any]) -> None:
        done = trainer.epoch_step
        if done % self.every and done != self.steps_per_epoch:
            return
        t = time.perf_counter()
        loss, _ = trainer.evaluate(self.data, batch_size=500)
        self.points.append((trainer.epoch + done / self.steps_per_epoch, t - self.start - self.paused, loss))
        self.paused += time.perf_counter() - t


def compare_gd(
    build_model: Callable[[], Module],
    train: Any,
    heldout: Any,
    epochs: int = 3,
    lr: float | dict[str, float] | None = None,
    batch_size: int = 32,
    seed: int = 0,
    verbose: int = 1,
    modes: Sequence[str] = ("batch", "sgd", "minibatch"),
    chunk_size: int = 1024,
    points_per_epoch: int = 10,
) -> tuple[float, list[dict[str, Any]]]:
    """Train ``build_model()`` once per mode from one set of initial weights.

    ``lr``: one learning rate for every mode, a dict mode -> lr, or None for DEFAULT_LR.
    Returns ``(start_loss, results)``: the training loss of the initial weights, and per
    mode a dict with label, mode, lr, updates, loss (training-set loss at the end),
    val_loss, val_accuracy, seconds (training only), curve (list of (epochs, seconds,
    loss)) and history.
    """
    manual_seed(seed)
    model = build_model()
    initial = model.state_dict()
    loss_fn = nn.CrossEntropyLoss()
    start_loss, _ = Trainer(model, loss_fn, None).evaluate(train, batch_size=500)
    n = len(train[1]) if isinstance(train, (tuple, list)) else len(train)
    results = []
    for mode in modes:
        model.load_state_dict(initial)
        mode_lr = lr.get(mode, DEFAULT_LR[mode]) if isinstance(lr, dict) else DEFAULT_LR[mode] if lr is None else lr
        trainer = Trainer(model, loss_fn, SGD(model.parameters(), lr=mode_lr))
        steps = {"batch": 1, "sgd": n, "minibatch": -(-n // batch_size)}[mode]
        probe = LossProbe(train, steps, points_per_epoch, start_loss)
        label = LABELS[mode].format(batch_size=batch_size)
        if verbose:
            print(f"{mode}: {label}, lr {mode_lr:g}", flush=True)
        history = trainer.fit(
            train,
            epochs=epochs,
            batch_size=batch_size,
            mode=mode,
            seed=seed,
            verbose=1 if verbose else 0,
            chunk_size=chunk_size,
            callbacks=[probe],
        )
        val_loss, val_accuracy = trainer.evaluate(heldout, batch_size=500)
        _, seconds, loss = probe.points[-1]
        results.append(
            {
                "mode": mode,
                "label": label,
                "lr": mode_lr,
                "updates": trainer.global_step,
                "loss": loss,
                "val_loss": val_loss,
                "val_accuracy": val_accuracy,
                "seconds": seconds,
                "curve": probe.points,
                "history": history,
            }
        )
    return start_loss, results


def format_table(start_loss: float, results: list[dict[str, Any]]) -> str:
    """The comparison as an aligned text table."""
    rows = [("mode", "lr", "updates", "final loss", "held-out acc", "seconds")]
    for r in results:
        acc = f"{100 * r['val_accuracy']:.2f}%" if r["val_accuracy"] is not None else "-"
        rows.append((r["mode"], f"{r['lr']:g}", f"{r['updates']:,}", f"{r['loss']:.4f}", acc, f"{r['seconds']:.1f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        f"initial training loss {start_loss:.4f} (the same weights for every mode); "
        "final loss = training-set loss after the last update; seconds = training only"
    ]
    for k, row in enumerate(rows):
        lines.append(
            "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        )
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
