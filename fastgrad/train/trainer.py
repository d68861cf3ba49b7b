"""Trainer: the training loop, with its three ways of estimating the gradient.

``mode`` decides how many samples each update sees: "minibatch" (``batch_size``
samples), "sgd" (one sample: stochastic gradient descent) or "batch" (the whole
training set: batch gradient descent, one update per epoch; the gradient is gathered
in chunks of ``chunk_size`` samples, each chunk's loss scaled by its share of the set,
so memory stays bounded and the result is the full-set mean gradient).

The Trainer's position is ``epoch`` (epochs completed), ``epoch_step`` (updates made in
the unfinished epoch) and ``global_step``. Shuffled order depends only on ``seed`` and
the epoch number (see DataLoader), so a run saved mid-epoch with ``save_checkpoint``
and resumed with ``load_checkpoint`` + ``fit`` continues with exactly the batches, and
(on one thread) exactly the numbers, of a run that was never interrupted.

``fit(..., epochs=k)`` runs k epochs counted from the current position; an unfinished
epoch (after resuming mid-epoch) is finished first and counts as the first of them.

Data parallel (``distributed=True``, or by default when started by mpiexec): the model is
wrapped in DistributedDataParallel and ``batch_size`` is the global batch, split evenly
across ranks by a DistributedSampler, so the updates are those of one process taking the
whole batch. Each step's loss and accuracy are summed over ranks (one small allreduce),
as is the decision to stop; only rank 0 shows progress, evaluates ``val`` (and sends the
result to the others, so every rank's callbacks see the same logs) and writes checkpoints.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np
import numpy.typing as npt

from .. import _config, io
from ..autograd import no_grad
from ..data import DataLoader, Dataset, TensorDataset
from ..tensor import Tensor
from .history import History

if TYPE_CHECKING:
    import os

    from ..nn import Module
    from ..optim import Optimizer

MODES = ("minibatch", "batch", "sgd")


class NonFiniteLossError(FloatingPointError):
    """Training produced a non-finite loss or gradient. ``epoch`` and ``step`` are 1-based;
    ``layer`` is the parameter name whose gradient was non-finite (or None)."""

    def __init__(self, message: str, epoch: int, step: int, layer: str | None) -> None:
        super().__init__(message)
        self.epoch, self.step, self.layer = epoch, step, layer


def norms_of(arrays: Iterable[np.ndarray]) -> list[float]:
    """||a|| of each array, summed in float64 without BLAS (no thread pool wakes up)."""
    out = []
    for a in arrays:
        flat = a.reshape(-1)
        out.append(math.sqrt(float(np.einsum("i,i->", flat, flat, dtype=np.float64))))
    return out


def as_dataset(data: Any, float_dtype: npt.DTypeLike = np.float32, what: str = "data") -> Any:
    """A Dataset from a Dataset or an ``(inputs, targets)`` pair of arrays or Tensors.
    Floating inputs are cast to ``float_dtype`` (the model's), integer targets to int64."""
    if isinstance(data, Dataset) or (
        hasattr(data, "__getitem__")
        and hasattr(data, "__len__")
        and not isinstance(data, (tuple, list, np.ndarray, Tensor))
    ):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = (getattr(a, "data", a) if isinstance(a, Tensor) else np.asarray(a) for a in data)
        if x.dtype.kind in "fiub" and x.dtype != float_dtype:
            x = x.astype(float_dtype)
        if y.dtype.kind in "iub":
            y = y.astype(np.int64, copy=False)
        elif y.dtype.kind == "f" and y.dtype != float_dtype:
            y = y.astype(float_dtype)
        return TensorDataset(x, y)
    raise TypeError(
        f"Trainer: {what} must be a Dataset or an (inputs, targets) pair of arrays, got {type(data).__name__}"
    )


class Trainer:
    """Trains ``model`` to minimize ``loss_fn(model(x), y)`` with ``optimizer``.

    ``stats_every``: record per-layer gradient and update norms every this many updates
    (default: about 16 times per epoch, and at least every update in batch mode).
    """

    def __init__(
        self,
        model: Module,
        loss_fn: Callable[[Tensor, Tensor], Tensor],
        optimizer: Optimizer,
        stats_every: int | None = None,
        distributed: bool | None = None,
    ) -> None:
        from . import data_parallel

        self.model, self._net, self._world = data_parallel.setup(model, distributed)
        self.loss_fn, self.optimizer = loss_fn, optimizer
        self.stats_every = stats_every
        self.history = History()
        self.epoch = 0
        self.epoch_step = 0
        self.global_step = 0
        self.stop_training = False
        self.checkpoint_extra = {}  # stored with every checkpoint this Trainer saves
        self.callbacks = []
        self._partial = None  # running sums of the unfinished epoch
        self._fit_config = None
        self._elapsed = 0.0  # seconds of training before the current fit
        self._callback_states = {}

    # ----------------------------------------------------------------- helpers
    def _float_dtype(self) -> np.dtype:
        for p in self.model.parameters():
            return p.data.dtype
        return np.dtype(np.float32)

    def _loss_value(self, loss: Tensor, count: int) -> float:
        if loss.numel() != 1:
            raise ValueError(
                f"Trainer: loss_fn must return one number (reduction 'mean' or 'sum'), got shape {tuple(loss.shape)}"
            )
        value = float(loss.item())
        return value / count if getattr(self.loss_fn, "reduction", "mean") == "sum" else value

    @staticmethod
    def _correct(out: Tensor, y: Tensor) -> int | None:
        """Correct predictions in a batch, or None when the task is not classification."""
        o, t = out.data, y.data
        if o.ndim != 2 or t.ndim != 1 or t.dtype.kind not in "iu":
            return None
        return int(np.count_nonzero(o.argmax(axis=1) == t))

    def _nonfinite(self, what: str, value: float, epoch_no: int, step_no: int) -> NoReturn:
        params = list(self.model.named_parameters())
        bad = [n for n, p in reversed(params) if p.grad is not None and not np.isfinite(p.grad.data).all()]
        layer = bad[0] if bad else None
        msg = f"non-finite {what} ({value}) at epoch {epoch_no}, step {step_no} (update {self.global_step + 1}): "
        if layer is not None:
            msg += f"the first layer whose gradient went non-finite (from the output back) is {layer!r}"
        else:
            msg += "every gradient is finite (the loss itself overflowed)"
        broken = [n for n, p in params if not np.isfinite(p.data).all()]
        if broken:
            msg += f"; weights already non-finite in {broken[:3]}"
        msg += ". The weights are those before this update; try a smaller learning rate."
        raise NonFiniteLossError(msg, epoch_no, step_no, layer)

    # ----------------------------------------------------------------- one update
    def _update(
        self,
        loader: DataLoader,
        idx: np.ndarray,
        mode: str,
        chunk_size: int,
        sample_stats: bool,
        epoch_no: int,
        step_no: int,
    ) -> tuple[float, int | None, int]:
        model, opt = self.model, self.optimizer
        opt.zero_grad()
        n = len(idx)
        if mode == "batch":
            total, correct = 0.0, 0
            mean = getattr(self.loss_fn, "reduction", "mean") == "mean"
            for start in range(0, n, chunk_size):
                chunk = idx[start : start + chunk_size]
                x, y = loader.fetch(chunk)
                out = self._net(x)
                loss = self.loss_fn(out, y)
                (loss * (len(chunk) / n) if mean and len(chunk) != n else loss).backward()
                total += self._loss_value(loss, len(chunk)) * len(chunk)
                c = self._correct(out, y)
                correct = None if c is None or correct is None else correct + c
            value = total / n
        else:
            x, y = loader.fetch(idx)
            out = self._net(x)
            loss = self.loss_fn(out, y)
            loss.backward()
            value = self._loss_value(loss, n)
            correct = self._correct(out, y)
            if self._world is not None:
                from .data_parallel import sum_over_ranks

                value, correct, n = sum_over_ranks(self._world, value, correct, n)
        if not math.isfinite(value):
            self._nonfinite("loss", value, epoch_no, step_no)
        if sample_stats:
            named = [(name, p) for name, p in model.named_parameters() if p.grad is not None]
            grads = dict(zip((nm for nm, _ in named), norms_of([p.grad.data for _, p in named])))
            if not all(math.isfinite(g) for g in grads.values()):
                self._nonfinite("gradient", value, epoch_no, step_no)
            before = [p.data.copy() for _, p in named]
            opt.step()
            updates = dict(zip((nm for nm, _ in named), norms_of([p.data - b for (_, p), b in zip(named, before)])))
            self.history.record_stats(self.global_step + 1, grads, updates)
        else:
            opt.step()
        return value, correct, n

    # ----------------------------------------------------------------- fit
    def fit(
        self,
        train: Any,
        epochs: int = 1,
        batch_size: int = 64,
        mode: str = "minibatch",
        val: Any = None,
        callbacks: Sequence[Any] = (),
        shuffle: bool = True,
        seed: int = 0,
        verbose: int = 1,
        chunk_size: int = 1024,
    ) -> History:
        """Train for ``epochs`` epochs; returns the History (also ``self.history``).

        train, val: a Dataset, or an ``(inputs, targets)`` pair of arrays or Tensors (floating
            inputs are cast to the model's dtype, integer targets to int64). ``val`` is
            evaluated after every epoch (``val_loss``, ``val_accuracy``).
        mode: "minibatch" (``batch_size`` samples per update), "sgd" (one sample) or
            "batch" (the whole set, gathered in chunks of ``chunk_size``).
        shuffle, seed: the order of each epoch is a permutation drawn from ``seed`` and the
            epoch number (never shuffled in batch mode, where order does not matter).
        callbacks: Callback objects (see fastgrad.train.callbacks).
        verbose: 0 silent, 1 a progress bar per epoch (loss, accuracy, images/s, time left),
            2 one line per epoch.
        """
        if mode not in MODES:
            raise ValueError(f"fit: mode must be one of {MODES}, got {mode!r}")
        for name, value, low in (("epochs", epochs, 0), ("batch_size", batch_size, 1), ("chunk_size", chunk_size, 1)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"fit: {name} must be an integer >= {low}, got {value!r}")
        if self._world is not None and mode != "minibatch":
            raise ValueError(f"fit: data-parallel training runs mode 'minibatch' only, got {mode!r}")
        if self._world is not None and (batch_size % self._world.size or seed is None):
            raise ValueError(
                f"fit: data-parallel training needs batch_size (the global batch) divisible by the "
                f"world size {self._world.size} and an integer seed; got {batch_size}, {seed!r}"
            )
        if self._world is not None and self._world.rank != 0:
            verbose = 0  # one progress display: rank 0's
        dtype = self._float_dtype()
        train_ds = as_dataset(train, dtype, "train")
        val_ds = as_dataset(val, dtype, "val") if val is not None else None
        n = len(train_ds)
        if n == 0:
            raise ValueError("fit: the training set is empty")
        step_size = {"minibatch": int(batch_size), "sgd": 1, "batch": n}[mode]
        config = {"mode": mode, "batch_size": step_size, "seed": seed, "shuffle": bool(shuffle), "samples": n}
        if self._world is not None:
            from .data_parallel import ShardedLoader

            config["world_size"] = self._world.size
            loader = ShardedLoader(train_ds, step_size, shuffle, seed, self._world)
        else:
            loader = DataLoader(train_ds, batch_size=step_size, shuffle=shuffle and mode != "batch", seed=seed)
        if self.epoch_step and self._fit_config is not None and self._fit_config != config:
            raise ValueError(
                f"fit: resuming in the middle of an epoch needs the same data and settings as the "
                f"interrupted run: {self._fit_config}, got {config}"
            )
        self._fit_config = config
        steps_per_epoch = len(loader)
        stats_every = self.stats_every or max(1, steps_per_epoch // 16)
        self.callbacks = list(callbacks)
        for key, cb in self._callback_keys():
            if key in self._callback_states and hasattr(cb, "load_state_dict"):
                cb.load_state_dict(self._callback_states.pop(key))
        self.stop_training = False
        fit_start = time.perf_counter()
        clock = lambda: self._elapsed + time.perf_counter() - fit_start  # noqa: E731
        for cb in self.callbacks:
            cb.on_train_begin(self)
        try:
            end_epoch = self.epoch + epochs
            while self.epoch < end_epoch and not self.stop_training:
                self._run_epoch(loader, train_ds, val_ds, mode, chunk_size, stats_every, end_epoch, verbose, clock)
        finally:
            self._elapsed = clock()
            self.history.wall_time = self._elapsed
            for cb in self.callbacks:
                cb.on_train_end(self)
        return self.history

    def _run_epoch(
        self,
        loader: DataLoader,
        train_ds: Any,
        val_ds: Any,
        mode: str,
        chunk_size: int,
        stats_every: int,
        end_epoch: int,
        verbose: int,
        clock: Callable[[], float],
    ) -> None:
        epoch_no = self.epoch + 1
        if self.epoch_step == 0 or self._partial is None:
            self.epoch_step = 0
            self._partial = {"loss": 0.0, "correct": 0, "scored": 0, "seen": 0, "seconds": 0.0, "updates": 0}
            for cb in self.callbacks:
                cb.on_epoch_begin(self, epoch_no)
        part = self._partial
        batches = [np.arange(len(train_ds))] if mode == "batch" else loader.batch_indices(self.epoch)
        bar = None
        if verbose == 1:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=len(train_ds),
                initial=part["seen"],
                unit="img",
                desc=f"epoch {epoch_no}/{end_epoch}",
                leave=True,
                dynamic_ncols=True,
                mininterval=0.25,
                file=sys.stderr,
            )
        self.model.train()
        try:
            record = self._run_updates(batches, loader, val_ds, mode, chunk_size, stats_every, epoch_no, clock, bar)
        except BaseException:
            if bar is not None:
                bar.close()
            raise
        if record is None:  # stopped in the middle: the epoch stays open
            if bar is not None:
                bar.close()
            return
        if bar is not None:
            bar.set_postfix_str(self._postfix(part, record), refresh=True)
            bar.close()
        elif verbose >= 2:
            print(
                f"epoch {epoch_no}/{end_epoch}: "
                + self._postfix(part, record)
                + f", {record['images_per_second']:.0f} img/s, {record['seconds']:.1f} s",
                flush=True,
            )
        for cb in self.callbacks:
            cb.on_epoch_end(self, record)

    def _run_updates(
        self,
        batches: list[np.ndarray],
        loader: DataLoader,
        val_ds: Any,
        mode: str,
        chunk_size: int,
        stats_every: int,
        epoch_no: int,
        clock: Callable[[], float],
        bar: Any,
    ) -> dict[str, Any] | None:
        """The updates left in the epoch; returns the epoch's record, or None if stopped early."""
        part = self._partial
        t0, last_postfix = time.perf_counter(), 0.0
        seconds_before = part["seconds"]
        while self.epoch_step < len(batches):
            step_no = self.epoch_step + 1
            sample = (self.global_step % stats_every == 0) or self.epoch_step == 0
            value, correct, count = self._update(
                loader, batches[self.epoch_step], mode, chunk_size, sample, epoch_no, step_no
            )
            self.epoch_step += 1
            self.global_step += 1
            part["loss"] += value * count
            part["seen"] += count
            part["updates"] += 1
            if correct is not None:
                part["correct"] += correct
                part["scored"] += count
            part["seconds"] = seconds_before + time.perf_counter() - t0
            accuracy = correct / count if correct is not None else None
            self.history.record_step(value, accuracy, epoch_no, clock())
            logs = {"loss": value, "accuracy": accuracy, "epoch": epoch_no, "step": step_no}
            for cb in self.callbacks:
                cb.on_batch_end(self, logs)
            if self._world is not None:
                from .data_parallel import any_rank

                self.stop_training = any_rank(self._world, self.stop_training)
            if bar is not None:
                bar.update(count)
                now = time.perf_counter()
                if now - last_postfix > 0.25 or self.epoch_step == len(batches):
                    bar.set_postfix_str(self._postfix(part), refresh=False)
                    last_postfix = now
            if self.stop_training:
                break
        if self.epoch_step < len(batches):
            return None
        return self._finish_epoch(epoch_no, val_ds)

    @staticmethod
    def _postfix(part: dict[str, Any], record: dict[str, Any] | None = None) -> str:
        text = f"loss={part['loss'] / max(part['seen'], 1):.4f}"
        if part["scored"]:
            text += f" acc={100.0 * part['correct'] / part['scored']:.2f}%"
        if record is not None and record.get("val_loss") is not None:
            text += f" val_loss={record['val_loss']:.4f}"
            if record.get("val_accuracy") is not None:
                text += f" val_acc={100.0 * record['val_accuracy']:.2f}%"
        return text

    def _finish_epoch(self, epoch_no: int, val_ds: Any) -> dict[str, Any]:
        part = self._partial
        first = self.global_step - part["updates"] + 1
        record = {
            "epoch": epoch_no,
            "loss": part["loss"] / part["seen"],
            "accuracy": part["correct"] / part["scored"] if part["scored"] else None,
            "val_loss": None,
            "val_accuracy": None,
            "updates": part["updates"],
            "images_per_second": part["seen"] / part["seconds"] if part["seconds"] > 0 else None,
            "lr": [g.get("lr") for g in getattr(self.optimizer, "param_groups", [])],
            "grad_norm": self.history.epoch_means(self.history.grad_norms, first, self.global_step),
            "update_norm": self.history.epoch_means(self.history.update_norms, first, self.global_step),
        }
        t0 = time.perf_counter()
        if val_ds is not None and self._world is not None:
            from .data_parallel import evaluated_on_rank_0

            record["val_loss"], record["val_accuracy"] = evaluated_on_rank_0(self._world, lambda: self.evaluate(val_ds))
        elif val_ds is not None:
            record["val_loss"], record["val_accuracy"] = self.evaluate(val_ds)
        record["seconds"] = part["seconds"] + time.perf_counter() - t0
        self.history.epochs.append(record)
        self.epoch += 1
        self.epoch_step = 0
        self._partial = None
        return record

    # ----------------------------------------------------------------- evaluation
    def evaluate(self, data: Any, batch_size: int = 256) -> tuple[float, float | None]:
        """``(mean loss, accuracy)`` of the model on ``data`` (accuracy None when the task
        is not classification), in eval mode and without recording a graph."""
        ds = as_dataset(data, self._float_dtype(), "evaluate data")
        if len(ds) == 0:
            raise ValueError("evaluate: the data set is empty")
        loader = DataLoader(ds, batch_size=batch_size)
        was_training = getattr(self.model, "training", True)
        self.model.eval()
        total, correct, seen = 0.0, 0, 0
        try:
            with no_grad():
                for x, y in loader:
                    out = self.model(x)
                    count = len(y)
                    total += self._loss_value(self.loss_fn(out, y), count) * count
                    c = self._correct(out, y)
                    correct = None if c is None or correct is None else correct + c
                    seen += count
        finally:
            self.model.train(was_training)
        return total / seen, (correct / seen if correct is not None else None)

    def predict(self, inputs: Any, batch_size: int = 256, logits: bool = False) -> np.ndarray:
        """Predicted classes (int64) for ``inputs`` (an array, Tensor or Dataset whose
        samples start with the input); the raw outputs with ``logits=True`` or when the
        output is not (N, classes)."""
        if isinstance(inputs, Dataset):
            source = inputs
        else:
            x = inputs.data if isinstance(inputs, Tensor) else np.asarray(inputs)
            if x.dtype.kind in "fiub" and x.dtype != self._float_dtype():
                x = x.astype(self._float_dtype())
            source = TensorDataset(x)
        outputs = []
        was_training = getattr(self.model, "training", True)
        self.model.eval()
        try:
            with no_grad():
                for batch in DataLoader(source, batch_size=batch_size):
                    x = batch[0] if isinstance(batch, (tuple, list)) else batch
                    outputs.append(np.array(self.model(x).data))
        finally:
            self.model.train(was_training)
        out = np.concatenate(outputs) if outputs else np.zeros((0,), dtype=self._float_dtype())
        if logits or out.ndim != 2:
            return out
        return out.argmax(axis=1).astype(np.int64)

    # ----------------------------------------------------------------- checkpoints
    def _callback_keys(self) -> list[str]:
        """A stable key per callback: its class name and its rank among callbacks of that class."""
        keys, counts = [], {}
        for cb in self.callbacks:
            name = type(cb).__name__
            counts[name] = counts.get(name, 0) + 1
            keys.append((f"{name}:{counts[name]}", cb))
        return keys

    def save_checkpoint(self, path: str | os.PathLike[str]) -> None:
        """Save model, optimizer, position, history, random state and callback states
        (``fastgrad.io`` format); ``checkpoint_extra`` goes in too. In data-parallel training
        only rank 0 writes (the ranks hold the same weights), so no file is written twice."""
        if self._world is not None and self._world.rank != 0:
            return
        state = {
            "trainer": {
                "epoch_step": self.epoch_step,
                "global_step": self.global_step,
                "partial": self._partial,
                "fit_config": self._fit_config,
                "elapsed": self._elapsed,
            },
            "history": self.history.to_dict(arrays=True),
            "rng": _config.rng().bit_generator.state,
            "callbacks": {k: cb.state_dict() for k, cb in self._callback_keys() if hasattr(cb, "state_dict")},
            "user": dict(self.checkpoint_extra),
        }
        io.save_checkpoint(path, self.model, self.optimizer, epoch=self.epoch, step=self.global_step, extra=state)

    def load_checkpoint(self, path: str | os.PathLike[str]) -> io.Checkpoint:
        """Restore everything ``save_checkpoint`` saved; the next ``fit`` continues the run.
        Returns the ``fastgrad.io.Checkpoint``."""
        ckpt = io.load_checkpoint(path, self.model, self.optimizer)
        extra = ckpt.extra or {}
        trainer = extra.get("trainer") or {}
        self.epoch = ckpt.epoch
        self.global_step = ckpt.step
        self.epoch_step = int(trainer.get("epoch_step", 0))
        self._partial = trainer.get("partial")
        self._fit_config = trainer.get("fit_config")
        self._elapsed = float(trainer.get("elapsed", 0.0))
        self.history = History.from_dict(extra.get("history") or {})
        if extra.get("rng"):
            try:
                _config.rng().bit_generator.state = extra["rng"]
            except (TypeError, ValueError, KeyError):
                pass  # a generator of another kind: the random state is not restored
        self._callback_states = dict(extra.get("callbacks") or {})
        self.checkpoint_extra = dict(extra.get("user") or {})
        return ckpt
