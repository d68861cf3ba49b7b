"""A deterministic LeNet-5 training run shared by the reliability tests (and run as a script
by them in subprocesses)."""

import numpy as np

import fastgrad
from fastgrad import nn, optim
from fastgrad.models import lenet5


def make_batches(n_batches, batch, seed):
    rng = np.random.default_rng(seed)
    xs = rng.standard_normal((n_batches, batch, 1, 28, 28)).astype(np.float32)
    ys = rng.integers(0, 10, (n_batches, batch)).astype(np.int64)
    return xs, ys


def build(seed, optimizer="sgd"):
    fastgrad.manual_seed(seed)
    model = lenet5()
    if optimizer == "adam":
        opt = optim.Adam(model.parameters(), lr=1e-3)
    else:
        opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    return model, opt


def train(model, opt, xs, ys, steps):
    loss_fn = nn.CrossEntropyLoss()
    loss = None
    for i in range(steps):
        k = i % len(xs)
        opt.zero_grad()
        loss = loss_fn(model(fastgrad.from_numpy(xs[k])), fastgrad.from_numpy(ys[k]))
        loss.backward()
        opt.step()
    return loss


def weights(model):
    return {k: v.copy() for k, v in model.state_dict().items()}


def digest(model):
    import hashlib

    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(np.ascontiguousarray(v).tobytes())
    return h.hexdigest()


if __name__ == "__main__":  # python _lenet_run.py STEPS THREADS -> prints the weights' digest
    import sys

    steps, threads = int(sys.argv[1]), int(sys.argv[2])
    fastgrad.set_num_threads(threads)
    model, opt = build(0)
    xs, ys = make_batches(16, 8, seed=1)
    train(model, opt, xs, ys, steps)
    print(digest(model))
