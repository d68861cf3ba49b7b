"""Batch, stochastic and mini-batch gradient descent side by side: the same model from
the same initial weights, trained with plain SGD (no momentum) under each mode."""
import time

from .. import manual_seed, nn
from ..optim import SGD
from .trainer import Trainer

LABELS = {"batch": "batch GD (all samples per update)", "sgd": "stochastic GD (1 sample per update)",
          "minibatch": "mini-batch GD ({batch_size} samples per update)"}


def compare_gd(build_model, train, heldout, epochs=3, lr=0.05, batch_size=32, seed=0, verbose=1,
               modes=("batch", "sgd", "minibatch"), chunk_size=1024):
    """Train ``build_model()`` once per mode from one set of initial weights.

    ``lr`` is one learning rate for all modes or a dict mode -> lr. Returns
    ``(start_loss, results)``: the training loss of the initial weights, and per mode a
    dict with label, mode, lr, updates, loss (training-set loss at the end), val_loss,
    val_accuracy, seconds (training only) and history.
    """
    manual_seed(seed)
    model = build_model()
    initial = model.state_dict()
    loss_fn = nn.CrossEntropyLoss()
    start_loss, _ = Trainer(model, loss_fn, None).evaluate(train)
    results = []
    for mode in modes:
        model.load_state_dict(initial)
        mode_lr = lr[mode] if isinstance(lr, dict) else lr
        trainer = Trainer(model, loss_fn, SGD(model.parameters(), lr=mode_lr))
        if verbose:
            print(f"{mode}: {LABELS[mode].format(batch_size=batch_size)}, lr {mode_lr}", flush=True)
        t0 = time.perf_counter()
        history = trainer.fit(train, epochs=epochs, batch_size=batch_size, mode=mode, seed=seed,
                              verbose=1 if verbose else 0, chunk_size=chunk_size)
        seconds = time.perf_counter() - t0
        loss, _ = trainer.evaluate(train)
        val_loss, val_accuracy = trainer.evaluate(heldout)
        results.append({"mode": mode, "label": LABELS[mode].format(batch_size=batch_size), "lr": mode_lr,
                        "updates": trainer.global_step, "loss": loss, "val_loss": val_loss,
                        "val_accuracy": val_accuracy, "seconds": seconds, "history": history})
    return start_loss, results


def format_table(start_loss, results):
    """The comparison as an aligned text table."""
    rows = [("mode", "updates", "final loss", "held-out acc", "seconds")]
    for r in results:
        acc = f"{100 * r['val_accuracy']:.2f}%" if r["val_accuracy"] is not None else "-"
        rows.append((r["mode"], f"{r['updates']:,}", f"{r['loss']:.4f}", acc, f"{r['seconds']:.1f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [f"initial training loss {start_loss:.4f} (same weights for every mode)"]
    for k, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
