# The register tiles of the conv family's gemm and dot loops (included by _conv.pyx,
# before the planner): each tile's speed on the CPU the process runs on, timed once at
# the first plan that can use it and kept for the process, which the cost model of
# _conv_plan.pxi plans with. Runs with the GIL held (planning does), so the tables need
# no lock.


cdef double _now() noexcept nogil:
    cdef timespec t
    clock_gettime(CLOCK_MONOTONIC, &t)
    return t.tv_sec + 1e-9 * t.tv_nsec


cdef void _timing_values(float *p, Py_ssize_t n, float start, float step,
                         int period) noexcept nogil:
    """p[i] = start + step * (i % period): a timed problem's operands (moderate values, no
    denormals, nothing a kernel could skip)."""
    cdef Py_ssize_t i
    for i in range(n):
        p[i] = start + step * (i % period)


# The gemm register tiles: (level, rows, columns) and the rate a CPU that cannot time
# them is planned with (relative to AVX2 6x16; measured on an AVX-512 Xeon). Few-row
# tiles load more per multiply-add (the B loads are unaligned); AVX-512 6x16 (one vector
# per row) serves row-wise tiles of narrow images, whose kernel rows over padding it
# skips row by row, and 8x16 the same for 8k output channels (a stride-2 layer's
# 16-wide rows: each row one vector, no dropped columns); AVX2 12x8 (13 loads per 12
# multiply-adds) the 7-8 wide ones.
cdef enum:
    GEMM_TILES = 14
cdef double _GEMM_TILE[GEMM_TILES][4]
_GEMM_TILE[:] = [[1, 6, 16, 1.0], [1, 4, 24, 0.96], [1, 3, 32, 0.95], [1, 2, 48, 0.68],
                 [1, 1, 96, 0.61], [1, 12, 8, 0.9],
                 [2, 8, 48, 1.64], [2, 6, 64, 1.62], [2, 4, 96, 1.47], [2, 3, 128, 0.82],
                 [2, 2, 192, 0.77], [2, 1, 384, 0.55], [2, 6, 16, 1.25], [2, 8, 16, 1.3]]

# Each tile's cost on this CPU, timed at the first plan that can use it (_tile_cost) and
# kept for the process: how fast a tile runs depends on the core (an AVX-512 Xeon's two
# 512-bit FMA units against a Zen 4 running 512-bit FMAs on 256-bit halves, the load
# ports, unaligned-load penalties, the cost of storing a tile), which no CPUID bit tells.
# A call of tile s over depth d costs mr*nr*d / rate[s] + over[s], in units of one
# multiply-add of the AVX2 6x16 tile's depth loop; 0: not timed yet, -1: its timing
# failed (no memory, or a disturbance made the deeper run no slower): the fallback.
cdef double _tile_rate_seen[GEMM_TILES]
cdef double _tile_over_seen[GEMM_TILES]
_tile_rate_seen[:] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
_tile_over_seen[:] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
cdef double TILE_OVER_FALLBACK = 400.0

# The timed problem: a direct convolution's gemm in miniature, 24 rows (a whole number
# of panels of every tile height) by 768 columns (of every tile width), at two depths
# (a first layer's 16 and 64: the difference is the depth loop's rate, the rest the
# tile's fixed cost, its stores above all), each B row a shifted run of one buffer as
# the padded planes' rows are (so most loads are unaligned); the B slice of a column
# tile stays in L1 across the row panels (at both depths, so that the difference is not
# a cache's), as in a convolution's. About 3 MFLOP per shape and run.
cdef enum:
    RATE_ROWS = 24
    RATE_COLS = 768
    RATE_SHALLOW = 16
    RATE_DEEP = 64
    RATE_RUNS = 6


