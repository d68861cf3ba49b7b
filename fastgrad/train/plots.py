"""Figures of training runs (matplotlib, the optional extra ``fastgrad[plot]``).

Each function writes a PNG and returns its path. Without matplotlib they raise
``MissingMatplotlib``, whose message names the extra to install.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .history import History

INSTALL_HINT = "plotting needs matplotlib: pip install fastgrad[plot]"


class MissingMatplotlib(ImportError):
    pass


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingMatplotlib(INSTALL_HINT) from None
    return plt


def smooth(values: Sequence[float] | np.ndarray, window: int) -> np.ndarray:
    """Moving average over ``window`` points (shorter at the start), for noisy step losses."""
    values = np.asarray(values, dtype=np.float64)
    if window <= 1 or values.size < 2:
        return values
    csum = np.concatenate([[0.0], np.cumsum(values)])
    idx = np.arange(1, values.size + 1)
    lo = np.maximum(0, idx - window)
    return (csum[idx] - csum[lo]) / (idx - lo)


def step_curve(history: History, start_loss: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fractional epochs, seconds, smoothed loss) of every update in ``history``,
    starting from ``start_loss`` at epoch 0 when given."""
    epochs = np.asarray(history.step_epoch, dtype=np.float64)
    loss = np.asarray(history.step_loss, dtype=np.float64)
    seconds = np.asarray(history.step_time, dtype=np.float64)
    x = np.empty_like(loss)
    for e in np.unique(epochs):  # spread each epoch's updates evenly over (e-1, e]
        where = np.nonzero(epochs == e)[0]
        x[where] = e - 1 + np.arange(1, where.size + 1) / where.size
    per_epoch = max(1, int(round(loss.size / max(1, len(np.unique(epochs))))))
    y = smooth(loss, max(1, per_epoch // 20))
    if start_loss is not None:
        x, seconds = np.concatenate([[0.0], x]), np.concatenate([[0.0], seconds])
        y = np.concatenate([[start_loss], y])
    return x, seconds, y


def plot_history(history: History, path: str | os.PathLike[str], title: str = "training") -> str | os.PathLike[str]:
    """Loss (per update, smoothed, and per epoch with validation) and accuracy per epoch."""
    plt = _pyplot()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    x, _, y = step_curve(history)
    ax_loss.plot(x, y, lw=1, alpha=0.6, label="training (per update, smoothed)")
    epochs = history["epoch"]
    if epochs:
        ax_loss.plot(epochs, history["loss"], "o-", label="training (epoch mean)")
        if any(v is not None for v in history["val_loss"]):
            ax_loss.plot(epochs, history["val_loss"], "s-", label="held out")
        acc = [100 * a if a is not None else np.nan for a in history["accuracy"]]
        ax_acc.plot(epochs, acc, "o-", label="training")
        val = [100 * a if a is not None else np.nan for a in history["val_accuracy"]]
        if not all(np.isnan(val)):
            ax_acc.plot(epochs, val, "s-", label="held out")
    ax_loss.set(xlabel="epoch", ylabel="loss", yscale="log", title=f"{title}: loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title=f"{title}: accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_compare(results: list[dict[str, Any]], path: str | os.PathLike[str]) -> str | os.PathLike[str]:
    """Training-set loss against epochs and against seconds for each run in ``results``
    (dicts with ``label`` and ``curve``: a list of (epochs, seconds, loss))."""
    plt = _pyplot()
    fig, (ax_e, ax_s) = plt.subplots(1, 2, figsize=(11, 4.2))
    for r in results:
        epochs, seconds, loss = (np.array(v, dtype=np.float64) for v in zip(*r["curve"]))
        style = "o-" if len(epochs) <= 12 else ".-"
        label = f"{r['label']}, lr {r['lr']:g}" if "lr" in r else r["label"]
        ax_e.plot(epochs, loss, style, lw=1.5, ms=4, label=label)
        ax_s.plot(seconds, loss, style, lw=1.5, ms=4, label=label)
    ax_e.set(
        xlabel="epochs (passes over the training set)",
        ylabel="training-set loss",
        yscale="log",
        title="loss against epochs",
    )
    ax_s.set(xlabel="seconds of training", ylabel="training-set loss", yscale="log", title="loss against time")
    for ax in (ax_e, ax_s):
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
