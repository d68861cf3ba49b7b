"""fastgrad against PyTorch on whole training steps and inference of small CNNs.

Each net is built in both libraries from the same weights. After a warm-up, the two are
timed in alternating rounds (fastgrad, torch, fastgrad, torch, ...) so that both see the
same machine load; the table reports the median images per second of each and their
ratio, per workload and thread count, with the CPU model, batch size and dtype.

    python bench/compare_torch.py                  # the standard workloads, 1 and 2 threads
    fastgrad bench --vs torch                      # the same, from an installed fastgrad
    python bench/compare_torch.py --sweep --plot docs/batch_sweep.png
    python bench/compare_torch.py --json out.json  # machine-readable results

A training step is zero_grad, forward, loss, backward, optimizer step (SGD with momentum).
Without PyTorch installed, only fastgrad's figures are printed.
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
    "lenet5": ((1, 28, 28), lambda nn: [
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10)]),
    "cifar_small": ((3, 32, 32), lambda nn: [
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(4096, 128), nn.ReLU(), nn.Linear(128, 10)]),
}

# (name, net, batch, train?, targets {threads: ratio})
WORKLOADS = [
    ("LeNet-5 training step, batch 1", "lenet5", 1, True, {1: 10, 2: 10}),
    ("LeNet-5 training step, batch 64", "lenet5", 64, True, {1: 3, 2: 2}),
    ("LeNet-5 training step, batch 256", "lenet5", 256, True, {1: 2, 2: 1.5}),
    ("CIFAR-small training step, batch 64", "cifar_small", 64, True, {1: 1.5, 2: 1.3}),
    ("LeNet-5 inference, batch 256", "lenet5", 256, False, {1: 1.5, 2: 1.5}),
]


class Contender:
    """One library's model, loss, optimizer and a fixed batch; ``run(k)`` does k steps."""

    def __init__(self, lib, net, batch, train, weights=None, seed=0):
        shape, layers = NETS[net]
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((batch,) + shape).astype(np.float32)
        y = rng.integers(0, 10, batch).astype(np.int64)
        if lib == "fastgrad":
            self.model = fnn.Sequential(*layers(fnn))
            if weights is not None:
                self.model.load_state_dict(weights)
            self.x, self.y = fastgrad.from_numpy(x), fastgrad.from_numpy(y)
            self.loss_fn = fnn.CrossEntropyLoss()
            self.opt = foptim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
            self.no_grad = fastgrad.no_grad
        else:
            self.model = torch.nn.Sequential(*layers(torch.nn))
            if weights is not None:
                self.model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
            self.x, self.y = torch.from_numpy(x), torch.from_numpy(y)
            self.loss_fn = torch.nn.CrossEntropyLoss()
            self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
            self.no_grad = torch.no_grad
        self.train = train
        if not train:
            self.model.eval()

    def run(self, steps):
        model, x, y, opt, loss_fn = self.model, self.x, self.y, self.opt, self.loss_fn
        if self.train:
            for _ in range(steps):
                opt.zero_grad()
                loss = loss_fn(model(x), y)
                loss.backward()
                opt.step()
        else:
            with self.no_grad():
                for _ in range(steps):
                    model(x)

    def state_dict_numpy(self):
        return {k: np.array(v.detach().numpy() if hasattr(v, "detach") else v)
                for k, v in self.model.state_dict().items()}


def steps_for(contender, min_seconds):
    """How many steps make one timed round last about ``min_seconds``."""
    t0 = time.perf_counter()
    contender.run(1)
    one = max(time.perf_counter() - t0, 1e-6)
    return max(1, int(min_seconds / one))


