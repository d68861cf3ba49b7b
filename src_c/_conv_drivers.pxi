# The loops of the conv family (included by _conv.pyx, after the planning): data
# movement (padding, im2col, col2im, stores), weight packing, the gemm and dot loops
# (SIMD kernels of conv_kernels.h, portable twins here), per-image steps and the batch
# drivers with their threading. All nogil, on what the plan laid out.

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


cdef inline void _x_bounds(Py_ssize_t W, Py_ssize_t n, Py_ssize_t s, Py_ssize_t sw,
                           Py_ssize_t *lo, Py_ssize_t *hi) noexcept nogil:
    """[lo, hi): the j < n with j*sw + s inside [0, W)."""
    lo[0] = 0 if s >= 0 else (-s + sw - 1) // sw
    hi[0] = (W - s + sw - 1) // sw if W > s else 0
    lo[0] = min(lo[0], n)
    hi[0] = max(lo[0], min(hi[0], n))


cdef inline void _x_range(Geom *g, Py_ssize_t kx, Py_ssize_t *lo, Py_ssize_t *hi,
                          Py_ssize_t *shift) noexcept nogil:
    """Output columns ox in [lo, hi) read input column ox*sw + shift inside [0, W)."""
    shift[0] = kx * g.dw - g.pl
    _x_bounds(g.W, g.Wo, shift[0], g.sw, lo, hi)


cdef inline void _gather_row(floating *d, const floating *srow, Py_ssize_t lo,
                             Py_ssize_t hi, Py_ssize_t n, Py_ssize_t sw,
                             Py_ssize_t s) noexcept nogil:
    """d[ox] = srow[ox*sw + s] for ox in [lo, hi), zeros elsewhere in [0, n). Plain loops,
    not libc calls: the rows are short (a stride-2 layer's 8 or 16 columns), where a
    memset or memcpy call costs more than the copy. Strides 1 and 2 as constants, so the
    copies vectorize."""
    cdef Py_ssize_t ox
    for ox in range(lo):
        d[ox] = 0
    if sw == 1:
        for ox in range(lo, hi):
            d[ox] = srow[ox + s]
    elif sw == 2:
        for ox in range(lo, hi):
            d[ox] = srow[2 * ox + s]
    else:
        for ox in range(lo, hi):
            d[ox] = srow[ox * sw + s]
    for ox in range(hi, n):
        d[ox] = 0


cdef inline void _gather_row_simd(floating *d, const floating *srow, Py_ssize_t lo,
                                  Py_ssize_t hi, Py_ssize_t n, Py_ssize_t sw, Py_ssize_t s,
                                  int level) noexcept nogil:
    """_gather_row, with float32 stride-2 rows gathered by vectors where SIMD runs."""
    if floating is float:
        if sw == 2 and hi > lo and fgc_gather_stride2_f32(level, d + lo, srow + 2 * lo + s,
                                                          hi - lo):
            _gather_row(d, srow, 0, 0, lo, 1, 0)  # the zeros before and after
            _gather_row(d + hi, srow, 0, 0, n - hi, 1, 0)
            return
    _gather_row(d, srow, lo, hi, n, sw, s)


cdef inline void _split_row(floating *d0, floating *d1, const floating *srow, Py_ssize_t lo0,
                            Py_ssize_t hi0, Py_ssize_t lo1, Py_ssize_t hi1, Py_ssize_t n,
                            Py_ssize_t s, int level) noexcept nogil:
    """d0[j] = srow[2j + s] for j in [lo0, hi0), d1[j] = srow[2j + 1 + s] for j in
    [lo1, hi1), zeros elsewhere in [0, n): a row's two column phases, the common range in
    one loop (float32 with SIMD: one vector deinterleave per 16 source floats)."""
    cdef Py_ssize_t j, lo = max(lo0, lo1), hi = min(hi0, hi1)
    cdef bint split = False
    if hi <= lo:
        _gather_row(d0, srow, lo0, hi0, n, 2, s)
        _gather_row(d1, srow, lo1, hi1, n, 2, s + 1)
        return
    for j in range(lo0):
        d0[j] = 0
    for j in range(lo1):
        d1[j] = 0
    for j in range(lo0, lo):
        d0[j] = srow[2 * j + s]
    for j in range(lo1, lo):
        d1[j] = srow[2 * j + 1 + s]
    if floating is float:
        split = fgc_split_stride2_f32(level, d0 + lo, d1 + lo, srow + 2 * lo + s, hi - lo) != 0
    if not split:
        for j in range(lo, hi):
            d0[j] = srow[2 * j + s]
            d1[j] = srow[2 * j + 1 + s]
    for j in range(hi, hi0):
        d0[j] = srow[2 * j + s]
    for j in range(hi, hi1):
        d1[j] = srow[2 * j + 1 + s]
    for j in range(hi0, n):
        d0[j] = 0
    for j in range(hi1, n):
        d1[j] = 0


