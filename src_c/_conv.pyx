# Design: 2-D convolution (NCHW, weight (C_out, C_in/groups, kH, kW)); the twin of
# fastgrad/reference/conv.py (same names, same signatures, same results).
#
# All arithmetic is one of two register-tiled loops (src_c/conv_kernels.h: AVX2 and
# AVX-512 variants chosen at run time; portable Cython twins here for float64 and other
# CPUs):
#   gemm  C[m][n] = sum_k A[m][k] * B[off[k] + n]   output positions n along SIMD lanes
#   dot   C[m][k] += sum_p A[m][p] * B[off[k] + p]  weight gradient, a reduction over p
#         (or the same sums with m along the lanes: fgc_lanes_f32)
# and the gemm's sums with m along the lanes for the forward (fgc_flanes_f32, below).
# Direct path (stride 1): B is never an explicit matrix. The image is copied once into a
# zero-padded plane of width Wp = W_out + dil_w*(kW-1); the row of B for window element
# k = (ky, c, kx) is that plane shifted by c*Hp*Wp + ky*dil_h*Wp + kx*dil_w, so output
# position n = oy*Wp + ox reads its whole window through offsets. The Wp - W_out extra
# columns of each output row are computed and dropped by the store, which also adds the
# bias and applies the fused ReLU; the AVX-512 gemm stores each tile that way straight
# into the output (masked stores), the others into a buffer copied out after. The gemm
# runs over a list of column tiles, each with the depth range it can see: kernel rows
# that read only padding rows are skipped. A one-row gemm (depthwise forward, the input
# gradient of a one-channel layer) with undilated kernel rows of height 3, 5 or 7 runs
# row-blocked instead: R output rows per tile, every plane row loaded once for up to
# min(R, kH) kernel rows, the weights of a window column held in registers. The
# input gradient of a stride-1 convolution is the forward convolution of the padded
# output gradient with the flipped, transposed weight, or gemm + col2im when that is
# cheaper (small images, large kernels). The weight gradient is dots of the output
# gradient with shifted planes, over whole planes of a block of images at once (the
# gradient widened to the plane's pitch, zeros in the extra columns) or row by row (a
# block of small images per call, so that a tile's lane sums are amortized); or, with
# many window elements per output channel, with the output channels along the lanes:
# the gradient transposed per image (positions x channels), each tile vectors of
# channels times window elements broadcast from the padded planes, over exactly the
# output positions, with no lane sums.
# The forward also runs with the output channels along the lanes where that computes
# fewer padded multiply-adds (rows much wider than the output's: LeNet conv2's 10 of 14;
# ResNet's 8 of 10 and its strided layers): a tile is a run of one output row's positions
# times vectors of channels, each window element's weights one vector load and each
# input value a broadcast, into a positions x channels buffer transposed into the output
# (with bias and ReLU). It reads the same planes through the same offsets and depth
# ranges, and sums in the same order as the gemm: the same bits. Strided (column stride 2)
# it reads padded planes at the stride, and the input itself when there is no padding and
# its tiles divide the rows (a 1x1 stride-2 shortcut copies nothing).
# Strided, undilated: forward and weight gradient read phase planes instead (plane
# (c, a, b) holds padded input rows a, a + s, ... and columns b, b + s, ...; window
# element (ky, kx) of output (oy, ox) is element (oy + ky // s, ox + kx // s) of plane
# (c, ky % s, kx % s)), through the same gemm and dots. The input gradient at stride 2
# runs by phases: the input places of one parity (rows a + 2i, columns b + 2j) take the
# kernel taps of the matching parity only, a stride-1 direct gemm over the output
# gradient (padded once, shared by the four phases), stored once into those places.
# General path (dilated strided; other strides' input gradient, and a stride-2 one the
# cost model expects cheaper so: 1x1, 4x4 outputs): im2col into the workspace for
# forward and weight gradient, gemm + col2im for the input gradient.
# Planning (_plan) picks path, tile shape, tiling and thread count from the shapes with a
# cost model (padded multiply-adds over each tile's rate, plus its fixed cost per call,
# both timed on this CPU once per process: _tile_rates, _dot_rates); _plan_info reports it.
# Plans are kept in a small table of C structs keyed by the geometry, so that a small
# call's fixed cost is the argument checks, not the planning.
#
# Files, by concern: this one holds the declarations, the argument checks and the def
# wrappers; _conv_rates.pxi the register tiles' speeds, timed on the CPU;
# _conv_plan.pxi the geometry, cost model and plan table; _conv_drivers.pxi the data
# movement, loops and batch drivers (all included here: one extension).
# Workspace: each kernel takes `workspace` (a 1-D array of the dtype, or None to allocate
# one per call) of at least conv2d_workspace_size(...) elements: the packed weight; per
# thread a padded-image / im2col buffer and a gemm output buffer or a widened (or
# transposed) output gradient; the weight gradient's partial sums, one per chunk of the batch but the first
# (on one thread, a single one reused); then the window offsets and the gemm's tile list
# (8-byte integers stored in the same memory). Its contents on entry do not matter.
# Threads: a static prange over the batch (weight gradient: over chunks of the batch)
# when the work pays for a parallel region; each thread owns its workspace slice and its
# images' outputs. Results do not depend on the thread count, to the bit: forward and
# input gradient compute each image alone, and the weight gradient splits the batch into
# chunks chosen from the shapes only (never from n_threads), sums each chunk into its own
# partial gradient (chunk 0 into grad_weight) and adds the partials in chunk order after
# the region; threads take whole chunks. The bias gradient splits the channels over
# threads, each channel summed in one fixed order.
# Safety: the def wrappers check every shape relation the loops rely on; the workspace
# size is estimated in floating point first, so absurd geometries raise instead of
# wrapping around.

