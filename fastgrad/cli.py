"""The ``fastgrad`` command (also ``python -m fastgrad``).

    fastgrad train        train a model (LeNet-5 on the bundled MNIST sample by default)
    fastgrad evaluate F   held-out accuracy and loss of a checkpoint
    fastgrad compare-gd   batch vs stochastic vs mini-batch gradient descent
    fastgrad summary      each layer's output shape and parameter count
    fastgrad export F     write a checkpoint's model as an ONNX file (--onnx FILE)
    fastgrad bench        kernel timings, compiled against pure Python

Wrong arguments print the usage and a one-line reason and exit with status 2; so do
unusable files (a missing or damaged checkpoint, a folder without MNIST files).
"""

import argparse
import os
import sys
import time

# The defaults of `fastgrad train` reach about 98% held-out accuracy with LeNet-5 on the
# bundled sample (measured over several seeds): Adam, batch 64, lr 3e-3 annealed to 0 on
# a cosine over the run's updates, 5 epochs.
DEFAULTS = {
    "model": "lenet5",
    "data": "bundled",
    "epochs": 5,
    "batch_size": 64,
    "mode": "minibatch",
    "optimizer": "adam",
    "lr": None,
    "momentum": None,
    "weight_decay": None,
    "schedule": "cosine",
    "seed": 0,
    "limit": None,
    "val_limit": None,
}
LR_DEFAULTS = {"sgd": 0.05, "adam": 3e-3, "adamw": 3e-3, "rmsprop": 1e-3}
EXIT_USAGE, EXIT_INTERRUPTED = 2, 130


class UsageError(Exception):
    """A bad value or an unusable file named on the command line: one line, exit 2."""


# --------------------------------------------------------------------------- argument types


def _number(kind, low, inclusive):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind is int else 'a number'}, got {text!r}"
            ) from None
        if value != value or (value < low if inclusive else value <= low):
            raise argparse.ArgumentTypeError(f"must be {'>=' if inclusive else '>'} {low}, got {text}")
        return value

    return parse


positive_int = _number(int, 1, True)
nonneg_int = _number(int, 0, True)
positive_float = _number(float, 0.0, False)
nonneg_float = _number(float, 0.0, True)


def _model_names():
    from .models import MODELS

    return list(MODELS)


