"""The one SIMD dispatch scheme: simd_paths() reports what this CPU runs, FASTGRAD_SIMD /
use_simd choose a path for every family at once (the modules report the level they
dispatch on, and the kernels' own plans use it), a path the CPU lacks is refused with a
clear error and never reached, and show_config prints the path that runs."""

import importlib
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

import fastgrad
from fastgrad import kernels
from fastgrad.reference import conv as ref_conv
from fastgrad.reference import linear as ref_linear
from fastgrad.reference import pool as ref_pool

HAVE_V3 = importlib.util.find_spec("fastgrad._ext.v3._conv") is not None
pytestmark = pytest.mark.skipif(kernels.backend != "compiled", reason="SIMD paths belong to the compiled kernels")


def _bound_modules():
    """family -> the compiled module fastgrad.kernels binds for it now"""
    out = {}
    for family in kernels.FAMILIES:
        first = importlib.import_module(f"fastgrad.reference.{family}").__all__[0]
        out[family] = sys.modules[getattr(kernels, first).__module__]
    return out


def test_paths_are_the_cpus_best_first_and_end_at_baseline():
    paths = kernels.simd_paths()
    assert paths[-1] == "baseline"
    assert paths == [p for p in kernels.SIMD_PATHS if p in paths]  # best first
    assert kernels.SIMD_LEVELS[paths[0]] == kernels.runtime.cpu_simd_level()


def test_the_bound_path_is_the_requested_one_in_every_family():
    wanted = os.environ.get("FASTGRAD_SIMD", "").strip().lower()
    expect = kernels.simd_paths()[0] if wanted in ("", "auto") else wanted
    assert kernels.simd_path == expect
    level = kernels.SIMD_LEVELS[expect]
    for family, mod in _bound_modules().items():
        if hasattr(mod, "_simd_level"):
            assert mod._simd_level() == min(level, mod.SIMD_KERNELS_TOP), family
        # the baseline path never runs the x86-64-v3 build (its portable loops are AVX2)
        assert (".v3." in mod.__name__) == (kernels.simd_variant == "v3"), family
    assert (kernels.simd_variant == "v3") <= (level >= 1)


def test_the_conv_planner_uses_the_selected_level():
    # LeNet conv2: a stride-1 gemm whose tiles come from the selected level or one below
    # it (an AVX-512 CPU may run AVX2 tiles faster: the planner times them), never above;
    # a forced tile of the selected level is that level's
    x, w, y = (8, 6, 14, 14), (16, 6, 5, 5), (8, 16, 10, 10)
    mod = _bound_modules()["conv"]
    level = kernels.SIMD_LEVELS[kernels.simd_path]
    info = mod._plan_info("forward", x, w, y, 1, 1, 0, 0, 1, 1, 1, 1)
    assert min(level, 1) <= info["simd"] <= level
    forced = {2: (8, 48), 1: (4, 24)}.get(level)
    if forced is not None:
        mod._force_paths(gemm_tile=forced)
        try:
            info = mod._plan_info("forward", x, w, y, 1, 1, 0, 0, 1, 1, 1, 1)
        finally:
            mod._force_paths()
        assert (info["simd"], info["tile"]) == (level, forced)


def _small_run():
    """conv forward/backward, linear forward, a 2x2 max pool: kernels.* against reference"""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 9, 10)).astype(np.float32)
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    g = rng.standard_normal((2, 8, 9, 10)).astype(np.float32)
    p = (1, 1, 1, 1, 1, 1, 1)
    for mod in (kernels, ref_conv):
        out = np.empty((2, 8, 9, 10), np.float32)
        gw = np.empty_like(w)
        mod.conv2d_forward(x, w, b, out, *p, True, None, 1)
        mod.conv2d_backward_weight(x, g, gw, *p, None, 1)
        if mod is kernels:
            got = (out, gw)
    np.testing.assert_allclose(got[0], out, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got[1], gw, rtol=1e-4, atol=1e-3)
    a = rng.standard_normal((5, 40)).astype(np.float32)
    lw = rng.standard_normal((7, 40)).astype(np.float32)
    outs = []
    for mod in (kernels, ref_linear):
        o = np.empty((5, 7), np.float32)
        mod.linear_forward(a, lw, None, o, False, 1)
        outs.append(o)
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-4, atol=1e-4)
    px = rng.standard_normal((1, 2, 8, 20)).astype(np.float32)
    pooled = []
    for mod in (kernels, ref_pool):
        o = np.empty((1, 2, 4, 10), np.float32)
        i = np.empty((1, 2, 4, 10), np.int64)
        mod.max_pool2d_forward(px, o, i, 2, 2, 2, 2, 0, 0, 1, 1, 1)
        pooled.append((o, i))
    np.testing.assert_array_equal(pooled[0][0], pooled[1][0])
    np.testing.assert_array_equal(pooled[0][1], pooled[1][1])


@pytest.mark.parametrize("path", kernels.simd_paths())
def test_use_simd_switches_every_family_and_matches_reference(path):
    before = kernels.simd_path
    try:
        assert kernels.use_simd(path) == path
        assert kernels.simd_path == path
        for family, mod in _bound_modules().items():
            if hasattr(mod, "_simd_level"):
                assert mod._simd_level() == min(kernels.SIMD_LEVELS[path], mod.SIMD_KERNELS_TOP), family
        _small_run()
    finally:
        kernels.use_simd(before)
    assert kernels.simd_path == before


def _lenet_step(model, call, x, y):
    model.zero_grad()
    loss = fastgrad.nn.functional.cross_entropy(call(x), y)
    loss.backward()
    return [loss.data.copy()] + [p.grad.data.copy() for p in model.parameters()]


