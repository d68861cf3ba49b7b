"""Compiled conv2d kernels against their pure-Python twins, on a grid of geometries, on
every internal path (direct and general, SIMD and portable), with threads (the same bits
for every thread count), and with bad arrays (which must raise, naming the kernel)."""

import importlib
import itertools
import sys

import numpy as np
import pytest

from fastgrad import kernels
from fastgrad.reference import conv as reference


def _compiled_module():
    if kernels.backend == "compiled":
        return sys.modules[kernels.conv2d_forward.__module__]
    try:
        return importlib.import_module("fastgrad._ext._conv")
    except ImportError:
        pytest.skip("compiled conv kernels not built", allow_module_level=True)


compiled = _compiled_module()

DTYPES = [np.float32, np.float64]
TOL = {np.float32: dict(rtol=2e-5, atol=2e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}


def out_size(n, pad, extra, k, dil, stride):
    return (n + 2 * pad + extra - dil * (k - 1) - 1) // stride + 1


class Case:
    """One convolution: shapes and the kernels' scalar arguments."""

    def __init__(self, n, c, h, w, co, kh, kw, stride=(1, 1), pad=(0, 0), dil=(1, 1), groups=1, extra=(0, 0)):
        self.x_shape = (n, c, h, w)
        self.w_shape = (co, c // groups, kh, kw)
        ho = out_size(h, pad[0], extra[0], kh, dil[0], stride[0])
        wo = out_size(w, pad[1], extra[1], kw, dil[1], stride[1])
        self.y_shape = (n, co, ho, wo)
        self.params = (stride[0], stride[1], pad[0], pad[1], dil[0], dil[1], groups)

    def arrays(self, dtype, seed=0):
        rng = np.random.default_rng(seed)
        x = rng.standard_normal(self.x_shape).astype(dtype)
        w = rng.standard_normal(self.w_shape).astype(dtype)
        b = rng.standard_normal(self.w_shape[0]).astype(dtype)
        g = rng.standard_normal(self.y_shape).astype(dtype)
        return x, w, b, g

    def __repr__(self):
        return f"x{self.x_shape}-w{self.w_shape}-p{self.params}"


# A grid over stride 1/2/3, padding 0/1/2 and 'same' (incl. the asymmetric 'same' of an
# even kernel: one extra row/column at the bottom/right), dilation 1/2, groups 1/2/C_in,
# non-square inputs and kernels, batch 1 and > 1. Kept small: the reference is slow.
CASES = [
    Case(2, 3, 7, 9, 4, 3, 3),
    Case(1, 3, 7, 9, 4, 3, 3, pad=(1, 1)),
    Case(2, 2, 8, 6, 3, 3, 2, pad=(2, 1)),
    Case(2, 4, 9, 7, 6, 3, 3, stride=(2, 2), pad=(1, 1)),
    Case(1, 2, 10, 8, 3, 2, 3, stride=(3, 3), pad=(2, 0)),
    Case(2, 3, 9, 10, 2, 3, 3, stride=(3, 1), pad=(1, 2)),
    Case(2, 2, 7, 11, 4, 3, 3, stride=(1, 2), pad=(0, 1)),
    Case(2, 3, 9, 9, 4, 3, 3, dil=(2, 2), pad=(2, 2)),
    Case(1, 2, 8, 10, 3, 2, 3, dil=(2, 1), pad=(1, 0)),
    Case(2, 4, 8, 7, 6, 3, 3, groups=2, pad=(1, 1)),
    Case(2, 4, 7, 8, 4, 3, 3, groups=4, pad=(1, 1)),  # depthwise
    Case(2, 3, 8, 7, 6, 3, 2, groups=3, stride=(2, 1), pad=(1, 0)),  # depthwise x2
    Case(2, 2, 6, 8, 3, 4, 4, pad=(1, 1), extra=(1, 1)),  # 'same', even kernel
    Case(1, 2, 7, 6, 2, 2, 3, pad=(0, 1), extra=(1, 0)),  # 'same' (2, 3)
    Case(2, 3, 6, 6, 4, 3, 3, dil=(2, 2), pad=(2, 2)),  # 'same', dilated
    Case(2, 1, 12, 12, 6, 5, 5, pad=(2, 2)),  # LeNet conv1, small
    Case(2, 6, 9, 9, 5, 5, 5),  # LeNet conv2, small
    Case(1, 3, 5, 5, 4, 1, 1),  # 1x1
    Case(2, 2, 4, 5, 3, 4, 5),  # kernel = image rows
    Case(1, 2, 3, 3, 2, 3, 3, pad=(4, 3)),  # padding > kernel
    Case(1, 1, 1, 1, 2, 1, 1),  # 1x1 image
    Case(2, 2, 9, 8, 3, 3, 3, stride=(2, 2), dil=(2, 1), pad=(2, 1), extra=(1, 1)),
]


def run_all(mod, case, x, w, b, g, relu=False, n_threads=1, workspace=True):
    """Every kernel of `mod` on one case; outputs start as garbage (kernels write fresh)."""
    dtype = x.dtype
    out = np.full(case.y_shape, np.nan, dtype)
    gx = np.full(case.x_shape, np.nan, dtype)
    gw = np.full(case.w_shape, np.nan, dtype)
    gb = np.full(case.w_shape[0], np.nan, dtype)

    def ws(kind):
        if not workspace:
            return None
        size = mod.conv2d_workspace_size(kind, case.x_shape, case.w_shape, case.y_shape, *case.params, n_threads)
        return np.full(size, np.nan, dtype)  # contents on entry must not matter

    mod.conv2d_forward(x, w, b, out, *case.params, relu, ws("forward"), n_threads)
    mod.conv2d_backward_input(g, w, gx, *case.params, ws("backward_input"), n_threads)
    mod.conv2d_backward_weight(x, g, gw, *case.params, ws("backward_weight"), n_threads)
    mod.conv2d_backward_bias(g, gb, n_threads)
    return out, gx, gw, gb


def assert_same(got, want, dtype, names=("out", "grad_x", "grad_weight", "grad_bias")):
    for name, a, e in zip(names, got, want):
        scale = max(1.0, float(np.max(np.abs(e)))) if e.size else 1.0
        np.testing.assert_allclose(a, e, rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["atol"] * scale, err_msg=name)


_expected_cache = {}


def expected(case, dtype, relu, seed=0):
    key = (repr(case), dtype, relu, seed)
    if key not in _expected_cache:
        x, w, b, g = case.arrays(dtype, seed)
        _expected_cache[key] = run_all(reference, case, x, w, b, g, relu)
    return _expected_cache[key]


class ForcedPaths:
    """The compiled conv module forced onto internal paths. ``_set_simd(level)`` runs
    ``level`` (capped at what the CPU runs: 2 AVX-512, 1 AVX2, 0 portable) on the bound
    module when its build has that level, else on the baseline build (the x86-64-v3
    build has no portable level); other attributes are the current module's."""

    def __init__(self):
        base = importlib.import_module("fastgrad._ext._conv")
        self._modules = [compiled] + ([base] if base is not compiled else [])
        self._saved = [m._simd_level() for m in self._modules]
        self._mod = compiled
        self._set_simd(99)

    def _set_simd(self, level):
        level = max(0, min(level, kernels.SIMD_LEVELS[kernels.simd_paths()[0]]))
        for mod in self._modules:
            try:
                mod._select_simd(level)
            except ValueError:  # this build compiles everything above that level
                continue
            self._mod = mod
            return
        raise AssertionError(f"no compiled conv module runs SIMD level {level}")

    def _force_paths(self, **paths):
        for mod in self._modules:
            mod._force_paths(**paths)

    def restore(self):
        for mod, level in zip(self._modules, self._saved):
            mod._force_paths()
            mod._select_simd(level)

    def __getattr__(self, name):
        return getattr(self._mod, name)


@pytest.fixture
def paths():
    """Force one of the compiled module's internal paths; restore the cost model after."""
    forced = ForcedPaths()
    yield forced
    forced.restore()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=repr)
def test_compiled_matches_reference(case, dtype):
    x, w, b, g = case.arrays(dtype)
    relu = case.params[0] == 1  # the fused ReLU on half of the grid
    assert_same(run_all(compiled, case, x, w, b, g, relu), expected(case, dtype, relu), dtype)


# Every stride-1 case again on each forced path: input gradient direct or gemm + col2im,
# weight gradient by flat or row-by-row dots, SIMD or portable loops.
STRIDE1 = [c for c in CASES if c.params[:2] == (1, 1)]


@pytest.mark.parametrize(
    "input_direct,flat_dot,simd",
    [(True, True, 2), (False, False, 2), (True, False, 1), (False, True, 1), (True, True, 0), (False, False, 0)],
)
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_path_matches_reference(paths, input_direct, flat_dot, simd, dtype):
    paths._force_paths(input_direct=input_direct, flat_dot=flat_dot)
    paths._set_simd(simd)  # 2: AVX-512, 1: AVX2 (capped at what the CPU has), 0: portable
    for case in STRIDE1:
        x, w, b, g = case.arrays(dtype)
        assert_same(run_all(paths, case, x, w, b, g, True), expected(case, dtype, True), dtype)


@pytest.mark.parametrize("simd", [1, 0])
@pytest.mark.parametrize("dtype", DTYPES)
def test_general_path_other_simd_levels(paths, simd, dtype):
    paths._set_simd(simd)
    for case in CASES:
        if case.params[:2] != (1, 1):
            x, w, b, g = case.arrays(dtype)
            assert_same(run_all(paths, case, x, w, b, g), expected(case, dtype, False), dtype)


# Every strided case on each weight-gradient path: im2col + dots, or direct over phase
# planes (undilated ones) by row-by-row, flat or channel-lane dots, SIMD or portable loops.
STRIDED = [c for c in CASES if c.params[:2] != (1, 1)]


@pytest.mark.parametrize(
    "weight_direct,flat_dot,lanes_dot,simd",
    [
        (True, False, None, 2),
        (True, True, None, 2),
        (True, None, True, 2),
        (True, False, None, 1),
        (True, True, None, 1),
        (True, None, True, 1),
        (True, False, None, 0),
        (False, None, None, 1),
    ],
)
@pytest.mark.parametrize("dtype", DTYPES)
def test_strided_weight_gradient_paths_match_reference(paths, weight_direct, flat_dot, lanes_dot, simd, dtype):
    paths._force_paths(weight_direct=weight_direct, flat_dot=flat_dot, lanes_dot=lanes_dot)
    paths._set_simd(simd)
    for case in STRIDED:
        x, w, b, g = case.arrays(dtype)
        assert_same(run_all(paths, case, x, w, b, g), expected(case, dtype, False), dtype)


def forced_path_matches_reference(paths, simd, dtype, cases, kind, runs_it, **force):
    """Each case on a forced path (``force``: _force_paths arguments) at SIMD level
    ``simd``: the plan of ``kind`` takes it (``runs_it(plan_info)``) and every kernel
    matches the reference."""
    paths._force_paths(**force)
    paths._set_simd(simd)
    for case in cases:
        info = paths._plan_info(kind, case.x_shape, case.w_shape, case.y_shape, *case.params, 1)
        assert runs_it(info), (case, info)
        x, w, b, g = case.arrays(dtype)
        assert_same(run_all(paths, case, x, w, b, g), expected(case, dtype, False), dtype)


@pytest.mark.parametrize("simd", [2, 1, 0])
@pytest.mark.parametrize("dtype", DTYPES)
def test_strided_input_gradient_by_phases_matches_reference(paths, simd, dtype):
    # the stride-2 geometries below with the input gradient forced onto the four phase
    # gemms
    forced_path_matches_reference(
        paths, simd, dtype, PHASE_CASES, "backward_input", lambda info: info["path"] == "phases", input_phases=True
    )


@pytest.mark.parametrize("simd", [2, 1, 0])
@pytest.mark.parametrize("dtype", DTYPES)
def test_channels_along_lanes_match_reference(paths, simd, dtype):
    # every geometry the direct forward runs (stride 1, or undilated over phase planes),
    # and the direct stride-1 input gradient, with the output channels along the lanes:
    # panels of one, two or four vectors of channels, row tiles past the row's end,
    # groups, the fused ReLU; the portable twin at level 0 and for float64
    paths._set_simd(simd)
    paths._force_paths(channel_lanes=True, input_direct=True)
    level = paths._simd_level()
    direct = [c for c in CASES + PHASE_CASES + LANE_CASES if c.params[:2] == (1, 1) or c.params[4:6] == (1, 1)]
    for case in direct:
        info = paths._plan_info("forward", case.x_shape, case.w_shape, case.y_shape, *case.params, 1)
        # (one output channel per group runs the row-blocked gemm: a lane of sixteen)
        lanes = level >= 1 and not info["rowblock"] and case.params[1] <= 2  # column stride 1 or 2
        assert info["path"] == ("lanes" if lanes else "direct"), (case, info)
        if case is LANE_CASES[4] or case is LANE_CASES[5]:
            assert info["in_place"] == lanes, (case, info)
        if case.params[:2] == (1, 1):  # the direct input gradient: the same kernel
            info = paths._plan_info("backward_input", case.x_shape, case.w_shape, case.y_shape, *case.params, 1)
            assert info["path"] == ("lanes" if level >= 1 and not info["rowblock"] else "direct"), (case, info)
        x, w, b, g = case.arrays(dtype)
        assert_same(run_all(paths, case, x, w, b, g, True), expected(case, dtype, True), dtype)


# Every channel-lane tile of each SIMD level, (channels, positions, column stride), as
# conv_kernels.h compiles them.
LANE_TILES = {
    1: [(8, 4, 1), (8, 5, 1), (8, 6, 1), (8, 7, 1), (8, 8, 1), (8, 10, 1), (8, 12, 1), (16, 4, 1), (16, 5, 1)]
    + [(16, 6, 1), (8, 4, 2), (8, 8, 2), (16, 4, 2)],
    2: [(16, 4, 1), (16, 5, 1), (16, 6, 1), (16, 7, 1), (16, 8, 1), (16, 10, 1), (16, 12, 1), (16, 14, 1)]
    + [(16, 16, 1), (32, 4, 1), (32, 5, 1), (32, 6, 1), (32, 7, 1), (32, 8, 1), (32, 10, 1), (32, 12, 1)]
    + [(64, 3, 1), (64, 4, 1), (64, 5, 1), (64, 6, 1), (16, 8, 2), (16, 16, 2), (32, 4, 2), (32, 8, 2), (64, 4, 2)],
}


@pytest.mark.parametrize("level,tile", [(lv, t) for lv, ts in LANE_TILES.items() for t in ts], ids=str)
def test_every_channel_lane_tile_matches_reference(paths, level, tile):
    paths._set_simd(level)
    if paths._simd_level() != level:
        pytest.skip(f"this CPU does not run SIMD level {level}")
    channels, positions, stride = tile
    paths._force_paths(channel_lanes=True, gemm_tile=(channels, positions), input_direct=True)
    cases = [c for c in CASES + LANE_CASES if c.params[1] == stride and (stride == 1 or c.params[4:6] == (1, 1))]
    for case in cases[::2]:
        info = paths._plan_info("forward", case.x_shape, case.w_shape, case.y_shape, *case.params, 1)
        assert (info["path"], info["tile"]) == ("lanes", (channels, positions)) or info["rowblock"], (case, info)
        x, w, b, g = case.arrays(np.float32)
        assert_same(run_all(paths, case, x, w, b, g, True), expected(case, np.float32, True), np.float32)


@pytest.mark.parametrize("simd", [2, 1, 0])
def test_forward_by_im2col_everywhere_matches_reference(paths, simd):
    # the general forward (im2col + gemm) on every geometry, not only the dilated
    # strided ones the planner sends there
    forced_path_matches_reference(
        paths, simd, np.float32, CASES, "forward", lambda info: info["path"] == "im2col", forward_direct=False
    )


@pytest.mark.parametrize("simd", [2, 1])
def test_forward_lanes_and_gemm_give_the_same_bits(paths, simd):
    # both sum each output's depth entries in the same order from +0 (padding adds exact
    # zeros), so which one the planner takes never changes a result
    paths._set_simd(simd)
    for case in LANE_CASES + [Case(3, 6, 14, 14, 16, 5, 5), Case(2, 8, 8, 8, 64, 3, 3, pad=(1, 1))]:
        x, w, b, _ = case.arrays(np.float32)
        x[0, 0, 1, 1] = np.nan  # NaN stays NaN through the ReLU either way
        for bias, relu in ((b, True), (None, True), (b, False), (None, False)):
            outs = []
            for lanes in (False, True):
                paths._force_paths(channel_lanes=lanes)
                out = np.full(case.y_shape, np.nan, np.float32)
                paths.conv2d_forward(x, w, bias, out, *case.params, relu, None, 1)
                outs.append(out)
            # the same bits, signed zeros included (a view as integers tells -0 from +0)
            np.testing.assert_array_equal(outs[0].view(np.int32), outs[1].view(np.int32), err_msg=repr(case))


# More output channels than one vector holds (panels of 2 and 4 vectors, and a partial
# one), and rows wider than one tile.
LANE_CASES = [
    Case(2, 3, 9, 21, 20, 3, 3, pad=(1, 1)),
    Case(1, 5, 8, 12, 40, 3, 3, stride=(2, 2), pad=(1, 1)),
    Case(2, 4, 6, 9, 70, 1, 1),
    Case(1, 2, 17, 17, 33, 5, 5, pad=(2, 2), groups=1),
    Case(2, 8, 16, 16, 32, 1, 1, stride=(2, 2)),  # read in place
    Case(2, 6, 10, 10, 16, 5, 5),  # read in place, stride 1
    Case(1, 3, 9, 13, 20, 3, 3, stride=(2, 2)),  # 6 wide: not in place with AVX2's tiles
    Case(1, 4, 11, 12, 16, 3, 3, stride=(2, 1), pad=(1, 0)),
    Case(2, 4, 9, 9, 24, 2, 2, stride=(2, 2), extra=(1, 1)),  # 'same'-like extra row: padded
]


# Stride-2 undilated geometries for the phase path: even and odd inputs, kernels of 1 to 5
# (a 1x1 or 2x2 leaves phases without taps: zeros), padding 0 to 2, uneven in height
# and width, groups, and the output with one more row/column than the floor gives.
PHASE_CASES = [
    Case(2, 4, 9, 7, 6, 3, 3, stride=(2, 2), pad=(1, 1)),
    Case(2, 3, 8, 8, 14, 3, 3, stride=(2, 2), pad=(1, 1)),
    Case(1, 4, 8, 10, 5, 1, 1, stride=(2, 2)),
    Case(2, 2, 7, 6, 3, 2, 2, stride=(2, 2)),
    Case(1, 3, 11, 9, 4, 5, 5, stride=(2, 2), pad=(2, 2)),
    Case(2, 3, 9, 8, 4, 4, 3, stride=(2, 2), pad=(2, 0)),
    Case(2, 4, 8, 9, 6, 3, 3, stride=(2, 2), pad=(1, 1), groups=2),
    Case(1, 2, 8, 8, 3, 3, 3, stride=(2, 2), pad=(1, 1), extra=(1, 1)),
]


def test_paths_are_chosen_as_documented():
    c = Case(8, 6, 14, 14, 16, 5, 5)  # LeNet conv2: 10 of a plane row's 14 columns kept
    info = compiled._plan_info("forward", c.x_shape, c.w_shape, c.y_shape, *c.params, 1)
    assert info["path"] == ("lanes" if compiled._simd_level() >= 1 else "direct")
    wide = Case(8, 16, 32, 32, 16, 3, 3, pad=(1, 1))  # 32 of 34 kept: the gemm
    assert compiled._plan_info("forward", wide.x_shape, wide.w_shape, wide.y_shape, *wide.params, 1)["path"] == "direct"
    few = Case(8, 1, 28, 28, 6, 5, 5, pad=(2, 2))  # 6 channels: most of a lane vector idle
    assert compiled._plan_info("forward", few.x_shape, few.w_shape, few.y_shape, *few.params, 1)["path"] == "direct"
    # ResNet's 1x1 stride-2 shortcut: no padded multiply-add by lanes, none of the phase
    # planes' gather, its input read in place
    short = Case(8, 32, 16, 16, 64, 1, 1, stride=(2, 2))
    info = compiled._plan_info("forward", short.x_shape, short.w_shape, short.y_shape, *short.params, 1)
    assert (info["path"], info["in_place"]) == (("lanes", True) if compiled._simd_level() >= 1 else ("direct", False))
    s = Case(8, 6, 14, 14, 16, 5, 5, stride=(2, 2))  # undilated: over phase planes
    info = compiled._plan_info("forward", s.x_shape, s.w_shape, s.y_shape, *s.params, 1)
    assert info["path"] in ("direct", "lanes")  # 5 of 7 columns kept: lanes where SIMD
    d = Case(8, 6, 14, 14, 16, 3, 3, stride=(2, 2), dil=(2, 2))
    info = compiled._plan_info("forward", d.x_shape, d.w_shape, d.y_shape, *d.params, 1)
    assert info["path"] == "im2col"

    # the input gradient of a stride-2 undilated one: by phases where the cost model
    # expects them faster (Zen 3: 16->32 on 32x32 1.32x, 32->64 on 16x16 1.22x), else gemm
    # + col2im (4x4 outputs: 0.83x; a 1x1: 0.5x); dilated ones always col2im
    def input_path(c):
        return compiled._plan_info("backward_input", c.x_shape, c.w_shape, c.y_shape, *c.params, 1)["path"]

    if compiled._simd_level() == 1:  # the choices measured (AVX2 tiles' costs)
        assert input_path(s) == "phases"
        assert input_path(Case(64, 16, 32, 32, 32, 3, 3, stride=(2, 2), pad=(1, 1))) == "phases"
        assert input_path(Case(64, 32, 16, 16, 64, 3, 3, stride=(2, 2), pad=(1, 1))) == "phases"
        assert input_path(Case(64, 64, 8, 8, 128, 3, 3, stride=(2, 2), pad=(1, 1))) == "col2im"
        assert input_path(Case(64, 32, 16, 16, 64, 1, 1, stride=(2, 2))) == "col2im"
    assert input_path(d) == "col2im"
    # the weight gradient: direct over phase planes when strided and undilated, except a
    # strided 1x1 (its one phase plane is its im2col matrix)
    assert compiled._plan_info("backward_weight", s.x_shape, s.w_shape, s.y_shape, *s.params, 1)["path"] == "direct"
    assert compiled._plan_info("backward_weight", d.x_shape, d.w_shape, d.y_shape, *d.params, 1)["path"] == "im2col"
    one = Case(8, 16, 16, 16, 32, 1, 1, stride=(2, 2))
    info = compiled._plan_info("backward_weight", one.x_shape, one.w_shape, one.y_shape, *one.params, 1)
    assert info["path"] == "im2col"


# Every gemm register tile of each SIMD level on a third of the grid (forward and input
# gradient; the cost model picks some shapes only for rare geometries).
GEMM_TILES = {
    1: [(6, 16), (4, 24), (3, 32), (2, 48), (1, 96), (12, 8)],
    2: [(8, 48), (6, 64), (4, 96), (3, 128), (2, 192), (1, 384), (6, 16), (8, 16)],
}


@pytest.mark.parametrize("level,tile", [(lv, t) for lv, ts in GEMM_TILES.items() for t in ts], ids=str)
def test_every_gemm_tile_matches_reference(paths, level, tile):
    paths._set_simd(level)
    if paths._simd_level() != level:
        pytest.skip(f"this CPU does not run SIMD level {level}")
    paths._force_paths(gemm_tile=tile)
    dtype = np.float32  # the SIMD tiles are float32 only
    for case in CASES[::3]:
        x, w, b, g = case.arrays(dtype)
        info = paths._plan_info("forward", case.x_shape, case.w_shape, case.y_shape, *case.params, 1)
        assert info["tile"] == tile or info["rowblock"], info
        assert_same(run_all(paths, case, x, w, b, g, True), expected(case, dtype, True), dtype)


@pytest.mark.parametrize("simd", [2, 1, 0])
def test_gemm_tiles_are_planned_with_rates_timed_on_this_cpu(paths, simd):
    # The cost model weighs each register tile by its rate relative to AVX2 6x16's depth
    # loop and its fixed cost per call, timed once on this CPU for every level it runs;
    # the portable loops plan with fixed ones.
    paths._set_simd(simd)
    level = paths._simd_level()
    rates = paths._tile_rates()
    assert set(rates) == {(lv, *tile) for lv, tiles in GEMM_TILES.items() if lv <= max(level, 1) for tile in tiles}
    if level == 0:
        assert all(rate == fallback and over == over_fallback for rate, over, fallback, over_fallback in rates.values())
        return
    assert rates[(1, 6, 16)][0] == pytest.approx(1.0)
    assert all(0.05 < rate < 20 and 0 <= over < 1e5 for rate, over, _, _ in rates.values()), rates
    assert any(rate != fallback for rate, _, fallback, _ in rates.values()), rates  # timed, not the fallback


@pytest.mark.parametrize("simd", [2, 1, 0])
def test_dot_tiles_are_planned_with_rates_timed_on_this_cpu(paths, simd):
    # The weight gradient's dot tiles, four per level, weighed by their speed on this
    # CPU relative to the level's first shape; all alike for the portable loops. The
    # plan runs one of the level's shapes.
    paths._set_simd(simd)
    level = paths._simd_level()
    rates = paths._dot_rates()
    assert len(rates) == 4 and {lv for lv, _, _ in rates} == {max(level, 1)}
    if level == 0:
        assert set(rates.values()) == {1.0}
    else:
        assert rates[next(iter(rates))] == 1.0
        assert all(0.05 < rate < 20 for rate in rates.values()), rates
        assert len(set(rates.values())) > 1, rates  # timed: shapes differ
    c = Case(8, 1, 28, 28, 6, 5, 5, pad=(2, 2))  # LeNet conv1
    info = paths._plan_info("backward_weight", c.x_shape, c.w_shape, c.y_shape, *c.params, 1)
    assert (max(level, 1), *info["tile"]) in rates


@pytest.mark.parametrize("dtype", DTYPES)
def test_tall_tile_on_narrow_planes_matches_reference(paths, dtype):
    # 8x8 planes on AVX2's 12x8 tile, which the cost model runs row-wise (one tile per
    # output row, no dropped columns): 20 output (or input) channels make a full and a
    # partial panel, forward and input gradient alike. The tile is forced: whether the
    # model picks it on its own depends on the rates this CPU's tiles were timed at.
    paths._set_simd(1)
    paths._force_paths(gemm_tile=(12, 8))
    case = Case(3, 20, 8, 8, 20, 3, 3, pad=(1, 1))
    if paths._simd_level() == 1:
        for kind in ("forward", "backward_input"):
            info = paths._plan_info(kind, case.x_shape, case.w_shape, case.y_shape, *case.params, 1)
            assert info["tile"] == (12, 8) and info["rowwise"], (kind, info)
    x, w, b, g = case.arrays(dtype)
    assert_same(run_all(paths, case, x, w, b, g, True), run_all(reference, case, x, w, b, g, True), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_threads_match_reference_and_repeat_exactly(dtype):
    # big enough for a parallel region (the kernels thread only above ~3 MFLOP)
    case = Case(8, 6, 16, 15, 16, 3, 3, pad=(1, 1))
    for kind in ("forward", "backward_input", "backward_weight"):
        assert compiled._plan_info(kind, case.x_shape, case.w_shape, case.y_shape, *case.params, 2)["threads"] == 2
    x, w, b, g = case.arrays(dtype)
    two = run_all(compiled, case, x, w, b, g, True, n_threads=2)
    if dtype == np.float64:  # the reference is slow: once
        assert_same(two, expected(case, dtype, True), dtype)
    again = run_all(compiled, case, x, w, b, g, True, n_threads=2)
    for a, b_ in zip(two, again):
        np.testing.assert_array_equal(a, b_)  # identical run to run at a fixed thread count
    strided = Case(8, 6, 31, 30, 16, 3, 3, stride=(2, 2), pad=(1, 1))
    x, w, b, g = strided.arrays(dtype)
    assert_same(
        run_all(compiled, strided, x, w, b, g, n_threads=2), run_all(compiled, strided, x, w, b, g, n_threads=1), dtype
    )


def test_weight_gradient_in_uneven_chunks_matches_reference(paths):
    # 7 images in blocks of 2 (the last of 1) and 3 chunks of whole blocks (2, 2 and 3
    # images), each summed on its own and then added; flat dots on every SIMD path (their
    # blocks are of 2 images here)
    paths._force_paths(flat_dot=True)
    compiled = paths
    case = Case(7, 8, 14, 14, 16, 3, 3, pad=(1, 1))
    info = compiled._plan_info("backward_weight", case.x_shape, case.w_shape, case.y_shape, *case.params, 2)
    assert (info["images_per_block"], info["blocks"], info["chunks"]) == (2, 4, 3)
    assert info["threads"] == 2
    x, w, b, g = case.arrays(np.float64)
    want = np.empty(case.w_shape)
    reference.conv2d_backward_weight(x, g, want, *case.params, None, 1)
    for n_threads in (1, 2):
        got = np.full(case.w_shape, np.nan)
        compiled.conv2d_backward_weight(x, g, got, *case.params, None, n_threads)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())


def _thread_cases():
    """Random geometries at batch 1, 7 and 64 (stride 1 and 2, padding, dilation, groups),
    plus layers big enough to be threaded at batch 7 (~3 MFLOP) and the LeNet-5 and a
    CIFAR-sized layer at batch 64."""
    rng = np.random.default_rng(2024)
    cases = []
    for n in (1, 7, 64):
        for _ in range(4):
            groups = int(rng.choice([1, 1, 2]))
            c, co = groups * int(rng.integers(1, 5)), groups * int(rng.integers(2, 9))
            kh, kw = (int(v) for v in rng.integers(1, 6, 2))
            h, w = (int(v) for v in rng.integers(12, 25, 2))
            stride = (int(rng.choice([1, 1, 2])),) * 2
            dil = (int(rng.choice([1, 1, 2])),) * 2
            pad = (int(rng.integers(0, 3)), int(rng.integers(0, 3)))
            cases.append(Case(n, c, h, w, co, kh, kw, stride, pad, dil, groups))
    cases += [
        Case(7, 8, 14, 14, 16, 3, 3, pad=(1, 1)),
        Case(7, 8, 29, 29, 16, 3, 3, stride=(2, 2), pad=(1, 1)),
        Case(64, 1, 28, 28, 6, 5, 5, pad=(2, 2)),
        Case(64, 6, 14, 14, 16, 5, 5),
        Case(64, 16, 12, 12, 32, 3, 3, pad=(1, 1)),
    ]
    return cases


THREAD_CASES = _thread_cases()


@pytest.mark.parametrize("dtype", DTYPES)
def test_thread_count_does_not_change_a_bit(dtype):
    # The weight gradient sums chunks of the batch chosen from the shapes, never from the
    # thread count; forward and input gradient work image by image: 1, 2, 3 or 4 threads
    # give the same bits (checked on each path the cost model picks for these shapes).
    threaded = set()
    for i, case in enumerate(THREAD_CASES):
        x, w, b, g = case.arrays(dtype, seed=i)
        one = run_all(compiled, case, x, w, b, g, relu=i % 2 == 0, n_threads=1)
        chunks = compiled._plan_info("backward_weight", case.x_shape, case.w_shape, case.y_shape, *case.params, 1)[
            "chunks"
        ]
        for n_threads in (2, 3, 4):
            got = run_all(compiled, case, x, w, b, g, relu=i % 2 == 0, n_threads=n_threads)
            for name, a, e in zip(("out", "grad_x", "grad_weight", "grad_bias"), got, one):
                assert np.array_equal(a, e), f"{name} differs: {case}, {n_threads} threads"
            for kind in ("forward", "backward_input", "backward_weight"):
                info = compiled._plan_info(kind, case.x_shape, case.w_shape, case.y_shape, *case.params, n_threads)
                if info["threads"] > 1:
                    threaded.add((kind, case.x_shape[0], n_threads))
                if kind == "backward_weight":
                    assert info["chunks"] == chunks
    # the comparison is only worth something if the kernels did run threaded
    for kind in ("forward", "backward_input", "backward_weight"):
        for n in (7, 64):
            assert (kind, n, 4) in threaded, (kind, n)


def test_workspace_none_allocates():
    case = CASES[3]
    x, w, b, g = case.arrays(np.float32)
    assert_same(run_all(compiled, case, x, w, b, g, workspace=False), expected(case, np.float32, False), np.float32)


@pytest.mark.parametrize("flat_dot", [True, False])
def test_weight_gradient_with_non_finite_input(paths, flat_dot):
    # The flat dots multiply zero columns with inputs: an inf there would make NaN where
    # the true gradient is finite, so non-finite inputs must take the row-by-row dots.
    paths._force_paths(flat_dot=flat_dot)
    case = Case(2, 2, 6, 7, 3, 3, 3)
    x, w, b, g = case.arrays(np.float64)
    x[0, 1, 2, 6] = np.inf
    x[1, 0, 5, 0] = np.nan
    got = np.empty(case.w_shape)
    want = np.empty(case.w_shape)
    paths.conv2d_backward_weight(x, g, got, *case.params, None, 1)
    reference.conv2d_backward_weight(x, g, want, *case.params, None, 1)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=1e-12, equal_nan=True)


