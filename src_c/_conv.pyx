# Design: 2-D convolution (NCHW, weight (C_out, C_in/groups, kH, kW)); the twin of
# fastgrad/reference/conv.py (same names, same signatures, same results).
#
# All arithmetic is one of two register-tiled loops (src_c/conv_kernels.h: AVX2 and
# AVX-512 variants chosen at run time; portable Cython twins here for float64 and other
# CPUs):
#   gemm  C[m][n] = sum_k A[m][k] * B[off[k] + n]   output positions n along SIMD lanes
#   dot   C[m][k] += sum_p A[m][p] * B[off[k] + p]  weight gradient, a reduction over p
#         (or the same sums with m along the lanes: fgc_lanes_f32)
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
# General path (any stride): im2col into the workspace for forward and weight gradient,
# gemm + col2im for the input gradient.
# Planning (_plan) picks path, tile shape, tiling and thread count from the shapes with a
# cost model (padded multiply-adds over measured tile rates); _plan_info reports it.
# Plans are kept in a small table of C structs keyed by the geometry, so that a small
# call's fixed cost is the argument checks, not the planning.
#
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
# Scalar arguments and dimensions above this are rejected before any size arithmetic
# (products of two of them cannot overflow).
cdef Py_ssize_t MAX_PARAM = 1 << 31
# Workspaces above this many elements are rejected (no size arithmetic can wrap below it).
cdef double MAX_ELEMENTS = <double>(1 << 50)

include "_simd.pxi"

# Path overrides for tests and benchmarks (-1: choose by cost, 0: general, 1: direct).
cdef int _force_input_direct = -1
cdef int _force_flat_dot = -1
cdef int _force_lanes_dot = -1


def _force_paths(input_direct=None, flat_dot=None, lanes_dot=None):
    """Override the cost model (for tests of every path; None restores it): whether the
    stride-1 input gradient runs direct (True) or as gemm + col2im (False), whether the
    stride-1 weight gradient uses flat dots over a widened output gradient, and whether
    it puts output channels along the lanes (True wins over flat_dot; forcing flat_dot
    alone turns it off)."""
    global _force_input_direct, _force_flat_dot, _force_lanes_dot
    _force_input_direct = -1 if input_direct is None else int(bool(input_direct))
    _force_flat_dot = -1 if flat_dot is None else int(bool(flat_dot))
    _force_lanes_dot = -1 if lanes_dot is None else int(bool(lanes_dot))


# --------------------------------------------------------------------------- geometry

cdef struct Geom:
    Py_ssize_t N, C, H, W        # input
    Py_ssize_t Co, kh, kw        # weight (Co, Cg, kh, kw)
    Py_ssize_t Ho, Wo            # output
    Py_ssize_t sh, sw, pt, pl, dh, dw
    Py_ssize_t G, Cg, M, K       # groups, in/out channels per group, Cg*kh*kw


cdef struct Plan:
    bint direct                  # stride 1: shifted views of a padded plane, no im2col
    bint rowwise                 # gemm column tiles start at output rows (else run flat)
    int rowblock                 # >0: one-row gemm over blocks of this many output rows
    int level, mr, nr            # register tile: SIMD level (0 portable) and shape
    int nthreads
    Py_ssize_t rows, depth       # gemm rows and depth per group
    Py_ssize_t out_rows, out_cols, pitch   # the plane the gemm computes, its row pitch
    Py_ssize_t ldc, n_tiles      # gemm output pitch and number of column tiles
    Py_ssize_t kgroup            # direct: depth entries per kernel row (channels * kW)
    Py_ssize_t src_top, src_rows # direct: rows of the padded plane holding the source
    Py_ssize_t Hp, Wp, top, left # padded plane and where the source starts in it
    Py_ssize_t slack             # zeros after the padded planes (reads past the last row)
    Py_ssize_t flat_len          # weight gradient: widened output-gradient plane length
    bint lanes_dot               # weight gradient: output channels along the lanes
    Py_ssize_t ldg               # lanes_dot: channels per position of the transposed gradient
    Py_ssize_t images            # weight gradient: images per block
    Py_ssize_t blocks            # weight gradient: blocks in the batch
    Py_ssize_t img_b, img_d      # weight gradient: per-image strides of the block buffers
    Py_ssize_t chunks            # weight gradient: chunks of the batch, each its own sum
    Py_ssize_t partial           # weight gradient: stride of the chunks' partial sums
    Py_ssize_t n_off             # entries of the offset table
    Py_ssize_t size_a, size_b, size_c, size_d, per_thread, at_partial, at_index, total


