"""No leaks over a long compiled run: 20,000 training steps (batch 8) of a net with a custom
forward (BatchNorm, a residual add, dropout, max pooling) replayed by fastgrad.compile, in
a subprocess, keep resident memory within 2 MB of its post-warm-up level, and 1,000 more
steps under tracemalloc show no growth in Python objects; the compiled module, its plans
and graphs go away with the model."""

import gc
import json
import os
import subprocess
import sys
import weakref

import fastgrad

NET = r"""
import numpy as np
import fastgrad
import fastgrad.nn as nn
import fastgrad.nn.functional as F


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.drop = nn.Dropout(0.25)
        self.fc = nn.Linear(8 * 14 * 14, 10)

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        h = F.relu(self.conv2(h) + h)
        return self.fc(self.drop(fastgrad.flatten(F.max_pool2d(h, 2), 1)))


def build():
    fastgrad.manual_seed(0)
    model = Net()
    return model, fastgrad.compile(model), fastgrad.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)


def batches(n, batch):
    rng = np.random.default_rng(1)
    return [(fastgrad.from_numpy(rng.standard_normal((batch, 1, 28, 28)).astype(np.float32)),
             fastgrad.from_numpy(rng.integers(0, 10, batch))) for _ in range(n)]


def train(call, opt, data, steps):
    loss = None
    for i in range(steps):
        x, y = data[i % len(data)]
        opt.zero_grad()
        loss = F.cross_entropy(call(x), y)
        loss.backward()
        opt.step()
    return loss
"""

LONG_RUN = (
    NET
    + r"""
import json, sys, tracemalloc

def rss_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])

steps, warmup = int(sys.argv[1]), int(sys.argv[2])
fastgrad.set_num_threads(1)
model, compiled, opt = build()
data = batches(16, 8)
train(compiled, opt, data, warmup)
rss0 = rss_kb()
train(compiled, opt, data, steps - warmup)
rss1 = rss_kb()
tracemalloc.start()
train(compiled, opt, data, 200)
snap0 = tracemalloc.take_snapshot()
train(compiled, opt, data, 1000)
snap1 = tracemalloc.take_snapshot()
growth = sum(s.size_diff for s in snap1.compare_to(snap0, "filename"))
print(json.dumps({"backend": fastgrad.kernels.backend, "stats": compiled.compile_stats,
                  "rss_before_kb": rss0, "rss_after_kb": rss1, "traced_growth_bytes": growth}))
"""
)


def test_20000_compiled_steps_do_not_grow_memory(tmp_path):
    steps = 20000 if fastgrad.kernels.backend == "compiled" else 30
    out = subprocess.run(
        [sys.executable, "-c", LONG_RUN, str(steps), str(min(1000, steps // 3))],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        timeout=3000,
        env=_env(),
    ).stdout
    figures = json.loads(out.strip().splitlines()[-1])
    print("compiled leak test:", figures)
    assert figures["backend"] == fastgrad.kernels.backend, figures
    assert figures["stats"]["replays"] >= steps, figures  # the run was replayed, not eager
    assert figures["rss_after_kb"] - figures["rss_before_kb"] < 2048, figures
    assert figures["traced_growth_bytes"] < 64 * 1024, figures


def _env():
    env = dict(os.environ)  # the fastgrad this test imported, in the child too
    here = os.path.dirname(os.path.dirname(os.path.abspath(fastgrad.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([here] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def test_the_compiled_module_its_plans_and_graphs_are_freed(tmp_path, monkeypatch):
    (tmp_path / "leaknet.py").write_text(NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    import leaknet

    model, compiled, opt = leaknet.build()
    loss = leaknet.train(compiled, opt, leaknet.batches(2, 4), 4)
    assert compiled.compile_stats["replays"] >= 1
    refs = [weakref.ref(o) for o in (model, compiled, opt, loss)]
    refs += [weakref.ref(p) for p in model.parameters()]
    del model, compiled, opt, loss
    gc.collect()
    alive = [type(r()).__name__ for r in refs if r() is not None]
    assert not alive, f"still alive after del: {alive}"