import numpy as np
cimport numpy as cnp
from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.string cimport memcmp, memcpy, memset
from libc.stdint cimport uintptr_t
from libc.stdlib cimport free, malloc
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

from _checks cimport check_array, check_disjoint, check_elements, check_threads

cnp.import_array()

__all__ = [
    "conv2d_forward",
    "conv2d_backward_input",
    "conv2d_backward_weight",
    "conv2d_backward_bias",
    "conv2d_workspace_size",
]

cdef extern from "conv_kernels.h" nogil:
    ctypedef struct fgc_out:
        float *out
        const float *bias
        Py_ssize_t plane, pitch, wo, ho
        int relu, rowwise
    int fgc_gemm_f32(int level, int mr, int nr, Py_ssize_t M, Py_ssize_t n_tiles,
                     const Py_ssize_t *tiles, Py_ssize_t K, const float *Ap, const float *B,
                     const Py_ssize_t *off, float *C, Py_ssize_t ldc, const fgc_out *o)
    int fgc_dot_f32(int level, int mr, int nr, Py_ssize_t M, Py_ssize_t K, const float *A,
                    Py_ssize_t a_chan, Py_ssize_t a_row, const float *B,
                    const Py_ssize_t *off, Py_ssize_t b_row, Py_ssize_t rows,
                    Py_ssize_t cols, float *C, Py_ssize_t ldc, Py_ssize_t imgs,
                    Py_ssize_t a_img, Py_ssize_t b_img)
    int fgc_lanes_f32(int level, int mv, int kt, Py_ssize_t M, Py_ssize_t K, const float *G,
                      Py_ssize_t ldg, Py_ssize_t g_img, const float *X, const Py_ssize_t *off,
                      Py_ssize_t x_row, Py_ssize_t x_img, Py_ssize_t imgs, Py_ssize_t rows,
                      Py_ssize_t cols, float *C, Py_ssize_t ldc)
    int fgc_add_stride2_f32(int level, float *d, const float *r, Py_ssize_t n, int past)
    int fgc_split_stride2_f32(int level, float *d0, float *d1, const float *s, Py_ssize_t n)
    int fgc_gather_stride2_f32(int level, float *d, const float *s, Py_ssize_t n)
    int fgc_flanes_f32(int level, int mv, int p, int sw, Py_ssize_t rows, Py_ssize_t cols,
                       const Py_ssize_t *tiles, const float *A, const float *X,
                       const Py_ssize_t *off, Py_ssize_t x_row, float *T)
    int fgc_flanes_has(int level, int mv, int p, int sw)
    int fgc_store_lanes_f32(int level, const float *T, Py_ssize_t mw, Py_ssize_t rows,
                            Py_ssize_t P, float *dst, const float *bias, int relu)
    int fgc_rows_f32(int level, int rows, int nr, int kh, Py_ssize_t n_tiles,
                     const Py_ssize_t *tiles, Py_ssize_t J, const float *a, const float *B,
                     const Py_ssize_t *off, Py_ssize_t wp, float *C)