cdef inline Py_ssize_t _round_up(Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    return (n + m - 1) // m * m


cdef inline Py_ssize_t _out_size(Py_ssize_t n, Py_ssize_t pads, Py_ssize_t extent,
                                 Py_ssize_t stride) noexcept nogil:
    if n + pads < extent:
        return 0
    return (n + pads - extent) // stride + 1


cdef tuple _shape(const Py_ssize_t *dims, int n):
    return tuple([dims[i] for i in range(n)])


cdef int _shape_dims(str kernel, str x_name, tuple xs, tuple ws, str y_name, tuple ys,
                     Py_ssize_t *xd, Py_ssize_t *wd, Py_ssize_t *yd) except -1:
    """Shapes given as 4-tuples into C arrays (sizes above MAX_PARAM refused first)."""
    if max(xs + ws + ys) > MAX_PARAM:
        raise ValueError(f"{kernel}: a dimension above {MAX_PARAM}: {x_name} {xs}, weight "
                         f"{ws}, {y_name} {ys}")
    cdef int i
    for i in range(4):
        xd[i], wd[i], yd[i] = xs[i], ws[i], ys[i]
    return 0


cdef int _geometry(str kernel, Geom *g, str x_name, const Py_ssize_t *xd,
                   const Py_ssize_t *wd, str y_name, const Py_ssize_t *yd, Py_ssize_t sh,
                   Py_ssize_t sw, Py_ssize_t pt, Py_ssize_t pl, Py_ssize_t dh, Py_ssize_t dw,
                   Py_ssize_t groups) except -1:
    """Fill ``g`` from the shapes (4 sizes each) and parameters, or raise ValueError."""
    cdef int i
    if sh < 1 or sw < 1:
        raise ValueError(f"{kernel}: stride must be >= 1, got ({sh}, {sw})")
    if dh < 1 or dw < 1:
        raise ValueError(f"{kernel}: dilation must be >= 1, got ({dh}, {dw})")
    if pt < 0 or pl < 0:
        raise ValueError(f"{kernel}: padding must be >= 0, got ({pt}, {pl})")
    if groups < 1:
        raise ValueError(f"{kernel}: groups must be >= 1, got {groups}")
    if max(sh, sw, dh, dw, pt, pl, groups) > MAX_PARAM:
        raise ValueError(f"{kernel}: stride, padding, dilation or groups above {MAX_PARAM}")
    for i in range(4):
        if xd[i] > MAX_PARAM or wd[i] > MAX_PARAM or yd[i] > MAX_PARAM:
            raise ValueError(f"{kernel}: a dimension above {MAX_PARAM}: {x_name} "
                             f"{_shape(xd, 4)}, weight {_shape(wd, 4)}, {y_name} {_shape(yd, 4)}")
    g.N, g.C, g.H, g.W = xd[0], xd[1], xd[2], xd[3]
    g.Co, g.Cg, g.kh, g.kw = wd[0], wd[1], wd[2], wd[3]
    g.Ho, g.Wo = yd[2], yd[3]
    g.sh, g.sw, g.pt, g.pl, g.dh, g.dw, g.G = sh, sw, pt, pl, dh, dw, groups
    if g.C < 1 or g.H < 1 or g.W < 1:
        raise ValueError(f"{kernel}: {x_name} needs at least one channel and a non-empty "
                         f"image, got shape {_shape(xd, 4)}")
    if g.Co < 1 or g.Cg < 1 or g.kh < 1 or g.kw < 1:
        raise ValueError(f"{kernel}: weight must have no empty dimension, got shape {_shape(wd, 4)}")
    if g.C % groups or g.Co % groups:
        raise ValueError(f"{kernel}: groups={groups} must divide both the input channels "
                         f"({g.C}) and the output channels ({g.Co})")
    if g.Cg * groups != g.C:
        raise ValueError(f"{kernel}: weight {_shape(wd, 4)} expects {g.Cg * groups} input channels "
                         f"({g.Cg} per group x {groups} groups), {x_name} has {g.C}")
    if yd[0] != g.N or yd[1] != g.Co:
        raise ValueError(f"{kernel}: {y_name} has shape {_shape(yd, 4)}, expected ({g.N}, {g.Co}, "
                         f"H_out, W_out) for {x_name} {_shape(xd, 4)} and weight {_shape(wd, 4)}")
    cdef Py_ssize_t eh = dh * (g.kh - 1) + 1, ew = dw * (g.kw - 1) + 1
    cdef Py_ssize_t h0 = _out_size(g.H, 2 * pt, eh, sh), h1 = _out_size(g.H, 2 * pt + 1, eh, sh)
    cdef Py_ssize_t w0 = _out_size(g.W, 2 * pl, ew, sw), w1 = _out_size(g.W, 2 * pl + 1, ew, sw)
    if g.Ho < 1 or (g.Ho != h0 and g.Ho != h1):
        raise ValueError(f"{kernel}: {y_name} height {g.Ho} does not fit: H={g.H}, "
                         f"pad_top={pt}, kernel {g.kh}, dilation {dh}, stride {sh} give "
                         f"{h0} (or {h1} with one more row of bottom padding)"
                         + (" and the kernel must fit in the padded input" if h1 < 1 else ""))
    if g.Wo < 1 or (g.Wo != w0 and g.Wo != w1):
        raise ValueError(f"{kernel}: {y_name} width {g.Wo} does not fit: W={g.W}, "
                         f"pad_left={pl}, kernel {g.kw}, dilation {dw}, stride {sw} give "
                         f"{w0} (or {w1} with one more column of right padding)"
                         + (" and the kernel must fit in the padded input" if w1 < 1 else ""))
    g.M = g.Co // groups
    g.K = g.Cg * g.kh * g.kw
    return 0


cdef inline Py_ssize_t _floor_div(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return a // b if a >= 0 else -((-a + b - 1) // b)


cdef inline Py_ssize_t _ceil_div(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return (a + b - 1) // b if a >= 0 else -((-a) // b)


cdef void _k_range(Plan *p, Geom *g, Py_ssize_t ra, Py_ssize_t rb, Py_ssize_t *k0,
                   Py_ssize_t *k1) noexcept nogil:
    """The depth range that output rows ra..rb can see non-zero: on the direct path the
    depth runs kernel row by kernel row, and a kernel row whose input row is padding for
    every output row of the tile is skipped."""
    cdef Py_ssize_t oy, lo = g.kh, hi = -1, l, h
    if not p.direct:
        k0[0], k1[0] = 0, p.depth
        return
    if g.dh == 1:  # rows move together: the union is the first row's lo, the last's hi
        lo = max(<Py_ssize_t>0, p.src_top - rb)
        hi = min(g.kh - 1, p.src_top + p.src_rows - 1 - ra)
        if lo > hi or p.src_top - ra > g.kh - 1 or p.src_top + p.src_rows - 1 - rb < 0:
            # some rows may still be empty; fall through to the exact loop
            lo, hi = g.kh, -1
        else:
            k0[0], k1[0] = lo * p.kgroup, (hi + 1) * p.kgroup
            return
    for oy in range(ra, rb + 1):
        l = max(<Py_ssize_t>0, _ceil_div(p.src_top - oy, g.dh))
        h = min(g.kh - 1, _floor_div(p.src_top + p.src_rows - 1 - oy, g.dh))
        if l <= h:
            lo = min(lo, l)
            hi = max(hi, h)
    if hi < lo:
        k0[0], k1[0] = 0, 0
    else:
        k0[0], k1[0] = lo * p.kgroup, (hi + 1) * p.kgroup


cdef Py_ssize_t _tiles(Plan *p, Geom *g, Py_ssize_t nr, bint rowwise, Py_ssize_t *out,
                       Py_ssize_t *depth_sum, Py_ssize_t *ldc) noexcept nogil:
    """List the gemm's column tiles (column, k0, k1) into `out` (if not NULL); returns
    their number, the sum of their depths and the output pitch they need.
    Flat tiles run across row ends (the plane's extra columns are computed and dropped);
    row-wise tiles start at each output row, so a tile sees a single output row and can
    skip every kernel row that reads padding. A later row's tile may overwrite an
    earlier row's dropped columns, never its kept ones (the pitch is >= the row)."""
    cdef Py_ssize_t count = 0, total = 0, t, j, per_row, col, k0, k1, oy, ntile
    if rowwise:
        per_row = (p.out_cols + nr - 1) // nr
        for oy in range(p.out_rows):
            _k_range(p, g, oy, oy, &k0, &k1)
            for j in range(per_row):
                if out != NULL:
                    out[3 * count] = oy * p.pitch + j * nr
                    out[3 * count + 1], out[3 * count + 2] = k0, k1
                count += 1
                total += k1 - k0
        ldc[0] = (p.out_rows - 1) * p.pitch + per_row * nr
    else:
        ntile = (p.out_rows * p.pitch + nr - 1) // nr
        for t in range(ntile):
            col = t * nr
            _k_range(p, g, col // p.pitch, min(p.out_rows - 1, (col + nr - 1) // p.pitch),
                     &k0, &k1)
            if out != NULL:
                out[3 * count], out[3 * count + 1], out[3 * count + 2] = col, k0, k1
            count += 1
            total += k1 - k0
        ldc[0] = ntile * nr
    depth_sum[0] = total
    return count


cdef Py_ssize_t _block_tiles(Plan *p, Py_ssize_t R, Py_ssize_t nr, Py_ssize_t *out,
                             Py_ssize_t *ldc) noexcept nogil:
    """The row-blocked gemm's tiles (column, 0, depth): R output rows from each multiple
    of R (the last block moved up to end at the last row: it recomputes a few rows, the
    same way) times nr columns from each multiple of nr. Needs out_rows >= R."""
    cdef Py_ssize_t per_row = (p.out_cols + nr - 1) // nr, count = 0, i, j, oy
    for i in range((p.out_rows + R - 1) // R):
        oy = min(i * R, p.out_rows - R)
        for j in range(per_row):
            if out != NULL:
                out[3 * count] = oy * p.pitch + j * nr
                out[3 * count + 1], out[3 * count + 2] = 0, p.depth
            count += 1
    ldc[0] = (p.out_rows - 1) * p.pitch + per_row * nr
    return count


cdef void _list_tiles(Plan *p, Geom *g, Py_ssize_t *out) noexcept nogil:
    cdef Py_ssize_t depth_sum, ldc
    if p.rowblock:
        _block_tiles(p, p.rowblock, p.nr, out, &ldc)
    else:
        _tiles(p, g, p.nr, p.rowwise, out, &depth_sum, &ldc)


cdef void _gemm_geometry(Plan *p, Geom *g, int kind, bint direct) noexcept nogil:
    """The gemm that forward (kind FORWARD) or the input gradient runs per group."""
    p.direct = direct
    p.Hp = p.Wp = p.top = p.left = p.src_top = p.src_rows = p.kgroup = 0
    if kind == FORWARD:
        p.rows, p.depth = g.M, g.K
        p.out_rows, p.out_cols = g.Ho, g.Wo
        p.pitch = g.Wo
        if direct:
            p.Hp, p.Wp = g.Ho + g.dh * (g.kh - 1), g.Wo + g.dw * (g.kw - 1)
            p.top, p.left = g.pt, g.pl
            p.src_top, p.src_rows, p.kgroup = g.pt, g.H, g.Cg * g.kw
            p.pitch = p.Wp
    elif direct:
        # the forward convolution of the padded output gradient with the flipped weight
        p.rows, p.depth = g.Cg, g.M * g.kh * g.kw
        p.out_rows, p.out_cols = g.H, g.W
        p.Hp, p.Wp = g.H + g.dh * (g.kh - 1), g.W + g.dw * (g.kw - 1)
        p.top, p.left = g.dh * (g.kh - 1) - g.pt, g.dw * (g.kw - 1) - g.pl
        p.src_top, p.src_rows, p.kgroup = p.top, g.Ho, g.M * g.kw
        p.pitch = p.Wp
    else:
        # col = weight^T (K x M) times the output gradient (M x Ho*Wo), then col2im
        p.rows, p.depth = g.K, g.M
        p.out_rows, p.out_cols = g.Ho, g.Wo
        p.pitch = g.Wo


cdef double _choose_tiles(Plan *p, Geom *g) noexcept nogil:
    """Pick the register tile and tiling (flat or row-wise) that takes the least time:
    padded multiply-adds (padded rows, padded columns, and the depth of each column tile)
    over the tile's measured rate, plus a per-tile overhead. Returns that time, in units
    of one multiply-add of the AVX2 6x16 tile."""
    # (level, rows, columns, rate): rates measured on an AVX-512 Xeon relative to AVX2
    # 6x16; few-row tiles load more per multiply-add (the B loads are unaligned), and
    # AVX-512 pays twice for that. AVX-512 6x16 (one vector per row) serves row-wise
    # tiles of narrow images, whose kernel rows over padding it skips row by row.
    cdef double shapes[48]
    shapes[:] = [1, 6, 16, 1.0, 1, 4, 24, 0.96, 1, 3, 32, 0.95, 1, 2, 48, 0.68,
                 1, 1, 96, 0.61,
                 2, 8, 48, 1.64, 2, 6, 64, 1.62, 2, 4, 96, 1.47, 2, 3, 128, 0.82,
                 2, 2, 192, 0.77, 2, 1, 384, 0.55, 2, 6, 16, 1.25]
    cdef double best = -1, cost
    cdef Py_ssize_t count, total, ldc, panels
    cdef int i, layout, level, mr, nr
    for i in range(12):
        level, mr, nr = <int>shapes[4 * i], <int>shapes[4 * i + 1], <int>shapes[4 * i + 2]
        if level > max(fg_simd_level(), 1):
            continue
        panels = (p.rows + mr - 1) // mr
        for layout in range(2 if p.direct else 1):
            count = _tiles(p, g, nr, layout == 1, NULL, &total, &ldc)
            cost = panels * (mr * nr * total / shapes[4 * i + 3] + 400.0 * count)
            if best < 0 or cost < best:
                best = cost
                p.level = level if fg_simd_level() >= 1 else 0
                p.mr, p.nr, p.rowwise, p.n_tiles, p.ldc = mr, nr, layout == 1, count, ldc
    # One-row A on the direct path (dilation 1 between kernel rows, heights 3/5/7): the
    # row-blocked gemm (R output rows x nr columns per tile, every depth entry) loads each
    # plane row once for up to min(R, kh) kernel rows.
    cdef double rates[3]
    rates[:] = [0, 1.2, 1.9]   # per SIMD level, relative to AVX2 6x16
    p.rowblock = 0
    if (p.direct and p.rows == 1 and g.dh == 1 and (g.kh == 3 or g.kh == 5 or g.kh == 7)
            and fg_simd_level() >= 1):
        for i in range(6 if fg_simd_level() >= 2 else 1):
            mr = 8 - i // 2 if fg_simd_level() >= 2 else 4
            nr = (16 if fg_simd_level() >= 2 else 8) * (2 - i % 2)
            if p.out_rows < mr:
                continue
            count = _block_tiles(p, mr, nr, NULL, &ldc)
            cost = mr * nr * count * p.depth / rates[min(fg_simd_level(), 2)] + 400.0 * count
            if cost < best:
                best = cost
                p.level = min(fg_simd_level(), 2)
                p.mr, p.nr, p.rowwise, p.n_tiles, p.ldc = 1, nr, True, count, ldc
                p.rowblock = mr
    return best


cdef void _gemm_sizes(Plan *p, Geom *g, int kind) noexcept nogil:
    p.size_a = g.G * _round_up(p.rows, p.mr) * p.depth
    p.size_c = p.rows * p.ldc
    p.slack = 0
    if p.direct:
        # tiles read up to ldc columns past each shifted plane start
        p.slack = max(<Py_ssize_t>0, p.ldc - p.out_rows * p.Wp) + g.dw * (g.kw - 1) + 1
        p.size_b = (g.C if kind == FORWARD else g.Co) * p.Hp * p.Wp + p.slack
    elif kind == FORWARD:
        p.size_b = p.depth * p.ldc          # im2col rows
    else:
        p.size_b = g.M * p.ldc              # the output gradient, rows padded to ldc
    p.n_off = p.depth


cdef void _dot_tile(Py_ssize_t rows, Py_ssize_t depth, Py_ssize_t a_row_len,
                    Py_ssize_t b_len, int *mr, int *nr) noexcept nogil:
    """The dot tile computing the fewest padded entries (12 accumulators with AVX2, 24
    with AVX-512), among the shapes whose row panel (mr rows of a_row_len) fits in L1
    next to the b_len elements every tile reads, when those fit at all."""
    cdef int shapes[8]
    if fg_simd_level() >= 2:
        shapes[:] = [4, 6, 6, 4, 8, 3, 3, 8]
    else:
        shapes[:] = [4, 3, 6, 2, 3, 4, 2, 6]
    cdef double best = -1, cost
    cdef int i
    for i in range(4):
        cost = <double>_round_up(rows, shapes[2 * i]) * _round_up(depth, shapes[2 * i + 1])
        if shapes[2 * i] * a_row_len + b_len > L1_FLOATS and b_len <= L1_FLOATS:
            cost = cost * 4 + shapes[2 * i]  # spills L1: only when nothing else fits
        if best < 0 or cost < best:
            best = cost
            mr[0], nr[0] = shapes[2 * i], shapes[2 * i + 1]


# Plans by geometry: choosing a tiling walks every candidate's column tiles, which costs
# more than a small convolution; a training loop asks for the same few plans each step.
# A small table of C structs (compared with memcmp, replaced round-robin): a lookup
# makes no Python objects. Only touched with the GIL held.
cdef struct PlanKey:
    Py_ssize_t v[24]

cdef enum:
    PLAN_SLOTS = 64

cdef PlanKey _plan_keys[PLAN_SLOTS]
cdef Plan _plan_saved[PLAN_SLOTS]
cdef int _plans_used = 0, _plan_next = 0, _plan_last = 0


cdef int _plan(str kernel, Geom *g, int kind, Py_ssize_t n_threads, Plan *p) except -1:
    """Fill ``p`` for this geometry: from the cache, or by _make_plan."""
    global _plans_used, _plan_next, _plan_last
    cdef PlanKey key
    cdef int i, slot
    if n_threads < 1:
        raise ValueError(f"{kernel}: n_threads must be >= 1, got {n_threads}")
    key.v[:] = [kind, g.N, g.C, g.H, g.W, g.Co, g.Cg, g.kh, g.kw, g.Ho, g.Wo, g.sh, g.sw,
                g.pt, g.pl, g.dh, g.dw, g.G, n_threads, fg_simd_level(), _force_input_direct,
                _force_flat_dot, _force_lanes_dot, 0]
    for i in range(_plans_used):
        slot = (_plan_last + i) % _plans_used  # the last one found first
        if memcmp(&_plan_keys[slot], &key, sizeof(PlanKey)) == 0:
            memcpy(p, &_plan_saved[slot], sizeof(Plan))
            _plan_last = slot
            return 0
    _make_plan(kernel, g, kind, n_threads, p)
    slot = _plan_next
    _plan_next = (_plan_next + 1) % PLAN_SLOTS
    _plans_used = max(_plans_used, slot + 1)
    memcpy(&_plan_keys[slot], &key, sizeof(PlanKey))
    memcpy(&_plan_saved[slot], p, sizeof(Plan))
    _plan_last = slot
    return 0


cdef int _make_plan(str kernel, Geom *g, int kind, Py_ssize_t n_threads, Plan *p) except -1:
    """Choose the path, tile and thread count and lay out the workspace."""
    cdef double flops = 2.0 * g.N * g.Co * g.Ho * g.Wo * g.K
    cdef double dsize, direct_cost, col_cost
    cdef Py_ssize_t lanes
    cdef bint stride1 = g.sh == 1 and g.sw == 1
    p.nthreads = 1
    if flops >= PARALLEL_MIN_FLOPS and g.N > 1 and n_threads > 1:
        p.nthreads = <int>min(n_threads, g.N)
    p.flat_len = p.n_tiles = p.ldc = p.partial = 0
    p.images, p.img_b, p.img_d, p.blocks, p.chunks = 1, 0, 0, 0, 1
    p.size_a = p.size_b = p.size_c = p.size_d = 0
    p.rowwise = p.lanes_dot = False
    p.rowblock = 0
    p.ldg = 0
    # Estimate every buffer in floating point first: the integer sizes below are only
    # computed once they are known to be far from overflow.
    cdef double ext_h = <double>g.dh * (g.kh - 1), ext_w = <double>g.dw * (g.kw - 1)
    dsize = (<double>g.C + g.Co) * (g.H + g.Ho + ext_h + 1) * (g.W + g.Wo + ext_w + 96)
    dsize += (<double>g.K + g.Co + 8) * (g.Ho * (g.Wo + ext_w) + g.H * (g.W + ext_w) + 96)
    dsize += (<double>g.Ho * g.Wo + 1) * (g.Co + 64)  # a transposed output gradient
    dsize = (dsize * 8 * (p.nthreads + 1)
             + (MAX_CHUNKS + 1.0) * (g.Co + 8) * (g.K + g.Co * g.kh * g.kw + 8))
    if dsize > MAX_ELEMENTS:
        raise ValueError(f"{kernel}: the problem is too large (a workspace of about "
                         f"{dsize:.3g} elements)")
    if kind == FORWARD:
        _gemm_geometry(p, g, kind, stride1)
        _choose_tiles(p, g)
        _gemm_sizes(p, g, kind)
    elif kind == BACKWARD_INPUT:
        if stride1:
            # Stride 1: the direct path works over every input position and window
            # element, gemm + col2im over the output positions only, plus a scatter.
            # Small images with large kernels favour the second (most windows of the
            # first read padding, even with padded kernel rows skipped).
            _gemm_geometry(p, g, kind, False)
            # the scatter: ~20 cycles per output row segment plus ~1/4 cycle per element,
            # at 16 multiply-adds per cycle
            col_cost = _choose_tiles(p, g) + 16.0 * g.K * g.Ho * (20.0 + g.Wo / 4.0)
            _gemm_geometry(p, g, kind, True)
            direct_cost = _choose_tiles(p, g)
            if _force_input_direct >= 0:
                stride1 = _force_input_direct == 1
            else:
                stride1 = direct_cost <= col_cost
        _gemm_geometry(p, g, kind, stride1)
        _choose_tiles(p, g)
        _gemm_sizes(p, g, kind)
    else:
        p.direct = stride1
        p.rows, p.depth = g.M, g.K
        p.level = fg_simd_level()
        p.chunks = _weight_chunks(g, flops)  # at most; whole blocks of images each
        p.Hp = p.Wp = p.top = p.left = p.slack = 0
        if p.direct:
            p.Hp, p.Wp = g.Ho + g.dh * (g.kh - 1), g.Wo + g.dw * (g.kw - 1)
            p.top, p.left = g.pt, g.pl
            _dot_tile(p.rows, p.depth, g.Ho * p.Wp, g.Cg * p.Hp * p.Wp, &p.mr, &p.nr)
        else:
            _dot_tile(p.rows, p.depth, g.Ho * g.Wo, g.K * g.Ho * g.Wo, &p.mr, &p.nr)
        if p.direct:
            # Dots over whole planes (the output gradient widened to the plane's pitch,
            # zeros in the extra columns) when that takes fewer 8-lane steps than row by
            # row dots with masked row ends; then a block of images is summed in one go.
            p.flat_len = _round_up(g.Ho * p.Wp, LANES)
            if _force_flat_dot == 0 or (_force_flat_dot < 0 and p.flat_len > g.Ho * _round_up(
                    g.Wo, 16 if fg_simd_level() >= 2 else 8)):
                p.flat_len = 0
            p.slack = g.dw * (g.kw - 1) + LANES
            p.img_b = _round_up(g.C * p.Hp * p.Wp + p.slack, ALIGN)
            p.img_d = _round_up(g.Co * p.flat_len, ALIGN)
            lanes = 16 if fg_simd_level() >= 2 else 8
            if _force_lanes_dot == 1 or (_force_lanes_dot < 0 and _force_flat_dot < 0 and
                                         fg_simd_level() >= 1 and g.M >= lanes and g.K >= LANES_DOT_MIN_K
                                         and (fg_simd_level() >= 2 or g.M <= 2 * lanes)):
                # output channels along the lanes: vectors of channels times window
                # elements broadcast from the padded planes, over exactly the output
                # positions (no extra columns, no lane sums). The gradient is transposed
                # first: worth it when every position serves many window elements (and
                # the channels fill the lanes; with AVX2's 16 registers, the dots do
                # better on many channels).
                p.lanes_dot = True
                p.flat_len = 0
                p.mr = 1 if g.M <= lanes else (2 if g.M <= 2 * lanes or fg_simd_level() < 2 else 4)
                p.nr = 8 if p.mr == 1 else 6
                p.ldg = _round_up(g.M, p.mr * lanes)
                p.img_d = _round_up(g.G * g.Ho * g.Wo * p.ldg, ALIGN)
                p.images = _ceil_div(LANES_DOT_POSITIONS, g.Ho * g.Wo)
                p.images = min(p.images, ROW_DOT_IMAGES, (g.N + p.chunks - 1) // p.chunks)
                p.images = max(p.images, <Py_ssize_t>1)
            elif p.flat_len:
                # as many images per block as keep one row panel's data (its rows of the
                # widened gradient and the padded planes) within ~32 KB of L1
                p.images = 8192 // (p.mr * p.flat_len + g.Cg * p.Hp * p.Wp + p.slack)
                p.images = max(<Py_ssize_t>1, min(<Py_ssize_t>8, p.images))
                p.images = min(p.images, (g.N + p.chunks - 1) // p.chunks)
                p.images = max(p.images, <Py_ssize_t>1)
            else:
                # row by row: a tile's dots run over every image of the block, so that
                # its lane sums and stores are amortized over ~ROW_DOT_STEPS vector steps
                # (small images; large ones have as many in one image)
                p.images = _ceil_div(ROW_DOT_STEPS, g.Ho * _ceil_div(g.Wo, 16 if fg_simd_level() >= 2 else 8))
                p.images = min(p.images, ROW_DOT_IMAGES, (g.N + p.chunks - 1) // p.chunks)
                p.images = max(p.images, <Py_ssize_t>1)
            p.size_b = p.images * p.img_b
            p.size_d = p.images * p.img_d
        else:
            p.size_b = g.K * g.Ho * g.Wo
        p.blocks = (g.N + p.images - 1) // p.images
        p.chunks = max(<Py_ssize_t>1, min(p.chunks, p.blocks))
        p.nthreads = <int>min(<Py_ssize_t>p.nthreads, p.chunks)
        if p.chunks > 1:
            p.partial = _round_up(g.Co * g.K, ALIGN)
        p.n_off = p.depth
    p.per_thread = (_round_up(p.size_b, ALIGN) + _round_up(p.size_c, ALIGN)
                    + _round_up(p.size_d, ALIGN))
    p.at_partial = _round_up(p.size_a, ALIGN) + p.nthreads * p.per_thread
    # then the offset table and tile list: 8-byte entries, two elements each
    p.at_index = p.at_partial + (p.chunks - 1 if p.nthreads > 1 else 1) * p.partial
    p.total = p.at_index + _round_up(2 * (p.n_off + 3 * p.n_tiles), ALIGN) + ALIGN
    return 0


cdef Py_ssize_t _weight_chunks(Geom *g, double flops) noexcept nogil:
    """How many chunks the weight gradient splits the batch into: a function of the
    shapes only, so that the sums, and so the bits, are the same for any thread count.
    One chunk (no partial sums) when the work is too small to be worth threads."""
    cdef Py_ssize_t per_chunk, chunks
    if flops < PARALLEL_MIN_FLOPS or g.N < 2:
        return 1
    per_chunk = (CHUNK_MIN_POSITIONS + g.Ho * g.Wo - 1) // (g.Ho * g.Wo)  # images
    chunks = max(<Py_ssize_t>2, min(MAX_CHUNKS, g.N // per_chunk))
    chunks = min(chunks, 1 + PARTIAL_BUDGET // (g.Co * g.K))
    return max(<Py_ssize_t>1, chunks)


cdef inline floating *_aligned(floating *ws) noexcept nogil:
    # First element on a 64-byte boundary (the workspace has ALIGN elements to spare).
    cdef uintptr_t addr = <uintptr_t>ws
    cdef uintptr_t pad = (64 - (addr & 63)) & 63
    return <floating *>(addr + pad)


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


# --------------------------------------------------------------------------- data movement

cdef void _pad_planes(const floating *src, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                      floating *dst, Py_ssize_t Hp, Py_ssize_t Wp, Py_ssize_t top,
                      Py_ssize_t left, Py_ssize_t slack) noexcept nogil:
    """dst[c][r][q] = src[c][r - top][q - left] inside src, else 0; then `slack` zeros.
    top/left may be negative (the source is cropped)."""
    cdef Py_ssize_t c, r, sr
    cdef Py_ssize_t q0 = max(<Py_ssize_t>0, left), q1 = min(Wp, W + left)
    cdef floating *d
    for c in range(C):
        for r in range(Hp):
            d = dst + (c * Hp + r) * Wp
            sr = r - top
            if sr < 0 or sr >= H or q1 <= q0:
                memset(d, 0, Wp * sizeof(floating))
            else:
                memset(d, 0, q0 * sizeof(floating))
                memcpy(d + q0, src + (c * H + sr) * W + (q0 - left), (q1 - q0) * sizeof(floating))
                memset(d + q1, 0, (Wp - q1) * sizeof(floating))
    memset(dst + C * Hp * Wp, 0, slack * sizeof(floating))


cdef inline void _x_range(Geom *g, Py_ssize_t kx, Py_ssize_t *lo, Py_ssize_t *hi,
                          Py_ssize_t *shift) noexcept nogil:
    """Output columns ox in [lo, hi) read input column ox*sw + shift inside [0, W)."""
    cdef Py_ssize_t s = kx * g.dw - g.pl
    shift[0] = s
    lo[0] = 0 if s >= 0 else (-s + g.sw - 1) // g.sw
    hi[0] = (g.W - s + g.sw - 1) // g.sw if g.W > s else 0
    lo[0] = min(lo[0], g.Wo)
    hi[0] = max(lo[0], min(hi[0], g.Wo))


cdef void _im2col(Geom *g, const floating *src, floating *col, Py_ssize_t ld) noexcept nogil:
    """col[k*ld + oy*Wo + ox] = input of window (oy, ox) at weight element k=(c, ky, kx)
    of one group (src: its Cg planes), zero outside the image; zeros from Ho*Wo to ld."""
    cdef Py_ssize_t c, ky, kx, oy, ox, iy, lo, hi, s, k = 0
    cdef Py_ssize_t P = g.Ho * g.Wo
    cdef floating *row
    cdef floating *d
    cdef const floating *srow
    for c in range(g.Cg):
        for ky in range(g.kh):
            for kx in range(g.kw):
                row = col + k * ld
                _x_range(g, kx, &lo, &hi, &s)
                for oy in range(g.Ho):
                    d = row + oy * g.Wo
                    iy = oy * g.sh - g.pt + ky * g.dh
                    if iy < 0 or iy >= g.H:
                        memset(d, 0, g.Wo * sizeof(floating))
                        continue
                    srow = src + (c * g.H + iy) * g.W
                    memset(d, 0, lo * sizeof(floating))
                    if g.sw == 1:
                        memcpy(d + lo, srow + lo + s, (hi - lo) * sizeof(floating))
                    else:
                        for ox in range(lo, hi):
                            d[ox] = srow[ox * g.sw + s]
                    memset(d + hi, 0, (g.Wo - hi) * sizeof(floating))
                memset(row + P, 0, (ld - P) * sizeof(floating))
                k += 1


cdef void _col2im(Geom *g, const floating *col, Py_ssize_t ld, floating *dst) noexcept nogil:
    """The adjoint of _im2col: dst (one group's Cg planes) += every col entry at the
    input position it was read from."""
    cdef Py_ssize_t c, ky, kx, oy, ox, iy, lo, hi, s, k = 0
    cdef const floating *row
    cdef floating *drow
    for c in range(g.Cg):
        for ky in range(g.kh):
            for kx in range(g.kw):
                row = col + k * ld
                _x_range(g, kx, &lo, &hi, &s)
                for oy in range(g.Ho):
                    iy = oy * g.sh - g.pt + ky * g.dh
                    if iy < 0 or iy >= g.H:
                        continue
                    drow = dst + (c * g.H + iy) * g.W
                    if g.sw == 1:  # contiguous: vectorizes
                        for ox in range(lo, hi):
                            drow[ox + s] += row[oy * g.Wo + ox]
                    else:
                        for ox in range(lo, hi):
                            drow[ox * g.sw + s] += row[oy * g.Wo + ox]
                k += 1


cdef void _store_rows(const floating *wide, Py_ssize_t ldc, Py_ssize_t pitch,
                      Py_ssize_t rows, Py_ssize_t Ho, Py_ssize_t Wo, floating *dst,
                      const floating *bias, bint relu) noexcept nogil:
    """dst[m][oy][ox] = wide[m*ldc + oy*pitch + ox] (+ bias[m]) (then max(0, .))."""
    cdef Py_ssize_t m, oy, ox
    cdef floating b, v
    cdef const floating *s
    cdef floating *d
    for m in range(rows):
        b = bias[m] if bias != NULL else 0
        for oy in range(Ho):
            s = wide + m * ldc + oy * pitch
            d = dst + (m * Ho + oy) * Wo
            if bias != NULL and relu:
                for ox in range(Wo):
                    v = s[ox] + b
                    d[ox] = 0 if v < 0 else v  # NaN stays NaN
            elif bias != NULL:
                for ox in range(Wo):
                    d[ox] = s[ox] + b
            elif relu:
                for ox in range(Wo):
                    v = s[ox]
                    d[ox] = 0 if v < 0 else v
            else:
                memcpy(d, s, Wo * sizeof(floating))


# --------------------------------------------------------------------------- weight packing

cdef enum:
    PACK_FORWARD_DIRECT = 0    # A[oc][k], k = (ky, c, kx)
    PACK_FORWARD_IM2COL = 1    # A[oc][k], k = (c, ky, kx): the weight as (M, K)
    PACK_INPUT_DIRECT = 2      # A[ci][k], k = (ky, oc, kx), kernel flipped
    PACK_INPUT_COL2IM = 3      # A[k][oc]: the weight transposed, (K, M)


cdef Py_ssize_t _weight_columns(int order, Geom *g, Py_ssize_t *kidx) noexcept nogil:
    """kidx[k] = where A[0][k] of `order` sits in one group's weight (M, Cg, kh, kw);
    returns the step between rows: A[row][k] = w[kidx[k] + row * step]."""
    cdef Py_ssize_t ky, c, kx
    if order == PACK_FORWARD_DIRECT:
        for ky in range(g.kh):
            for c in range(g.Cg):
                for kx in range(g.kw):
                    kidx[(ky * g.Cg + c) * g.kw + kx] = (c * g.kh + ky) * g.kw + kx
        return g.K
    if order == PACK_FORWARD_IM2COL:
        for c in range(g.K):
            kidx[c] = c
        return g.K
    if order == PACK_INPUT_DIRECT:
        for ky in range(g.kh):
            for c in range(g.M):  # the output channel
                for kx in range(g.kw):
                    kidx[(ky * g.M + c) * g.kw + kx] = ((c * g.Cg * g.kh + (g.kh - 1 - ky)) * g.kw
                                                        + (g.kw - 1 - kx))
        return g.kh * g.kw
    for c in range(g.M):
        kidx[c] = c * g.K
    return 1


cdef void _pack(const floating *w, Geom *g, Plan *p, int order, Py_ssize_t *kidx,
                floating *ap) noexcept nogil:
    """ap[group][panel][k][r] = A[panel*mr + r][k] of each group (0 past the last row),
    the layout the gemm tiles read. kidx: scratch of p.depth entries."""
    cdef Py_ssize_t grp, panel, k, r, row
    cdef Py_ssize_t panels = (p.rows + p.mr - 1) // p.mr
    cdef Py_ssize_t step = _weight_columns(order, g, kidx)
    cdef const floating *wg
    cdef floating *dst = ap
    for grp in range(g.G):
        wg = w + grp * g.M * g.K
        for panel in range(panels):
            for k in range(p.depth):
                for r in range(p.mr):
                    row = panel * p.mr + r
                    dst[r] = wg[kidx[k] + row * step] if row < p.rows else 0
                dst += p.mr


cdef void _window_offsets(Py_ssize_t chans, Py_ssize_t Hp, Py_ssize_t Wp, Geom *g,
                          bint ky_major, Py_ssize_t *off) noexcept nogil:
    """off[k] = c*Hp*Wp + ky*dh*Wp + kx*dw, the shift of window element (c, ky, kx) in a
    padded plane; k = (ky, c, kx) when ky_major (the gemm's depth order), else (c, ky, kx)
    (the weight's own order)."""
    cdef Py_ssize_t c, ky, kx, k
    for c in range(chans):
        for ky in range(g.kh):
            for kx in range(g.kw):
                k = ((ky * chans + c) if ky_major else (c * g.kh + ky)) * g.kw + kx
                off[k] = c * Hp * Wp + ky * g.dh * Wp + kx * g.dw


cdef void _row_offsets(Py_ssize_t n, Py_ssize_t ld, Py_ssize_t *off) noexcept nogil:
    cdef Py_ssize_t k
    for k in range(n):
        off[k] = k * ld


# --------------------------------------------------------------------------- the two loops

cdef void _gemm_portable(int mr, int nr, Py_ssize_t M, Py_ssize_t n_tiles,
                         const Py_ssize_t *tiles, Py_ssize_t K, const floating *ap,
                         const floating *B, const Py_ssize_t *off, floating *C,
                         Py_ssize_t ldc) noexcept nogil:
    cdef floating acc[MAX_TILE]
    cdef Py_ssize_t t, col, k0, k1, m0, mt, k, r, j, rows
    cdef const floating *a
    cdef const floating *b
    cdef floating av
    for t in range(n_tiles):
        col, k0, k1 = tiles[3 * t], tiles[3 * t + 1], tiles[3 * t + 2]
        for mt in range((M + mr - 1) // mr):
            m0 = mt * mr
            a = ap + m0 * K
            for j in range(mr * nr):
                acc[j] = 0
            for k in range(k0, k1):
                b = B + off[k] + col
                for r in range(mr):
                    av = a[k * mr + r]
                    for j in range(nr):
                        acc[r * nr + j] += av * b[j]
            rows = min(<Py_ssize_t>mr, M - m0)
            for r in range(rows):
                for j in range(nr):
                    C[(m0 + r) * ldc + col + j] = acc[r * nr + j]


cdef void _rows_portable(Py_ssize_t R, Py_ssize_t nr, Py_ssize_t kh, Py_ssize_t n_tiles,
                        const Py_ssize_t *tiles, Py_ssize_t J, const floating *a,
                        const floating *B, const Py_ssize_t *off, Py_ssize_t wp,
                        floating *C) noexcept nogil:
    """The row-blocked gemm (see fgc_rows_f32): C[col + r*wp + x] = sum over j < J,
    ky < kh of a[ky*J + j] * B[off[j] + col + (r + ky)*wp + x], r < R, x < nr."""
    cdef floating acc[MAX_TILE]
    cdef Py_ssize_t t, col, j, ky, r, x
    cdef const floating *b
    cdef floating av
    for t in range(n_tiles):
        col = tiles[3 * t]
        for x in range(R * nr):
            acc[x] = 0
        for j in range(J):
            for ky in range(kh):
                av = a[ky * J + j]
                for r in range(R):
                    b = B + off[j] + col + (r + ky) * wp
                    for x in range(nr):
                        acc[r * nr + x] += av * b[x]
        for r in range(R):
            for x in range(nr):
                C[col + r * wp + x] = acc[r * nr + x]


cdef inline void _gemm(Plan *p, const Py_ssize_t *tiles, const floating *ap,
                       const floating *B, const Py_ssize_t *off, floating *C) noexcept nogil:
    """C[m*ldc + col + j] = sum_{k0<=k<k1} A[m][k] * B[off[k] + col + j] for every tile
    (col, k0, k1), m < rows, j < nr; A packed by _pack. Row-blocked plans: see
    _rows_portable."""
    if p.rowblock:
        if floating is float:
            if p.level >= 1 and fgc_rows_f32(p.level, p.rowblock, p.nr, <int>(p.depth // p.kgroup),
                                             p.n_tiles, tiles, p.kgroup, ap, B, off, p.pitch, C):
                return
        _rows_portable(p.rowblock, p.nr, p.depth // p.kgroup, p.n_tiles, tiles, p.kgroup, ap,
                       B, off, p.pitch, C)
        return
    if floating is float:
        if p.level >= 1 and fgc_gemm_f32(p.level, p.mr, p.nr, p.rows, p.n_tiles, tiles, p.depth,
                                         ap, B, off, C, p.ldc, NULL):
            return
    _gemm_portable(p.mr, p.nr, p.rows, p.n_tiles, tiles, p.depth, ap, B, off, C, p.ldc)


cdef void _dot_portable(Py_ssize_t M, Py_ssize_t K, const floating *A, Py_ssize_t a_chan,
                        Py_ssize_t a_row, const floating *B, const Py_ssize_t *off,
                        Py_ssize_t b_row, Py_ssize_t rows, Py_ssize_t cols, floating *C,
                        Py_ssize_t ldc, Py_ssize_t imgs, Py_ssize_t a_img,
                        Py_ssize_t b_img) noexcept nogil:
    cdef floating acc[LANES]
    cdef floating total
    cdef Py_ssize_t m, k, i, y, x, l
    cdef Py_ssize_t full = cols - cols % LANES
    cdef const floating *pa
    cdef const floating *pb
    for m in range(M):
        for k in range(K):
            for l in range(LANES):
                acc[l] = 0
            for i in range(imgs):
                for y in range(rows):
                    pa = A + m * a_chan + i * a_img + y * a_row
                    pb = B + off[k] + i * b_img + y * b_row
                    for x in range(0, full // LANES):
                        for l in range(LANES):
                            acc[l] += pa[x * LANES + l] * pb[x * LANES + l]
                    for x in range(full, cols):
                        acc[x - full] += pa[x] * pb[x]
            total = 0
            for l in range(LANES):
                total += acc[l]
            C[m * ldc + k] += total


cdef inline void _dot(int level, int mr, int nr, Py_ssize_t M, Py_ssize_t K, const floating *A,
                      Py_ssize_t a_chan, Py_ssize_t a_row, const floating *B,
                      const Py_ssize_t *off, Py_ssize_t b_row, Py_ssize_t rows,
                      Py_ssize_t cols, floating *C, Py_ssize_t ldc, Py_ssize_t imgs=1,
                      Py_ssize_t a_img=0, Py_ssize_t b_img=0) noexcept nogil:
    """C[m*ldc + k] += sum_{i<imgs, y<rows, x<cols} A[m*a_chan + i*a_img + y*a_row + x]
    * B[off[k] + i*b_img + y*b_row + x]."""
    if floating is float:
        if level >= 1 and fgc_dot_f32(level, mr, nr, M, K, A, a_chan, a_row, B, off, b_row, rows,
                                      cols, C, ldc, imgs, a_img, b_img):
            return
    _dot_portable(M, K, A, a_chan, a_row, B, off, b_row, rows, cols, C, ldc, imgs, a_img, b_img)


# --------------------------------------------------------------------------- per image

cdef inline bint _stores_into(Plan *p) noexcept nogil:
    """Whether the gemm stores its tiles straight into the output (AVX-512 gemm tiles;
    an output buffer that stays in L1 costs little to copy out)."""
    return p.level >= 2 and not p.rowblock and p.size_c > L1_FLOATS


cdef bint _gemm_into(Plan *p, const Py_ssize_t *tiles, const floating *ap,
                     const floating *B, const Py_ssize_t *off, floating *dst,
                     Py_ssize_t ho, Py_ssize_t wo, const floating *bias,
                     bint relu) noexcept nogil:
    """The gemm storing each tile straight into the output planes dst (ho x wo each),
    adding bias and applying the ReLU as _store_rows does, so that the output is
    written once, while the arithmetic runs. False (nothing done) where no SIMD kernel
    does this (AVX-512 only: masked stores are slow on some AVX2 CPUs): then _gemm +
    _store_rows."""
    cdef fgc_out o
    if floating is float:
        if _stores_into(p):
            o.out, o.bias, o.plane, o.pitch, o.wo, o.ho = dst, bias, ho * wo, p.pitch, wo, ho
            o.relu, o.rowwise = relu, p.rowwise
            return fgc_gemm_f32(p.level, p.mr, p.nr, p.rows, p.n_tiles, tiles, p.depth, ap, B,
                                off, NULL, p.ldc, &o) != 0
    return False


cdef void _forward_image(Geom *g, Plan *p, const floating *x, const floating *ap,
                         const Py_ssize_t *off, const Py_ssize_t *tiles,
                         const floating *bias, bint relu, floating *out, floating *buf_b,
                         floating *buf_c) noexcept nogil:
    cdef Py_ssize_t grp
    cdef Py_ssize_t a_group = _round_up(p.rows, p.mr) * p.depth
    cdef const floating *b = buf_b
    if p.direct:
        _pad_planes(x, g.C, g.H, g.W, buf_b, p.Hp, p.Wp, p.top, p.left, p.slack)
    for grp in range(g.G):
        if p.direct:
            b = buf_b + grp * g.Cg * p.Hp * p.Wp
        else:
            _im2col(g, x + grp * g.Cg * g.H * g.W, buf_b, p.ldc)
        if _gemm_into(p, tiles, ap + grp * a_group, b, off, out + grp * g.M * g.Ho * g.Wo,
                      g.Ho, g.Wo, bias + grp * g.M if bias != NULL else NULL, relu):
            continue
        _gemm(p, tiles, ap + grp * a_group, b, off, buf_c)
        _store_rows(buf_c, p.ldc, p.pitch, g.M, g.Ho, g.Wo, out + grp * g.M * g.Ho * g.Wo,
                    bias + grp * g.M if bias != NULL else NULL, relu)


cdef void _backward_input_image(Geom *g, Plan *p, const floating *gout, const floating *ap,
                                const Py_ssize_t *off, const Py_ssize_t *tiles,
                                floating *gx, floating *buf_b, floating *buf_c) noexcept nogil:
    cdef Py_ssize_t grp, oc
    cdef Py_ssize_t a_group = _round_up(p.rows, p.mr) * p.depth
    cdef Py_ssize_t P = g.Ho * g.Wo
    if p.direct:
        _pad_planes(gout, g.Co, g.Ho, g.Wo, buf_b, p.Hp, p.Wp, p.top, p.left, p.slack)
        for grp in range(g.G):
            if _gemm_into(p, tiles, ap + grp * a_group, buf_b + grp * g.M * p.Hp * p.Wp, off,
                          gx + grp * g.Cg * g.H * g.W, g.H, g.W, NULL, False):
                continue
            _gemm(p, tiles, ap + grp * a_group, buf_b + grp * g.M * p.Hp * p.Wp, off, buf_c)
            _store_rows(buf_c, p.ldc, p.pitch, g.Cg, g.H, g.W, gx + grp * g.Cg * g.H * g.W,
                        NULL, False)
        return
    memset(gx, 0, g.C * g.H * g.W * sizeof(floating))
    for grp in range(g.G):
        for oc in range(g.M):  # copied so that reads up to the tile edge stay inside
            memcpy(buf_b + oc * p.ldc, gout + (grp * g.M + oc) * P, P * sizeof(floating))
            memset(buf_b + oc * p.ldc + P, 0, (p.ldc - P) * sizeof(floating))
        _gemm(p, tiles, ap + grp * a_group, buf_b, off, buf_c)
        _col2im(g, buf_c, p.ldc, gx + grp * g.Cg * g.H * g.W)


cdef bint _all_finite(const floating *x, Py_ssize_t n) noexcept nogil:
    cdef floating acc[LANES]
    cdef Py_ssize_t i, l
    for l in range(LANES):
        acc[l] = 0
    for i in range(n // LANES):
        for l in range(LANES):
            acc[l] += x[i * LANES + l] * 0  # inf * 0 and NaN * 0 are NaN, and stay NaN
    for i in range(n - n % LANES, n):
        acc[0] += x[i] * 0
    for l in range(LANES):
        if acc[l] != acc[l]:
            return False
    return True


cdef void _widen(const floating *src, Py_ssize_t rows, Py_ssize_t Ho, Py_ssize_t Wo,
                 floating *dst, Py_ssize_t pitch, Py_ssize_t length) noexcept nogil:
    """dst[r*length + oy*pitch + ox] = src[r][oy][ox]; zeros in the other columns and up
    to `length`."""
    cdef Py_ssize_t r, oy
    cdef floating *d
    for r in range(rows):
        d = dst + r * length
        for oy in range(Ho):
            memcpy(d + oy * pitch, src + (r * Ho + oy) * Wo, Wo * sizeof(floating))
            memset(d + oy * pitch + Wo, 0, (pitch - Wo) * sizeof(floating))
        memset(d + Ho * pitch, 0, (length - Ho * pitch) * sizeof(floating))


cdef void _transpose_grad(const floating *src, Py_ssize_t G, Py_ssize_t M, Py_ssize_t P,
                          Py_ssize_t ldg, floating *dst) noexcept nogil:
    """dst[(grp*P + q)*ldg + m] = src[(grp*M + m)*P + q]; zeros for m in [M, ldg)."""
    cdef Py_ssize_t grp, m, q
    cdef const floating *s
    cdef floating *d
    for grp in range(G):
        d = dst + grp * P * ldg
        s = src + grp * M * P
        for q in range(P):  # rows of dst written in order; the M source lines stay in L1
            for m in range(M):
                d[q * ldg + m] = s[m * P + q]
            for m in range(M, ldg):
                d[q * ldg + m] = 0


cdef void _lanes_portable(Py_ssize_t M, Py_ssize_t K, const floating *G, Py_ssize_t ldg,
                          Py_ssize_t g_img, const floating *X, const Py_ssize_t *off,
                          Py_ssize_t x_row, Py_ssize_t x_img, Py_ssize_t imgs, Py_ssize_t rows,
                          Py_ssize_t cols, floating *C, Py_ssize_t ldc) noexcept nogil:
    """C[m*ldc + k] += sum over images i, rows y, columns x of
    G[i*g_img + (y*cols + x)*ldg + m] * X[i*x_img + off[k] + y*x_row + x]."""
    cdef floating acc[LANES]
    cdef Py_ssize_t m0, k, i, y, x, m, mn
    cdef const floating *g
    cdef floating xv
    for m0 in range(0, M, 16):  # LANES
        mn = min(<Py_ssize_t>LANES, M - m0)
        for k in range(K):
            for m in range(LANES):
                acc[m] = 0
            for i in range(imgs):
                for y in range(rows):
                    for x in range(cols):
                        xv = X[i * x_img + off[k] + y * x_row + x]
                        g = G + i * g_img + (y * cols + x) * ldg + m0
                        for m in range(mn):
                            acc[m] += g[m] * xv
            for m in range(mn):
                C[(m0 + m) * ldc + k] += acc[m]


cdef inline void _lanes(Plan *p, Py_ssize_t M, Py_ssize_t K, const floating *G,
                        Py_ssize_t ldg, Py_ssize_t g_img, const floating *X,
                        const Py_ssize_t *off, Py_ssize_t x_row, Py_ssize_t x_img,
                        Py_ssize_t imgs, Py_ssize_t rows, Py_ssize_t cols, floating *C,
                        Py_ssize_t ldc) noexcept nogil:
    if floating is float:
        if p.level >= 1 and fgc_lanes_f32(p.level, p.mr, p.nr, M, K, G, ldg, g_img, X, off,
                                          x_row, x_img, imgs, rows, cols, C, ldc):
            return
    _lanes_portable(M, K, G, ldg, g_img, X, off, x_row, x_img, imgs, rows, cols, C, ldc)


cdef void _backward_weight_block(Geom *g, Plan *p, const floating *x, const floating *gout,
                                 Py_ssize_t count, const Py_ssize_t *off, floating *gw,
                                 floating *buf_b, floating *buf_d) noexcept nogil:
    """gw += the weight gradient of `count` consecutive images."""
    cdef Py_ssize_t grp, n
    cdef Py_ssize_t P = g.Ho * g.Wo, xs = g.C * g.H * g.W, ys = g.Co * P
    cdef bint flat = p.flat_len > 0
    if not p.direct:
        for n in range(count):
            for grp in range(g.G):
                _im2col(g, x + n * xs + grp * g.Cg * g.H * g.W, buf_b, P)
                _dot(p.level, p.mr, p.nr, g.M, g.K, gout + n * ys + grp * g.M * P, P, 0, buf_b,
                     off, 0, 1, P, gw + grp * g.M * g.K, g.K)
        return
    if p.lanes_dot:
        for n in range(count):
            _pad_planes(x + n * xs, g.C, g.H, g.W, buf_b + n * p.img_b, p.Hp, p.Wp, p.top,
                        p.left, p.slack)
            _transpose_grad(gout + n * ys, g.G, g.M, P, p.ldg, buf_d + n * p.img_d)
        for grp in range(g.G):
            _lanes(p, g.M, g.K, buf_d + grp * P * p.ldg, p.ldg, p.img_d,
                   buf_b + grp * g.Cg * p.Hp * p.Wp, off, p.Wp, p.img_b, count, g.Ho, g.Wo,
                   gw + grp * g.M * g.K, g.K)
        return
    for n in range(count):
        _pad_planes(x + n * xs, g.C, g.H, g.W, buf_b + n * p.img_b, p.Hp, p.Wp, p.top,
                    p.left, p.slack)
        # Flat dots multiply the widened gradient's zero columns with real inputs: only
        # when those are finite (0 * inf is NaN).
        flat = flat and _all_finite(x + n * xs, xs)
    if flat:
        for n in range(count):
            _widen(gout + n * ys, g.Co, g.Ho, g.Wo, buf_d + n * p.img_d, p.Wp, p.flat_len)
        for grp in range(g.G):
            # the images of the block are the dot's rows: one reduction over all of them
            _dot(p.level, p.mr, p.nr, g.M, g.K, buf_d + grp * g.M * p.flat_len, p.flat_len, p.img_d,
                 buf_b + grp * g.Cg * p.Hp * p.Wp, off, p.img_b, count, p.flat_len,
                 gw + grp * g.M * g.K, g.K)
        return
    for grp in range(g.G):
        # row by row, the block's images one after the other in each dot
        _dot(p.level, p.mr, p.nr, g.M, g.K, gout + grp * g.M * P, P, g.Wo,
             buf_b + grp * g.Cg * p.Hp * p.Wp, off, p.Wp, g.Ho, g.Wo,
             gw + grp * g.M * g.K, g.K, count, ys, p.img_b)


# --------------------------------------------------------------------------- batch drivers

cdef void _forward_run(Geom *g, Plan *p, const floating *x, const floating *w,
                       const floating *bias, bint relu, floating *out, floating *ws,
                       Py_ssize_t *off) noexcept nogil:
    # off: the offset table (n_off entries), then the tile list (3 * n_tiles)
    cdef Py_ssize_t n
    cdef Py_ssize_t *tiles = off + p.n_off
    cdef floating *ap = _aligned(ws)
    cdef floating *base = ap + _round_up(p.size_a, ALIGN)
    cdef floating *mine
    cdef Py_ssize_t xs = g.C * g.H * g.W, ys = g.Co * g.Ho * g.Wo
    cdef Py_ssize_t at_c = _round_up(p.size_b, ALIGN)
    _list_tiles(p, g, tiles)
    if p.direct:
        _pack(w, g, p, PACK_FORWARD_DIRECT, off, ap)
        _window_offsets(g.Cg, p.Hp, p.Wp, g, True, off)
    else:
        _pack(w, g, p, PACK_FORWARD_IM2COL, off, ap)
        _row_offsets(p.depth, p.ldc, off)
    if p.nthreads > 1:
        for n in prange(g.N, schedule="static", num_threads=p.nthreads):
            mine = base + threadid() * p.per_thread
            _forward_image(g, p, x + n * xs, ap, off, tiles, bias, relu, out + n * ys, mine,
                           mine + at_c)
    else:
        for n in range(g.N):
            _forward_image(g, p, x + n * xs, ap, off, tiles, bias, relu, out + n * ys, base,
                           base + at_c)


cdef void _backward_input_run(Geom *g, Plan *p, const floating *gout, const floating *w,
                              floating *gx, floating *ws, Py_ssize_t *off) noexcept nogil:
    cdef Py_ssize_t n
    cdef Py_ssize_t *tiles = off + p.n_off
    cdef floating *ap = _aligned(ws)
    cdef floating *base = ap + _round_up(p.size_a, ALIGN)
    cdef floating *mine
    cdef Py_ssize_t xs = g.C * g.H * g.W, ys = g.Co * g.Ho * g.Wo
    cdef Py_ssize_t at_c = _round_up(p.size_b, ALIGN)
    _list_tiles(p, g, tiles)
    if p.direct:
        _pack(w, g, p, PACK_INPUT_DIRECT, off, ap)
        _window_offsets(g.M, p.Hp, p.Wp, g, True, off)
    else:
        _pack(w, g, p, PACK_INPUT_COL2IM, off, ap)
        _row_offsets(p.depth, p.ldc, off)
    if p.nthreads > 1:
        for n in prange(g.N, schedule="static", num_threads=p.nthreads):
            mine = base + threadid() * p.per_thread
            _backward_input_image(g, p, gout + n * ys, ap, off, tiles, gx + n * xs, mine,
                                  mine + at_c)
    else:
        for n in range(g.N):
            _backward_input_image(g, p, gout + n * ys, ap, off, tiles, gx + n * xs, base,
                                  base + at_c)


cdef void _backward_weight_chunk(Geom *g, Plan *p, const floating *x, const floating *gout,
                                 Py_ssize_t chunk, const Py_ssize_t *off, floating *dst,
                                 floating *buf) noexcept nogil:
    """dst = the weight gradient of the images of chunk `chunk` (a fixed run of whole
    blocks), summed block by block in image order; buf: one thread's workspace slice."""
    cdef Py_ssize_t first = chunk * p.blocks // p.chunks * p.images
    cdef Py_ssize_t end = min(g.N, (chunk + 1) * p.blocks // p.chunks * p.images)
    cdef Py_ssize_t count
    cdef Py_ssize_t xs = g.C * g.H * g.W, ys = g.Co * g.Ho * g.Wo
    cdef Py_ssize_t at_d = _round_up(p.size_b, ALIGN) + _round_up(p.size_c, ALIGN)
    memset(dst, 0, g.Co * g.K * sizeof(floating))
    while first < end:
        count = min(p.images, end - first)
        _backward_weight_block(g, p, x + first * xs, gout + first * ys, count, off, dst, buf,
                               buf + at_d)
        first += count


cdef void _backward_weight_run(Geom *g, Plan *p, const floating *x, const floating *gout,
                               floating *gw, floating *ws, Py_ssize_t *off) noexcept nogil:
    cdef Py_ssize_t chunk, i
    cdef floating *start = _aligned(ws)
    cdef floating *base = start + _round_up(p.size_a, ALIGN)
    cdef floating *partials = start + p.at_partial   # chunk c > 0 sums into partial c - 1
    cdef floating *part
    cdef Py_ssize_t nw = g.Co * g.K
    if p.direct:
        _window_offsets(g.Cg, p.Hp, p.Wp, g, False, off)
    else:
        _row_offsets(p.depth, g.Ho * g.Wo, off)
    if p.nthreads == 1:
        # one partial buffer, reused (it stays in cache): the same sums in the same order
        for chunk in range(p.chunks):
            _backward_weight_chunk(g, p, x, gout, chunk, off, gw if chunk == 0 else partials,
                                   base)
            if chunk > 0:
                for i in range(nw):
                    gw[i] += partials[i]
        return
    # threads take whole chunks; no two threads ever write one element
    for chunk in prange(p.chunks, schedule="static", num_threads=p.nthreads):
        _backward_weight_chunk(g, p, x, gout, chunk, off,
                               gw if chunk == 0 else partials + (chunk - 1) * p.partial,
                               base + threadid() * p.per_thread)
    # the partials in chunk order, whatever thread computed them
    for chunk in range(1, p.chunks):
        part = partials + (chunk - 1) * p.partial
        for i in range(nw):
            gw[i] += part[i]


cdef void _bias_channel(const floating *gout, Py_ssize_t N, Py_ssize_t Co, Py_ssize_t P,
                        Py_ssize_t c, floating *gb) noexcept nogil:
    """gb[c] = the sum of channel c over the batch, in LANES partial sums."""
    cdef floating acc[LANES]
    cdef floating total
    cdef Py_ssize_t n, x, l
    cdef Py_ssize_t full = P - P % LANES
    cdef const floating *s
    for l in range(LANES):
        acc[l] = 0
    for n in range(N):
        s = gout + (n * Co + c) * P
        for x in range(0, full // LANES):
            for l in range(LANES):
                acc[l] += s[x * LANES + l]
        for x in range(full, P):
            acc[x - full] += s[x]
    total = 0
    for l in range(LANES):
        total += acc[l]
    gb[c] = total


cdef void _bias_run(const floating *gout, Py_ssize_t N, Py_ssize_t Co, Py_ssize_t P,
                    floating *gb, int n_threads) noexcept nogil:
    """Channels in parallel when the pass is long enough (a memory-bound read of the
    whole gradient); each channel is summed in the same order either way."""
    cdef Py_ssize_t c
    if n_threads > 1 and Co > 1 and N * Co * P >= BIAS_PARALLEL_MIN:
        for c in prange(Co, schedule="static", num_threads=min(<Py_ssize_t>n_threads, Co)):
            _bias_channel(gout, N, Co, P, c, gb)
    else:
        for c in range(Co):
            _bias_channel(gout, N, Co, P, c, gb)


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
    the path ("direct" or "im2col"/"col2im"), the register tile and the thread count."""
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
    info = {"path": "direct" if p.direct else general, "tile": (p.mr, p.nr),
            "threads": p.nthreads, "workspace": p.total}
    if kernel == "backward_weight":
        info.update(flat_dot=p.flat_len > 0, lanes_dot=bool(p.lanes_dot),
                    images_per_block=p.images, blocks=p.blocks,
                    chunks=p.chunks)
    else:
        info.update(rowwise=bool(p.rowwise), tiles=p.n_tiles, simd=p.level,
                    rowblock=p.rowblock,  # col2im: the gemm fills columns, not the output
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