cdef void _phase_planes(const floating *src, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                        floating *dst, Plan *p) noexcept nogil:
    """The direct forward's planes for stride (psh, psw): plane (c, a, b), a < pnh,
    b < pnw, of Hp x Wp is
    dst[((c*pnh + a)*pnw + b)*Hp*Wp + i*Wp + j] = src[c][i*psh + a - top][j*psw + b - left]
    inside src, else 0; then p.slack zeros."""
    cdef Py_ssize_t c, a, b, i, iy, s, lo, hi, sh = p.psh, sw = p.psw
    cdef Py_ssize_t plane = p.Hp * p.Wp
    cdef Py_ssize_t lo0, hi0, lo1, hi1
    cdef floating *d
    if sw == 2 and p.pnw == 2:
        # both column phases of a source row in one pass (short rows: half the loops),
        # the source rows in order (one sequential read of each plane: row phases taken
        # plane by plane read every other row, which stalled on the loads), then the
        # rows over padding
        _x_bounds(W, p.Wp, -p.left, 2, &lo0, &hi0)
        _x_bounds(W, p.Wp, 1 - p.left, 2, &lo1, &hi1)
        for c in range(C):
            for iy in range(H):
                a = (iy + p.top) % sh
                i = (iy + p.top) // sh
                if a >= p.pnh or i >= p.Hp:
                    continue
                d = dst + (c * p.pnh + a) * 2 * plane + i * p.Wp
                _split_row(d, d + plane, src + (c * H + iy) * W, lo0, hi0, lo1, hi1, p.Wp,
                           -p.left, p.level)
            for a in range(p.pnh):
                d = dst + (c * p.pnh + a) * 2 * plane
                for i in range(p.Hp):
                    iy = i * sh + a - p.top
                    if iy < 0 or iy >= H:
                        _gather_row(d + i * p.Wp, src, 0, 0, p.Wp, 1, 0)
                        _gather_row(d + plane + i * p.Wp, src, 0, 0, p.Wp, 1, 0)
        _gather_row(dst + C * p.pnh * p.pnw * plane, src, 0, 0, p.slack, 1, 0)
        return
    for c in range(C):
        for a in range(p.pnh):
            for b in range(p.pnw):
                d = dst + ((c * p.pnh + a) * p.pnw + b) * plane
                s = b - p.left
                _x_bounds(W, p.Wp, s, sw, &lo, &hi)
                for i in range(p.Hp):
                    iy = i * sh + a - p.top
                    if iy < 0 or iy >= H:
                        _gather_row(d + i * p.Wp, src, 0, 0, p.Wp, 1, 0)
                    else:
                        _gather_row_simd(d + i * p.Wp, src + (c * H + iy) * W, lo, hi, p.Wp,
                                         sw, s, p.level)
    _gather_row(dst + C * p.pnh * p.pnw * plane, src, 0, 0, p.slack, 1, 0)