def test_relu_keeps_nan_and_zeroes_negatives():
    case = Case(1, 1, 3, 3, 1, 1, 1)
    x = np.array([[[[1.0, -2.0, np.nan], [0.0, 3.0, -0.5], [2.0, -1.0, 4.0]]]], np.float32)
    w = np.ones((1, 1, 1, 1), np.float32)
    for mod in (compiled, reference):
        out = np.empty(case.y_shape, np.float32)
        mod.conv2d_forward(x, w, None, out, *case.params, True, None, 1)
        np.testing.assert_array_equal(out, [[[[1, 0, np.nan], [0, 3, 0], [2, 0, 4]]]])


def test_batch_zero():
    case = Case(0, 2, 5, 5, 3, 3, 3)
    x, w, b, g = case.arrays(np.float32)
    gw = np.full(case.w_shape, np.nan, np.float32)
    gb = np.full(3, np.nan, np.float32)
    for mod in (compiled, reference):
        out = np.empty(case.y_shape, np.float32)
        mod.conv2d_forward(x, w, b, out, *case.params, False, None, 1)
        mod.conv2d_backward_weight(x, g, gw, *case.params, None, 1)
        mod.conv2d_backward_bias(g, gb, 1)
        assert not gw.any() and not gb.any()


def test_workspace_size():
    case = Case(4, 3, 16, 16, 8, 3, 3, pad=(1, 1))
    for kind in ("forward", "backward_input", "backward_weight"):
        n = compiled.conv2d_workspace_size(kind, case.x_shape, case.w_shape, case.y_shape, *case.params, 1)
        assert isinstance(n, int) and n > 0
        assert reference.conv2d_workspace_size(kind, case.x_shape, case.w_shape, case.y_shape, *case.params, 1) == 0
    for mod in (compiled, reference):
        with pytest.raises(ValueError, match="conv2d_workspace_size"):
            mod.conv2d_workspace_size("sideways", case.x_shape, case.w_shape, case.y_shape, *case.params, 1)
    # absurd geometries are refused before any size arithmetic could wrap around
    big = 2**31 + 1
    for mod in (compiled, reference):
        with pytest.raises(ValueError, match="dimension above"):
            mod.conv2d_workspace_size(
                "forward", (1, 1, 1, 1), (1, 1, 1, 1), (1, 1, big, big), 1, 1, 2**30, 2**30, 1, 1, 1, 1
            )
    side = 2**20
    with pytest.raises(ValueError, match="too large"):
        compiled.conv2d_workspace_size(
            "forward", (1, 64, side, side), (64, 64, 1, 1), (1, 64, side, side), 1, 1, 0, 0, 1, 1, 1, 1
        )


