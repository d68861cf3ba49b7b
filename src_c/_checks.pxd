# Design: the argument checks of every kernel family's def wrappers, written once, with
# one message per fault (fastgrad/reference/_checks.py says the same words for the
# pure-Python twins). Every check names the kernel and the argument and raises
#   TypeError   not an ndarray; not float32/float64; a dtype unlike the call's others;
#               an integer argument that is not an integer; a scalar that is not a number
#   ValueError  wrong number of dimensions or shape; not C-contiguous; a read-only
#               output; an output sharing memory with an input; a count out of range;
#               a scalar that must be finite and >= 0 and is not
# before any compiled loop runs. Inline functions of plain C-API reads: at batch 1 these
# checks are a good part of a kernel's cost.

cimport numpy as cnp
from libc.math cimport INFINITY

cdef extern from *:
    """
    #define FG_THREADS_MAX (1 << 16)
    """
    int FG_THREADS_MAX


cdef inline str dtype_name(int typenum):
    return str(cnp.PyArray_DescrFromType(typenum))


cdef inline int check_array(str kernel, str name, object arr, int ndim, int typenum,
                            bint output) except -1:
    """arr is an ndarray of ``typenum`` (-1: float32 or float64), with ``ndim``
    dimensions (-1: any), C-contiguous, and writable when it is an ``output``. Returns its
    type number."""
    if not cnp.PyArray_Check(arr):
        raise TypeError(f"{kernel}: {name} must be a numpy array, got {type(arr).__name__}")
    cdef cnp.ndarray a = <cnp.ndarray>arr
    cdef int t = cnp.PyArray_TYPE(a)
    if typenum == -1:
        if t != cnp.NPY_FLOAT32 and t != cnp.NPY_FLOAT64:
            raise TypeError(f"{kernel}: {name} must be float32 or float64, got {arr.dtype}")
    elif t != typenum:
        raise TypeError(f"{kernel}: {name} has dtype {arr.dtype}, expected {dtype_name(typenum)}")
    if ndim >= 0 and cnp.PyArray_NDIM(a) != ndim:
        raise ValueError(f"{kernel}: {name} must have {ndim} dimensions, got shape {arr.shape}")
    if not cnp.PyArray_IS_C_CONTIGUOUS(a):
        raise ValueError(f"{kernel}: {name} must be C-contiguous (use np.ascontiguousarray), "
                         f"got strides {arr.strides} for shape {arr.shape}")
    if output and not cnp.PyArray_ISWRITEABLE(a):
        raise ValueError(f"{kernel}: {name} is read-only, but it is an output")
    return t


cdef inline bint same_shape(object a, object b) noexcept:
    """Two ndarrays of one shape."""
    cdef int i, nd = cnp.PyArray_NDIM(<cnp.ndarray>a)
    if cnp.PyArray_NDIM(<cnp.ndarray>b) != nd:
        return False
    for i in range(nd):
        if cnp.PyArray_DIMS(<cnp.ndarray>a)[i] != cnp.PyArray_DIMS(<cnp.ndarray>b)[i]:
            return False
    return True


cdef inline int check_shape(str kernel, str name, object arr, tuple expected) except -1:
    """arr (an ndarray, checked before) has shape ``expected``."""
    cdef int i, nd = len(expected)
    cdef bint ok = cnp.PyArray_NDIM(<cnp.ndarray>arr) == nd
    i = 0
    while ok and i < nd:
        ok = cnp.PyArray_DIMS(<cnp.ndarray>arr)[i] == <Py_ssize_t>expected[i]
        i += 1
    if not ok:
        raise ValueError(f"{kernel}: {name} has shape {arr.shape}, expected {expected}")
    return 0


cdef inline int check_like(str kernel, str name, object arr, str first_name,
                           object first) except -1:
    """arr has the shape of ``first`` (both ndarrays, checked before)."""
    if not same_shape(arr, first):
        raise ValueError(f"{kernel}: {name} has shape {arr.shape}, but {first_name} has "
                         f"{first.shape}; they must match")
    return 0


cdef inline int check_alike(str kernel, tuple names, tuple arrays, int n_outputs,
                            int ndim) except -1:
    """check_array for each of ``arrays`` (named by ``names``), the last ``n_outputs`` of
    them outputs, all of the first one's dtype (float32 or float64) and shape (check_like);
    returns the dtype's type number."""
    cdef Py_ssize_t k, n = len(arrays)
    cdef int typenum = -1
    for k in range(n):
        typenum = check_array(kernel, names[k], arrays[k], ndim, typenum, k >= n - n_outputs)
        if k:
            check_like(kernel, names[k], arrays[k], names[0], arrays[0])
    return typenum