def build_parser():
    parser = argparse.ArgumentParser(prog="fastgrad", description="Train small CNNs on the CPU with fastgrad.")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"fastgrad {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def runtime_options(p):
        p.add_argument("--threads", type=positive_int, help="threads for the compiled kernels")
        p.add_argument("--backend", choices=("compiled", "reference"), help="kernels to run (default: compiled)")

    def data_options(p, limit_default=None):
        p.add_argument(
            "--data",
            metavar="bundled|FOLDER",
            help="the bundled MNIST sample (default) or a folder of MNIST / Fashion-MNIST IDX files",
        )
        p.add_argument(
            "--limit",
            type=positive_int,
            metavar="N",
            help="use only the first N training images" + (f" (default {limit_default})" if limit_default else ""),
        )
        p.add_argument("--val-limit", type=positive_int, metavar="N", help="use only the first N held-out images")

    models = _model_names()
    p = sub.add_parser(
        "train",
        help="train a model and report its held-out accuracy",
        description="Train a model; with no options, LeNet-5 on the bundled MNIST sample.",
    )
    p.add_argument("--model", choices=models, help=f"network (default {DEFAULTS['model']})")
    data_options(p)
    p.add_argument("--epochs", type=positive_int, help=f"passes over the training set (default {DEFAULTS['epochs']})")
    p.add_argument(
        "--batch-size",
        type=positive_int,
        help=f"samples per update in minibatch mode (default {DEFAULTS['batch_size']})",
    )
    p.add_argument(
        "--mode",
        choices=("minibatch", "batch", "sgd"),
        help="gradient estimate per update: minibatch (default), batch (whole set), sgd (one sample)",
    )
    p.add_argument("--optimizer", choices=tuple(LR_DEFAULTS), help=f"default {DEFAULTS['optimizer']}")
    p.add_argument(
        "--lr",
        type=positive_float,
        help="learning rate (default: " + ", ".join(f"{k} {v:g}" for k, v in LR_DEFAULTS.items()) + ")",
    )
    p.add_argument("--momentum", type=nonneg_float, help="momentum for sgd (default 0.9) and rmsprop (default 0)")
    p.add_argument("--weight-decay", type=nonneg_float, help="weight decay (default 0; adamw 0.01)")
    p.add_argument(
        "--schedule",
        choices=("cosine", "constant"),
        help="learning rate over the run: cosine (from --lr down to 0, the default) or constant",
    )
    p.add_argument("--seed", type=nonneg_int, help="seed for the initial weights and the shuffling (default 0)")
    runtime_options(p)
    p.add_argument(
        "--save",
        metavar="FILE",
        help="write a checkpoint after every epoch and at the end (also on Ctrl-C, after the current update)",
    )
    p.add_argument(
        "--resume",
        metavar="FILE",
        help="continue the run saved in FILE, with its settings (and keep saving to FILE unless --save)",
    )
    p.add_argument("--plot", metavar="FILE", help="write a PNG of loss and accuracy curves")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--distributed",
        action="store_true",
        help="data parallel over the processes of `mpiexec -n N fastgrad train --distributed`: "
        "--batch-size is the global batch, split across them; --threads is per process",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="held-out accuracy and loss of a checkpoint")
    p.add_argument("file", metavar="FILE", help="a checkpoint written by fastgrad train --save")
    p.add_argument("--model", choices=models, help="the network in FILE (default: the one it was trained as)")
    data_options(p)
    runtime_options(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "compare-gd",
        help="batch vs stochastic vs mini-batch gradient descent",
        description="Train one model from the same initial weights with batch, stochastic and "
        "mini-batch gradient descent (plain SGD) and compare them.",
    )
    p.add_argument("--model", choices=models, default="lenet5", help="network (default lenet5)")
    data_options(p, limit_default=2000)
    p.add_argument("--epochs", type=positive_int, default=5, help="epochs per mode (default 5)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="mini-batch size (default 32)")
    p.add_argument(
        "--lr",
        type=positive_float,
        help="one learning rate for every mode (default: batch 0.5, sgd 0.01, minibatch 0.05)",
    )
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed for the initial weights and shuffling")
    runtime_options(p)
    p.add_argument("--plot", metavar="FILE", help="write a PNG of loss against epochs and against seconds")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_compare_gd, limit_default=2000)

    p = sub.add_parser("summary", help="each layer's output shape and parameter count")
    p.add_argument("--model", choices=models, default="lenet5", help="network (default lenet5)")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser(
        "export",
        help="write a checkpoint's model as an ONNX file",
        description="Write the model in a checkpoint of `fastgrad train --save` as an ONNX "
        "model with a dynamic batch dimension (needs the onnx package).",
    )
    p.add_argument("file", metavar="CHECKPOINT", help="a checkpoint written by fastgrad train --save")
    p.add_argument("--onnx", metavar="FILE", required=True, help="the ONNX file to write")
    p.add_argument("--model", choices=models, help="the network in CHECKPOINT (default: the one it was trained as)")
    p.add_argument(
        "--data",
        metavar="bundled|FOLDER",
        help="the images the model takes (default: those it was trained on); they fix the input shape",
    )
    p.add_argument("--opset", type=positive_int, default=17, help="ONNX opset version (default 17)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("bench", help="time the kernels, compiled against pure Python (or --vs torch)")
    p.add_argument("--builtin", action="store_true", help="run the built-in timing even where bench/ scripts exist")
    p.add_argument(
        "--vs",
        choices=["torch"],
        help="race whole training steps against PyTorch "
        "(bench/bench_nets.py in a source tree, else fastgrad.benchmarks; further options "
        "after --, e.g. -- --nets resnet8 --batches 64 --threads 1)",
    )
    p.add_argument("bench_args", nargs="*", help=argparse.SUPPRESS)
    runtime_options(p)
    p.set_defaults(func=cmd_bench)
    return parser


# --------------------------------------------------------------------------- shared steps


def setup_runtime(args):
    import fastgrad
    from fastgrad import kernels

    if getattr(args, "threads", None):
        fastgrad.set_num_threads(args.threads)
    if getattr(args, "backend", None):
        try:
            kernels.use_backend(args.backend)
        except ImportError as exc:
            raise UsageError(f"--backend {args.backend}: the compiled kernels are not installed ({exc})") from None


def runtime_line():
    import fastgrad
    from fastgrad import kernels

    variant = f" ({kernels.simd_variant})" if kernels.simd_variant else ""
    n = fastgrad.get_num_threads()
    return f"{n} thread{'s' if n != 1 else ''}, {kernels.backend} backend{variant}"


def load_data(spec, limit=None, val_limit=None):
    """``(train, heldout, description)`` with train/heldout as (images, labels) pairs."""
    from .datasets import load_mnist

    if spec in (None, "bundled"):
        (xt, yt), (xv, yv) = load_mnist()
        what = "the bundled MNIST sample"
    else:
        if not os.path.isdir(spec):
            raise UsageError(f"--data {spec}: not 'bundled' and not a folder")
        (xt, yt), (xv, yv) = load_mnist(spec)
        what = f"MNIST-format files in {spec}"
    if limit:
        xt, yt = xt[:limit], yt[:limit]
    if val_limit:
        xv, yv = xv[:val_limit], yv[:val_limit]
    if xt.shape[2] != xt.shape[3]:
        raise UsageError(f"the images are {xt.shape[2]}x{xt.shape[3]}; the built-in models need square images")
    return (xt, yt), (xv, yv), what


def build_model(name, images, seed):
    import fastgrad

    from . import models

    fastgrad.manual_seed(seed)
    n_classes = 10
    return models.build(name, num_classes=n_classes, in_channels=int(images.shape[1]), image_size=int(images.shape[2]))


def make_optimizer(name, params, lr, momentum=None, weight_decay=None):
    from . import optim

    try:
        if name == "sgd":
            return optim.SGD(
                params, lr=lr, momentum=0.9 if momentum is None else momentum, weight_decay=weight_decay or 0.0
            )
        if name == "adam":
            return optim.Adam(params, lr=lr, weight_decay=weight_decay or 0.0)
        if name == "adamw":
            return optim.AdamW(params, lr=lr, weight_decay=0.01 if weight_decay is None else weight_decay)
        if name == "rmsprop":
            return optim.RMSprop(params, lr=lr, momentum=momentum or 0.0, weight_decay=weight_decay or 0.0)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    raise UsageError(f"unknown optimizer {name!r}")


def _check_readable(path, option):
    if not os.path.exists(path):
        raise UsageError(f"{option}{path}: no such file")
    if os.path.isdir(path):
        raise UsageError(f"{option}{path}: is a folder, not a checkpoint file")


def _check_writable(path, option):
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"{option} {path}: the folder {folder} does not exist")
    if os.path.isdir(path):
        raise UsageError(f"{option} {path}: is a folder")


