# Design: row reductions shared by the activation and loss kernels (softmax, log-softmax,
# cross-entropy). They keep LANES independent partial results (array slots, not a
# loop-carried scalar), which gcc maps onto vector registers; a plain running max or sum
# would stay scalar, one element per add latency. Sums accumulate in double.
from cython cimport floating

cdef enum:
    LANES = 8


cdef inline floating _row_max(const floating *x, Py_ssize_t n) noexcept nogil:
    cdef floating part[LANES]
    cdef floating m
    cdef Py_ssize_t j = LANES, k
    if n < LANES:
        m = x[0]
        for j in range(1, n):
            m = x[j] if x[j] > m else m
        return m
    for k in range(LANES):
        part[k] = x[k]
    while j + LANES <= n:
        for k in range(LANES):
            part[k] = x[j + k] if x[j + k] > part[k] else part[k]
        j += LANES
    m = part[0]
    for k in range(1, LANES):
        m = part[k] if part[k] > m else m
    while j < n:
        m = x[j] if x[j] > m else m
        j += 1
    return m


cdef inline double _sum(const floating *a, Py_ssize_t n) noexcept nogil:
    cdef double part[LANES]
    cdef double total = 0
    cdef Py_ssize_t j = 0, k
    for k in range(LANES):
        part[k] = 0
    while j + LANES <= n:
        for k in range(LANES):
            part[k] += a[j + k]
        j += LANES
    while j < n:
        total += a[j]
        j += 1
    for k in range(LANES):
        total += part[k]
    return total