cdef void _time_tiles(int top) noexcept nogil:
    """Time every gemm tile of levels 1..top not timed yet at both depths, the shapes
    interleaved run by run so a disturbance hits them alike; keep each one's best time
    and turn the pair into its rate and fixed cost against the AVX2 6x16 tile's."""
    cdef float *A = <float *>malloc(RATE_ROWS * RATE_DEEP * sizeof(float))
    cdef float *B = <float *>malloc((RATE_DEEP * (RATE_COLS + 3) + 8) * sizeof(float))
    cdef float *C = <float *>malloc(RATE_ROWS * RATE_COLS * sizeof(float))
    cdef Py_ssize_t *off = <Py_ssize_t *>malloc(RATE_DEEP * sizeof(Py_ssize_t))
    cdef Py_ssize_t *tiles = <Py_ssize_t *>malloc(3 * RATE_COLS * sizeof(Py_ssize_t))
    cdef double best[GEMM_TILES][2]
    cdef double per_k[GEMM_TILES]
    cdef double fixed[GEMM_TILES]
    cdef double t0, t, calls, unit
    cdef Py_ssize_t i, k, n, depth
    cdef int run, s, d, mr, nr, level
    if A == NULL or B == NULL or C == NULL or off == NULL or tiles == NULL:
        free(A); free(B); free(C); free(off); free(tiles)
        for s in range(GEMM_TILES):  # planned with the fallback costs
            if _GEMM_TILE[s][0] <= top and _tile_rate_seen[s] == 0:
                _tile_rate_seen[s] = -1
        return
    _timing_values(A, RATE_ROWS * RATE_DEEP, 0.25, 0.001, 97)
    _timing_values(B, RATE_DEEP * (RATE_COLS + 3) + 8, 0.5, -0.001, 89)
    for k in range(RATE_DEEP):
        off[k] = k * (RATE_COLS + 3) + k % 3
    for s in range(GEMM_TILES):
        best[s][0] = best[s][1] = -1
    for run in range(RATE_RUNS):
        for s in range(GEMM_TILES):
            level, mr, nr = <int>_GEMM_TILE[s][0], <int>_GEMM_TILE[s][1], <int>_GEMM_TILE[s][2]
            if level > top or (_tile_rate_seen[s] != 0 and s != 0):
                continue
            n = RATE_COLS // nr
            for d in range(2):
                depth = RATE_SHALLOW if d == 0 else RATE_DEEP
                for i in range(n):
                    tiles[3 * i], tiles[3 * i + 1], tiles[3 * i + 2] = i * nr, 0, depth
                t0 = _now()
                if not fgc_gemm_f32(level, mr, nr, RATE_ROWS, n, tiles, depth, A, B, off, C,
                                    RATE_COLS, NULL):
                    break
                t = _now() - t0
                if run > 0 and (best[s][d] < 0 or t < best[s][d]):  # run 0 warms up
                    best[s][d] = t
    for s in range(GEMM_TILES):
        per_k[s] = fixed[s] = -1
        if best[s][0] > 0 and best[s][1] > best[s][0]:
            mr, nr = <int>_GEMM_TILE[s][1], <int>_GEMM_TILE[s][2]
            calls = (RATE_ROWS // mr) * (RATE_COLS // nr)
            per_k[s] = (best[s][1] - best[s][0]) / (calls * (RATE_DEEP - RATE_SHALLOW))
            fixed[s] = max(0.0, best[s][0] / calls - per_k[s] * RATE_SHALLOW)
    unit = per_k[0] / 96.0  # one multiply-add of AVX2 6x16's depth loop
    for s in range(GEMM_TILES):
        if _GEMM_TILE[s][0] <= top and _tile_rate_seen[s] == 0:
            if unit > 0 and per_k[s] > 0:
                _tile_rate_seen[s] = _GEMM_TILE[s][1] * _GEMM_TILE[s][2] * unit / per_k[s]
                _tile_over_seen[s] = fixed[s] / unit
            else:
                _tile_rate_seen[s] = -1  # never timed again: the fallback
    free(A); free(B); free(C); free(off); free(tiles)


cdef void _tile_model(int s, double *rate, double *over) noexcept nogil:
    """Tile s's rate and fixed cost per call on this CPU (timed once), or the fallback
    ones where its level cannot run here (the portable loops plan with those)."""
    if <int>_GEMM_TILE[s][0] <= fg_simd_level():
        if _tile_rate_seen[s] == 0:
            _time_tiles(fg_simd_level())  # marks every tile it could not time
        if _tile_rate_seen[s] > 0:
            rate[0], over[0] = _tile_rate_seen[s], _tile_over_seen[s]
            return
    rate[0], over[0] = _GEMM_TILE[s][3], TILE_OVER_FALLBACK


cdef inline double _tile_cost(int s, double mac, double calls) noexcept nogil:
    """The cost of `calls` calls of tile s doing `mac` multiply-adds in all."""
    cdef double rate, over
    _tile_model(s, &rate, &over)
    return mac / rate + over * calls


def _tile_rates():
    """{(level, rows, columns): (rate, fixed cost, fallback rate, fallback fixed cost)}
    for the gemm tiles the cost model plans with at the SIMD level running now: the rate
    (relative to AVX2 6x16's depth loop) and the fixed cost of a call (in multiply-adds
    of that loop) it plans with, timed on this CPU where it can run the tile, and the ones
    it would use if the tile could not be timed."""
    cdef double rate, over
    out = {}
    for s in range(GEMM_TILES):
        if _GEMM_TILE[s][0] <= max(fg_simd_level(), 1):
            _tile_model(s, &rate, &over)
            out[(int(_GEMM_TILE[s][0]), int(_GEMM_TILE[s][1]), int(_GEMM_TILE[s][2]))] = (
                rate, over, _GEMM_TILE[s][3], TILE_OVER_FALLBACK)
    return out


# The dot (weight gradient) tiles of each SIMD level: (rows, depth entries) pairs, 12
# accumulators with AVX2, 24 with AVX-512.
cdef int _DOT_TILE[2][8]
_DOT_TILE[:] = [[4, 3, 6, 2, 3, 4, 2, 6], [4, 6, 6, 4, 8, 3, 3, 8]]

# Each dot tile's speed on this CPU relative to its level's first shape, timed once per
# process at the first weight gradient planned at that level (0: not timed, -1: its timing
# failed; then every shape counts alike). The shapes differ in loads per multiply-add and
# in how many tiles, each a pass over the rows, a layer needs: on a Zen 4 AVX2's 3x4 ran
# LeNet conv1's weight gradient 14% faster than the 6x2 that computes fewest entries.
cdef double _dot_rate_seen[2][4]
_dot_rate_seen[:] = [[0, 0, 0, 0], [0, 0, 0, 0]]

# The timed problem: 24 rows x 24 depth entries (whole tiles of every shape) over 8 rows
# of 60 positions (row tails on both levels) of shifted views of one small plane, as a
# direct weight gradient reads; about 0.55 MFLOP a run.
cdef enum:
    DOT_ROWS = 24
    DOT_DEPTH = 24
    DOT_Y = 8
    DOT_X = 60
    DOT_PITCH = 64
    DOT_B = 1024
    DOT_RUNS = 6


cdef void _time_dots(int level) noexcept nogil:
    """Time the four dot tiles of `level` (1 or 2) on the same problem, interleaved run
    by run; keep each one's best time, as a rate relative to the first shape's."""
    cdef float *A = <float *>malloc(DOT_ROWS * DOT_Y * DOT_PITCH * sizeof(float))
    cdef float *B = <float *>malloc(DOT_B * sizeof(float))
    cdef float *C = <float *>malloc(DOT_ROWS * DOT_DEPTH * sizeof(float))
    cdef Py_ssize_t off[DOT_DEPTH]
    cdef double best[4]
    cdef double t0, t
    cdef Py_ssize_t i
    cdef int run, s, L = level - 1
    if A == NULL or B == NULL or C == NULL:
        free(A); free(B); free(C)
        for s in range(4):
            _dot_rate_seen[L][s] = -1
        return
    _timing_values(A, DOT_ROWS * DOT_Y * DOT_PITCH, 0.25, 0.001, 97)
    _timing_values(B, DOT_B, 0.5, -0.001, 89)
    _timing_values(C, DOT_ROWS * DOT_DEPTH, 0, 0, 1)
    for i in range(DOT_DEPTH):  # window-like shifts: up to 4 columns and 4 rows
        off[i] = i % 5 + (i // 5) * DOT_PITCH
    for s in range(4):
        best[s] = -1
    for run in range(DOT_RUNS):
        for s in range(4):
            t0 = _now()
            if not fgc_dot_f32(level, _DOT_TILE[L][2 * s], _DOT_TILE[L][2 * s + 1], DOT_ROWS,
                               DOT_DEPTH, A, DOT_Y * DOT_PITCH, DOT_PITCH, B, off, DOT_PITCH,
                               DOT_Y, DOT_X, C, DOT_DEPTH, 1, 0, 0):
                best[s] = -1
                break
            t = _now() - t0
            if run > 0 and (best[s] < 0 or t < best[s]):  # run 0 warms up
                best[s] = t
    for s in range(4):
        _dot_rate_seen[L][s] = best[0] / best[s] if best[0] > 0 and best[s] > 0 else -1
    free(A); free(B); free(C)


cdef double _dot_rate(int level, int s) noexcept nogil:
    """Dot tile s of `level`'s rate on this CPU (1 where it could not be timed)."""
    if level < 1:
        return 1.0
    if _dot_rate_seen[level - 1][s] == 0:
        _time_dots(level)
    return _dot_rate_seen[level - 1][s] if _dot_rate_seen[level - 1][s] > 0 else 1.0


def _dot_rates():
    """{(level, rows, depth entries): rate} for the dot tiles the weight gradient plans
    with at the SIMD level running now, relative to that level's first shape (timed on
    this CPU; 1.0 for all where they cannot run, the portable loops)."""
    cdef int level = min(fg_simd_level(), 2)
    cdef int L = max(level, 1) - 1
    return {(max(level, 1), _DOT_TILE[L][2 * s], _DOT_TILE[L][2 * s + 1]): _dot_rate(level, s)
            for s in range(4)}