def _plot_available():
    try:
        import matplotlib  # noqa: F401

        return True
    except ImportError:
        from .train.plots import INSTALL_HINT

        print(f"fastgrad: {INSTALL_HINT}", file=sys.stderr)
        return False


def _fmt_acc(acc):
    return f"{100 * acc:.2f}%" if acc is not None else "n/a"


# --------------------------------------------------------------------------- train


def cosine_over_run(optimizer, total_updates):
    """The learning-rate schedule of `fastgrad train`: a cosine from --lr down to 0 over
    every update of the run. A run resumed with another --epochs re-plans the cosine over
    its new length from the update it has reached (instead of running past the bottom)."""
    import math

    from .optim import lr_scheduler
    from .train import LRScheduler

    class CosineOverRun(LRScheduler):
        def load_state_dict(self, state):
            super().load_state_dict(state)
            sched = self.scheduler
            if sched.T_max != total_updates:
                sched.T_max = total_updates
                done = min(sched.last_epoch, total_updates)
                lrs = [
                    sched.eta_min + (base - sched.eta_min) * (1 + math.cos(math.pi * done / total_updates)) / 2
                    for base in sched.base_lrs
                ]
                for group, lr in zip(optimizer.param_groups, lrs):
                    group["lr"] = lr
                sched._last_lr = lrs

    return CosineOverRun(lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_updates), interval="step")


