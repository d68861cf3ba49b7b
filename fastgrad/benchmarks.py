"""fastgrad against PyTorch on whole training steps and inference of small CNNs.

Each net is built in both libraries from the same weights. After a warm-up, the two are
timed in alternating rounds (fastgrad, torch, fastgrad, torch, ...) so that both see the
same machine load; the table reports the median images per second of each and their
ratio, per workload and thread count, with the CPU model, batch size and dtype.

    python bench/compare_torch.py                  # the standard workloads, 1 and 2 threads
    fastgrad bench --vs torch                      # the same, from an installed fastgrad
    python bench/compare_torch.py --sweep --plot docs/batch_sweep.png
    python bench/compare_torch.py --json out.json  # machine-readable results
    python bench/compare_torch.py --memory         # peak resident memory of LeNet-5 training

A training step is zero_grad, forward, loss, backward, optimizer step (SGD with momentum),
on the next of a fixed sequence of random batches (4,096 images in all, the same for both
libraries), with denormals flushed to zero in both (``--keep-denormals`` keeps them).
Without PyTorch installed, only fastgrad's figures are printed.

--memory measures peak resident memory (ru_maxrss) instead of speed: each library runs in
fresh child processes, one that only imports it (and numpy) and one that also trains
LeNet-5 (batch 64, --steps steps), so the two libraries never share a peak; it prints both
peaks, their ratio and the growth of each over its import-only peak.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

import fastgrad
import fastgrad.nn as fnn
import fastgrad.optim as foptim

torch = None  # PyTorch, imported by main() when installed: it is only ever a peer here


def _import_torch():
    global torch
    try:
        import torch as _torch
    except ImportError:
        return None
    torch = _torch
    return torch


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# Layer lists written once, instantiated in either library (same class names and arguments).
NETS = {
    "lenet5": (
        (1, 28, 28),
        lambda nn: [
            nn.Conv2d(1, 6, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(400, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, 10),
        ],
    ),
    "cifar_small": (
        (3, 32, 32),
        lambda nn: [
            nn.Conv2d(3, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(4096, 128),
            nn.ReLU(),
            nn.Linear(128, 10),
        ],
    ),
}

# (name, net, batch, train?, targets {threads: ratio})
WORKLOADS = [
    ("LeNet-5 training step, batch 1", "lenet5", 1, True, {1: 10, 2: 10}),
    ("LeNet-5 training step, batch 64", "lenet5", 64, True, {1: 3, 2: 2}),
    ("LeNet-5 training step, batch 256", "lenet5", 256, True, {1: 2, 2: 1.5}),
    ("CIFAR-small training step, batch 64", "cifar_small", 64, True, {1: 1.5, 2: 1.3}),
    ("LeNet-5 inference, batch 256", "lenet5", 256, False, {1: 1.5, 2: 1.5}),
]


# Images of random data each contender cycles through, as a data loader would feed them
# (at least 8 batches). Not one repeated batch: on a single batch the loss soon reaches 0,
# gradients and momentum decay into denormal floats, and arithmetic on those is many
# times slower on x86 CPUs, a state no real training run stays in.
POOL_IMAGES = 4096


def make_batches(net, batch, seed=0):
    """The same (x, y) numpy batches for both libraries: standard-normal images (the
    statistics of normalized MNIST/CIFAR inputs) and random class labels."""
    shape = NETS[net][0]
    rng = np.random.default_rng(seed)
    count = max(8, POOL_IMAGES // batch)
    return [
        (rng.standard_normal((batch,) + shape).astype(np.float32), rng.integers(0, 10, batch).astype(np.int64))
        for _ in range(count)
    ]


class Contender:
    """One library's model, loss, optimizer and batches; ``run(k)`` does k steps."""

    def __init__(self, lib, net, batch, train, weights=None, seed=0):
        shape, layers = NETS[net]
        batches = make_batches(net, batch, seed)
        if lib == "fastgrad":
            self.model = fnn.Sequential(*layers(fnn))
            if weights is not None:
                self.model.load_state_dict(weights)
            self.batches = [(fastgrad.from_numpy(x), fastgrad.from_numpy(y)) for x, y in batches]
            self.loss_fn = fnn.CrossEntropyLoss()
            self.opt = foptim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
            self.no_grad = fastgrad.no_grad
        else:
            self.model = torch.nn.Sequential(*layers(torch.nn))
            if weights is not None:
                self.model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
            self.batches = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in batches]
            self.loss_fn = torch.nn.CrossEntropyLoss()
            self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
            self.no_grad = torch.no_grad
        self.next = 0  # index of the next batch: both contenders walk the same sequence
        self.train = train
        if not train:
            self.model.eval()

    def run(self, steps):
        model, opt, loss_fn, batches = self.model, self.opt, self.loss_fn, self.batches
        i, n = self.next, len(batches)
        if self.train:
            for _ in range(steps):
                x, y = batches[i]
                i = i + 1 if i + 1 < n else 0
                opt.zero_grad()
                loss = loss_fn(model(x), y)
                loss.backward()
                opt.step()
        else:
            with self.no_grad():
                for _ in range(steps):
                    model(batches[i][0])
                    i = i + 1 if i + 1 < n else 0
        self.next = i

    def state_dict_numpy(self):
        return {
            k: np.array(v.detach().numpy() if hasattr(v, "detach") else v) for k, v in self.model.state_dict().items()
        }