cdef enum:
    FORWARD = 0
    BACKWARD_INPUT = 1
    BACKWARD_WEIGHT = 2
    LANES = 16         # flat dot lengths are multiples of this (the widest SIMD vector)
    ALIGN = 16         # workspace regions start on multiples of 16 elements (64 bytes)
    MAX_TILE = 384     # the largest gemm tile (AVX-512: 8x48 ... 1x384 floats)
    L1_FLOATS = 8192   # data a dot tile's loop should keep in L1 (32 KB of float32)

# A parallel region costs ~4 us; below this many flops (~50 us of work) run serially.
cdef double PARALLEL_MIN_FLOPS = 3.0e6
# The bias gradient reads each element once: split it over threads from ~256 KB of floats.
cdef Py_ssize_t BIAS_PARALLEL_MIN = 1 << 16
# Weight gradient chunks: at most MAX_CHUNKS (the most threads it can use), each of at
# least CHUNK_MIN_POSITIONS output positions (then adding its partial gradient costs ~1%
# of its dots) but two chunks at least, so that two threads always have work, and their
# partial gradients together at most PARTIAL_BUDGET elements.
cdef Py_ssize_t MAX_CHUNKS = 8
cdef Py_ssize_t CHUNK_MIN_POSITIONS = 256
cdef Py_ssize_t PARTIAL_BUDGET = 1 << 22
# Weight gradient by row-by-row dots: at most this many images per block (per dot call),
# enough for about ROW_DOT_STEPS vector steps per tile.
cdef Py_ssize_t ROW_DOT_IMAGES = 8
cdef Py_ssize_t ROW_DOT_STEPS = 64
# Weight gradient with channels along the lanes: output positions per block (at least).
cdef Py_ssize_t LANES_DOT_POSITIONS = 256
cdef Py_ssize_t LANES_DOT_MIN_K = 96   # window elements (C_in/groups * kH * kW) at least
# The direct gemm with channels along the lanes: taken when its padded multiply-adds,
# times this, are fewer than the register tile's (its transposed store and broadcast
# loads cost the rest).
cdef double CHANNEL_LANES_OVER = 1.15
# Scalar arguments and dimensions above this are rejected before any size arithmetic
# (products of two of them cannot overflow).
cdef Py_ssize_t MAX_PARAM = 1 << 31
# Workspaces above this many elements are rejected (no size arithmetic can wrap below it).
cdef double MAX_ELEMENTS = <double>(1 << 50)

# this module has AVX-512F code: _simd_level is the selected level itself
SIMD_KERNELS_TOP = 2
include "_simd.pxi"

# Path overrides for tests and benchmarks (-1: choose by cost, 0: general, 1: direct).
cdef int _force_input_direct = -1
cdef int _force_flat_dot = -1
cdef int _force_lanes_dot = -1
cdef int _force_weight_direct = -1
cdef int _force_mr = 0, _force_nr = 0   # 0: the cost model's gemm tile
cdef int _force_input_phases = -1
cdef int _force_rowblock = -1
cdef int _force_forward_direct = -1
cdef int _force_channel_lanes = -1