def run_settings(args):
    """The run's settings: defaults, then those saved in --resume's checkpoint, then the
    options given on this command line."""
    from . import io

    config = dict(DEFAULTS)
    if args.resume:
        _check_readable(args.resume, "--resume ")
        saved = (io.load_checkpoint(args.resume).extra.get("user") or {}).get("cli")
        if not isinstance(saved, dict):
            raise UsageError(
                f"--resume {args.resume}: not saved by `fastgrad train` (no run settings inside); "
                "resume it with Trainer.load_checkpoint in Python"
            )
        config.update({k: v for k, v in saved.items() if k in DEFAULTS})
    for key in DEFAULTS:
        value = getattr(args, key, None)
        if value is not None:
            config[key] = value
    if config["lr"] is None:
        config["lr"] = LR_DEFAULTS[config["optimizer"]]
    return config


def cmd_train(args):
    """`fastgrad train`; with --distributed (or under mpiexec) one of N data-parallel
    processes, of which only rank 0 prints."""
    import contextlib

    from . import distributed as dist

    if not (args.distributed or (dist.launched_by_mpiexec() and dist.is_available())):
        return _train(args, None)
    if not dist.is_available():
        raise UsageError("--distributed needs mpi4py and an MPI: pip install 'fastgrad[mpi]'")
    dist.init_process_group("mpi")
    world = dist.process_group.current_world()
    with contextlib.ExitStack() as quiet:
        if world.rank != 0:
            quiet.enter_context(contextlib.redirect_stdout(quiet.enter_context(open(os.devnull, "w"))))
        status = _train(args, world)
    dist.destroy_process_group()  # not on an error: that one reaches the other ranks as a failure
    return status