# --------------------------------------------------------------------------- bad input

GOOD = Case(2, 4, 6, 5, 6, 3, 3, pad=(1, 1), groups=2)


def good_arrays():
    x, w, b, g = GOOD.arrays(np.float32)
    return dict(
        x=x,
        w=w,
        b=b,
        out=np.empty(GOOD.y_shape, np.float32),
        g=g,
        gx=np.empty(GOOD.x_shape, np.float32),
        gw=np.empty(GOOD.w_shape, np.float32),
        gb=np.empty(6, np.float32),
    )


def call(mod, kernel, a, params=GOOD.params, workspace=None, n_threads=1):
    if kernel == "forward":
        mod.conv2d_forward(a["x"], a["w"], a["b"], a["out"], *params, False, workspace, n_threads)
    elif kernel == "backward_input":
        mod.conv2d_backward_input(a["g"], a["w"], a["gx"], *params, workspace, n_threads)
    elif kernel == "backward_weight":
        mod.conv2d_backward_weight(a["x"], a["g"], a["gw"], *params, workspace, n_threads)
    else:
        mod.conv2d_backward_bias(a["g"], a["gb"], n_threads)


BAD_ARRAYS = [
    # (kernel, array key, replacement, exception)
    ("forward", "x", lambda a: a.astype(np.int32), TypeError),
    ("forward", "x", lambda a: a.astype(np.float64), TypeError),
    ("forward", "w", lambda a: a.tolist(), TypeError),
    ("forward", "b", lambda a: a.astype(np.float16), TypeError),
    ("forward", "x", lambda a: np.asfortranarray(a), ValueError),
    ("forward", "x", lambda a: a[:, :, :, ::-1], ValueError),
    ("forward", "x", lambda a: a[0], ValueError),
    ("forward", "out", lambda a: np.empty(a.shape[:2] + (a.shape[2] + 2, a.shape[3]), a.dtype), ValueError),
    ("forward", "out", lambda a: np.empty(a.shape[:3] + (a.shape[3] - 1,), a.dtype), ValueError),
    ("forward", "out", lambda a: np.empty((3,) + a.shape[1:], a.dtype), ValueError),
    ("forward", "b", lambda a: np.empty(5, a.dtype), ValueError),
    ("forward", "w", lambda a: np.empty((6, 4, 3, 3), a.dtype), ValueError),  # groups: C_in/2 = 2
    ("forward", "w", lambda a: np.empty((5, 2, 3, 3), a.dtype), ValueError),  # 5 % groups
    ("forward", "w", lambda a: np.empty((6, 2, 9, 3), a.dtype), ValueError),  # > padded input
    ("backward_input", "gx", lambda a: np.empty(a.shape, np.float64), TypeError),
    ("backward_input", "g", lambda a: a[:, :, ::2], ValueError),
    ("backward_input", "gx", lambda a: np.empty((2, 4, 6, 6), a.dtype), ValueError),
    ("backward_weight", "gw", lambda a: np.empty((6, 2, 3, 2), a.dtype), ValueError),
    ("backward_weight", "g", lambda a: np.empty((2, 5) + a.shape[2:], a.dtype), ValueError),
    ("backward_bias", "gb", lambda a: np.empty(7, a.dtype), ValueError),
    ("backward_bias", "g", lambda a: a.astype(np.int64), TypeError),
]