def _force_paths(input_direct=None, flat_dot=None, lanes_dot=None, weight_direct=None,
                 gemm_tile=None, input_phases=None, rowblock=None, forward_direct=None,
                 channel_lanes=None):
    """Override the cost model (for tests of every path; None restores it): whether the
    stride-1 input gradient runs direct (True) or as gemm + col2im (False), whether the
    stride-1 weight gradient uses flat dots over a widened output gradient, and whether
    it puts output channels along the lanes (True wins over flat_dot; forcing flat_dot
    alone turns it off), and whether the weight gradient runs direct (True: over padded
    planes at stride 1, over phase planes when strided and undilated; dilated strided
    ones stay im2col) or as im2col + dots (False), and which gemm register tile the
    forward and input gradient use ((rows, columns) of the SIMD level running, either
    layout; a shape the level lacks leaves the choice to the cost model; with
    channel_lanes=True, the channel-lane tile: (channels, positions)), and whether a
    stride-2 undilated input gradient runs by phases (True) or as gemm + col2im (False;
    one input channel per group always runs col2im), and whether a one-row gemm of the
    direct path runs row-blocked wherever that kernel applies (True) or never (False),
    whether the forward may run direct (False: im2col + gemm everywhere), and whether the
    direct gemm (forward, stride-1 input gradient) runs with its output channels along
    the lanes wherever that kernel applies (True: SIMD levels; a forward at stride 1, or
    undilated with a column stride of 1 or 2; no row-blocked gemm) or never (False)."""
    global _force_input_direct, _force_flat_dot, _force_lanes_dot, _force_weight_direct
    global _force_mr, _force_nr, _force_input_phases, _force_rowblock, _force_forward_direct
    global _force_channel_lanes
    _force_input_direct = -1 if input_direct is None else int(bool(input_direct))
    _force_flat_dot = -1 if flat_dot is None else int(bool(flat_dot))
    _force_lanes_dot = -1 if lanes_dot is None else int(bool(lanes_dot))
    _force_weight_direct = -1 if weight_direct is None else int(bool(weight_direct))
    _force_mr, _force_nr = (0, 0) if gemm_tile is None else (int(gemm_tile[0]), int(gemm_tile[1]))
    _force_input_phases = -1 if input_phases is None else int(bool(input_phases))
    _force_rowblock = -1 if rowblock is None else int(bool(rowblock))
    _force_forward_direct = -1 if forward_direct is None else int(bool(forward_direct))
    _force_channel_lanes = -1 if channel_lanes is None else int(bool(channel_lanes))

include "_conv_rates.pxi"
include "_conv_plan.pxi"



# --------------------------------------------------------------------------- validation

cdef Py_ssize_t INT_ARG_LIMIT = 1 << 62


cdef Py_ssize_t _int_arg(str kernel, str name, object v) except? -1:
    """A scalar argument as a C integer: an int (or numpy integer) of moderate size, else
    TypeError / ValueError naming the kernel. The range rules come after (_geometry)."""
    cdef Py_ssize_t r
    if type(v) is not int and not isinstance(v, (int, np.integer)):
        raise TypeError(f"{kernel}: {name} must be an integer, got {v!r}")
    try:  # compared as C integers: Python-level comparisons cost more than a small conv
        r = v
    except OverflowError:
        raise ValueError(f"{kernel}: {name} is out of range, got {v}") from None
    if r < -INT_ARG_LIMIT or r > INT_ARG_LIMIT:
        raise ValueError(f"{kernel}: {name} is out of range, got {v}")
    return r


cdef int _int_params(str kernel, object stride_h, object stride_w, object pad_top,
                     object pad_left, object dil_h, object dil_w, object groups,
                     Py_ssize_t *out) except -1:
    """The seven scalar parameters as C integers, in the order of the arguments."""
    out[0] = _int_arg(kernel, "stride_h", stride_h)
    out[1] = _int_arg(kernel, "stride_w", stride_w)
    out[2] = _int_arg(kernel, "pad_top", pad_top)
    out[3] = _int_arg(kernel, "pad_left", pad_left)
    out[4] = _int_arg(kernel, "dil_h", dil_h)
    out[5] = _int_arg(kernel, "dil_w", dil_w)
    out[6] = _int_arg(kernel, "groups", groups)
    return 0


MAX_ELEMENTS = 1 << 31  # per array: a convolution over larger ones is refused


cdef inline int _check_elements(str kernel, str name, tuple shape) except -1:
    return check_elements(kernel, name, shape, MAX_ELEMENTS)