cdef void _phase_offsets(Py_ssize_t chans, Plan *p, Geom *g, bint ky_major,
                         Py_ssize_t *off) noexcept nogil:
    """off[k], the shift of window element (c, ky, kx) on phase planes (_phase_planes);
    k = (ky, c, kx) when ky_major (the gemm's depth order), else (c, ky, kx)."""
    cdef Py_ssize_t c, ky, kx, k, plane = p.Hp * p.Wp
    for c in range(chans):
        for ky in range(g.kh):
            for kx in range(g.kw):
                k = ((ky * chans + c) if ky_major else (c * g.kh + ky)) * g.kw + kx
                off[k] = (((c * p.pnh + ky % p.psh) * p.pnw + kx % p.psw) * plane
                          + (ky // p.psh) * p.Wp + kx // p.psw)


cdef inline void _input_planes(Geom *g, Plan *p, const floating *x, floating *dst) noexcept nogil:
    """The planes a direct kernel reads one image's input from: padded planes, or phase
    planes for a stride above 1 (p.psh * p.psw > 1)."""
    if p.psh * p.psw > 1:
        _phase_planes(x, g.C, g.H, g.W, dst, p)
    else:
        _pad_planes(x, g.C, g.H, g.W, dst, p.Hp, p.Wp, p.top, p.left, p.slack)


cdef void _im2col(Geom *g, const floating *src, floating *col, Py_ssize_t ld,
                  int level) noexcept nogil:
    """col[k*ld + oy*Wo + ox] = input of window (oy, ox) at weight element k=(c, ky, kx)
    of one group (src: its Cg planes), zero outside the image; zeros from Ho*Wo to ld."""
    cdef Py_ssize_t c, ky, kx, oy, iy, lo, hi, s, k = 0
    cdef Py_ssize_t P = g.Ho * g.Wo
    cdef floating *row
    for c in range(g.Cg):
        for ky in range(g.kh):
            for kx in range(g.kw):
                row = col + k * ld
                _x_range(g, kx, &lo, &hi, &s)
                for oy in range(g.Ho):
                    iy = oy * g.sh - g.pt + ky * g.dh
                    if iy < 0 or iy >= g.H:  # a row of padding
                        _gather_row(row + oy * g.Wo, src, 0, 0, g.Wo, 1, 0)
                    else:
                        _gather_row_simd(row + oy * g.Wo, src + (c * g.H + iy) * g.W, lo,
                                         hi, g.Wo, g.sw, s, level)
                _gather_row(row + P, src, 0, 0, ld - P, 1, 0)
                k += 1


cdef void _col2im(Geom *g, const floating *col, Py_ssize_t ld, floating *dst,
                  int level) noexcept nogil:
    """The adjoint of _im2col: dst (one group's Cg planes) += every col entry at the
    input position it was read from. level: the SIMD level (stride-2 rows)."""
    cdef Py_ssize_t c, ky, kx, oy, ox, iy, lo, hi, s, k = 0
    cdef const floating *row
    cdef const floating *r
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
                    drow = dst + (c * g.H + iy) * g.W + s
                    r = row + oy * g.Wo
                    if g.sw == 1:  # strides as constants: the loops vectorize
                        for ox in range(lo, hi):
                            drow[ox] += r[ox]
                    elif g.sw == 2:
                        if floating is float:
                            # past: the row has the place after the last one written
                            if hi > lo and fgc_add_stride2_f32(level, drow + 2 * lo, r + lo,
                                                               hi - lo, 2 * hi - 1 + s < g.W):
                                continue
                        for ox in range(lo, hi):
                            drow[2 * ox] += r[ox]
                    else:
                        for ox in range(lo, hi):
                            drow[ox * g.sw] += r[ox]
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
    _pack_columns(w, g, p.rows, p.depth, p.mr, kidx, _weight_columns(order, g, kidx), ap)


cdef void _pack_columns(const floating *w, Geom *g, Py_ssize_t rows, Py_ssize_t depth,
                        Py_ssize_t mr, const Py_ssize_t *kidx, Py_ssize_t step,
                        floating *ap) noexcept nogil:
    """ap[group][panel][k][r] = w_group[kidx[k] + (panel*mr + r) * step] (0 past `rows`)."""
    cdef Py_ssize_t grp, panel, k, r, row
    cdef Py_ssize_t panels = (rows + mr - 1) // mr
    cdef const floating *wg
    cdef floating *dst = ap
    for grp in range(g.G):
        wg = w + grp * g.M * g.K
        for panel in range(panels):
            for k in range(depth):
                for r in range(mr):
                    row = panel * mr + r
                    dst[r] = wg[kidx[k] + row * step] if row < rows else 0
                dst += mr


cdef void _phase_columns(Geom *g, Phase *f, Py_ssize_t *kidx) noexcept nogil:
    """kidx[k], k = (t, oc, u) (the direct input gradient's depth order), of phase f: the
    weight element (oc, 0, ky0 + 2 (ta-1-t), kx0 + 2 (tb-1-u)) in a group's weight (the
    kernel flipped, as PACK_INPUT_DIRECT); the input channel steps by kh * kw."""
    cdef Py_ssize_t t, oc, u
    for t in range(f.ta):
        for oc in range(g.M):
            for u in range(f.tb):
                kidx[(t * g.M + oc) * f.tb + u] = ((oc * g.Cg * g.kh + f.ky0 + 2 * (f.ta - 1 - t))
                                                    * g.kw + f.kx0 + 2 * (f.tb - 1 - u))


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


cdef void _flanes_portable(Py_ssize_t mw, Py_ssize_t sw, Py_ssize_t rows, Py_ssize_t cols,
                           const Py_ssize_t *tiles, const floating *A, const floating *X,
                           const Py_ssize_t *off, Py_ssize_t x_row, floating *T) noexcept nogil:
    """T[(y*cols + x)*mw + l] = sum over tiles[3y+1] <= k < tiles[3y+2] of
    A[k*mw + l] * X[off[k] + y*x_row + x*sw] (fgc_flanes_f32's sums, position by
    position)."""
    cdef Py_ssize_t y, x, k, l
    cdef floating *t
    cdef const floating *a
    cdef floating xv
    for y in range(rows):
        for x in range(cols):
            t = T + (y * cols + x) * mw
            for l in range(mw):
                t[l] = 0
            for k in range(tiles[3 * y + 1], tiles[3 * y + 2]):
                xv = X[off[k] + y * x_row + x * sw]
                a = A + k * mw
                for l in range(mw):
                    t[l] += a[l] * xv


cdef inline void _flanes(Plan *p, Geom *g, const Py_ssize_t *tiles, const floating *A,
                         const floating *X, const Py_ssize_t *off, floating *T) noexcept nogil:
    """One panel of one image's direct gemm with channels along the lanes (see
    fgc_flanes_f32): the forward's, at its stride, or the stride-1 input gradient's."""
    if floating is float:
        if fgc_flanes_f32(p.level, p.lanes_mv, p.nr, <int>g.sw, p.out_rows, p.out_cols, tiles,
                          A, X, off, p.Wp * g.sh, T):
            return
    _flanes_portable(p.mr, g.sw, p.out_rows, p.out_cols, tiles, A, X, off, p.Wp * g.sh, T)


cdef void _store_lanes(Plan *p, const floating *T, Py_ssize_t rows, Py_ssize_t P,
                       floating *dst, const floating *bias, bint relu) noexcept nogil:
    """dst[m][q] = T[q*mr + m] (+ bias[m]) (then max(0, .)) for m < rows, q < P: a panel
    of the channel-lane forward into its output planes (as _store_rows stores the gemm's)."""
    cdef Py_ssize_t m, q, mw = p.mr
    cdef floating b, v
    cdef floating *d
    if floating is float:
        if fgc_store_lanes_f32(p.level, T, mw, rows, P, dst, bias, relu):
            return
    for m in range(rows):
        b = bias[m] if bias != NULL else 0
        d = dst + m * P
        if bias != NULL and relu:
            for q in range(P):
                v = T[q * mw + m] + b
                d[q] = 0 if v < 0 else v  # NaN stays NaN
        elif bias != NULL:
            for q in range(P):
                d[q] = T[q * mw + m] + b
        elif relu:
            for q in range(P):
                v = T[q * mw + m]
                d[q] = 0 if v < 0 else v
        else:
            for q in range(P):
                d[q] = T[q * mw + m]


cdef void _forward_image(Geom *g, Plan *p, const floating *x, const floating *ap,
                         const Py_ssize_t *off, const Py_ssize_t *tiles,
                         const floating *bias, bint relu, floating *out, floating *buf_b,
                         floating *buf_c) noexcept nogil:
    cdef Py_ssize_t grp
    cdef Py_ssize_t a_group = _round_up(p.rows, p.mr) * p.depth
    cdef const floating *b = buf_b
    cdef Py_ssize_t panel, m0, P = g.Ho * g.Wo
    if p.direct and not p.lanes_in_place:  # (in place: the input is the plane)
        _input_planes(g, p, x, buf_b)
    for grp in range(g.G):
        if p.direct:
            b = (x if p.lanes_in_place else buf_b) + grp * g.Cg * p.pnh * p.pnw * p.Hp * p.Wp
        else:
            _im2col(g, x + grp * g.Cg * g.H * g.W, buf_b, p.ldc, p.level)
        if p.lanes_mv:
            for panel in range((g.M + p.mr - 1) // p.mr):
                m0 = panel * p.mr
                _flanes(p, g, tiles, ap + grp * a_group + m0 * p.depth, b, off, buf_c)
                _store_lanes(p, buf_c, min(<Py_ssize_t>p.mr, g.M - m0), P,
                             out + (grp * g.M + m0) * P,
                             bias + grp * g.M + m0 if bias != NULL else NULL, relu)
            continue
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
    cdef const floating *b
    cdef Py_ssize_t panel, c0
    if p.direct:
        _pad_planes(gout, g.Co, g.Ho, g.Wo, buf_b, p.Hp, p.Wp, p.top, p.left, p.slack)
        for grp in range(g.G):
            if p.lanes_mv:
                for panel in range((g.Cg + p.mr - 1) // p.mr):
                    c0 = panel * p.mr
                    _flanes(p, g, tiles, ap + grp * a_group + c0 * p.depth,
                            buf_b + grp * g.M * p.Hp * p.Wp, off, buf_c)
                    _store_lanes(p, buf_c, min(<Py_ssize_t>p.mr, g.Cg - c0), g.H * g.W,
                                 gx + (grp * g.Cg + c0) * g.H * g.W, NULL, False)
                continue
            if _gemm_into(p, tiles, ap + grp * a_group, buf_b + grp * g.M * p.Hp * p.Wp, off,
                          gx + grp * g.Cg * g.H * g.W, g.H, g.W, NULL, False):
                continue
            _gemm(p, tiles, ap + grp * a_group, buf_b + grp * g.M * p.Hp * p.Wp, off, buf_c)
            _store_rows(buf_c, p.ldc, p.pitch, g.Cg, g.H, g.W, gx + grp * g.Cg * g.H * g.W,
                        NULL, False)
        return
    memset(gx, 0, g.C * g.H * g.W * sizeof(floating))
    for grp in range(g.G):
        b = gout + grp * g.M * P
        if p.ldc != P:
            for oc in range(g.M):  # copied so that reads up to the tile edge stay inside
                memcpy(buf_b + oc * p.ldc, b + oc * P, P * sizeof(floating))
                memset(buf_b + oc * p.ldc + P, 0, (p.ldc - P) * sizeof(floating))
            b = buf_b
        _gemm(p, tiles, ap + grp * a_group, b, off, buf_c)
        _col2im(g, buf_c, p.ldc, gx + grp * g.Cg * g.H * g.W, p.level)


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
    cdef Py_ssize_t group_b = g.Cg * p.pnh * p.pnw * p.Hp * p.Wp  # one group's input planes
    if not p.direct:
        for grp in range(g.G):
            # the block's im2col matrices one after the other, one dot over all of them
            for n in range(count):
                _im2col(g, x + n * xs + grp * g.Cg * g.H * g.W, buf_b + n * p.img_b, P,
                        p.level)
            _dot(p.level, p.mr, p.nr, g.M, g.K, gout + grp * g.M * P, P, 0, buf_b,
                 off, 0, 1, P, gw + grp * g.M * g.K, g.K, count, ys, p.img_b)
        return
    if p.lanes_dot:
        for n in range(count):
            _input_planes(g, p, x + n * xs, buf_b + n * p.img_b)
            _transpose_grad(gout + n * ys, g.G, g.M, P, p.ldg, buf_d + n * p.img_d)
        for grp in range(g.G):
            _lanes(p, g.M, g.K, buf_d + grp * P * p.ldg, p.ldg, p.img_d,
                   buf_b + grp * group_b, off, p.Wp, p.img_b, count, g.Ho, g.Wo,
                   gw + grp * g.M * g.K, g.K)
        return
    for n in range(count):
        _input_planes(g, p, x + n * xs, buf_b + n * p.img_b)
        # Flat dots multiply the widened gradient's zero columns with real inputs: only
        # when those are finite (0 * inf is NaN).
        flat = flat and _all_finite(x + n * xs, xs)
    if flat:
        for n in range(count):
            _widen(gout + n * ys, g.Co, g.Ho, g.Wo, buf_d + n * p.img_d, p.Wp, p.flat_len)
        for grp in range(g.G):
            # the images of the block are the dot's rows: one reduction over all of them
            _dot(p.level, p.mr, p.nr, g.M, g.K, buf_d + grp * g.M * p.flat_len, p.flat_len, p.img_d,
                 buf_b + grp * group_b, off, p.img_b, count, p.flat_len,
                 gw + grp * g.M * g.K, g.K)
        return
    for grp in range(g.G):
        # row by row, the block's images one after the other in each dot
        _dot(p.level, p.mr, p.nr, g.M, g.K, gout + grp * g.M * P, P, g.Wo,
             buf_b + grp * group_b, off, p.Wp, g.Ho, g.Wo,
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
        if p.psh * p.psw > 1:
            _phase_offsets(g.Cg, p, g, True, off)
        else:
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
    if p.n_phases:
        _backward_input_phases_run(g, p, gout, w, gx, ws, off)
        return
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


cdef void _store_phase(const floating *wide, Py_ssize_t ldc, Py_ssize_t pitch,
                       Py_ssize_t rows, Phase *f, Py_ssize_t H, Py_ssize_t W,
                       floating *dst) noexcept nogil:
    """dst[m][a + 2i][b + 2j] = wide[m*ldc + i*pitch + j] for phase f's places (zeros when
    wide is NULL)."""
    cdef Py_ssize_t m, i, j
    cdef const floating *s
    cdef floating *d
    for m in range(rows):
        for i in range(f.ha):
            d = dst + (m * H + f.a + 2 * i) * W + f.b
            if wide == NULL:
                for j in range(f.wb):
                    d[2 * j] = 0
            else:
                s = wide + m * ldc + i * pitch
                for j in range(f.wb):
                    d[2 * j] = s[j]


cdef void _backward_input_phases_image(Geom *g, Plan *p, Plan *pp, const floating *gout,
                                       const floating *ap, const Py_ssize_t *idx,
                                       floating *gx, floating *buf_b,
                                       floating *buf_c) noexcept nogil:
    """One image's input gradient by phases: the output gradient padded once (shared
    plane), then per phase and group a direct gemm from its shifted start, stored into
    the phase's places; every input position is written once."""
    cdef Py_ssize_t i, grp
    cdef Phase *f
    cdef const Py_ssize_t *off
    _pad_planes(gout, g.Co, g.Ho, g.Wo, buf_b, p.Hp, p.Wp, p.top, p.left, p.slack)
    for i in range(4):
        f = &p.ph[i]
        off = idx + f.at_off
        for grp in range(g.G):
            if f.n_tiles == 0:  # no kernel element reaches these places (or none exist)
                _store_phase(<floating *>NULL, 0, 0, g.Cg, f, g.H, g.W,
                             gx + grp * g.Cg * g.H * g.W)
                continue
            _gemm(&pp[i], off + f.depth, ap + f.at_a + grp * _round_up(g.Cg, f.mr) * f.depth,
                  buf_b + grp * g.M * p.Hp * p.Wp + f.shift, off, buf_c)
            _store_phase(buf_c, f.ldc, p.Wp, g.Cg, f, g.H, g.W, gx + grp * g.Cg * g.H * g.W)


cdef void _backward_input_phases_run(Geom *g, Plan *p, const floating *gout,
                                     const floating *w, floating *gx, floating *ws,
                                     Py_ssize_t *idx) noexcept nogil:
    cdef Py_ssize_t n, i
    cdef Geom gp
    cdef Plan pp[4]
    cdef Phase *f
    cdef floating *ap = _aligned(ws)
    cdef floating *base = ap + _round_up(p.size_a, ALIGN)
    cdef floating *mine
    cdef Py_ssize_t xs = g.C * g.H * g.W, ys = g.Co * g.Ho * g.Wo
    cdef Py_ssize_t at_c = _round_up(p.size_b, ALIGN)
    for i in range(4):
        f = &p.ph[i]
        if f.n_tiles == 0:
            continue
        _phase_setup(g, p, f, &gp, &pp[i])
        _phase_columns(g, f, idx + f.at_off)  # the offsets' place holds kidx first
        _pack_columns(w, g, g.Cg, f.depth, f.mr, idx + f.at_off, g.kh * g.kw, ap + f.at_a)
        _window_offsets(g.M, p.Hp, p.Wp, &gp, True, idx + f.at_off)
        _list_tiles(&pp[i], &gp, idx + f.at_off + f.depth)
    if p.nthreads > 1:
        for n in prange(g.N, schedule="static", num_threads=p.nthreads):
            mine = base + threadid() * p.per_thread
            _backward_input_phases_image(g, p, pp, gout + n * ys, ap, idx, gx + n * xs, mine,
                                         mine + at_c)
    else:
        for n in range(g.N):
            _backward_input_phases_image(g, p, pp, gout + n * ys, ap, idx, gx + n * xs, base,
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
    if p.direct and p.psh * p.psw > 1:
        _phase_offsets(g.Cg, p, g, False, off)
    elif p.direct:
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


cdef enum:
    BIAS_CHUNK = 64   # channels summed side by side, in memory order


cdef void _bias_chunk(const floating *gout, Py_ssize_t N, Py_ssize_t Co, Py_ssize_t P,
                      Py_ssize_t c0, Py_ssize_t c1, floating *gb) noexcept nogil:
    """gb[c] = the sum of channel c over the batch, in LANES partial sums, for c0 <= c < c1
    (at most BIAS_CHUNK), the runs read in memory order: channel by channel, each run
    started on a new page (a 32x32 plane is one), which the prefetchers do not cross."""
    cdef floating acc[BIAS_CHUNK][LANES]
    cdef floating total
    cdef Py_ssize_t n, x, l, c, i
    cdef Py_ssize_t full = P - P % LANES
    cdef const floating *s
    for i in range(c1 - c0):
        for l in range(LANES):
            acc[i][l] = 0
    for n in range(N):
        for c in range(c0, c1):
            i = c - c0
            s = gout + (n * Co + c) * P
            for x in range(0, full // LANES):
                for l in range(LANES):
                    acc[i][l] += s[x * LANES + l]
            for x in range(full, P):
                acc[i][x - full] += s[x]
    for c in range(c0, c1):
        total = 0
        for l in range(LANES):
            total += acc[c - c0][l]
        gb[c] = total


cdef void _bias_run(const floating *gout, Py_ssize_t N, Py_ssize_t Co, Py_ssize_t P,
                    floating *gb, int n_threads) noexcept nogil:
    """Chunks of channels in parallel when the pass is long enough (a memory-bound read of
    the whole gradient); each channel is summed in the same order either way."""
    cdef Py_ssize_t t, step
    cdef int team = 1
    if n_threads > 1 and Co > 1 and N * Co * P >= BIAS_PARALLEL_MIN:
        team = <int>min(<Py_ssize_t>n_threads, Co)
    step = max(<Py_ssize_t>1, min(<Py_ssize_t>BIAS_CHUNK, (Co + team - 1) // team))
    if team > 1:
        for t in prange((Co + step - 1) // step, schedule="static", num_threads=team):
            _bias_chunk(gout, N, Co, P, t * step, min(Co, (t + 1) * step), gb)
    else:
        for t in range((Co + step - 1) // step):
            _bias_chunk(gout, N, Co, P, t * step, min(Co, (t + 1) * step), gb)