def _read_only(a):
    a = a.copy()
    a.flags.writeable = False
    return a


BAD_ARRAYS += [
    (k, key, _read_only, ValueError)
    for k, key in (("forward", "out"), ("backward_input", "gx"), ("backward_weight", "gw"), ("backward_bias", "gb"))
]


@pytest.mark.parametrize("mod", [compiled, reference], ids=["compiled", "reference"])
@pytest.mark.parametrize(
    "kernel,key,bad,exc", BAD_ARRAYS, ids=[f"{k}-{key}-{i}" for i, (k, key, _, _) in enumerate(BAD_ARRAYS)]
)
def test_bad_arrays_raise(mod, kernel, key, bad, exc):
    a = good_arrays()
    a[key] = bad(a[key])
    with pytest.raises(exc, match=f"conv2d_{kernel}"):
        call(mod, kernel, a)


BAD_PARAMS = [
    ((0, 1, 1, 1, 1, 1, 2), "stride"),
    ((1, -1, 1, 1, 1, 1, 2), "stride"),
    ((1, 1, -1, 1, 1, 1, 2), "padding"),
    ((1, 1, 1, 1, 0, 1, 2), "dilation"),
    ((1, 1, 1, 1, 1, 1, 0), "groups"),
    ((1, 1, 1, 1, 1, 1, 3), "groups"),
    ((1, 1, 2, 1, 1, 1, 2), "height"),  # out no longer fits the padding
]