cdef inline int _dtype_num(str kernel, str name, object a) except -1:
    return check_array(kernel, name, a, -1, -1, False)


cdef int _check_array(str kernel, str name, object a, int ndim, int dtype, bint out,
                      Py_ssize_t *dims) except -1:
    """check_array (_checks.pxd); dims (if not NULL) receives the ndim sizes."""
    check_array(kernel, name, a, ndim, dtype, out)
    cdef int i
    if dims != NULL:
        for i in range(ndim):
            dims[i] = cnp.PyArray_DIMS(<cnp.ndarray>a)[i]
    return 0


cdef int _check_disjoint(str kernel, str out_name, object out, str name1, object a1,
                         str name2, object a2, str name3=None, object a3=None) except -1:
    """`out` shares no memory with a1, a2, a3 (None: absent)."""
    check_disjoint(kernel, out_name, out, name1, a1)
    check_disjoint(kernel, out_name, out, name2, a2)
    check_disjoint(kernel, out_name, out, name3, a3)
    return 0


cdef cnp.ndarray _workspace(str kernel, object workspace, int dtype, Plan *p):
    if workspace is None:
        return np.empty(p.total, dtype=np.float32 if dtype == cnp.NPY_FLOAT32 else np.float64)
    cdef Py_ssize_t size
    _check_array(kernel, "workspace", workspace, 1, dtype, True, &size)
    if size < p.total:
        raise ValueError(f"{kernel}: workspace has {size} elements, needs "
                         f"{p.total} (see conv2d_workspace_size)")
    return workspace


cdef Py_ssize_t *_index_area(object ws, Plan *p):
    """Where the offset table and tile list live in the workspace (8-byte aligned)."""
    cdef uintptr_t addr = <uintptr_t>cnp.PyArray_DATA(<cnp.ndarray>ws)
    addr = (addr + 63) & ~(<uintptr_t>63)
    return <Py_ssize_t *>(addr + p.at_index * cnp.PyArray_ITEMSIZE(<cnp.ndarray>ws))


cdef inline void *_data(object a):
    return cnp.PyArray_DATA(<cnp.ndarray>a)


include "_conv_drivers.pxi"


# --------------------------------------------------------------------------- public kernels

def conv2d_workspace_size(str kernel, x_shape, weight_shape, out_shape,
                          stride_h, stride_w, pad_top, pad_left, dil_h, dil_w, groups,
                          n_threads):
    """Elements of workspace that conv2d_<kernel> needs for these shapes (kernel is
    "forward", "backward_input" or "backward_weight"; backward_bias needs none).

    x_shape (N, C_in, H, W), weight_shape (C_out, C_in/groups, kH, kW) and out_shape
    (N, C_out, H_out, W_out) describe the convolution, whichever direction is run.
    """
    cdef Geom g
    cdef Plan p
    cdef dict kinds = {"forward": FORWARD, "backward_input": BACKWARD_INPUT,
                       "backward_weight": BACKWARD_WEIGHT}
    if kernel not in kinds:
        raise ValueError(f"conv2d_workspace_size: kernel must be one of {sorted(kinds)}, "
                         f"got {kernel!r}")
    x_shape, weight_shape, out_shape = tuple(x_shape), tuple(weight_shape), tuple(out_shape)
    for name, s in (("x_shape", x_shape), ("weight_shape", weight_shape),
                    ("out_shape", out_shape)):
        if len(s) != 4 or any(int(v) < 0 for v in s):
            raise ValueError(f"conv2d_workspace_size: {name} must be 4 non-negative sizes, "
                             f"got {s}")
    cdef Py_ssize_t q[7]
    cdef Py_ssize_t xd[4]
    cdef Py_ssize_t wd[4]
    cdef Py_ssize_t yd[4]
    _int_params("conv2d_workspace_size", stride_h, stride_w, pad_top, pad_left, dil_h, dil_w,
                groups, q)
    cdef Py_ssize_t nt = check_threads("conv2d_workspace_size", n_threads)
    _shape_dims("conv2d_workspace_size", "x", x_shape, weight_shape, "out", out_shape, xd, wd,
                yd)
    _geometry("conv2d_workspace_size", &g, "x", xd, wd, "out", yd, q[0], q[1], q[2], q[3],
              q[4], q[5], q[6])
    for name, s in (("x_shape", x_shape), ("weight_shape", weight_shape),
                    ("out_shape", out_shape)):
        _check_elements("conv2d_workspace_size", name, tuple(s))
    _plan("conv2d_workspace_size", &g, kinds[kernel], nt, &p)
    return int(p.total)