def steps_for(contender, min_seconds):
    """How many steps make one timed round last about ``min_seconds``."""
    t0 = time.perf_counter()
    contender.run(1)
    one = max(time.perf_counter() - t0, 1e-6)
    return max(1, int(min_seconds / one))


# Both libraries flush denormal floats to zero unless --keep-denormals: in a long run some
# momentum buffers decay through the denormal range (their weights get no gradient, e.g.
# behind dead ReLUs), and x86 arithmetic on denormals takes microcode assists. At batch 1
# that made a fastgrad step ~4x slower after ~1,000 steps, hidden in PyTorch's per-op
# overhead; set_flush_denormal(True) is what a CPU training loop should run with.
FLUSH_DENORMALS = True


def measure(workload, threads, rounds, min_seconds):
    name, net, batch, train, targets = workload
    fastgrad.set_num_threads(threads)
    fastgrad.set_flush_denormal(FLUSH_DENORMALS)
    fg = Contender("fastgrad", net, batch, train)
    contenders = {"fastgrad": fg}
    if torch is not None:
        torch.set_num_threads(threads)
        torch.set_flush_denormal(FLUSH_DENORMALS)
        contenders["torch"] = Contender("torch", net, batch, train, weights=None)
        contenders["torch"].model.load_state_dict({k: torch.from_numpy(v) for k, v in fg.state_dict_numpy().items()})
    for c in contenders.values():  # warm-up: caches, workspaces, allocator pools
        c.run(3)
    steps = {k: steps_for(c, min_seconds) for k, c in contenders.items()}
    rates = {k: [] for k in contenders}
    for _ in range(rounds):
        for key, c in contenders.items():  # alternate, so both see the same machine load
            t0 = time.perf_counter()
            c.run(steps[key])
            rates[key].append(steps[key] * batch / (time.perf_counter() - t0))
    result = {
        "workload": name,
        "net": net,
        "batch": batch,
        "train": train,
        "threads": threads,
        "dtype": "float32",
        "fastgrad_img_s": statistics.median(rates["fastgrad"]),
    }
    if "torch" in rates:
        result["torch_img_s"] = statistics.median(rates["torch"])
        result["ratio"] = result["fastgrad_img_s"] / result["torch_img_s"]
        result["target"] = targets.get(threads)
    return result


def _loadavg():
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except (AttributeError, OSError):  # not on every platform
        return "unknown"


def print_header():
    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical CPUs); dtype float32; load average {_loadavg()}")
    print(
        f"fastgrad {fastgrad.__version__} (backend {fastgrad.kernels.backend}, "
        f"variant {fastgrad.kernels.simd_variant})"
        + (f"; torch {torch.__version__}" if torch is not None else "; torch not installed")
    )
    print(
        "denormals: "
        + (
            "flushed to zero in both libraries (set_flush_denormal(True); --keep-denormals to keep them)"
            if FLUSH_DENORMALS
            else "kept (IEEE default)"
        )
    )


