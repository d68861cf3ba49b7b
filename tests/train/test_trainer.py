"""Trainer: the three modes learn, the history is filled, resuming from a checkpoint is
bit-for-bit, non-finite losses are reported, callbacks work."""

import os
import signal

import numpy as np
import pytest

import fastgrad
from fastgrad import nn, optim
from fastgrad.data import TensorDataset
from fastgrad.optim import lr_scheduler
from fastgrad.train import (
    EarlyStopping,
    LambdaCallback,
    LRScheduler,
    ModelCheckpoint,
    NonFiniteLossError,
    StopOnInterrupt,
    Trainer,
)


class TinyNet(nn.Module):
    """A two-layer perceptron written with matmul, so these tests exercise the Trainer
    and not the convolution kernels."""

    def __init__(self, d_in=2, hidden=16, classes=3, seed=0):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.w1 = nn.Parameter((rng.standard_normal((d_in, hidden)) / np.sqrt(d_in)).astype(np.float32))
        self.b1 = nn.Parameter(np.zeros(hidden, np.float32))
        self.w2 = nn.Parameter((rng.standard_normal((hidden, classes)) / np.sqrt(hidden)).astype(np.float32))
        self.b2 = nn.Parameter(np.zeros(classes, np.float32))

    def forward(self, x):
        h = (x.reshape(x.shape[0], -1) @ self.w1 + self.b1).relu()
        return h @ self.w2 + self.b2