def _plan_info(str kernel, tuple x_shape, tuple weight_shape, tuple out_shape,
               Py_ssize_t stride_h, Py_ssize_t stride_w, Py_ssize_t pad_top,
               Py_ssize_t pad_left, Py_ssize_t dil_h, Py_ssize_t dil_w, Py_ssize_t groups,
               Py_ssize_t n_threads):
    """How conv2d_<kernel> would run these shapes (for tests and benchmarks): a dict with
    the path ("direct", "lanes": the direct forward with output channels along the lanes,
    or "im2col"/"col2im"), the register tile and the thread count."""
    cdef Geom g
    cdef Plan p
    cdef dict kinds = {"forward": FORWARD, "backward_input": BACKWARD_INPUT,
                       "backward_weight": BACKWARD_WEIGHT}
    cdef Py_ssize_t xd[4]
    cdef Py_ssize_t wd[4]
    cdef Py_ssize_t yd[4]
    _shape_dims("_plan_info", "x", x_shape, weight_shape, "out", out_shape, xd, wd, yd)
    _geometry("_plan_info", &g, "x", xd, wd, "out", yd, stride_h, stride_w, pad_top, pad_left,
              dil_h, dil_w, groups)
    _plan("_plan_info", &g, kinds[kernel], n_threads, &p)
    general = "col2im" if kernel == "backward_input" else "im2col"
    info = {"path": "phases" if p.n_phases else (
                "lanes" if p.lanes_mv else ("direct" if p.direct else general)),
            "tile": (p.mr, p.nr),
            "threads": p.nthreads, "workspace": p.total, "simd": p.level}
    if kernel == "backward_weight":
        info.update(flat_dot=p.flat_len > 0, lanes_dot=bool(p.lanes_dot),
                    images_per_block=p.images, blocks=p.blocks,
                    chunks=p.chunks)
    else:
        info.update(rowwise=bool(p.rowwise), tiles=p.n_tiles,
                    in_place=bool(p.lanes_in_place),  # lanes: the input read as it is
                    rowblock=p.rowblock,  # col2im: the gemm fills columns, not the output
                    cost=(p.cost, p.other_cost),  # input gradient: chosen path, the other
                    stores_into_output=bool(_stores_into(&p)) and (kernel == "forward" or p.direct))
    return info