@pytest.mark.parametrize("mod", [compiled, reference], ids=["compiled", "reference"])
@pytest.mark.parametrize("kernel", ["forward", "backward_input", "backward_weight"])
@pytest.mark.parametrize("params,what", BAD_PARAMS)
def test_bad_parameters_raise(mod, kernel, params, what):
    with pytest.raises(ValueError, match=f"conv2d_{kernel}.*{what}"):
        call(mod, kernel, good_arrays(), params=params)


@pytest.mark.parametrize("mod", [compiled, reference], ids=["compiled", "reference"])
def test_bad_workspace_threads_and_overlap_raise(mod):
    a = good_arrays()
    with pytest.raises(TypeError, match="conv2d_forward: workspace"):
        call(mod, "forward", a, workspace=np.empty(100000, np.float64))
    with pytest.raises(ValueError, match="conv2d_backward_weight: workspace"):
        call(mod, "backward_weight", a, workspace=np.empty((10, 10), np.float32))
    with pytest.raises(ValueError, match="n_threads"):
        call(mod, "backward_input", a, n_threads=0)
    with pytest.raises(ValueError, match="conv2d_backward_bias: n_threads"):
        call(mod, "backward_bias", a, n_threads=0)
    a["gx"] = a["g"].reshape(-1)[: a["gx"].size].reshape(a["gx"].shape)  # a view of grad_out
    with pytest.raises(ValueError, match="overlaps"):
        call(mod, "backward_input", a)