def _train(args, world):
    import numpy as np

    from . import nn
    from .train import ModelCheckpoint, StopOnInterrupt, Trainer

    started = time.perf_counter()
    setup_runtime(args)
    if args.resume and not args.save:
        args.save = args.resume
    if args.save:
        _check_writable(args.save, "--save")
    config = run_settings(args)
    if world is not None and (config["mode"] != "minibatch" or config["batch_size"] % world.size):
        raise UsageError(
            f"--distributed: needs --mode minibatch and a --batch-size divisible by the "
            f"{world.size} processes; got {config['mode']}, batch {config['batch_size']}"
        )
    if args.plot and world is not None and world.rank != 0:
        args.plot = None  # one plot, rank 0's
    if args.plot:
        _check_writable(args.plot, "--plot")
        args.plot = args.plot if _plot_available() else None
    train, heldout, what = load_data(config["data"], config["limit"], config["val_limit"])
    model = build_model(config["model"], train[0], config["seed"])
    optimizer = make_optimizer(
        config["optimizer"], model.parameters(), config["lr"], config["momentum"], config["weight_decay"]
    )
    trainer = Trainer(model, nn.CrossEntropyLoss(), optimizer, distributed=world is not None)
    if args.resume:
        trainer.load_checkpoint(args.resume)
    trainer.checkpoint_extra = {"cli": config}
    remaining = config["epochs"] - trainer.epoch
    per_update = {
        "minibatch": f"batch {config['batch_size']}",
        "sgd": "1 sample per update",
        "batch": "whole set per update",
    }[config["mode"]]
    if world is not None:
        per_update += f" = {world.size} processes x {config['batch_size'] // world.size}"
    print(
        f"fastgrad train: {config['model']} on {what} ({len(train[1]):,} training / {len(heldout[1]):,} "
        f"held-out images); {config['mode']} ({per_update}), {config['optimizer']} lr {config['lr']:g}, "
        f"{config['schedule']} schedule, {config['epochs']} epochs, seed {config['seed']}; {runtime_line()}",
        flush=True,
    )
    if args.resume:
        print(
            f"resuming {args.resume}: {trainer.epoch} epochs and {trainer.epoch_step} updates of the next done",
            flush=True,
        )
    stopper = StopOnInterrupt()
    callbacks = [stopper] + ([ModelCheckpoint(args.save)] if args.save else [])
    if config["schedule"] == "cosine":
        n = len(train[1])
        per_epoch = {"minibatch": -(-n // config["batch_size"]), "sgd": n, "batch": 1}[config["mode"]]
        if world is not None:  # each process's share, padded to equal counts (DistributedSampler)
            import math

            per_epoch = math.ceil(math.ceil(n / world.size) / (config["batch_size"] // world.size))
        callbacks.insert(0, cosine_over_run(optimizer, max(1, config["epochs"] * per_epoch)))
    history = trainer.history
    epochs_before = len(history.epochs)
    if remaining > 0:
        history = trainer.fit(
            train,
            epochs=remaining,
            batch_size=config["batch_size"],
            mode=config["mode"],
            val=heldout,
            callbacks=callbacks,
            seed=config["seed"],
            verbose=0 if args.quiet else 1,
        )
    else:
        print(f"the run already has {trainer.epoch} epochs; pass --epochs N with N > {trainer.epoch} to train more")
    if stopper.interrupted:
        where = (
            f"epoch {trainer.epoch + 1}, after update {trainer.epoch_step}"
            if trainer.epoch_step
            else f"the run, after epoch {trainer.epoch}"
        )
        if args.save:
            trainer.save_checkpoint(args.save)
            print(f"\ninterrupted in {where}: saved {args.save}; continue with: fastgrad train --resume {args.save}")
        else:
            print(f"\ninterrupted in {where}; nothing saved (use --save FILE to keep the run)")
        return EXIT_INTERRUPTED
    if args.save:
        trainer.save_checkpoint(args.save)
    run_epochs = history.epochs[epochs_before:]
    last = history.last
    if last.get("val_loss") is not None and run_epochs:
        val_loss, val_acc = last["val_loss"], last["val_accuracy"]
    else:
        val_loss, val_acc = trainer.evaluate(heldout)
    images = sum(len(train[1]) for _ in run_epochs)
    train_seconds = sum(len(train[1]) / e["images_per_second"] for e in run_epochs if e["images_per_second"])
    print(f"held-out accuracy: {_fmt_acc(val_acc)} ({len(heldout[1]):,} images), loss {val_loss:.4f}")
    if run_epochs:
        print(
            f"training: {len(run_epochs)} epochs, {sum(e['updates'] for e in run_epochs):,} updates, "
            f"{train_seconds:.1f} s, {images / train_seconds if train_seconds else float('nan'):,.0f} images/s; "
            f"final training loss {last['loss']:.4f}, accuracy {_fmt_acc(last['accuracy'])}"
        )
    print(f"time: {time.perf_counter() - started:.1f} s in all; {runtime_line()}")
    if args.save:
        print(f"saved checkpoint: {args.save}")
    if args.plot:
        from .train.plots import plot_history

        plot_history(history, args.plot, title=config["model"])
        print(f"wrote plot: {args.plot}")
    if not np.isfinite(val_loss):
        return 1
    return 0


# --------------------------------------------------------------------------- evaluate


def cmd_evaluate(args):
    from . import io, nn
    from .train import Trainer

    setup_runtime(args)
    _check_readable(args.file, "")
    ckpt = io.load_checkpoint(args.file)
    saved = (ckpt.extra.get("user") or {}).get("cli") or {}
    name = args.model or saved.get("model")
    if name is None:
        raise UsageError(f"{args.file} does not say which model it holds; pass --model")
    _, heldout, what = load_data(args.data or saved.get("data", "bundled"), 1, args.val_limit)
    model = build_model(name, heldout[0], 0)
    io.check_state_matches(model, ckpt.model_state, args.file)
    model.load_state_dict(ckpt.model_state)
    loss, acc = Trainer(model, nn.CrossEntropyLoss(), None).evaluate(heldout)
    print(
        f"{args.file}: {name} after {ckpt.epoch} epochs ({ckpt.step:,} updates), saved by fastgrad "
        f"{ckpt.fastgrad_version}"
    )
    print(f"held-out accuracy: {_fmt_acc(acc)} ({len(heldout[1]):,} images of {what}), loss {loss:.4f}")
    return 0


# --------------------------------------------------------------------------- compare-gd


def cmd_compare_gd(args):
    from .train.compare import compare_gd, format_table

    setup_runtime(args)
    plot = args.plot
    if plot:
        _check_writable(plot, "--plot")
        plot = plot if _plot_available() else None
    limit = args.limit or args.limit_default
    train, heldout, what = load_data(args.data, limit, args.val_limit)
    print(
        f"fastgrad compare-gd: {args.model} on {len(train[1]):,} training images of {what}, {args.epochs} epochs "
        f"per mode, plain SGD, mini-batch {args.batch_size}; {runtime_line()}",
        flush=True,
    )
    start_loss, results = compare_gd(
        lambda: build_model(args.model, train[0], args.seed),
        train,
        heldout,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        seed=args.seed,
        verbose=not args.quiet,
    )
    print(format_table(start_loss, results))
    if plot:
        from .train.plots import plot_compare

        plot_compare(results, plot)
        print(f"wrote plot: {plot}")
    return 0


# --------------------------------------------------------------------------- summary


def layer_table(model, input_shape):
    """Rows (name, layer, output shape, parameters) from one forward pass of a batch of 1."""
    import fastgrad

    rows = []
    x = fastgrad.zeros(1, *input_shape)
    with fastgrad.no_grad():
        for name, layer in model.named_children():
            x = layer(x)
            params = sum(int(p.data.size) for p in layer.parameters())
            rows.append((name, type(layer).__name__, tuple(x.shape), params))
    return rows


def cmd_summary(args):
    from .models import MODELS

    builder, input_shape = MODELS[args.model]
    model = builder()
    rows = layer_table(model, input_shape)
    header = ("layer", "type", "output shape", "parameters")
    text = [(n, t, "(N, " + ", ".join(str(d) for d in shape[1:]) + ")", f"{p:,}") for n, t, shape, p in rows]
    widths = [max(len(r[i]) for r in [header] + text) for i in range(4)]
    print(f"{args.model}: input (N, {', '.join(map(str, input_shape))})")
    print("  ".join(h.ljust(w) if i < 3 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths))))
    print("  ".join("-" * w for w in widths))
    for r in text:
        print("  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    total = sum(p for *_, p in rows)
    print(f"total parameters: {total:,} ({total * 4 / 1024:,.1f} KiB as float32)")
    return 0


# --------------------------------------------------------------------------- export


def cmd_export(args):
    import fastgrad

    from . import io

    try:
        import onnx  # noqa: F401
    except ImportError:
        raise UsageError("the onnx package is not installed: pip install 'fastgrad[onnx]'") from None
    from .onnx import export

    _check_readable(args.file, "")
    _check_writable(args.onnx, "--onnx")
    ckpt = io.load_checkpoint(args.file)
    saved = (ckpt.extra.get("user") or {}).get("cli") or {}
    name = args.model or saved.get("model")
    if name is None:
        raise UsageError(f"{args.file} does not say which model it holds; pass --model")
    _, heldout, _ = load_data(args.data or saved.get("data", "bundled"), 1, 1)
    model = build_model(name, heldout[0], 0)
    io.check_state_matches(model, ckpt.model_state, args.file)
    model.load_state_dict(ckpt.model_state)
    model.eval()
    sample = fastgrad.tensor(heldout[0][:1])
    proto = export(
        model,
        sample,
        args.onnx,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=args.opset,
    )

    def shape(value):
        return "(" + ", ".join(d.dim_param or str(d.dim_value) for d in value.type.tensor_type.shape.dim) + ")"

    (inp,), (out,) = proto.graph.input, proto.graph.output
    print(f"{args.file}: {name} after {ckpt.epoch} epochs ({ckpt.step:,} updates)")
    print(
        f"wrote {args.onnx}: input {inp.name!r} {shape(inp)} {sample.dtype}, output {out.name!r} {shape(out)}; "
        f"opset {args.opset}, {len(proto.graph.node)} nodes, {len(proto.graph.initializer)} initializers"
    )
    return 0


# --------------------------------------------------------------------------- bench


def cmd_bench(args):
    import subprocess

    bench_dir = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")
    nets = os.path.join(bench_dir, "bench_nets.py")  # the nets with custom forwards, eager and compiled
    if args.vs == "torch":
        if os.path.isfile(nets) and not args.builtin:
            return subprocess.call([sys.executable, nets] + list(args.bench_args))
        from . import benchmarks

        return benchmarks.main(args.bench_args)
    setup_runtime(args)
    scripts = []
    if os.path.isdir(bench_dir) and not args.builtin:
        scripts = sorted(
            os.path.join(bench_dir, f)
            for f in os.listdir(bench_dir)
            if f.startswith("bench_") and f.endswith(".py") and f != "bench_nets.py"
        )
    if scripts:
        status = 0
        for script in scripts:
            print(f"== {os.path.relpath(script)}", flush=True)
            status = max(status, subprocess.call([sys.executable, script]))
        return status
    print(builtin_bench())
    return 0


def builtin_bench(budget=0.3):
    """A small timing table: the same work on the compiled and the pure-Python kernels."""
    import numpy as np

    import fastgrad

    from . import kernels, models, nn, optim

    def lenet_step(batch):
        fastgrad.manual_seed(0)
        model = models.lenet5()
        opt = optim.SGD(model.parameters(), lr=0.01)
        loss_fn = nn.CrossEntropyLoss()
        x = fastgrad.randn(batch, 1, 28, 28)
        y = fastgrad.tensor(np.arange(batch) % 10)

        def step():
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()

        return step

    def accumulate(n):
        dst, src = np.zeros(n, np.float32), np.ones(n, np.float32)
        return lambda: kernels.accumulate(dst, src)

    cases = [
        ("LeNet-5 training step, batch 1", lambda: lenet_step(1)),
        ("LeNet-5 training step, batch 4", lambda: lenet_step(4)),
        ("gradient accumulation, 61,706 floats", lambda: accumulate(61706)),
    ]
    original = kernels.backend
    rows = []
    try:
        for label, make in cases:
            times = {}
            for backend in ("compiled", "reference"):
                try:
                    kernels.use_backend(backend)
                except ImportError:
                    times[backend] = None
                    continue
                run = make()
                run()  # warm-up: workspaces, caches
                count, t0 = 0, time.perf_counter()
                while True:
                    run()
                    count += 1
                    elapsed = time.perf_counter() - t0
                    if elapsed > budget or count >= 1000:
                        break
                times[backend] = elapsed / count
            rows.append((label, times["compiled"], times["reference"]))
    finally:
        kernels.use_backend(original)

    def ms(t):
        return f"{t * 1e3:.3f}" if t is not None else "n/a"

    lines = [
        f"fastgrad bench (built-in): {runtime_line()}, float32",
        f"{'case':<40} {'compiled ms':>12} {'pure Python ms':>15} {'speed-up':>9}",
    ]
    for label, c, r in rows:
        ratio = f"{r / c:,.0f}x" if c and r else "n/a"
        lines.append(f"{label:<40} {ms(c):>12} {ms(r):>15} {ratio:>9}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- entry point


def main(argv=None):
    """Run the ``fastgrad`` command with ``argv`` (default: sys.argv[1:]); returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse printed usage and the reason (or --help / --version)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_usage(sys.stderr)
        print("fastgrad: error: choose a command: train, evaluate, compare-gd, summary, export, bench", file=sys.stderr)
        return EXIT_USAGE
    from .datasets import IDXError
    from .io import CheckpointError
    from .train import NonFiniteLossError

    command = f"fastgrad {args.command}"
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"{command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (CheckpointError, IDXError) as exc:
        print(f"{command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        reason = exc.strerror or str(exc)
        print(f"{command}: error: {exc.filename + ': ' if exc.filename else ''}{reason}", file=sys.stderr)
        return EXIT_USAGE
    except NonFiniteLossError as exc:
        print(f"{command}: training diverged: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\n{command}: interrupted (any file being saved keeps its previous version)", file=sys.stderr)
        return EXIT_INTERRUPTED
