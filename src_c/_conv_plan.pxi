# Planning of the conv family (included by _conv.pyx): the geometry of a call, the cost
# model that picks path, register tile, tiling and thread count, the workspace layout,
# and the table of plans kept by geometry. Runs with the GIL; makes no Python objects
# on a cache hit.

# --------------------------------------------------------------------------- geometry

cdef struct Geom:
    Py_ssize_t N, C, H, W        # input
    Py_ssize_t Co, kh, kw        # weight (Co, Cg, kh, kw)
    Py_ssize_t Ho, Wo            # output
    Py_ssize_t sh, sw, pt, pl, dh, dw
    Py_ssize_t G, Cg, M, K       # groups, in/out channels per group, Cg*kh*kw


cdef struct Phase:
    # One phase of a stride-2 input gradient: input rows a + 2i, columns b + 2j. They take
    # the kernel rows ky0 + 2t (t < ta) and columns kx0 + 2u (u < tb), a stride-1
    # correlation of the output gradient (see _phase_setup); ta or tb 0: all zeros.
    Py_ssize_t a, b, ky0, kx0, ta, tb
    Py_ssize_t ha, wb            # its rows and columns of input positions
    Py_ssize_t top, left         # where the output gradient starts in its own padded plane
    Py_ssize_t shift             # where its plane starts in the shared one
    int mr, nr, level
    bint rowwise
    Py_ssize_t depth, ldc, n_tiles
    Py_ssize_t at_a, at_off      # its packed weight (A area) and offsets, then tiles (index)


cdef struct Plan:
    int n_phases                 # input gradient by stride phases (0: not)
    Phase ph[4]
    double cost, other_cost      # input gradient: the cost model's estimate of the path
                                 # chosen and of the other one (0: none)
    bint direct                  # shifted views of padded (phase) planes, no im2col
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
    Py_ssize_t psh, psw          # direct forward: the stride, split into phase planes
    Py_ssize_t pnh, pnw          # ... of which the window reads pnh x pnw per channel
                                 # (min(stride, kernel); 1, 1: one padded plane)
    Py_ssize_t slack             # zeros after the padded planes (reads past the last row)
    Py_ssize_t flat_len          # weight gradient: widened output-gradient plane length
    bint lanes_dot               # weight gradient: output channels along the lanes
    int lanes_mv                 # direct gemm: its rows (the output's channels) along the
                                 # lanes, this many vectors of them per tile (nr positions
                                 # of an output row), mr a panel
    bint lanes_in_place          # ... reading the input itself (no padding to add)
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
    if not p.direct or p.kgroup == 0:
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
    if p.lanes_mv:  # one per output row: its depth range
        _tiles(p, g, p.out_cols, True, out, &depth_sum, &ldc)
    elif p.rowblock:
        _block_tiles(p, p.rowblock, p.nr, out, &ldc)
    else:
        _tiles(p, g, p.nr, p.rowwise, out, &depth_sum, &ldc)