def test_small_workspace_is_refused():
    a = good_arrays()
    need = compiled.conv2d_workspace_size("forward", GOOD.x_shape, GOOD.w_shape, GOOD.y_shape, *GOOD.params, 1)
    with pytest.raises(ValueError, match="conv2d_forward: workspace has"):
        call(compiled, "forward", a, workspace=np.empty(need - 1, np.float32))
    call(compiled, "forward", a, workspace=np.empty(need, np.float32))


# --------------------------------------------------------------------------- hostile scalars


# a non-integer is a TypeError, an integer out of range a ValueError
@pytest.mark.parametrize(
    "bad,error", [(None, TypeError), (1.5, TypeError), ("2", TypeError), (float("nan"), TypeError), (2**70, ValueError)]
)
def test_bad_scalar_arguments_name_the_kernel(bad, error):
    x, w, b, g = GOOD.arrays(np.float32)
    out = np.empty(GOOD.y_shape, np.float32)
    for mod in (compiled, reference):
        with pytest.raises(error, match="conv2d_forward: stride_h"):
            mod.conv2d_forward(x, w, b, out, bad, *GOOD.params[1:], False, None, 1)
        if bad != 2**70:  # a huge thread count means all of them: clamped, not refused
            with pytest.raises(error, match="conv2d_backward_bias: n_threads"):
                mod.conv2d_backward_bias(g, np.empty(GOOD.w_shape[0], np.float32), bad)
        with pytest.raises(error, match="conv2d_workspace_size: groups"):
            mod.conv2d_workspace_size("forward", GOOD.x_shape, GOOD.w_shape, GOOD.y_shape, *GOOD.params[:-1], bad, 1)


def test_empty_batch_gives_a_zero_weight_gradient():
    big = 2**20
    for mod in (compiled, reference):
        gw = np.full((2, 1, 3, 3), np.nan, np.float32)
        mod.conv2d_backward_weight(
            np.empty((0, 1, big, big), np.float32),
            np.empty((0, 2, big - 2, big - 2), np.float32),
            gw,
            1,
            1,
            0,
            0,
            1,
            1,
            1,
            None,
            1,
        )
        assert not gw.any()


# --------------------------------------------------------------------------- row-blocked gemm

# One-row gemms on the direct path (the input gradient of a one-channel layer, depthwise
# forward) run R output rows per tile (AVX-512: 6, 7 or 8; AVX2: 4) when the kernel
# height is 3, 5 or 7 and rows are not dilated: heights around R (fewer rows: not used;
# R + 1: the last block overlaps the one before), widths within one vector, two and more.
ROW_BLOCK_CASES = [
    Case(2, 1, 12, 12, 6, 5, 5, pad=(2, 2)),  # LeNet conv1, small
    Case(1, 1, 8, 9, 3, 3, 3, pad=(1, 1)),  # height 8: one block of 8
    Case(2, 1, 9, 17, 2, 5, 3, pad=(2, 1)),  # 9 rows: overlapping blocks
    Case(1, 1, 7, 5, 2, 7, 3, pad=(3, 0)),  # kernel height 7, 7 rows
    Case(2, 1, 6, 40, 2, 3, 5, pad=(1, 2)),  # 6 rows (AVX-512 R=6), wide
    Case(1, 1, 11, 33, 4, 5, 5, pad=(2, 2), dil=(1, 2)),  # dilated columns
    Case(2, 3, 10, 13, 3, 3, 3, pad=(1, 1), groups=3),  # depthwise: forward too
    Case(1, 2, 9, 8, 4, 5, 3, pad=(2, 1), groups=2, extra=(1, 0)),  # depthwise, 'same'
    Case(1, 1, 5, 9, 2, 3, 3, pad=(1, 1)),  # 5 rows: too few for a block
]