def measure(workload, threads, rounds, min_seconds):
    name, net, batch, train, targets = workload
    fastgrad.set_num_threads(threads)
    fg = Contender("fastgrad", net, batch, train)
    contenders = {"fastgrad": fg}
    if torch is not None:
        torch.set_num_threads(threads)
        contenders["torch"] = Contender("torch", net, batch, train, weights=None)
        contenders["torch"].model.load_state_dict(
            {k: torch.from_numpy(v) for k, v in fg.state_dict_numpy().items()})
    for c in contenders.values():  # warm-up: caches, workspaces, allocator pools
        c.run(3)
    steps = {k: steps_for(c, min_seconds) for k, c in contenders.items()}
    rates = {k: [] for k in contenders}
    for _ in range(rounds):
        for key, c in contenders.items():  # alternate, so both see the same machine load
            t0 = time.perf_counter()
            c.run(steps[key])
            rates[key].append(steps[key] * batch / (time.perf_counter() - t0))
    result = {"workload": name, "net": net, "batch": batch, "train": train, "threads": threads,
              "dtype": "float32", "fastgrad_img_s": statistics.median(rates["fastgrad"])}
    if "torch" in rates:
        result["torch_img_s"] = statistics.median(rates["torch"])
        result["ratio"] = result["fastgrad_img_s"] / result["torch_img_s"]
        result["target"] = targets.get(threads)
    return result


def print_header():
    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical CPUs); dtype float32")
    print(f"fastgrad {fastgrad.__version__} (backend {fastgrad.kernels.backend}, "
          f"variant {fastgrad.kernels.simd_variant})"
          + (f"; torch {torch.__version__}" if torch is not None else "; torch not installed"))


def print_table(results):
    print(f"\n| workload | threads | fastgrad img/s | torch img/s | ratio | target |")
    print("|---|---|---|---|---|---|")
    for r in results:
        torch_rate = f"{r['torch_img_s']:.0f}" if "torch_img_s" in r else "-"
        ratio = f"{r['ratio']:.2f}x" if "ratio" in r else "-"
        target = f">= {r['target']}x" if r.get("target") else "-"
        print(f"| {r['workload']} | {r['threads']} | {r['fastgrad_img_s']:.0f} | {torch_rate} | {ratio} | {target} |")


def sweep(threads, rounds, min_seconds, batches=(1, 2, 4, 8, 16, 32, 64, 128, 256)):
    results = []
    for b in batches:
        results.append(measure((f"LeNet-5 training step, batch {b}", "lenet5", b, True, {}),
                               threads, rounds, min_seconds))
    return results


def plot_sweep(results, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plotting needs matplotlib: pip install fastgrad[plot]")
        return
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    batches = [r["batch"] for r in results]
    ax.plot(batches, [r["fastgrad_img_s"] for r in results], "o-", label="fastgrad")
    if all("torch_img_s" in r for r in results):
        ax.plot(batches, [r["torch_img_s"] for r in results], "s-", label=f"PyTorch {torch.__version__}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("training images / s")
    ax.set_title(f"LeNet-5 training step, {results[0]['threads']} thread(s), float32")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def main(argv=None):
    p = argparse.ArgumentParser(prog="fastgrad bench --vs torch", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    p.add_argument("--rounds", type=int, default=7, help="alternating timed rounds per contender")
    p.add_argument("--seconds", type=float, default=0.3, help="length of one timed round")
    p.add_argument("--only", default="", help="substring filter on workload names")
    p.add_argument("--sweep", action="store_true", help="images/s against batch size 1..256 (LeNet-5)")
    p.add_argument("--plot", help="with --sweep: write a PNG of the sweep")
    p.add_argument("--json", help="also write the results to this JSON file")
    args = p.parse_args(argv)
    _import_torch()
    threads = [int(t) for t in args.threads.split(",") if t]
    if torch is None:
        print("PyTorch is not installed: timing fastgrad alone (pip install torch to compare)")
    print_header()
    results = []
    if args.sweep:
        for t in threads:
            part = sweep(t, args.rounds, args.seconds)
            print_table(part)
            results += part
            if args.plot:
                root, ext = os.path.splitext(args.plot)
                plot_sweep(part, args.plot if len(threads) == 1 else f"{root}-{t}t{ext}")
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