def print_table(results):
    print("\n| workload | threads | fastgrad img/s | torch img/s | ratio | target |")
    print("|---|---|---|---|---|---|")
    for r in results:
        torch_rate = f"{r['torch_img_s']:.0f}" if "torch_img_s" in r else "-"
        ratio = f"{r['ratio']:.2f}x" if "ratio" in r else "-"
        target = f">= {r['target']}x" if r.get("target") else "-"
        print(f"| {r['workload']} | {r['threads']} | {r['fastgrad_img_s']:.0f} | {torch_rate} | {ratio} | {target} |")


def sweep(threads, rounds, min_seconds, batches=(1, 2, 4, 8, 16, 32, 64, 128, 256)):
    """LeNet-5 training step at each batch size, for one thread count or several; with
    several, each batch size is measured at every thread count before the next, so that
    all thread counts see about the same machine load."""
    thread_counts = [threads] if isinstance(threads, int) else list(threads)
    results = []
    for b in batches:
        for t in thread_counts:
            results.append(
                measure((f"LeNet-5 training step, batch {b}", "lenet5", b, True, {}), t, rounds, min_seconds)
            )
    return results


def plot_sweep(results, path, note=None):
    """One PNG: training images/s against batch size (log2 axis) for both libraries, one
    line style per thread count; beside it, fastgrad's speed as a multiple of PyTorch's."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter, NullFormatter
    except ImportError:
        print("plotting needs matplotlib: pip install fastgrad[plot]")
        return
    threads = sorted({r["threads"] for r in results})
    has_torch = all("torch_img_s" in r for r in results)
    styles = ["-", "--", ":", "-."]
    fig, axes = plt.subplots(1, 2 if has_torch else 1, squeeze=False, figsize=(11, 4.6) if has_torch else (6.4, 4.6))
    ax, ax_ratio = axes[0][0], (axes[0][1] if has_torch else None)
    for i, t in enumerate(threads):
        part = sorted((r for r in results if r["threads"] == t), key=lambda r: r["batch"])
        batches = [r["batch"] for r in part]
        style = styles[i % len(styles)]
        label_t = f"{t} thread" + ("s" if t > 1 else "")
        ax.plot(batches, [r["fastgrad_img_s"] for r in part], "o" + style, color="C0", label=f"fastgrad, {label_t}")
        if has_torch:
            ax.plot(
                batches,
                [r["torch_img_s"] for r in part],
                "s" + style,
                color="C3",
                label=f"PyTorch {torch.__version__}, {label_t}",
            )
            ax_ratio.plot(batches, [r["ratio"] for r in part], "D" + style, color="C2", label=label_t)
    batches = sorted({r["batch"] for r in results})
    integer = FuncFormatter(lambda v, _: f"{v:,.0f}")
    for a in [ax] + ([ax_ratio] if has_torch else []):
        a.set_xscale("log", base=2)
        a.set_xticks(batches)
        a.xaxis.set_major_formatter(integer)
        a.xaxis.set_minor_formatter(NullFormatter())
        a.set_xlabel("batch size")
        a.grid(True, which="major", alpha=0.3)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(integer)
    ax.set_ylabel("training images / s (median)")
    ax.set_title("images per second")
    ax.legend(fontsize=8)
    if has_torch:
        ax_ratio.axhline(1.0, color="grey", linewidth=1)
        ax_ratio.set_yscale("log", base=2)
        ratios = [r["ratio"] for r in results]
        ax_ratio.set_ylim(min(0.8, min(ratios) / 1.2), max(4.0, max(ratios) * 1.2))
        ax_ratio.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
        ax_ratio.yaxis.set_minor_formatter(NullFormatter())
        ax_ratio.set_ylabel("fastgrad / PyTorch, images/s")
        ax_ratio.set_title("speed-up over PyTorch")
        ax_ratio.legend(fontsize=8)
    fig.suptitle(f"LeNet-5 training step (SGD momentum), float32, {cpu_model()} ({os.cpu_count()} CPUs)", fontsize=11)
    if note:
        fig.text(0.01, 0.01, note, fontsize=7, color="dimgrey", va="bottom")
    fig.tight_layout(rect=(0, 0.04 if note else 0, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}")


# --------------------------------------------------------------------------- peak memory

# Run as a fresh interpreter: sys.argv = [lib, mode, steps, batch, threads]. It imports only
# the library under test (with numpy), optionally trains LeNet-5, and prints one JSON line.
# LeNet-5 is spelled out here rather than imported from this module, which imports fastgrad.
_MEMORY_CHILD = r"""
import json, os, resource, sys
lib, mode = sys.argv[1], sys.argv[2]
steps, batch, threads = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
import numpy as np
if lib == "fastgrad":
    import fastgrad as L
    import fastgrad.nn as nn
    import fastgrad.optim as optim
    from fastgrad import kernels
    info = {"backend": kernels.backend, "variant": kernels.simd_variant,
            "path": os.path.dirname(os.path.abspath(L.__file__))}
