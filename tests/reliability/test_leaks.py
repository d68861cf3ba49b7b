"""No leaks over a long run: 20,000 LeNet-5 training steps (batch 8) in a subprocess keep
resident memory within 2 MB of its post-warm-up level, and 1,000 more steps under
tracemalloc show no growth in Python objects; graphs,
workspaces and optimizer state go away with the model and optimizer."""

import gc
import json
import os
import subprocess
import sys
import weakref

import fastgrad

HERE = os.path.dirname(os.path.abspath(__file__))

LONG_RUN = r"""
import json, sys, tracemalloc
sys.path.insert(0, sys.argv[1])
import _lenet_run as run
import fastgrad

def rss_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])

steps, warmup = int(sys.argv[2]), int(sys.argv[3])
fastgrad.set_num_threads(1)
model, opt = run.build(0)
xs, ys = run.make_batches(16, 8, seed=1)
run.train(model, opt, xs, ys, warmup)
rss0 = rss_kb()
run.train(model, opt, xs, ys, steps - warmup)
rss1 = rss_kb()
# tracemalloc slows every allocation several times: watch Python objects over a shorter
# window after the long run instead of during it.
tracemalloc.start()
run.train(model, opt, xs, ys, 200)
snap0 = tracemalloc.take_snapshot()
run.train(model, opt, xs, ys, 1000)
snap1 = tracemalloc.take_snapshot()
growth = sum(s.size_diff for s in snap1.compare_to(snap0, "filename"))
print(json.dumps({"backend": fastgrad.kernels.backend, "rss_before_kb": rss0, "rss_after_kb": rss1,
                  "traced_growth_bytes": growth}))
"""


def test_20000_steps_do_not_grow_memory(tmp_path):
    # cwd: `python -c` puts the working folder first on sys.path; run where no source tree
    # can shadow the installed fastgrad (and its compiled kernels).
    out = subprocess.run(
        [sys.executable, "-c", LONG_RUN, HERE, "20000", "1000"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    ).stdout
    figures = json.loads(out.strip().splitlines()[-1])
    print("leak test:", figures)
    assert figures["backend"] == fastgrad.kernels.backend, figures
    growth_kb = figures["rss_after_kb"] - figures["rss_before_kb"]
    assert growth_kb < 2048, figures
    assert figures["traced_growth_bytes"] < 64 * 1024, figures


def test_model_graph_and_optimizer_state_are_freed():
    sys.path.insert(0, HERE)
    import _lenet_run as run

    model, opt = run.build(0)
    xs, ys = run.make_batches(2, 4, seed=1)
    loss = run.train(model, opt, xs, ys, 3)
    refs = [weakref.ref(model), weakref.ref(opt)] + [weakref.ref(p) for p in model.parameters()]
    refs.append(weakref.ref(loss))
    del model, opt, loss
    gc.collect()
    alive = [r() for r in refs if r() is not None]
    assert not alive, f"still alive after del: {[type(a).__name__ for a in alive]}"