def conv2d_forward(x, weight, bias, out, stride_h, stride_w, pad_top, pad_left, dil_h,
                   dil_w, groups, bint apply_relu, workspace, n_threads):
    """out = conv2d(x, weight) + bias, then max(0, .) when apply_relu; written fresh.

    x:         IN  (N, C_in, H, W)
    weight:    IN  (C_out, C_in/groups, kH, kW)
    bias:      IN  (C_out,) or None
    out:       OUT (N, C_out, H_out, W_out); H_out, W_out as PyTorch computes them with
               pad_top (pad_left) on both sides, or one more row (column) at the bottom
               (right) for 'same' padding with an even kernel extent. Input positions
               outside the image count as zeros.
    workspace: scratch, 1-D of the dtype with conv2d_workspace_size("forward", ...)
               elements, or None to allocate one for this call.
    All arrays C-contiguous, one dtype (float32 or float64).
    """
    cdef str k = "conv2d_forward"
    cdef Py_ssize_t xd[4]
    cdef Py_ssize_t wd[4]
    cdef Py_ssize_t yd[4]
    cdef Py_ssize_t q[7]
    cdef Py_ssize_t nb, nt
    cdef int dt = _dtype_num(k, "x", x)
    _check_array(k, "x", x, 4, dt, False, xd)
    _check_array(k, "weight", weight, 4, dt, False, wd)
    _check_array(k, "out", out, 4, dt, True, yd)
    if bias is not None:
        _check_array(k, "bias", bias, 1, dt, False, &nb)
        if nb != wd[0]:
            raise ValueError(f"{k}: bias has shape {bias.shape}, expected ({wd[0]},)")
    # scalars arrive as Python objects: checked here so errors name the kernel
    _int_params(k, stride_h, stride_w, pad_top, pad_left, dil_h, dil_w, groups, q)
    nt = check_threads(k, n_threads)
    cdef Geom g
    cdef Plan p
    _geometry(k, &g, "x", xd, wd, "out", yd, q[0], q[1], q[2], q[3], q[4], q[5], q[6])
    _check_disjoint(k, "out", out, "x", x, "weight", weight, "bias", bias)
    _plan(k, &g, FORWARD, nt, &p)
    if g.N == 0:
        return
    ws = _workspace(k, workspace, dt, &p)
    cdef Py_ssize_t *off = _index_area(ws, &p)
    cdef void *b = _data(bias) if bias is not None else NULL
    cdef void *px = _data(x)
    cdef void *pw = _data(weight)
    cdef void *po = _data(out)
    cdef void *pws = _data(ws)
    cdef bint relu = apply_relu
    if dt == cnp.NPY_FLOAT32:
        with nogil:
            _forward_run(&g, &p, <const float *>px, <const float *>pw, <const float *>b,
                         relu, <float *>po, <float *>pws, off)
    else:
        with nogil:
            _forward_run(&g, &p, <const double *>px, <const double *>pw, <const double *>b,
                         relu, <double *>po, <double *>pws, off)


def conv2d_backward_input(grad_out, weight, grad_x, stride_h, stride_w, pad_top, pad_left,
                          dil_h, dil_w, groups, workspace, n_threads):
    """grad_x = d(sum(grad_out * conv2d(x, weight))) / dx, written fresh.

    grad_out:  IN  (N, C_out, H_out, W_out)
    weight:    IN  (C_out, C_in/groups, kH, kW)
    grad_x:    OUT (N, C_in, H, W)
    workspace: scratch, conv2d_workspace_size("backward_input", ...) elements, or None.
    """
    cdef str k = "conv2d_backward_input"
    cdef Py_ssize_t xd[4]
    cdef Py_ssize_t wd[4]
    cdef Py_ssize_t yd[4]
    cdef Py_ssize_t q[7]
    cdef Py_ssize_t nt
    cdef int dt = _dtype_num(k, "grad_out", grad_out)
    _check_array(k, "grad_out", grad_out, 4, dt, False, yd)
    _check_array(k, "weight", weight, 4, dt, False, wd)
    _check_array(k, "grad_x", grad_x, 4, dt, True, xd)
    # scalars arrive as Python objects: checked here so errors name the kernel
    _int_params(k, stride_h, stride_w, pad_top, pad_left, dil_h, dil_w, groups, q)
    nt = check_threads(k, n_threads)
    cdef Geom g
    cdef Plan p
    _geometry(k, &g, "grad_x", xd, wd, "grad_out", yd, q[0], q[1], q[2], q[3], q[4], q[5],
              q[6])
    _check_disjoint(k, "grad_x", grad_x, "grad_out", grad_out, "weight", weight)
    _plan(k, &g, BACKWARD_INPUT, nt, &p)
    if g.N == 0:
        return
    ws = _workspace(k, workspace, dt, &p)
    cdef Py_ssize_t *off = _index_area(ws, &p)
    cdef void *pg = _data(grad_out)
    cdef void *pw = _data(weight)
    cdef void *px = _data(grad_x)
    cdef void *pws = _data(ws)
    if dt == cnp.NPY_FLOAT32:
        with nogil:
            _backward_input_run(&g, &p, <const float *>pg, <const float *>pw, <float *>px,
                                <float *>pws, off)
    else:
        with nogil:
            _backward_input_run(&g, &p, <const double *>pg, <const double *>pw, <double *>px,
                                <double *>pws, off)