@pytest.mark.parametrize("simd", [2, 1, 0])
@pytest.mark.parametrize("dtype", DTYPES)
def test_row_blocked_gemm_matches_reference(paths, simd, dtype):
    # forced wherever the row-blocked kernel applies (the cost model weighs it against
    # gemm tiles timed on this CPU: which one it picks varies with the machine)
    paths._set_simd(simd)
    paths._force_paths(rowblock=True)
    level = paths._simd_level()
    used = 0
    for case in ROW_BLOCK_CASES:
        for kind in ("forward", "backward_input"):
            info = paths._plan_info(kind, case.x_shape, case.w_shape, case.y_shape, *case.params, 1)
            used += info["rowblock"] > 0
            if info["rowblock"]:
                assert info["tile"][0] == 1 and level >= 1
        x, w, b, g = case.arrays(dtype)
        assert_same(run_all(paths, case, x, w, b, g, True), expected(case, dtype, True), dtype)
    if level >= 1:
        assert used >= 8  # the cases do reach the row-blocked tiles


def test_row_blocked_gemm_is_chosen_for_lenet_conv1_input_gradient():
    c = Case(64, 1, 28, 28, 6, 5, 5, pad=(2, 2))
    info = compiled._plan_info("backward_input", c.x_shape, c.w_shape, c.y_shape, *c.params, 1)
    if compiled._simd_level() >= 1:
        assert info["path"] == "direct" and info["rowblock"] > 0


@pytest.mark.parametrize("dtype", DTYPES)
def test_row_blocked_gemm_threads_give_the_same_bits(dtype):
    case = Case(16, 1, 30, 30, 8, 5, 5, pad=(2, 2))  # ~3.5 MFLOP: threaded
    x, w, b, g = case.arrays(dtype)
    one = run_all(compiled, case, x, w, b, g, n_threads=1)
    two = run_all(compiled, case, x, w, b, g, n_threads=2)
    for a, e in zip(two, one):
        np.testing.assert_array_equal(a, e)
    small = Case(2, 1, 30, 30, 8, 5, 5, pad=(2, 2))
    x, w, b, g = small.arrays(dtype)
    assert_same(run_all(compiled, small, x, w, b, g), expected(small, dtype, False), dtype)


# --------------------------------------------------------------------------- stores in place


def _guarded(shape, dtype):
    """A C-contiguous array inside a larger one whose other elements are sentinels."""
    size = int(np.prod(shape))
    buf = np.full(size + 64, 12345.0, dtype)
    return buf, buf[32 : 32 + size].reshape(shape)


def _assert_written_inside(paths, case, x, w, b, g, want, dtype):
    """Forward (bias, ReLU) and input gradient into guarded arrays: the values of `want`
    (out, grad_x), and nothing around either array touched."""
    buf, out = _guarded(case.y_shape, dtype)
    paths.conv2d_forward(x, w, b, out, *case.params, True, None, 1)
    assert (buf[:32] == 12345.0).all() and (buf[32 + out.size :] == 12345.0).all()
    assert_same((out,), want[:1], dtype, names=("out",))
    buf, gx = _guarded(case.x_shape, dtype)
    paths.conv2d_backward_input(g, w, gx, *case.params, None, 1)
    assert (buf[:32] == 12345.0).all() and (buf[32 + gx.size :] == 12345.0).all()
    assert_same((gx,), want[1:2], dtype, names=("grad_x",))


def test_gemm_stores_into_large_outputs_only_inside_them(paths):
    # The AVX-512 gemm writes its tiles straight into the output with masked stores when
    # an image's output is larger than L1 (a vector may span several output rows when
    # they are narrow): every element is written, nothing around the array is; the
    # values are those of the portable loops. Each case on AVX-512 tiles of one, a few
    # and six vectors a row (forced: which tile the cost model picks depends on the
    # rates this CPU's tiles were timed at).
    cases = [
        Case(1, 2, 40, 41, 9, 3, 3, pad=(1, 1)),  # flat tiles
        Case(2, 1, 300, 5, 40, 3, 3, pad=(1, 1)),  # 5-wide rows: 3 per vector
        Case(1, 3, 24, 70, 12, 5, 3, pad=(2, 0)),  # row ends inside vectors
        Case(1, 4, 40, 40, 14, 3, 3, pad=(1, 1), groups=2),
        Case(1, 12, 40, 41, 3, 3, 3, pad=(1, 1)),  # input gradient: 12 rows
        Case(1, 1, 130, 130, 24, 2, 2, stride=(2, 2)),
    ]  # im2col path
    for dtype, case, tile in itertools.product(DTYPES, cases, ((6, 16), (8, 48), (2, 192))):
        x, w, b, g = case.arrays(dtype)
        paths._force_paths()
        paths._set_simd(0)
        want = run_all(paths, case, x, w, b, g, True)
        paths._set_simd(2)
        paths._force_paths(gemm_tile=tile)
        stored = False
        for kind in ("forward", "backward_input"):
            stored |= paths._plan_info(kind, case.x_shape, case.w_shape, case.y_shape, *case.params, 1)[
                "stores_into_output"
            ]
        assert stored or paths._simd_level() < 2
        _assert_written_inside(paths, case, x, w, b, g, want, dtype)


@pytest.mark.parametrize("simd", [2, 1])
def test_gemm_stores_only_inside_the_output(paths, simd):
    # Small outputs, every SIMD path: every element is written, nothing around it is.
    paths._set_simd(simd)
    cases = [Case(1, 2, h, w, 3, 3, 3, pad=(1, 1)) for h, w in ((1, 1), (2, 3), (5, 2), (3, 17))]
    cases += [
        Case(2, 3, 6, 20, 5, 1, 3),
        Case(1, 1, 4, 33, 9, 3, 3, pad=(0, 1)),
        Case(2, 2, 7, 7, 4, 3, 3, stride=(2, 2), pad=(1, 1)),
        Case(1, 4, 9, 9, 14, 3, 3, pad=(1, 1), groups=2),
    ]
    for dtype in DTYPES:
        for case in cases:
            x, w, b, g = case.arrays(dtype)
            _assert_written_inside(paths, case, x, w, b, g, expected(case, dtype, True), dtype)


# --------------------------------------------------------------------------- blocks of rows


@pytest.mark.parametrize("dtype", DTYPES)
def test_row_by_row_weight_gradient_in_blocks_of_images(paths, dtype):
    # Row-by-row dots run over a block of images per call (small images: several):
    # odd batches (a short last block), 1 and 2 threads give the same bits.
    paths._force_paths(flat_dot=False)
    case = Case(13, 4, 10, 9, 8, 3, 3, pad=(1, 1))
    info = paths._plan_info("backward_weight", case.x_shape, case.w_shape, case.y_shape, *case.params, 2)
    assert not info["flat_dot"] and info["images_per_block"] > 1
    x, w, b, g = case.arrays(dtype)
    want = np.empty(case.w_shape, dtype)
    reference.conv2d_backward_weight(x, g, want, *case.params, None, 1)
    got = {}
    for n_threads in (1, 2):
        got[n_threads] = np.full(case.w_shape, np.nan, dtype)
        paths.conv2d_backward_weight(x, g, got[n_threads], *case.params, None, n_threads)
        assert_same((got[n_threads],), (want,), dtype, names=("grad_weight",))
    np.testing.assert_array_equal(got[1], got[2])
    one = Case(1, 4, 10, 9, 8, 3, 3, pad=(1, 1))
    x, w, b, g = one.arrays(dtype)
    assert_same(run_all(paths, one, x, w, b, g), expected(one, dtype, False), dtype)