def blobs(n=150, seed=0):
    """Three Gaussian blobs in the plane, labelled 0, 1, 2."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    centers = np.array([[2.0, 0.0], [-1.0, 1.7], [-1.0, -1.7]])
    x = (centers[y] + 0.6 * rng.standard_normal((n, 2))).astype(np.float32)
    return x, y.astype(np.int64)


def make(opt="sgd", lr=0.1, seed=0, **kw):
    model = TinyNet(seed=seed)
    if opt == "sgd":
        optimizer = optim.SGD(model.parameters(), lr=lr, **kw)
    else:
        optimizer = optim.Adam(model.parameters(), lr=lr, **kw)
    return Trainer(model, nn.CrossEntropyLoss(), optimizer)


@pytest.fixture
def one_thread():
    before = fastgrad.get_num_threads()
    fastgrad.set_num_threads(1)
    yield
    fastgrad.set_num_threads(before)


@pytest.mark.parametrize("mode,lr,epochs", [("minibatch", 0.1, 4), ("sgd", 0.02, 2), ("batch", 0.5, 15)])
def test_every_mode_reduces_the_loss(mode, lr, epochs):
    data = blobs()
    trainer = make(lr=lr)
    start, start_acc = trainer.evaluate(data)
    history = trainer.fit(data, epochs=epochs, batch_size=16, mode=mode, verbose=0)
    end, end_acc = trainer.evaluate(data)
    assert end < 0.6 * start and end_acc > 0.9 > start_acc
    updates = {"minibatch": 10, "sgd": 150, "batch": 1}[mode] * epochs
    assert trainer.global_step == updates == len(history.step_loss)
    assert history.step_loss[-1] < history.step_loss[0]


def test_history_is_filled():
    trainer = make(lr=0.1)
    history = trainer.fit(blobs(), epochs=3, batch_size=32, val=blobs(60, seed=1), verbose=0)
    assert len(history) == 3 and history["epoch"] == [1, 2, 3]
    names = ["w1", "b1", "w2", "b2"]
    for record in history.epochs:
        for key in ("loss", "accuracy", "val_loss", "val_accuracy", "seconds", "images_per_second"):
            assert np.isfinite(record[key]) and record[key] >= 0, key
        assert record["updates"] == 5 and record["lr"] == [0.1]
        assert sorted(record["grad_norm"]) == sorted(names) and all(v > 0 for v in record["grad_norm"].values())
        assert all(v > 0 for v in record["update_norm"].values())
    assert history["val_loss"][-1] < history["val_loss"][0]
    again = make(lr=0.1).fit(
        TensorDataset(*blobs()), epochs=3, batch_size=32, val=TensorDataset(*blobs(60, seed=1)), verbose=0
    )
    assert again["loss"] == history["loss"] and again["val_loss"] == history["val_loss"]  # Datasets or arrays
    assert len(history.step_loss) == len(history.step_accuracy) == len(history.step_time) == 15
    assert history.step_epoch == [1] * 5 + [2] * 5 + [3] * 5
    assert history.step_time == sorted(history.step_time) and history.wall_time >= history.step_time[-1]
    assert history.stat_steps[0] == 1 and set(history.grad_norms) == set(names)
    assert all(len(v) == len(history.stat_steps) for v in history.update_norms.values())
    # plain SGD: the update is exactly lr * gradient
    for name in names:
        np.testing.assert_allclose(history.update_norms[name], 0.1 * np.array(history.grad_norms[name]), rtol=1e-4)
    assert "3 epochs" in repr(history)


def test_batch_mode_gradient_is_the_full_set_mean_whatever_the_chunks():
    data = blobs(50)
    results = []
    for chunk in (50, 7, 1):
        trainer = make(lr=0.5)
        trainer.fit(data, epochs=1, mode="batch", chunk_size=chunk, verbose=0)
        results.append(trainer.model.state_dict())
    for other in results[1:]:
        for k in results[0]:
            np.testing.assert_allclose(other[k], results[0][k], rtol=1e-5, atol=1e-6)


def _weights(trainer):
    return {k: v.copy() for k, v in trainer.model.state_dict().items()}


@pytest.mark.parametrize("mode,stop_at", [("minibatch", 13), ("minibatch", 10), ("sgd", 170), ("batch", 2)])
def test_resuming_from_a_checkpoint_continues_bit_for_bit(tmp_path, one_thread, mode, stop_at):
    data = blobs(100)
    epochs = 3
    whole = make("adam", lr=0.01)
    whole.fit(data, epochs=epochs, batch_size=8, mode=mode, seed=5, verbose=0)

    first = make("adam", lr=0.01)
    stop = LambdaCallback(on_batch_end=lambda t, logs: setattr(t, "stop_training", t.global_step == stop_at))
    first.fit(data, epochs=epochs, batch_size=8, mode=mode, seed=5, verbose=0, callbacks=[stop])
    assert first.global_step == stop_at
    path = tmp_path / "run.safetensors"
    first.save_checkpoint(path)

    resumed = make("adam", lr=0.01, seed=99)  # different initial weights: all must come from the file
    resumed.load_checkpoint(path)
    assert (resumed.epoch, resumed.epoch_step, resumed.global_step) == (first.epoch, first.epoch_step, stop_at)
    resumed.fit(data, epochs=epochs - resumed.epoch, batch_size=8, mode=mode, seed=5, verbose=0)

    a, b = _weights(whole), _weights(resumed)
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    ha, hb = whole.history, resumed.history
    assert ha.step_loss == hb.step_loss and ha["loss"] == hb["loss"] and ha["accuracy"] == hb["accuracy"]
    sa, sb = whole.optimizer.state_dict(), resumed.optimizer.state_dict()
    for i in sa["state"]:
        for key, value in sa["state"][i].items():
            assert np.array_equal(value, sb["state"][i][key]), (i, key)


def test_resuming_mid_epoch_with_other_settings_is_refused(tmp_path):
    trainer = make()
    stop = LambdaCallback(on_batch_end=lambda t, logs: setattr(t, "stop_training", t.global_step == 2))
    trainer.fit(blobs(), epochs=1, batch_size=8, verbose=0, callbacks=[stop])
    trainer.save_checkpoint(tmp_path / "ck.safetensors")
    other = make()
    other.load_checkpoint(tmp_path / "ck.safetensors")
    with pytest.raises(ValueError, match="same data and settings"):
        other.fit(blobs(), epochs=1, batch_size=16, verbose=0)


def test_non_finite_loss_names_epoch_step_and_layer():
    x, y = blobs(64)
    x[37, 1] = np.nan
    trainer = make()
    trainer.fit((x[:32], y[:32]), epochs=1, batch_size=8, shuffle=False, verbose=0)  # 4 clean updates
    before = _weights(trainer)
    with pytest.raises(NonFiniteLossError) as info:
        trainer.fit((x, y), epochs=1, batch_size=8, shuffle=False, verbose=0)
    err = info.value
    assert (err.epoch, err.step) == (2, 5)
    assert err.layer in {"w1", "b1", "w2", "b2"}
    assert "epoch 2, step 5" in str(err) and repr(err.layer) in str(err)
    after = _weights(trainer)
    changed = [k for k in before if not np.array_equal(before[k], after[k])]
    assert changed  # the four clean updates of epoch 2 happened ...
    assert all(np.isfinite(v).all() for v in after.values())  # ... and the bad one did not


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_diverging_learning_rate_is_caught():
    trainer = make(lr=1e30)
    with pytest.raises(NonFiniteLossError, match="non-finite"):
        trainer.fit(blobs(), epochs=5, batch_size=8, verbose=0)


def test_evaluate_and_predict():
    x, y = blobs(90)
    trainer = make(lr=0.1)
    trainer.fit((x, y), epochs=5, batch_size=16, verbose=0)
    loss, acc = trainer.evaluate((x, y))
    pred = trainer.predict(x)
    assert pred.dtype == np.int64 and pred.shape == (90,)
    assert acc == pytest.approx(np.mean(pred == y))
    logits = trainer.predict(fastgrad.tensor(x.astype(np.float64)), batch_size=7, logits=True)
    assert logits.shape == (90, 3) and logits.dtype == np.float32
    np.testing.assert_array_equal(trainer.predict(TensorDataset(x, y)), pred)
    assert trainer.model.training  # restored after evaluation


def test_callbacks(tmp_path):
    trainer = make(lr=0.1)
    sched = lr_scheduler.StepLR(trainer.optimizer, step_size=1, gamma=0.5)
    stopper = EarlyStopping(monitor="loss", patience=1, min_delta=10.0)
    saver = ModelCheckpoint(str(tmp_path / "ck-{epoch}.safetensors"))
    seen = []
    hook = LambdaCallback(on_epoch_begin=lambda t, e: seen.append(e))
    trainer.fit(blobs(), epochs=10, batch_size=32, verbose=0, callbacks=[LRScheduler(sched), stopper, saver, hook])
    assert trainer.epoch == 3 and stopper.stopped_epoch == 3 and seen == [1, 2, 3]
    assert trainer.history["lr"] == [[0.1], [0.05], [0.025]]
    assert sorted(os.listdir(tmp_path)) == [f"ck-{e}.safetensors" for e in (1, 2, 3)]
    restored = make(seed=4)
    restored.load_checkpoint(tmp_path / "ck-3.safetensors")
    assert restored.epoch == 3 and len(restored.history) == 3
    with pytest.raises(ValueError, match="val_loss"):
        make().fit(blobs(), epochs=1, verbose=0, callbacks=[EarlyStopping()])


def test_stop_on_interrupt_finishes_the_update():
    trainer = make()
    stopper = StopOnInterrupt()
    previous = signal.getsignal(signal.SIGINT)
    ctrl_c = LambdaCallback(
        on_batch_end=lambda t, logs: os.kill(os.getpid(), signal.SIGINT) if t.global_step == 3 else None
    )
    trainer.fit(blobs(), epochs=2, batch_size=8, verbose=0, callbacks=[stopper, ctrl_c])
    assert stopper.interrupted and trainer.global_step == 3 and trainer.epoch == 0
    assert signal.getsignal(signal.SIGINT) is previous


def test_bad_arguments():
    trainer = make()
    with pytest.raises(ValueError, match="mode"):
        trainer.fit(blobs(), mode="full")
    with pytest.raises(ValueError, match="epochs"):
        trainer.fit(blobs(), epochs=-1)
    with pytest.raises(ValueError, match="empty"):
        trainer.fit((np.zeros((0, 2), np.float32), np.zeros(0, np.int64)))
    with pytest.raises(TypeError, match="Dataset or an"):
        trainer.fit(np.zeros((3, 2)))


def test_progress_bar_output(capsys):
    make().fit(blobs(), epochs=1, batch_size=16, val=blobs(30, 1), verbose=1)
    err = capsys.readouterr().err
    assert "epoch 1/1" in err and "loss=" in err and "val_acc=" in err and "img/s" in err
    make().fit(blobs(), epochs=1, verbose=2)
    assert "epoch 1/1: loss=" in capsys.readouterr().out
    make().fit(blobs(), epochs=1, verbose=0)
    assert capsys.readouterr() == ("", "")