cdef void _gemm_geometry(Plan *p, Geom *g, int kind, bint direct) noexcept nogil:
    """The gemm that forward (kind FORWARD) or the input gradient runs per group."""
    p.direct = direct
    p.Hp = p.Wp = p.top = p.left = p.src_top = p.src_rows = p.kgroup = 0
    p.psh = p.psw = p.pnh = p.pnw = 1
    if kind == FORWARD:
        p.rows, p.depth = g.M, g.K
        p.out_rows, p.out_cols = g.Ho, g.Wo
        p.pitch = g.Wo
        if direct and (g.sh > 1 or g.sw > 1):
            # A strided convolution (undilated) as a stride-1 one over phase planes:
            # plane (c, a, b) holds padded input rows a, a + sh, ... and columns b,
            # b + sw, ...; window element (ky, kx) of output (oy, ox) is that plane's
            # element (oy + ky // sh, ox + kx // sw) for a = ky % sh, b = kx % sw.
            p.psh, p.psw = g.sh, g.sw
            p.pnh, p.pnw = min(g.sh, g.kh), min(g.sw, g.kw)
            p.Hp, p.Wp = g.Ho + (g.kh - 1) // g.sh, g.Wo + (g.kw - 1) // g.sw
            p.top, p.left = g.pt, g.pl
            p.pitch = p.Wp  # kgroup 0: every tile sees the whole depth (padding is zeros)
        elif direct:
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
    over the tile's rate on this CPU, plus its fixed cost per call (_tile_cost). Returns
    that time, in units of one multiply-add of the AVX2 6x16 tile."""
    cdef double best = -1, cost
    cdef Py_ssize_t count, total, ldc, panels
    cdef int i, layout, level, mr, nr
    cdef int top = max(fg_simd_level(), 1)
    cdef bint forced = False
    for i in range(GEMM_TILES):  # a forced tile (_force_paths) when this level has it
        level, mr, nr = <int>_GEMM_TILE[i][0], <int>_GEMM_TILE[i][1], <int>_GEMM_TILE[i][2]
        forced = forced or (level == top and mr == _force_mr and nr == _force_nr)
    for i in range(GEMM_TILES):
        level, mr, nr = <int>_GEMM_TILE[i][0], <int>_GEMM_TILE[i][1], <int>_GEMM_TILE[i][2]
        if level > top or (forced and (level != top or mr != _force_mr or nr != _force_nr)):
            continue
        panels = (p.rows + mr - 1) // mr
        for layout in range(2 if p.direct else 1):
            count = _tiles(p, g, nr, layout == 1, NULL, &total, &ldc)
            cost = panels * _tile_cost(i, <double>mr * nr * total, <double>count)
            if best < 0 or cost < best:
                best = cost
                p.level = level if fg_simd_level() >= 1 else 0
                p.mr, p.nr, p.rowwise, p.n_tiles, p.ldc = mr, nr, layout == 1, count, ldc
    # One-row A on the direct path (dilation 1 between kernel rows, heights 3/5/7): the
    # row-blocked gemm (R output rows x nr columns per tile, every depth entry) loads each
    # plane row once for up to min(R, kh) kernel rows.
    cdef double rates[3]
    cdef double gemm_best
    rates[:] = [0, 1.2, 1.9]   # per SIMD level, relative to AVX2 6x16 (fixed, not timed)
    p.rowblock = 0
    if (not forced and _force_rowblock != 0 and p.direct and p.kgroup > 0 and p.rows == 1
            and g.dh == 1 and (g.kh == 3 or g.kh == 5 or g.kh == 7) and fg_simd_level() >= 1):
        gemm_best = best
        if _force_rowblock == 1:
            best = -1  # forced: the best row-blocked tile, whatever the gemm's cost
        for i in range(6 if fg_simd_level() >= 2 else 1):
            mr = 8 - i // 2 if fg_simd_level() >= 2 else 4
            nr = (16 if fg_simd_level() >= 2 else 8) * (2 - i % 2)
            if p.out_rows < mr:
                continue
            count = _block_tiles(p, mr, nr, NULL, &ldc)
            cost = mr * nr * count * p.depth / rates[min(fg_simd_level(), 2)] + 400.0 * count
            if best < 0 or cost < best:
                best = cost
                p.level = min(fg_simd_level(), 2)
                p.mr, p.nr, p.rowwise, p.n_tiles, p.ldc = 1, nr, True, count, ldc
                p.rowblock = mr
        if p.rowblock == 0:  # no block fits: the gemm's choice stands
            best = gemm_best
    return best


cdef void _choose_channel_lanes(Plan *p, Geom *g, int kind) noexcept nogil:
    """The direct gemm (forward, or the stride-1 input gradient: the correlation of the
    padded output gradient with the flipped weight) with its rows, the output's channels,
    along the lanes (fgc_flanes_f32) instead of the register tile chosen, where that
    computes fewer padded multiply-adds: the gemm over planes wider than the output
    computes their extra columns as well (LeNet conv2, 10 of 14: 69% of its columns
    kept), the lanes waste only a panel's channels past the last and a row's positions
    past the last tile. The tile: the fewest padded multiply-adds, then the most
    vectors of channels, then the longest run of positions. A
    strided forward (column stride 1 or 2, undilated) reads padded planes at its stride
    rather than phase planes, and the input itself when there is no padding to add and
    the row tiles divide the rows (a 1x1 stride-2 shortcut: no copy at all)."""
    cdef int level = min(fg_simd_level(), 2)
    cdef Py_ssize_t lanes = 16 if level >= 2 else 8
    cdef int i, mv, mv_best = 0, q, q_best = 0
    cdef bint strided = kind == FORWARD and (g.sh > 1 or g.sw > 1)
    cdef int sw = <int>g.sw if strided else 1
    cdef Py_ssize_t wasted, best = -1, rows_done
    cdef double over
    if (level < 1 or p.rowblock or _force_channel_lanes == 0
            or (_force_mr != 0 and _force_channel_lanes < 0)):  # a gemm tile forced
        return
    if strided and (g.dh != 1 or g.dw != 1 or g.sw > 2):
        return
    for i in range(3):
        mv = 4 >> i
        for q in range(16, 2, -1):
            if not fgc_flanes_has(level, mv, q, sw) or (
                    _force_mr != 0 and (mv * lanes != _force_mr or q != _force_nr)):
                continue  # (a forced tile: gemm_tile=(channels, positions) with lanes)
            # padded multiply-adds per output row: panels of mv vectors, tiles of q; at
            # equal counts the most vectors of channels (each panel reads the planes and
            # stores its buffer again: AVX2, batch 64, each forced, alternating: the 1x1
            # shortcut 16 channels x 4 positions 60 GFLOP/s, 8 x 8 50; LeNet conv2
            # 16 x 5 102, 8 x 10 90), then the longest row tile
            wasted = _round_up(p.rows, mv * lanes) * _round_up(p.out_cols, q)
            if best < 0 or wasted < best:
                best, mv_best, q_best = wasted, mv, q
    if mv_best == 0:
        return
    rows_done = _round_up(p.rows, p.mr) * p.n_tiles * p.nr  # the gemm's, as it tiles
    # strided, the gemm's phase planes cost a gather pass that reads at the stride skip
    # (Zen 4, batch 64: 16->32 stride 2 89 against 81 GF/s, the 1x1 shortcut 66 / 48)
    over = 1.0 if strided else CHANNEL_LANES_OVER
    if _force_channel_lanes < 0 and <double>best * p.out_rows * over > rows_done:
        return
    p.lanes_mv = mv_best
    p.mr, p.nr = <int>(mv_best * lanes), q_best
    p.level = level
    p.rowwise = True
    p.n_tiles = p.out_rows
    p.ldc = 0
    if kind != FORWARD:
        return
    if strided:  # padded planes read at the stride; every depth entry for every row
        p.psh = p.psw = p.pnh = p.pnw = 1
        p.Hp, p.Wp = (g.Ho - 1) * g.sh + g.kh, (g.Wo - 1) * g.sw + g.kw
        p.top, p.left = g.pt, g.pl
        p.kgroup = 0
    if (g.pt == 0 and g.pl == 0 and g.Wo % q_best == 0
            and (g.Ho - 1) * g.sh + g.dh * (g.kh - 1) < g.H
            and (g.Wo - 1) * g.sw + g.dw * (g.kw - 1) < g.W):
        # every window inside the input, no tile past a row's end: read it in place
        p.lanes_in_place = True
        p.Hp, p.Wp = g.H, g.W


cdef void _gemm_sizes(Plan *p, Geom *g, int kind) noexcept nogil:
    p.size_a = g.G * _round_up(p.rows, p.mr) * p.depth
    p.size_c = p.rows * p.ldc
    p.slack = 0
    if p.direct:
        if p.lanes_mv:
            # one panel's positions x channels, and the last row's tile past its end;
            # tiles read up to nr - 1 columns past the planes
            p.size_c = p.mr * (p.out_rows * p.out_cols + p.nr)
            p.slack = p.nr * (g.sw if kind == FORWARD else 1)
        else:
            # tiles read up to ldc columns past each shifted plane start
            p.slack = max(<Py_ssize_t>0, p.ldc - p.out_rows * p.Wp) + g.dw * (g.kw - 1) + 1
        p.size_b = (g.C if kind == FORWARD else g.Co) * p.pnh * p.pnw * p.Hp * p.Wp + p.slack
        if p.lanes_in_place:
            p.size_b = p.slack = 0
    elif kind == FORWARD:
        p.size_b = p.depth * p.ldc          # im2col rows
    else:
        p.size_b = g.M * p.ldc              # the output gradient, rows padded to ldc
    p.n_off = p.depth


cdef void _dot_tile(Py_ssize_t rows, Py_ssize_t depth, Py_ssize_t a_row_len,
                    Py_ssize_t b_len, int *mr, int *nr) noexcept nogil:
    """The dot tile taking the least time: padded entries over its rate on this CPU
    (_dot_rate), among the shapes whose row panel (mr rows of a_row_len) fits in L1 next
    to the b_len elements every tile reads, when those fit at all."""
    cdef int level = min(fg_simd_level(), 2)
    cdef int L = max(level, 1) - 1
    cdef double best = -1, cost
    cdef int i, r, n
    for i in range(4):
        r, n = _DOT_TILE[L][2 * i], _DOT_TILE[L][2 * i + 1]
        cost = <double>_round_up(rows, r) * _round_up(depth, n) / _dot_rate(level, i)
        if r * a_row_len + b_len > L1_FLOATS and b_len <= L1_FLOATS:
            cost = cost * 4 + r  # spills L1: only when nothing else fits
        if best < 0 or cost < best:
            best = cost
            mr[0], nr[0] = r, n


cdef inline bint _phase_taps(Phase *f) noexcept nogil:
    """Whether phase f has places and kernel taps reaching them (else it is all zeros)."""
    return f.ta > 0 and f.tb > 0 and f.ha > 0 and f.wb > 0


cdef void _phase_setup(Geom *g, Plan *p, Phase *f, Geom *gp, Plan *pp) noexcept nogil:
    """The stride-1 convolution whose direct input gradient is phase f of a stride-2 one
    (gp), and the plan its gemm runs with (pp: p's, with f's tile and sizes, reading the
    shared padded plane of p). Phase rows a + 2i read output rows oy = i + ea - t for the
    kernel rows ky0 + 2t, ea = (a + pt) // 2: the input gradient of a stride-1
    convolution of kernel height ta and top padding ea, over ha rows."""
    memcpy(gp, g, sizeof(Geom))
    gp.H, gp.W, gp.kh, gp.kw = f.ha, f.wb, f.ta, f.tb
    gp.sh = gp.sw = 1
    gp.pt, gp.pl = (f.a + g.pt) // 2, (f.b + g.pl) // 2
    gp.K = g.Cg * f.ta * f.tb
    memcpy(pp, p, sizeof(Plan))
    pp.n_phases = 0
    _gemm_geometry(pp, gp, BACKWARD_INPUT, True)
    pp.Hp, pp.Wp, pp.pitch = p.Hp, p.Wp, p.Wp   # the shared plane (f.shift into it)
    pp.mr, pp.nr, pp.level, pp.rowwise = f.mr, f.nr, f.level, f.rowwise
    pp.ldc, pp.n_tiles, pp.rowblock = f.ldc, f.n_tiles, 0


cdef double _phase_plans(Plan *p, Geom *g) noexcept nogil:
    """Lay out the four phases of a stride-2, undilated input gradient in p (the shared
    padded plane, each phase's tile and sizes) and return their estimated time, in the
    units of _choose_tiles, with the stores costed as col2im's scatter rows (~20 cycles
    a row plus ~1/4 cycle an element, at 16 multiply-adds a cycle). Returns -1 when a
    phase would run a one-row gemm (that path is left out)."""
    cdef Geom gp
    cdef Plan pp
    cdef Phase *f
    cdef Py_ssize_t i, hp = 1, wp = 1
    cdef double cost = 0
    p.n_phases = 4
    p.top = p.left = 0
    for i in range(4):
        f = &p.ph[i]
        f.a, f.b = i // 2, i % 2
        f.ky0, f.kx0 = (f.a + g.pt) % 2, (f.b + g.pl) % 2
        f.ta = (g.kh - f.ky0 + 1) // 2 if f.ky0 < g.kh else 0
        f.tb = (g.kw - f.kx0 + 1) // 2 if f.kx0 < g.kw else 0
        f.ha, f.wb = (g.H - f.a + 1) // 2, (g.W - f.b + 1) // 2
        f.top = f.ta - 1 - (f.a + g.pt) // 2
        f.left = f.tb - 1 - (f.b + g.pl) // 2
        f.mr = f.nr = f.level = 0
        f.rowwise = False
        f.depth = f.ldc = f.n_tiles = f.shift = 0
        cost += 16.0 * g.C * f.ha * (20.0 + f.wb / 4.0)
        if _phase_taps(f):
            p.top, p.left = max(p.top, f.top), max(p.left, f.left)
    for i in range(4):
        f = &p.ph[i]
        if _phase_taps(f):
            hp = max(hp, p.top - f.top + f.ha + f.ta - 1)
            wp = max(wp, p.left - f.left + f.wb + f.tb - 1)
    p.Hp, p.Wp = hp, wp
    p.slack = 1
    for i in range(4):
        f = &p.ph[i]
        if not _phase_taps(f):
            continue
        f.shift = (p.top - f.top) * p.Wp + (p.left - f.left)
        _phase_setup(g, p, f, &gp, &pp)
        if pp.rows == 1:
            return -1
        cost += _choose_tiles(&pp, &gp)
        f.mr, f.nr, f.level, f.rowwise = pp.mr, pp.nr, pp.level, pp.rowwise
        f.depth, f.ldc, f.n_tiles = pp.depth, pp.ldc, pp.n_tiles
        # the tiles read up to ldc columns and the window's reach past the shifted start
        p.slack = max(p.slack, f.shift + (f.ta - 1) * p.Wp + f.tb - 1 + f.ldc
                      - p.Hp * p.Wp + 1)
    return cost


cdef void _phase_sizes(Plan *p, Geom *g) noexcept nogil:
    """The workspace of a phase plan: the phases' packed weights one after the other,
    their offsets and tiles likewise, the shared plane, the largest gemm output."""
    cdef Phase *f
    cdef Py_ssize_t i
    p.direct = True
    p.rows, p.rowblock = g.Cg, 0
    p.size_a = p.size_c = p.n_off = p.n_tiles = 0
    for i in range(4):
        f = &p.ph[i]
        f.at_a, f.at_off = p.size_a, p.n_off + 3 * p.n_tiles
        if f.n_tiles:
            p.size_a += g.G * _round_up(g.Cg, f.mr) * f.depth
            p.size_c = max(p.size_c, g.Cg * f.ldc)
            p.n_off += f.depth
            p.n_tiles += f.n_tiles
            if f.depth > p.depth or p.mr == 0:  # reported by _plan_info: the biggest phase's
                p.mr, p.nr, p.depth = f.mr, f.nr, f.depth
    p.size_b = g.Co * p.Hp * p.Wp + p.slack


# Plans by geometry: choosing a tiling walks every candidate's column tiles, which costs
# more than a small convolution; a training loop asks for the same few plans each step.
# A small table of C structs (compared with memcmp, replaced round-robin): a lookup
# makes no Python objects. Only touched with the GIL held.
cdef struct PlanKey:
    Py_ssize_t v[30]

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
                _force_flat_dot, _force_lanes_dot, _force_weight_direct, _force_mr, _force_nr,
                _force_input_phases, _force_rowblock, _force_forward_direct,
                _force_channel_lanes]
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
    cdef Py_ssize_t lanes, chan_planes
    cdef bint lanes_pay
    cdef bint stride1 = g.sh == 1 and g.sw == 1
    cdef bint phases = False
    cdef bint direct
    p.nthreads = 1
    p.n_phases = 0
    p.mr = p.nr = 0
    p.cost = p.other_cost = 0
    if flops >= PARALLEL_MIN_FLOPS and g.N > 1 and n_threads > 1:
        p.nthreads = <int>min(n_threads, g.N)
    p.flat_len = p.n_tiles = p.ldc = p.partial = 0
    p.images, p.img_b, p.img_d, p.blocks, p.chunks = 1, 0, 0, 0, 1
    p.size_a = p.size_b = p.size_c = p.size_d = 0
    p.rowwise = p.lanes_dot = p.lanes_in_place = False
    p.lanes_mv = p.rowblock = 0
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
        # direct: stride 1, or any stride over phase planes when undilated
        direct = stride1 or (g.dh == 1 and g.dw == 1)
        if _force_forward_direct == 0:
            direct = False
        _gemm_geometry(p, g, kind, direct)
        _choose_tiles(p, g)
        if direct:
            _choose_channel_lanes(p, g, kind)
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
            p.cost, p.other_cost = (direct_cost, col_cost) if stride1 else (col_cost, direct_cost)
        elif g.sh == 2 and g.sw == 2 and g.dh == 1 and g.dw == 1 and g.Cg > 1:
            # Stride 2: gemm + col2im, or four stride-1 direct gemms, one per phase of
            # the input (rows and columns even or odd), each stored once into its places
            _gemm_geometry(p, g, kind, False)
            col_cost = _choose_tiles(p, g) + 16.0 * g.K * g.Ho * (20.0 + g.Wo / 4.0)
            direct_cost = _phase_plans(p, g)
            p.cost, p.other_cost = col_cost, direct_cost
            phases = direct_cost >= 0 and (_force_input_phases == 1 or (
                _force_input_phases < 0 and direct_cost < col_cost))
            if phases:
                _phase_sizes(p, g)
                p.cost, p.other_cost = direct_cost, col_cost
        if not phases:
            p.n_phases = 0
            _gemm_geometry(p, g, kind, stride1)
            _choose_tiles(p, g)
            if stride1:
                _choose_channel_lanes(p, g, kind)
            _gemm_sizes(p, g, kind)
    else:
        # direct: stride 1, or (undilated) any stride over phase planes, as the forward;
        # not a strided 1x1, whose one phase plane is its im2col matrix: the gemm path's
        # dots over whole contiguous rows take half the time there (Zen 3, ResNet's 1x1
        # stride-2 shortcut)
        p.direct = stride1 or (g.dh == 1 and g.dw == 1 and g.kh * g.kw > 1)
        if _force_weight_direct >= 0:
            p.direct = _force_weight_direct == 1 and (stride1 or (g.dh == 1 and g.dw == 1))
        p.rows, p.depth = g.M, g.K
        p.level = fg_simd_level()
        p.chunks = _weight_chunks(g, flops)  # at most; whole blocks of images each
        p.Hp = p.Wp = p.top = p.left = p.slack = 0
        p.psh = p.psw = p.pnh = p.pnw = 1
        if p.direct and not stride1:
            # window element (ky, kx) of output (oy, ox) is element (oy + ky // sh,
            # ox + kx // sw) of phase plane (c, ky % sh, kx % sw) (see _gemm_geometry)
            p.psh, p.psw = g.sh, g.sw
            p.pnh, p.pnw = min(g.sh, g.kh), min(g.sw, g.kw)
            p.Hp, p.Wp = g.Ho + (g.kh - 1) // g.sh, g.Wo + (g.kw - 1) // g.sw
            p.top, p.left = g.pt, g.pl
        elif p.direct:
            p.Hp, p.Wp = g.Ho + g.dh * (g.kh - 1), g.Wo + g.dw * (g.kw - 1)
            p.top, p.left = g.pt, g.pl
        chan_planes = p.pnh * p.pnw * p.Hp * p.Wp  # one channel's input planes
        if p.direct:
            _dot_tile(p.rows, p.depth, g.Ho * p.Wp, g.Cg * chan_planes, &p.mr, &p.nr)
        else:
            _dot_tile(p.rows, p.depth, g.Ho * g.Wo, g.K * g.Ho * g.Wo, &p.mr, &p.nr)
        if p.direct:
            # Dots over whole planes (the output gradient widened to the plane's pitch,
            # zeros in the extra columns) when that takes fewer 8-lane steps than row by
            # row dots with masked row ends; then a block of images is summed in one go.
            # At equal steps rows win: they need no widened copy (LeNet conv1, 28x28 in a
            # pitch of 32: 45.6 against 42.0 GFLOP/s, Zen 3).
            p.flat_len = _round_up(g.Ho * p.Wp, LANES)
            if _force_flat_dot == 0 or (_force_flat_dot < 0 and p.flat_len >= g.Ho * _round_up(
                    g.Wo, 16 if fg_simd_level() >= 2 else 8)):
                p.flat_len = 0
            p.slack = g.dw * (g.kw - 1) + LANES
            p.img_b = _round_up(g.C * chan_planes + p.slack, ALIGN)
            p.img_d = _round_up(g.Co * p.flat_len, ALIGN)
            lanes = 16 if fg_simd_level() >= 2 else 8
            if fg_simd_level() >= 2:
                # AVX-512: when every position serves many window elements (a Xeon) and
                # a row dot would not run whole 16-lane vectors over many positions
                # (Zen 4, batch 64, each way forced, alternating: rows win 16->16 on
                # 32x32 95 against 71 GF/s, 32->32 on 16x16 93 / 84, 64->64 on 16x16
                # 100 / 92, 16->32 stride 2 71 / 59; lanes win 24-wide rows 90 / 78,
                # LeNet conv2's 10-wide 80 / 64, 64->64 on 8x8 90 / 51)
                lanes_pay = g.K >= LANES_DOT_MIN_K and (
                    g.Ho * g.Wo < LANES_DOT_POSITIONS or g.Wo % 16 != 0)
            else:
                # AVX2 (measured on Zen 3, batch 64): when an image has fewer than
                # LANES_DOT_POSITIONS output positions, whatever the channels: a row or
                # flat dot then runs under 32 vector steps per image between its lane
                # sums (64->64 on 8x8: 77 GF/s by lanes against 59; 128->128 on 4x4: 66
                # against 23), while on larger planes it wins (16->16 on 32x32: 83
                # against 60; 32->32 and 64->64 on 16x16: 75-82 against 65-77)
                lanes_pay = g.Ho * g.Wo < LANES_DOT_POSITIONS
            if _force_lanes_dot == 1 or (_force_lanes_dot < 0 and _force_flat_dot < 0 and
                                         fg_simd_level() >= 1 and g.M >= lanes and lanes_pay):
                # output channels along the lanes: vectors of channels times window
                # elements broadcast from the padded planes, over exactly the output
                # positions (no extra columns, no lane sums). The gradient is transposed
                # first.
                p.lanes_dot = True
                p.flat_len = 0
                p.mr = 1 if g.M <= lanes else (2 if g.M <= 2 * lanes or fg_simd_level() < 2 else 4)
                p.nr = 8 if p.mr == 1 else 6
                p.ldg = _round_up(g.M, p.mr * lanes)
                p.img_d = _round_up(g.G * g.Ho * g.Wo * p.ldg, ALIGN)
                p.images = _block_images(_ceil_div(LANES_DOT_POSITIONS, g.Ho * g.Wo),
                                         ROW_DOT_IMAGES, g, p)
            elif p.flat_len:
                # as many images per block as keep one row panel's data (its rows of the
                # widened gradient and the padded planes) within ~32 KB of L1
                p.images = _block_images(8192 // (p.mr * p.flat_len + g.Cg * chan_planes + p.slack),
                                         8, g, p)
            else:
                # row by row: a tile's dots run over every image of the block, so that
                # its lane sums and stores are amortized over ~ROW_DOT_STEPS vector steps
                # (small images; large ones have as many in one image)
                p.images = _block_images(_ceil_div(ROW_DOT_STEPS, g.Ho * _ceil_div(g.Wo, lanes)),
                                         ROW_DOT_IMAGES, g, p)
            p.size_b = p.images * p.img_b
            p.size_d = p.images * p.img_d
        else:
            # im2col: each tile's dots run over a block of images' matrices, so that its
            # lane sums and stores are amortized over ~ROW_DOT_STEPS vector steps (a 1x1
            # stride-2 shortcut has 8 per image)
            p.img_b = g.K * g.Ho * g.Wo
            p.images = _block_images(
                _ceil_div(ROW_DOT_STEPS, _ceil_div(g.Ho * g.Wo, 16 if fg_simd_level() >= 2 else 8)),
                ROW_DOT_IMAGES, g, p)
            p.size_b = p.images * p.img_b
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


cdef inline Py_ssize_t _block_images(Py_ssize_t wanted, Py_ssize_t most, Geom *g,
                                     Plan *p) noexcept nogil:
    """Images per weight-gradient block: `wanted`, at most `most` and a chunk's share of
    the batch, at least 1."""
    return max(<Py_ssize_t>1, min(wanted, most, (g.N + p.chunks - 1) // p.chunks))


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