def conv2d_backward_weight(x, grad_out, grad_weight, stride_h, stride_w, pad_top, pad_left,
                           dil_h, dil_w, groups, workspace, n_threads):
    """grad_weight = d(sum(grad_out * conv2d(x, weight))) / dweight, written fresh.

    x:           IN  (N, C_in, H, W)
    grad_out:    IN  (N, C_out, H_out, W_out)
    grad_weight: OUT (C_out, C_in/groups, kH, kW)
    workspace:   scratch, conv2d_workspace_size("backward_weight", ...) elements, or None.
    The sum over the batch runs in chunks fixed by the shapes: the result is the same,
    to the bit, for every n_threads.
    """
    cdef str k = "conv2d_backward_weight"
    cdef Py_ssize_t xd[4]
    cdef Py_ssize_t wd[4]
    cdef Py_ssize_t yd[4]
    cdef Py_ssize_t q[7]
    cdef Py_ssize_t nt
    cdef int dt = _dtype_num(k, "x", x)
    _check_array(k, "x", x, 4, dt, False, xd)
    _check_array(k, "grad_out", grad_out, 4, dt, False, yd)
    _check_array(k, "grad_weight", grad_weight, 4, dt, True, wd)
    # scalars arrive as Python objects: checked here so errors name the kernel
    _int_params(k, stride_h, stride_w, pad_top, pad_left, dil_h, dil_w, groups, q)
    nt = check_threads(k, n_threads)
    cdef Geom g
    cdef Plan p
    _geometry(k, &g, "x", xd, wd, "grad_out", yd, q[0], q[1], q[2], q[3], q[4], q[5], q[6])
    _check_disjoint(k, "grad_weight", grad_weight, "x", x, "grad_out", grad_out)
    if g.N == 0:  # an empty batch: the sum over it is zero (no plan, no workspace)
        if workspace is not None:
            _check_array(k, "workspace", workspace, 1, dt, True, NULL)
        grad_weight.fill(0)
        return
    _plan(k, &g, BACKWARD_WEIGHT, nt, &p)
    ws = _workspace(k, workspace, dt, &p)
    cdef Py_ssize_t *off = _index_area(ws, &p)
    cdef void *px = _data(x)
    cdef void *pg = _data(grad_out)
    cdef void *pw = _data(grad_weight)
    cdef void *pws = _data(ws)
    if dt == cnp.NPY_FLOAT32:
        with nogil:
            _backward_weight_run(&g, &p, <const float *>px, <const float *>pg, <float *>pw,
                                 <float *>pws, off)
    else:
        with nogil:
            _backward_weight_run(&g, &p, <const double *>px, <const double *>pg,
                                 <double *>pw, <double *>pws, off)


def conv2d_backward_bias(grad_out, grad_bias, n_threads):
    """grad_bias[c] = sum of grad_out[:, c], written fresh.

    grad_out:  IN  (N, C_out, H_out, W_out)
    grad_bias: OUT (C_out,)
    """
    cdef str k = "conv2d_backward_bias"
    cdef int dt = _dtype_num(k, "grad_out", grad_out)
    cdef Py_ssize_t yd[4]
    cdef Py_ssize_t nb, nt
    _check_array(k, "grad_out", grad_out, 4, dt, False, yd)
    _check_array(k, "grad_bias", grad_bias, 1, dt, True, &nb)
    if nb != yd[1]:
        raise ValueError(f"{k}: grad_bias has shape {grad_bias.shape}, expected ({yd[1]},) "
                         f"for grad_out {grad_out.shape}")
    nt = check_threads(k, n_threads)
    _check_disjoint(k, "grad_bias", grad_bias, "grad_out", grad_out, None, None)
    cdef Py_ssize_t N = yd[0], Co = yd[1], P = yd[2] * yd[3]
    cdef void *pg = _data(grad_out)
    cdef void *pb = _data(grad_bias)
    if dt == cnp.NPY_FLOAT32:
        with nogil:
            _bias_run(<const float *>pg, N, Co, P, <float *>pb, <int>min(nt, 1 << 16))
    else:
        with nogil:
            _bias_run(<const double *>pg, N, Co, P, <double *>pb, <int>min(nt, 1 << 16))