else:
    import torch as L
    import torch.nn as nn
    import torch.optim as optim
    info = {"path": os.path.dirname(os.path.abspath(L.__file__))}
L.set_num_threads(threads)
if mode == "train":
    model = nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))
    rng = np.random.default_rng(0)
    x = L.from_numpy(rng.standard_normal((batch, 1, 28, 28)).astype(np.float32))
    y = L.from_numpy(rng.integers(0, 10, batch).astype(np.int64))
    loss_fn = nn.CrossEntropyLoss()
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
    info["loss"] = float(loss.item())
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
info["peak_bytes"] = peak if sys.platform == "darwin" else peak * 1024  # macOS: bytes; else KiB
try:  # Linux: the high-water mark of this process's own address space, as a cross-check
    with open("/proc/self/status") as f:
        info["vmhwm_bytes"] = [int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:")][0]
except (OSError, IndexError, ValueError):
    pass
print(json.dumps(info))
"""

# A process's ru_maxrss starts from the peak of the process that spawned it (Linux keeps the
# parent's high-water mark across fork/vfork and exec), and this benchmark's own process
# holds fastgrad and PyTorch. So each measured child is started by this small launcher,
# a fresh interpreter whose own peak (about 10 MiB) is below anything measured.
_LAUNCHER = r"""
import subprocess, sys
sys.exit(subprocess.run(sys.argv[1:]).returncode)
"""


def _child_env():
    """The environment for a child that must import this very fastgrad (installed, or the
    work tree's in-place build) from a neutral directory."""
    env = dict(os.environ)
    parent = os.path.dirname(os.path.dirname(os.path.abspath(fastgrad.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (parent, env.get("PYTHONPATH")) if p)
    return env


def memory_child(lib, mode, steps, batch, threads):
    """Peak resident bytes (and what the child reported) of one fresh process."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory(prefix="fastgrad-mem-") as cwd:  # not the repo root
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                _LAUNCHER,
                sys.executable,
                "-c",
                _MEMORY_CHILD,
                lib,
                mode,
                str(steps),
                str(batch),
                str(threads),
            ],
            cwd=cwd,
            env=_child_env(),
            capture_output=True,
            text=True,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"the {lib} {mode} child failed (exit {proc.returncode}):\n{proc.stderr.strip()}")
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    if lib == "fastgrad":
        here = os.path.dirname(os.path.abspath(fastgrad.__file__))
        if os.path.realpath(info["path"]) != os.path.realpath(here):
            raise RuntimeError(f"the child imported fastgrad from {info['path']}, not {here}")
    return info


def measure_memory(threads, steps=200, batch=64, repeats=3):
    """Median peaks over ``repeats`` alternating runs of the four children."""
    libs = ["fastgrad"] + (["torch"] if torch is not None else [])
    peaks = {(lib, mode): [] for lib in libs for mode in ("import", "train")}
    hwm = {key: [] for key in peaks}
    info = {}
    for _ in range(repeats):
        for mode in ("import", "train"):
            for lib in libs:
                got = memory_child(lib, mode, steps, batch, threads)
                peaks[lib, mode].append(got["peak_bytes"])
                if "vmhwm_bytes" in got:
                    hwm[lib, mode].append(got["vmhwm_bytes"])
                info.setdefault(lib, got)
    mib = {f"{lib}_{mode}_mib": statistics.median(v) / 2**20 for (lib, mode), v in peaks.items()}
    mib.update({f"{lib}_{mode}_vmhwm_mib": statistics.median(v) / 2**20 for (lib, mode), v in hwm.items() if v})
    result = {
        "workload": f"LeNet-5 training, batch {batch}, {steps} steps",
        "threads": threads,
        "batch": batch,
        "steps": steps,
        "repeats": repeats,
        "dtype": "float32",
        "fastgrad_backend": info["fastgrad"].get("backend"),
        **mib,
    }
    for lib in libs:
        result[f"{lib}_increment_mib"] = mib[f"{lib}_train_mib"] - mib[f"{lib}_import_mib"]
    if "torch" in libs:
        result["peak_ratio"] = mib["fastgrad_train_mib"] / mib["torch_train_mib"]
        result["increment_ratio"] = result["fastgrad_increment_mib"] / result["torch_increment_mib"]
    return result


def print_memory_table(results):
    print("\nprocess peak resident memory (ru_maxrss, MiB; median of fresh child processes):")
    print("| threads | library | import only | after training | increment |")
    print("|---|---|---|---|---|")
    for r in results:
        for lib in ("fastgrad", "torch"):
            if f"{lib}_train_mib" in r:
                name = "PyTorch" if lib == "torch" else lib
                print(
                    f"| {r['threads']} | {name} | {r[f'{lib}_import_mib']:.1f} | "
                    f"{r[f'{lib}_train_mib']:.1f} | {r[f'{lib}_increment_mib']:.1f} |"
                )
    for r in results:
        if "peak_ratio" in r:
            verdict = "met" if r["peak_ratio"] <= 1 / 3 else "NOT met"
            print(
                f"{r['threads']} thread(s): fastgrad/PyTorch peak {r['peak_ratio']:.2f}x "
                f"(target <= 0.33x: {verdict}); increment over import "
                f"{r['increment_ratio']:.2f}x"
            )


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="fastgrad bench --vs torch", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    p.add_argument("--rounds", type=int, default=7, help="alternating timed rounds per contender")
    p.add_argument("--seconds", type=float, default=0.3, help="length of one timed round")
    p.add_argument("--only", default="", help="substring filter on workload names")
    p.add_argument("--sweep", action="store_true", help="images/s against batch size 1..256 (LeNet-5)")
    p.add_argument("--plot", help="with --sweep: write a PNG of the sweep")
    p.add_argument("--memory", action="store_true", help="peak resident memory of LeNet-5 training instead of speed")
    p.add_argument("--steps", type=int, default=200, help="with --memory: training steps")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument(
        "--keep-denormals", action="store_true", help="do not flush denormals to zero (both libraries' default setting)"
    )
    args = p.parse_args(argv)
    if args.plot and not args.sweep:
        p.error("--plot goes with --sweep")
    if args.memory and sys.platform == "win32":
        p.error("--memory reads ru_maxrss (the resource module), which Windows lacks")
    global FLUSH_DENORMALS
    FLUSH_DENORMALS = not args.keep_denormals
    _import_torch()
    threads = [int(t) for t in args.threads.split(",") if t]
    if torch is None:
        print("PyTorch is not installed: timing fastgrad alone (pip install torch to compare)")
    print_header()
    results = []
    if args.memory:
        print(
            f"LeNet-5, batch 64, {args.steps} SGD-momentum steps; each figure the median of "
            f"3 fresh child processes per library and mode, {sys.executable}"
        )
        for t in threads:
            results.append(measure_memory(t, steps=args.steps))
        print_memory_table(results)
    elif args.sweep:
        load_before = _loadavg()
        results = sweep(threads, args.rounds, args.seconds)
        for t in threads:
            print_table([r for r in results if r["threads"] == t])
        load_after = _loadavg()
        print(f"load average after: {load_after}")
        if args.plot:
            plot_sweep(
                results,
                args.plot,
                note=(
                    f"fastgrad {fastgrad.__version__}; libraries alternated round by round, "
                    f"thread counts batch by batch; median of {args.rounds} rounds of "
                    f"~{args.seconds:g} s each; load average before {load_before}, after {load_after}"
                ),
            )
    else:
        for t in threads:
            for w in WORKLOADS:
                if args.only in w[0]:
                    results.append(measure(w, t, args.rounds, args.seconds))
        print_table(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu": cpu_model(), "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