cdef inline bint overlaps(object a, object b) noexcept:
    """The memory of two C-contiguous ndarrays intersects (None: never)."""
    if a is None or b is None:
        return False
    cdef char *a0 = <char *>cnp.PyArray_DATA(<cnp.ndarray>a)
    cdef char *b0 = <char *>cnp.PyArray_DATA(<cnp.ndarray>b)
    cdef Py_ssize_t na = cnp.PyArray_NBYTES(<cnp.ndarray>a)
    cdef Py_ssize_t nb = cnp.PyArray_NBYTES(<cnp.ndarray>b)
    return na > 0 and nb > 0 and a0 < b0 + nb and b0 < a0 + na


cdef inline int check_disjoint(str kernel, str out_name, object out, str name,
                               object a) except -1:
    """The output ``out`` shares no memory with ``a`` (None: absent)."""
    if overlaps(out, a):
        raise ValueError(f"{kernel}: {out_name} overlaps {name} in memory")
    return 0


cdef inline bint same_memory(object a, object b) noexcept:
    """Two ndarrays that are one array in memory: the same first byte, shape and dtype."""
    return (cnp.PyArray_DATA(<cnp.ndarray>a) == cnp.PyArray_DATA(<cnp.ndarray>b)
            and cnp.PyArray_TYPE(<cnp.ndarray>a) == cnp.PyArray_TYPE(<cnp.ndarray>b)
            and same_shape(a, b))


cdef inline int check_apart(str kernel, tuple outputs, tuple inputs, tuple in_place) except -1:
    """No output of ``outputs`` ((name, array) pairs, the array None when absent) shares
    memory with an input of ``inputs`` or an earlier output (each output checked against
    the inputs, then the outputs before it); a (output name, input name) pair of
    ``in_place`` lets that output be exactly that input (same_memory)."""
    cdef Py_ssize_t i
    for i in range(len(outputs)):
        name, out = outputs[i]
        for other_name, other in inputs + outputs[:i]:
            if overlaps(out, other) and not ((name, other_name) in in_place and same_memory(out, other)):
                raise ValueError(f"{kernel}: {name} overlaps {other_name} in memory")
    return 0


cdef inline double check_number(str kernel, str name, object value, bint nonnegative) except? -1:
    """A scalar hyperparameter (a Python or numpy number, not a bool) as a C double; with
    ``nonnegative`` it must also be finite and >= 0 (an eps or a momentum: NaN, inf or a
    negative value there is a mistake)."""
    cdef double v
    if value is None or isinstance(value, (bool, str, bytes)):
        raise TypeError(f"{kernel}: {name} must be a number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{kernel}: {name} must be a number, got {value!r}") from None
    if nonnegative and not (v >= 0 and v != INFINITY):
        raise ValueError(f"{kernel}: {name} must be a finite number >= 0, got {value!r}")
    return v


cdef inline int check_threads(str kernel, object n_threads) except -1:
    """n_threads is a positive integer; returns it, capped at FG_THREADS_MAX (more
    threads than that are asked for as "all of them", as torch.set_num_threads takes any
    count)."""
    if type(n_threads) is int and 1 <= n_threads <= FG_THREADS_MAX:
        return <int>n_threads  # the common case, without the isinstance chain below
    import numpy
    if isinstance(n_threads, bool) or not isinstance(n_threads, (int, numpy.integer)):
        raise TypeError(f"{kernel}: n_threads must be a positive integer, got {n_threads!r}")
    if n_threads < 1:
        raise ValueError(f"{kernel}: n_threads must be a positive integer, got {n_threads!r}")
    return <int>min(int(n_threads), FG_THREADS_MAX)  # Python ints: any size, no overflow


cdef inline int check_elements(str kernel, str name, tuple shape, object limit) except -1:
    """A shape of at most ``limit`` elements, counted with Python ints (no overflow)."""
    count = 1
    for d in shape:
        count *= int(d)
    if count > limit:
        raise ValueError(f"{kernel}: {name} {shape} is too large: {count} elements, more "
                         f"than the {int(limit)} allowed per array")
    return 0