# --------------------------------------------------------------------------- plan cache


def test_plan_cache_keeps_plans_apart():
    # More geometries than the plan table holds, then the first again: each call still
    # gets the plan of its own shapes (checked by its results).
    first = Case(1, 2, 6, 7, 3, 3, 3, pad=(1, 1))
    x, w, b, g = first.arrays(np.float64)
    want = expected(first, np.float64, False)
    assert_same(run_all(compiled, first, x, w, b, g), want, np.float64)
    for i in range(80):
        c = Case(1, 1, 5 + i % 9, 5 + i // 9, 2, 3, 3)
        for kind in ("forward", "backward_input", "backward_weight"):
            assert compiled.conv2d_workspace_size(kind, c.x_shape, c.w_shape, c.y_shape, *c.params, 1) > 0
    assert_same(run_all(compiled, first, x, w, b, g), want, np.float64)


# --------------------------------------------------------------------------- channel lanes

# The weight gradient with output channels along the lanes (the gradient transposed,
# window elements broadcast from the padded planes): forced on a grid with channel counts
# below, at and past a vector (and past a tile of vectors), window counts that leave a
# partial tile, groups, dilation, padding, batch 1 and odd batches.
LANES_CASES = [
    Case(3, 6, 9, 9, 16, 5, 5),  # LeNet conv2, small
    Case(1, 2, 7, 6, 5, 3, 3, pad=(1, 1)),  # 5 channels, batch 1
    Case(5, 3, 8, 7, 17, 3, 2, pad=(1, 0)),  # 17: one past a vector
    Case(2, 4, 6, 9, 40, 3, 3, pad=(1, 1)),  # 40: 3 vectors (AVX-512 4x6)
    Case(3, 4, 9, 8, 70, 1, 3, pad=(0, 1)),  # 70: past a 4-vector tile
    Case(2, 4, 8, 8, 12, 3, 3, pad=(2, 2), dil=(2, 2), groups=2),
    Case(1, 3, 7, 9, 6, 3, 3, pad=(1, 1), groups=3),  # depthwise
    Case(2, 2, 6, 8, 3, 4, 4, pad=(1, 1), extra=(1, 1)),  # 'same', even kernel
]


@pytest.mark.parametrize("simd", [2, 1, 0])
@pytest.mark.parametrize("dtype", DTYPES)
def test_channel_lane_weight_gradient_matches_reference(paths, simd, dtype):
    forced_path_matches_reference(
        paths,
        simd,
        dtype,
        LANES_CASES,
        "backward_weight",
        lambda info: info["lanes_dot"] and not info["flat_dot"],
        lanes_dot=True,
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_channel_lane_weight_gradient_threads_give_the_same_bits(paths, dtype):
    paths._force_paths(lanes_dot=True)
    case = Case(13, 6, 14, 13, 16, 5, 5)  # ~4 MFLOP: threaded; 13 images: a short block
    info = paths._plan_info("backward_weight", case.x_shape, case.w_shape, case.y_shape, *case.params, 2)
    assert info["lanes_dot"] and info["threads"] == 2 and info["chunks"] > 1
    x, w, b, g = case.arrays(dtype)
    got = {}
    for n_threads in (1, 2, 3):
        got[n_threads] = np.full(case.w_shape, np.nan, dtype)
        paths.conv2d_backward_weight(x, g, got[n_threads], *case.params, None, n_threads)
    np.testing.assert_array_equal(got[1], got[2])
    np.testing.assert_array_equal(got[1], got[3])
    want = np.empty(case.w_shape, dtype)
    small = Case(3, 6, 14, 13, 16, 5, 5)
    x, w, b, g = small.arrays(dtype)
    reference.conv2d_backward_weight(x, g, want, *small.params, None, 1)
    mine = np.full(small.w_shape, np.nan, dtype)
    paths.conv2d_backward_weight(x, g, mine, *small.params, None, 1)
    assert_same((mine,), (want,), dtype, names=("grad_weight",))


def test_channel_lanes_are_chosen_for_lenet_conv2_weight_gradient():
    c = Case(64, 6, 14, 14, 16, 5, 5)
    info = compiled._plan_info("backward_weight", c.x_shape, c.w_shape, c.y_shape, *c.params, 1)
    if compiled._simd_level() >= 1:
        assert info["lanes_dot"]
    small_k = Case(64, 1, 28, 28, 6, 5, 5, pad=(2, 2))  # 25 window elements: the dots
    assert not compiled._plan_info(
        "backward_weight", small_k.x_shape, small_k.w_shape, small_k.y_shape, *small_k.params, 1
    )["lanes_dot"]


def test_channel_lane_weight_gradient_with_non_finite_input(paths):
    paths._force_paths(lanes_dot=True)
    case = Case(2, 2, 6, 7, 3, 3, 3)
    x, w, b, g = case.arrays(np.float64)
    x[0, 1, 2, 6] = np.inf
    x[1, 0, 5, 0] = np.nan
    got = np.empty(case.w_shape)
    want = np.empty(case.w_shape)
    paths.conv2d_backward_weight(x, g, got, *case.params, None, 1)
    reference.conv2d_backward_weight(x, g, want, *case.params, None, 1)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=1e-12, equal_nan=True)


def test_narrow_row_wise_tiles_match_reference(paths):
    # AVX-512 6x16 tiles, one output row each, serve the input gradient of LeNet's second
    # layer (14-wide rows, kernel rows over padding skipped row by row); the tile is
    # forced, the model picks the row-wise layout for it.
    paths._force_paths(gemm_tile=(6, 16))
    c = Case(64, 6, 14, 14, 16, 5, 5)
    info = paths._plan_info("backward_input", c.x_shape, c.w_shape, c.y_shape, *c.params, 1)
    if paths._simd_level() >= 2:
        assert info["tile"] == (6, 16) and info["rowwise"]
    one = Case(1, 6, 14, 14, 16, 5, 5)
    info = paths._plan_info("backward_input", one.x_shape, one.w_shape, one.y_shape, *one.params, 1)
    if paths._simd_level() >= 2:
        assert info["tile"] == (6, 16) and info["rowwise"]
    x, w, b, g = one.arrays(np.float32)
    gx = np.full(one.x_shape, np.nan, np.float32)
    paths.conv2d_backward_input(g, w, gx, *one.params, None, 1)
    want = np.empty(one.x_shape, np.float32)
    reference.conv2d_backward_input(g, w, want, *one.params, None, 1)
    assert_same((gx,), (want,), np.float32, names=("grad_x",))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bias_gradient_is_the_same_for_any_thread_count(dtype):
    """Large enough to split the channels over threads; each channel keeps its order."""
    g = np.random.default_rng(4).standard_normal((16, 7, 33, 31)).astype(dtype)
    results = []
    for threads in (1, 2, 3):
        out = np.empty(7, dtype)
        kernels.conv2d_backward_bias(g, out, threads)
        results.append(out)
    for out in results[1:]:
        np.testing.assert_array_equal(out, results[0])
    np.testing.assert_allclose(results[0], g.sum(axis=(0, 2, 3)), rtol=1e-4 if dtype == np.float32 else 1e-12)