@pytest.mark.skipif(len(kernels.simd_paths()) < 2, reason="this CPU runs one SIMD path")
def test_switching_paths_between_steps_replans_every_convolution():
    # the convolutions' workspaces differ per path: a Step, a Sequential's plan or a
    # compiled plan made on one path must not run the next path with its sizes
    nn = fastgrad.nn
    fastgrad.manual_seed(0)
    rng = np.random.default_rng(0)
    x = fastgrad.tensor(rng.standard_normal((64, 1, 28, 28)).astype(np.float32))
    y = fastgrad.tensor(rng.integers(0, 10, 64))
    layers = [nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 64, 3, padding=1)]
    layers += [nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1, stride=2), nn.Flatten(), nn.Linear(64 * 7 * 7, 10)]
    model = nn.Sequential(*layers)  # replays a plan of itself
    compiled = fastgrad.compile(model)
    before = kernels.simd_path
    try:
        runs = {}
        for path in kernels.simd_paths() * 2:
            kernels.use_simd(path)
            for name, call in (("planned", model), ("layers", lambda t: _by_layer(model, t)), ("compiled", compiled)):
                runs.setdefault(name, []).append(_lenet_step(model, call, x, y))
    finally:
        kernels.use_simd(before)
    first = runs["planned"][0]
    for name, results in runs.items():
        for got in results:
            for a, b in zip(got, first):
                np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5, err_msg=name)


def _by_layer(model, t):
    for layer in model:
        t = layer(t)
    return t


def _config_lines(lines):
    """show_config's printout as a dict"""
    return {k.strip(): v.strip() for k, _, v in (line.partition(": ") for line in lines) if v}


def _child(env_simd, code):
    """Run ``code`` in a fresh interpreter that imports the fastgrad this test imported: from
    its parent folder, and not from the working directory (a source checkout without the
    compiled modules, when the suite runs against an installed copy)."""
    home = os.path.dirname(os.path.dirname(os.path.abspath(fastgrad.__file__)))
    env = dict(os.environ, FASTGRAD_SIMD=env_simd, PYTHONPATH=home)
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, cwd=os.path.dirname(home)
    )


@pytest.mark.parametrize("path", kernels.simd_paths())
def test_fastgrad_simd_forces_the_path_at_import(path):
    code = (
        "import fastgrad, sys\nfrom fastgrad import kernels\n"
        "mod = sys.modules[kernels.conv2d_forward.__module__]\n"
        "print(kernels.simd_path, mod._simd_level(), mod.__name__)\n"
        "fastgrad.show_config()\n"
    )
    run = _child(path, code)
    assert run.returncode == 0, run.stderr
    first, *config = run.stdout.splitlines()
    name, level, module = first.split()
    assert name == path and int(level) == kernels.SIMD_LEVELS[path]
    assert (".v3." in module) == (path != "baseline" and HAVE_V3)
    shown = _config_lines(config)
    assert shown["simd path"].strip() == path
    assert f"conv {path}" in shown["family levels"]


def test_a_path_the_cpu_lacks_is_refused_clearly():
    missing = [p for p in kernels.SIMD_PATHS if p not in kernels.simd_paths()]
    if not missing:
        pytest.skip("this CPU runs every SIMD path")
    for path in missing:
        run = _child(path, "import fastgrad")
        assert run.returncode == 1, (run.returncode, run.stderr)  # an exception, not SIGILL
        assert f"cannot run the {path} path" in run.stderr
        assert "RuntimeError" in run.stderr
        before = kernels.simd_path
        with pytest.raises(RuntimeError, match=f"cannot run the {path} path"):
            kernels.use_simd(path)
        assert kernels.simd_path == before


def test_an_unknown_path_is_refused():
    run = _child("sse9", "import fastgrad")
    assert run.returncode == 1 and "FASTGRAD_SIMD='sse9': expected one of" in run.stderr
    with pytest.raises(ValueError, match="expected one of"):
        kernels.use_simd("avx3")


def test_modules_refuse_levels_they_cannot_run():
    top = kernels.runtime.cpu_simd_level()
    base = importlib.import_module("fastgrad._ext._conv")
    before = base._simd_level()
    if top < 2:
        with pytest.raises(ValueError, match="cannot run"):
            base._select_simd(top + 1)
        assert base._simd_level() == before
    if top >= 1:
        try:
            v3 = importlib.import_module("fastgrad._ext.v3._conv")
        except ImportError:
            return
        with pytest.raises(ValueError, match="build variant"):
            v3._select_simd(0)


def test_show_config_reports_the_path_that_runs(capsys):
    fastgrad.show_config()
    lines = _config_lines(capsys.readouterr().out.splitlines())
    assert lines["simd path"].strip() == kernels.simd_path
    assert lines["simd paths (cpu)"].strip() == ", ".join(kernels.simd_paths())
    names = {level: path for path, level in kernels.SIMD_LEVELS.items()}
    modules = _bound_modules()
    for family in ("conv", "linear", "pool"):
        module = modules[family]
        runs = min(kernels.SIMD_LEVELS[kernels.simd_path], module.SIMD_KERNELS_TOP)
        assert f"{family} {names[runs]}" in lines["family levels"]


def test_each_module_reports_the_level_its_code_has():
    """A module whose fastest code is AVX2 reports avx2 on an AVX-512 CPU, not the level
    selected; conv has AVX-512 code."""
    selected = kernels.SIMD_LEVELS[kernels.simd_path]
    tops = {}
    for family, module in _bound_modules().items():
        if hasattr(module, "_simd_level"):
            tops[family] = module.SIMD_KERNELS_TOP
            assert module._simd_level() == min(selected, module.SIMD_KERNELS_TOP), family
    assert tops["conv"] == 2 and tops["linear"] == tops["pool"] == 1
