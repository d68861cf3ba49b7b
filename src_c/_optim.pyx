# Design: the in-place parameter updates of fastgrad.optim (SGD, Adam/AdamW, RMSprop);
# the twin of fastgrad/reference/optim.py (same names, same arithmetic, op for op).
#
# One call updates every parameter of a group: the def takes lists of arrays (one entry
# per parameter, per role: params, grads, state buffers), validates them once, gathers
# their data pointers and sizes, and runs one GIL-free pass over all of them.
# Each element is read and written once (one fused, contiguous pass per array), so the
# update is memory-bound for large models and under 1 ns per element for small ones. The
# usual option combinations get loops of their own (inlined with constant flags) so that
# every one of them vectorizes; maximize is a multiplication by -1 (exact, as -grad).
#
# Arithmetic follows PyTorch's single-tensor (foreach=False) optimizers operation by
# operation, in the array's own precision (float32 math for float32 arrays); the
# hyperparameters are combined in double first and rounded to the array's precision once,
# as PyTorch casts its Python scalars. No fused multiply-add is formed (-std=c11 keeps
# contraction off), so the reference twin reproduces every bit (tests/kernels/test_optim.py
# compares them with array_equal and would catch a build that contracts).
#
# Threads: the elements of all tensors of a call are numbered one after the other and
# split into n_threads contiguous ranges (one parallel region per call), only when the
# call is big enough to pay for the region. The update is elementwise, so the result
# does not depend on the split or the thread count.

import numpy as np
cimport numpy as cnp
from cython cimport floating
from cython.parallel cimport prange
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from libc.math cimport pow, sqrt, sqrtf

from _checks cimport check_threads

cnp.import_array()

# the fastest code of this module is AVX2+FMA: an AVX-512 CPU runs that (_simd_level says so)
SIMD_KERNELS_TOP = 1
include "_simd.pxi"

__all__ = ["sgd_step", "adam_step", "rmsprop_step"]

cdef enum:
    MAX_ROLES = 5        # arrays per parameter: params, grads, up to three state buffers
    STACK_TENSORS = 64   # calls with up to this many tensors keep their pointers on the stack
    ALIGN = 16           # thread ranges start on multiples of 16 elements (64 bytes of float32)
    MAX_THREADS = 256    # larger requests are capped (an OpenMP team that size helps nobody)

# Elements below which a call stays on one thread (a parallel region costs a few us;
# the numbers are about 50 us of single-threaded work for each update).
cdef Py_ssize_t SGD_PARALLEL_MIN = 262144
cdef Py_ssize_t ADAM_PARALLEL_MIN = 65536
cdef Py_ssize_t RMSPROP_PARALLEL_MIN = 65536


# --------------------------------------------------------------------------- gathering

cdef struct Batch:
    Py_ssize_t count       # tensors
    Py_ssize_t total       # elements over all tensors
    Py_ssize_t *sizes      # elements of tensor i
    Py_ssize_t *starts     # index of tensor i's first element in the numbering over all tensors
    void **data            # data[i * MAX_ROLES + r]: the buffer of role r for tensor i (NULL if unused)
    int typenum            # NPY_FLOAT or NPY_DOUBLE


cdef struct StackTables:   # pointer tables of calls with up to STACK_TENSORS tensors
    Py_ssize_t sizes[STACK_TENSORS]
    Py_ssize_t starts[STACK_TENSORS]
    void *data[STACK_TENSORS * MAX_ROLES]


cdef list _as_list(str kernel, str role, object seq):
    if type(seq) is list:
        return <list>seq
    if type(seq) is tuple:
        return list(seq)
    raise TypeError(f"{kernel}: {role} must be a list or tuple of numpy arrays, got {type(seq).__name__}")


cdef str _dtype_name(int typenum):
    return "float32" if typenum == cnp.NPY_FLOAT else "float64"


cdef int _gather(str kernel, tuple names, tuple seqs, tuple used, Batch *b, StackTables *stack) except -1:
    """Validate every array of every used role and fill ``b`` with their pointers.

    Role 0 is the params: it sets the dtype and the shapes every other role must
    match; role 1 (grads) is read, all others are written. Unused roles get NULL.
    The caller sets b.sizes = NULL first and calls _release(b, stack) afterwards,
    also when this raises.
    """
    cdef list lists = [_as_list(kernel, names[r], seqs[r]) if used[r] else None for r in range(len(seqs))]
    cdef list params = lists[0]
    cdef Py_ssize_t count = len(params)
    cdef Py_ssize_t r, i, total = 0
    cdef Py_ssize_t n_roles = len(seqs)
    cdef int typenum = -1
    cdef object obj
    cdef cnp.ndarray a, p
    for r in range(1, n_roles):
        if used[r] and len(<list>lists[r]) != count:
            raise ValueError(f"{kernel}: got {count} {names[0]} but {len(<list>lists[r])} {names[r]}")
    if count <= STACK_TENSORS:
        b.sizes, b.starts, b.data = stack.sizes, stack.starts, stack.data
    else:
        b.sizes = <Py_ssize_t *>PyMem_Malloc(count * sizeof(Py_ssize_t))
        b.starts = <Py_ssize_t *>PyMem_Malloc(count * sizeof(Py_ssize_t))
        b.data = <void **>PyMem_Malloc(count * MAX_ROLES * sizeof(void *))
        if b.sizes == NULL or b.starts == NULL or b.data == NULL:
            raise MemoryError(f"{kernel}: cannot allocate the pointer table for {count} tensors")
    b.count = count
    for i in range(count):
        p = None
        for r in range(MAX_ROLES):
            b.data[i * MAX_ROLES + r] = NULL
        for r in range(n_roles):
            if not used[r]:
                continue
            obj = (<list>lists[r])[i]
            if not cnp.PyArray_Check(obj):
                raise TypeError(f"{kernel}: {names[r]}[{i}] must be a numpy array, got {type(obj).__name__}")
            a = <cnp.ndarray>obj
            if r == 0:
                p = a
                if typenum < 0:
                    typenum = cnp.PyArray_TYPE(a)
                    if typenum != cnp.NPY_FLOAT and typenum != cnp.NPY_DOUBLE:
                        raise TypeError(f"{kernel}: {names[0]}[0] must be float32 or float64, got {a.dtype}")
            if cnp.PyArray_TYPE(a) != typenum:
                raise TypeError(f"{kernel}: {names[r]}[{i}] has dtype {a.dtype}, but {names[0]}[0] has "
                                f"{_dtype_name(typenum)}; all arrays of one call must share one dtype")
            if r > 0 and (cnp.PyArray_NDIM(a) != cnp.PyArray_NDIM(p) or not cnp.PyArray_SAMESHAPE(a, p)):
                raise ValueError(f"{kernel}: {names[r]}[{i}] has shape {(<object>a).shape}, but "
                                 f"{names[0]}[{i}] has shape {(<object>p).shape}")
            if not cnp.PyArray_IS_C_CONTIGUOUS(a):
                raise ValueError(f"{kernel}: {names[r]}[{i}] must be C-contiguous")
            if r != 1 and not cnp.PyArray_ISWRITEABLE(a):
                raise ValueError(f"{kernel}: {names[r]}[{i}] is read-only, but the update writes it")
            b.data[i * MAX_ROLES + r] = cnp.PyArray_DATA(a)
        b.sizes[i] = cnp.PyArray_SIZE(p)
        b.starts[i] = total
        total += b.sizes[i]
    b.total = total
    b.typenum = typenum if typenum >= 0 else cnp.NPY_FLOAT
    return 0


cdef void _release(Batch *b, StackTables *stack) noexcept:
    if b.sizes != NULL and b.sizes != stack.sizes:
        PyMem_Free(b.sizes)
        PyMem_Free(b.starts)
        PyMem_Free(b.data)
    b.sizes = NULL
    b.starts = NULL
    b.data = NULL


cdef inline Py_ssize_t _range_start(Py_ssize_t total, Py_ssize_t t, Py_ssize_t n_threads) noexcept nogil:
    """Where thread t's contiguous share of ``total`` elements starts (its end is t + 1's start)."""
    cdef Py_ssize_t chunk = (total + n_threads - 1) // n_threads
    chunk = (chunk + ALIGN - 1) // ALIGN * ALIGN
    return min(total, t * chunk)


cdef inline bint _part(const Batch *b, Py_ssize_t i, Py_ssize_t lo, Py_ssize_t hi,
                       Py_ssize_t *off, Py_ssize_t *n) noexcept nogil:
    """The part of tensor i inside elements [lo, hi): its offset into the tensor and length."""
    cdef Py_ssize_t s = max(lo, b.starts[i])
    cdef Py_ssize_t e = min(hi, b.starts[i] + b.sizes[i])
    off[0] = s - b.starts[i]
    n[0] = e - s
    return e > s


cdef inline int _threads(str kernel, object n_threads) except -1:
    return check_threads(kernel, n_threads)


cdef double _real(str kernel, str name, object value) except? -1.0:
    """A hyperparameter as a C double (NaN and inf pass: the update then propagates them)."""
    if value is None or isinstance(value, (str, bytes)):
        raise TypeError(f"{kernel}: {name} must be a real number, got {type(value).__name__}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{kernel}: {name} must be a real number, got {type(value).__name__}") from None


cdef inline floating *_at(void *buffer, Py_ssize_t off, floating *tag) noexcept nogil:
    """Element ``off`` of a role's buffer, or NULL for a role the call does not use."""
    return (<floating *>buffer) + off if buffer != NULL else NULL


# --------------------------------------------------------------------------- SGD

cdef struct SgdArgs:
    double neg_lr
    double momentum
    double one_minus_dampening
    double weight_decay
    bint use_momentum
    bint nesterov
    bint maximize
    bint first_step


cdef void _sgd_range(floating *p, const floating *g, floating *buf, Py_ssize_t n,
                     const SgdArgs *a) noexcept nogil:
    cdef floating neg_lr = <floating>a.neg_lr
    cdef floating mom = <floating>a.momentum
    cdef floating omd = <floating>a.one_minus_dampening
    cdef floating wd = <floating>a.weight_decay
    cdef bint has_wd = a.weight_decay != 0, maximize = a.maximize
    cdef bint first_step = a.first_step, nesterov = a.nesterov   # locals: loop-invariant for sure
    cdef floating gi, bi
    cdef Py_ssize_t i
    if not a.use_momentum:
        if not has_wd and not maximize:
            for i in range(n):
                p[i] = p[i] + neg_lr * g[i]
        else:
            for i in range(n):
                gi = -g[i] if maximize else g[i]
                if has_wd:
                    gi = gi + wd * p[i]
                p[i] = p[i] + neg_lr * gi
    elif not has_wd and not maximize and not nesterov and not first_step:
        # the common case (plain momentum) in its own loop, so it vectorizes for sure
        for i in range(n):
            bi = buf[i] * mom + omd * g[i]
            buf[i] = bi
            p[i] = p[i] + neg_lr * bi
    else:
        for i in range(n):
            gi = -g[i] if maximize else g[i]
            if has_wd:
                gi = gi + wd * p[i]
            if first_step:
                bi = gi                       # PyTorch: the first buffer is the gradient itself
            else:
                bi = buf[i] * mom + omd * gi
            buf[i] = bi
            if nesterov:
                gi = gi + mom * bi
            else:
                gi = bi
            p[i] = p[i] + neg_lr * gi


cdef void _sgd_span(floating *tag, const Batch *b, const SgdArgs *a, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef Py_ssize_t i, off, n
    cdef void **d
    for i in range(b.count):
        if _part(b, i, lo, hi, &off, &n):
            d = b.data + i * MAX_ROLES
            _sgd_range(_at(d[0], off, tag), _at(d[1], off, tag), _at(d[2], off, tag), n, a)


cdef void _sgd_run(floating *tag, const Batch *b, const SgdArgs *a, int n_threads) noexcept nogil:
    cdef Py_ssize_t t
    if n_threads <= 1 or b.total < SGD_PARALLEL_MIN:
        _sgd_span(tag, b, a, 0, b.total)
        return
    for t in prange(n_threads, schedule="static", num_threads=n_threads):
        _sgd_span(tag, b, a, _range_start(b.total, t, n_threads), _range_start(b.total, t + 1, n_threads))


def sgd_step(params, grads, momentum_buffers, lr, momentum, dampening, weight_decay, bint nesterov,
             bint maximize, bint first_step, n_threads):
    """One SGD step over every tensor of a group, in place (PyTorch's SGD arithmetic).

    params:           IN/OUT, list of C-contiguous float32/float64 arrays (one dtype per call).
    grads:            IN, list of arrays, each of its param's shape and dtype.
    momentum_buffers: IN/OUT, list like params when momentum != 0 (ignored, may be empty,
                      when momentum == 0). With first_step, every buffer is overwritten
                      with the (decayed, maximize-signed) gradient, as PyTorch's first step.
    Per element: g = +-grad (+ weight_decay * p); buf = momentum * buf + (1 - dampening) * g
    (buf = g on the first step); g = g + momentum * buf (nesterov) or buf; p = p - lr * g.
    """
    cdef str k = "sgd_step"
    cdef int nt = _threads(k, n_threads)
    cdef SgdArgs a
    a.neg_lr = -_real(k, "lr", lr)
    a.momentum = _real(k, "momentum", momentum)
    a.one_minus_dampening = 1.0 - _real(k, "dampening", dampening)
    a.weight_decay = _real(k, "weight_decay", weight_decay)
    a.use_momentum = a.momentum != 0
    a.nesterov = nesterov
    a.maximize = maximize
    a.first_step = first_step
    cdef Batch b
    cdef StackTables stack
    b.sizes = NULL
    try:
        _gather("sgd_step", ("params", "grads", "momentum_buffers"), (params, grads, momentum_buffers),
                (True, True, a.use_momentum), &b, &stack)
        with nogil:
            if b.typenum == cnp.NPY_FLOAT:
                _sgd_run(<float *>NULL, &b, &a, nt)
            else:
                _sgd_run(<double *>NULL, &b, &a, nt)
    finally:
        _release(&b, &stack)


# --------------------------------------------------------------------------- Adam / AdamW

cdef struct AdamArgs:
    double neg_step_size          # -lr / (1 - beta1**step)
    double bias_correction2_sqrt  # (1 - beta2**step) ** 0.5
    double one_minus_beta1        # the weight of PyTorch's exp_avg.lerp_(grad, 1 - beta1)
    double beta2
    double one_minus_beta2
    double eps
    double weight_decay
    double decay_factor           # AdamW: 1 - lr * weight_decay
    bint has_wd
    bint decoupled
    bint amsgrad
    bint maximize


cdef inline floating _lerp(floating start, floating end, floating w, floating one_minus_w,
                           bint small_w) noexcept nogil:
    # PyTorch's lerp: start + w * (end - start) when |w| < 0.5, else end - (end - start) * (1 - w)
    if small_w:
        return start + w * (end - start)
    return end - (end - start) * one_minus_w


cdef inline floating _sqrt(floating x) noexcept nogil:
    if floating is float:
        return sqrtf(x)
    else:
        return sqrt(x)


cdef inline void _adam_loop(floating *p, const floating *g, floating *m, floating *v, floating *vmax,
                            Py_ssize_t n, floating sign, floating decay, floating wd, floating w1, floating beta2,
                            floating omb2, floating bc2s, floating eps, floating neg_ss, bint l2,
                            bint amsgrad) noexcept nogil:
    # The loop of the common cases (|1 - beta1| < 0.5), inlined with constant l2 and amsgrad
    # so that each variant vectorizes. sign (+-1) and decay (exactly 1 unless AdamW
    # decays) multiply exactly, so they stand in for PyTorch's branches bit for bit.
    cdef floating gi, pi, mi, vi, mx, denom
    cdef Py_ssize_t i
    for i in range(n):
        gi = sign * g[i]
        pi = p[i] * decay
        if l2:
            gi = gi + wd * pi
        mi = m[i]
        mi = mi + w1 * (gi - mi)
        vi = v[i] * beta2 + omb2 * gi * gi
        m[i] = mi
        v[i] = vi
        if amsgrad:
            mx = vmax[i]
            # torch.maximum (a NaN on either side wins), with no short-circuit so it vectorizes
            mx = vi if ((vi > mx) | (vi != vi)) else mx
            vmax[i] = mx
            vi = mx
        denom = _sqrt(vi) / bc2s + eps
        p[i] = pi + neg_ss * mi / denom


cdef void _adam_range(floating *p, const floating *g, floating *m, floating *v, floating *vmax,
                      Py_ssize_t n, const AdamArgs *a) noexcept nogil:
    cdef floating neg_ss = <floating>a.neg_step_size
    cdef floating bc2s = <floating>a.bias_correction2_sqrt
    cdef floating w1 = <floating>a.one_minus_beta1
    cdef floating omw1 = <floating>1 - w1
    cdef bint small_w1 = (w1 if w1 >= 0 else -w1) < <floating>0.5
    cdef floating beta2 = <floating>a.beta2
    cdef floating omb2 = <floating>a.one_minus_beta2
    cdef floating eps = <floating>a.eps
    cdef floating wd = <floating>a.weight_decay
    cdef bint l2 = a.has_wd and not a.decoupled, decoupled = a.has_wd and a.decoupled
    cdef floating decay = <floating>a.decay_factor if decoupled else <floating>1
    cdef floating sign = <floating>-1 if a.maximize else <floating>1
    cdef bint amsgrad = a.amsgrad
    cdef floating gi, pi, mi, vi, mx, denom
    cdef Py_ssize_t i
    if small_w1:
        if l2:
            if amsgrad:
                _adam_loop(p, g, m, v, vmax, n, sign, decay, wd, w1, beta2, omb2, bc2s, eps, neg_ss, True, True)
            else:
                _adam_loop(p, g, m, v, vmax, n, sign, decay, wd, w1, beta2, omb2, bc2s, eps, neg_ss, True, False)
        else:
            if amsgrad:
                _adam_loop(p, g, m, v, vmax, n, sign, decay, wd, w1, beta2, omb2, bc2s, eps, neg_ss, False, True)
            else:
                _adam_loop(p, g, m, v, vmax, n, sign, decay, wd, w1, beta2, omb2, bc2s, eps, neg_ss, False, False)
        return
    for i in range(n):  # beta1 <= 0.5: PyTorch's lerp takes its other form; a plain loop
        gi = sign * g[i]
        pi = p[i] * decay
        if l2:
            gi = gi + wd * pi
        mi = _lerp(m[i], gi, w1, omw1, small_w1)
        vi = v[i] * beta2 + omb2 * gi * gi
        m[i] = mi
        v[i] = vi
        if amsgrad:
            mx = vmax[i]
            if vi > mx or vi != vi:
                mx = vi
            vmax[i] = mx
            vi = mx
        denom = _sqrt(vi) / bc2s + eps
        p[i] = pi + neg_ss * mi / denom


cdef void _adam_span(floating *tag, const Batch *b, const AdamArgs *a, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef Py_ssize_t i, off, n
    cdef void **d
    for i in range(b.count):
        if _part(b, i, lo, hi, &off, &n):
            d = b.data + i * MAX_ROLES
            _adam_range(_at(d[0], off, tag), _at(d[1], off, tag), _at(d[2], off, tag),
                        _at(d[3], off, tag), _at(d[4], off, tag), n, a)


cdef void _adam_run(floating *tag, const Batch *b, const AdamArgs *a, int n_threads) noexcept nogil:
    cdef Py_ssize_t t
    if n_threads <= 1 or b.total < ADAM_PARALLEL_MIN:
        _adam_span(tag, b, a, 0, b.total)
        return
    for t in prange(n_threads, schedule="static", num_threads=n_threads):
        _adam_span(tag, b, a, _range_start(b.total, t, n_threads), _range_start(b.total, t + 1, n_threads))


def adam_step(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, long long step, lr, beta1, beta2,
              eps, weight_decay, bint amsgrad, bint maximize, bint decoupled_weight_decay, n_threads):
    """One Adam (or AdamW, decoupled_weight_decay=True) step over a group, in place.

    params:          IN/OUT, list of C-contiguous float32/float64 arrays (one dtype per call).
    grads:           IN, list of arrays, each of its param's shape and dtype.
    exp_avgs:        IN/OUT, first moments, like params.
    exp_avg_sqs:     IN/OUT, second moments, like params.
    max_exp_avg_sqs: IN/OUT with amsgrad, like params (ignored, may be empty, without).
    step:            the step count of every tensor of the call, already incremented (>= 1).
    Per element (PyTorch's order): p *= 1 - lr*wd (AdamW) or g += wd * p (Adam);
    m = lerp(m, g, 1 - beta1); v = v * beta2 + (1 - beta2) * g * g; vmax = max(vmax, v);
    p += -(lr / (1 - beta1**step)) * m / (sqrt(v or vmax) / sqrt(1 - beta2**step) + eps).
    """
    cdef str k = "adam_step"
    cdef int nt = _threads(k, n_threads)
    if step < 1:
        raise ValueError(f"adam_step: step must be >= 1 (the count after this update), got {step}")
    cdef double lr_ = _real(k, "lr", lr), beta1_ = _real(k, "beta1", beta1)
    cdef double beta2_ = _real(k, "beta2", beta2), eps_ = _real(k, "eps", eps)
    cdef double wd = _real(k, "weight_decay", weight_decay)
    cdef AdamArgs a
    cdef double fstep = <double>step
    a.neg_step_size = -(lr_ / (1.0 - pow(beta1_, fstep)))
    a.bias_correction2_sqrt = pow(1.0 - pow(beta2_, fstep), 0.5)
    a.one_minus_beta1 = 1.0 - beta1_
    a.beta2 = beta2_
    a.one_minus_beta2 = 1.0 - beta2_
    a.eps = eps_
    a.weight_decay = wd
    a.decay_factor = 1.0 - lr_ * wd
    a.has_wd = wd != 0
    a.decoupled = decoupled_weight_decay
    a.amsgrad = amsgrad
    a.maximize = maximize
    cdef Batch b
    cdef StackTables stack
    b.sizes = NULL
    try:
        _gather("adam_step", ("params", "grads", "exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs"),
                (params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs), (True, True, True, True, amsgrad),
                &b, &stack)
        with nogil:
            if b.typenum == cnp.NPY_FLOAT:
                _adam_run(<float *>NULL, &b, &a, nt)
            else:
                _adam_run(<double *>NULL, &b, &a, nt)
    finally:
        _release(&b, &stack)


# --------------------------------------------------------------------------- RMSprop

cdef struct RmspropArgs:
    double neg_lr
    double alpha
    double one_minus_alpha
    double eps
    double weight_decay
    double momentum
    bint use_momentum
    bint centered
    bint maximize


cdef inline void _rmsprop_loop(floating *p, const floating *g, floating *sq, floating *gavg, floating *buf,
                               Py_ssize_t n, floating sign, floating wd, floating alpha, floating oma,
                               floating omoma, bint small_oma, floating eps, floating mom, floating neg_lr,
                               bint l2, bint centered, bint use_momentum) noexcept nogil:
    # Inlined with constant l2, centered and use_momentum so that each variant vectorizes
    # (small_oma is constant within a call); sign (+-1) multiplies exactly, as -grad.
    cdef floating gi, si, ai, avg, bi
    cdef Py_ssize_t i
    for i in range(n):
        gi = sign * g[i]
        if l2:
            gi = gi + wd * p[i]
        si = sq[i] * alpha + oma * gi * gi
        sq[i] = si
        if centered:
            ai = _lerp(gavg[i], gi, oma, omoma, small_oma)
            gavg[i] = ai
            avg = _sqrt(si + -ai * ai)
        else:
            avg = _sqrt(si)
        avg = avg + eps
        if use_momentum:
            bi = buf[i] * mom + gi / avg
            buf[i] = bi
            p[i] = p[i] + neg_lr * bi
        else:
            p[i] = p[i] + neg_lr * gi / avg


cdef void _rmsprop_range(floating *p, const floating *g, floating *sq, floating *gavg, floating *buf,
                         Py_ssize_t n, const RmspropArgs *a) noexcept nogil:
    cdef floating neg_lr = <floating>a.neg_lr
    cdef floating alpha = <floating>a.alpha
    cdef floating oma = <floating>a.one_minus_alpha
    cdef floating omoma = <floating>1 - oma
    cdef bint small_oma = (oma if oma >= 0 else -oma) < <floating>0.5
    cdef floating eps = <floating>a.eps
    cdef floating wd = <floating>a.weight_decay
    cdef floating mom = <floating>a.momentum
    cdef floating sign = <floating>-1 if a.maximize else <floating>1
    cdef bint l2 = a.weight_decay != 0
    # one branch per (weight decay, centered, momentum): each loop is specialized
    if l2:
        if a.centered:
            if a.use_momentum:
                _rmsprop_loop(p, g, sq, gavg, buf, n, sign, wd, alpha, oma, omoma, small_oma, eps, mom, neg_lr,
                              True, True, True)
            else:
                _rmsprop_loop(p, g, sq, gavg, buf, n, sign, wd, alpha, oma, omoma, small_oma, eps, mom, neg_lr,
                              True, True, False)
        elif a.use_momentum:
            _rmsprop_loop(p, g, sq, gavg, buf, n, sign, wd, alpha, oma, omoma, small_oma, eps, mom, neg_lr,
                          True, False, True)
        else:
            _rmsprop_loop(p, g, sq, gavg, buf, n, sign, wd, alpha, oma, omoma, small_oma, eps, mom, neg_lr,
                          True, False, False)
    else:
        if a.centered:
            if a.use_momentum:
                _rmsprop_loop(p, g, sq, gavg, buf, n, sign, wd, alpha, oma, omoma, small_oma, eps, mom, neg_lr,
                              False, True, True)
            else:
                _rmsprop_loop(p, g, sq, gavg, buf, n, sign, wd, alpha, oma, omoma, small_oma, eps, mom, neg_lr,
                              False, True, False)
        elif a.use_momentum:
            _rmsprop_loop(p, g, sq, gavg, buf, n, sign, wd, alpha, oma, omoma, small_oma, eps, mom, neg_lr,
                          False, False, True)
        else:
            _rmsprop_loop(p, g, sq, gavg, buf, n, sign, wd, alpha, oma, omoma, small_oma, eps, mom, neg_lr,
                          False, False, False)


cdef void _rmsprop_span(floating *tag, const Batch *b, const RmspropArgs *a, Py_ssize_t lo,
                        Py_ssize_t hi) noexcept nogil:
    cdef Py_ssize_t i, off, n
    cdef void **d
    for i in range(b.count):
        if _part(b, i, lo, hi, &off, &n):
            d = b.data + i * MAX_ROLES
            _rmsprop_range(_at(d[0], off, tag), _at(d[1], off, tag), _at(d[2], off, tag),
                           _at(d[3], off, tag), _at(d[4], off, tag), n, a)


cdef void _rmsprop_run(floating *tag, const Batch *b, const RmspropArgs *a, int n_threads) noexcept nogil:
    cdef Py_ssize_t t
    if n_threads <= 1 or b.total < RMSPROP_PARALLEL_MIN:
        _rmsprop_span(tag, b, a, 0, b.total)
        return
    for t in prange(n_threads, schedule="static", num_threads=n_threads):
        _rmsprop_span(tag, b, a, _range_start(b.total, t, n_threads), _range_start(b.total, t + 1, n_threads))


def rmsprop_step(params, grads, square_avgs, grad_avgs, momentum_buffers, lr, alpha, eps, weight_decay,
                 momentum, bint centered, bint maximize, n_threads):
    """One RMSprop step over every tensor of a group, in place (PyTorch's RMSprop arithmetic).

    params:           IN/OUT, list of C-contiguous float32/float64 arrays (one dtype per call).
    grads:            IN, list of arrays, each of its param's shape and dtype.
    square_avgs:      IN/OUT, like params.
    grad_avgs:        IN/OUT when centered, like params (ignored, may be empty, otherwise).
    momentum_buffers: IN/OUT when momentum > 0, like params (ignored, may be empty, otherwise).
    Per element: g = +-grad (+ weight_decay * p); s = alpha * s + (1 - alpha) * g * g;
    centered: a = lerp(a, g, 1 - alpha), avg = sqrt(s - a * a), else avg = sqrt(s); avg += eps;
    momentum: buf = momentum * buf + g / avg, p -= lr * buf; else p -= lr * g / avg.
    """
    cdef str k = "rmsprop_step"
    cdef int nt = _threads(k, n_threads)
    cdef RmspropArgs a
    a.neg_lr = -_real(k, "lr", lr)
    a.alpha = _real(k, "alpha", alpha)
    a.one_minus_alpha = 1.0 - a.alpha
    a.eps = _real(k, "eps", eps)
    a.weight_decay = _real(k, "weight_decay", weight_decay)
    a.momentum = _real(k, "momentum", momentum)
    a.use_momentum = a.momentum > 0
    a.centered = centered
    a.maximize = maximize
    cdef Batch b
    cdef StackTables stack
    b.sizes = NULL
    try:
        _gather("rmsprop_step", ("params", "grads", "square_avgs", "grad_avgs", "momentum_buffers"),
                (params, grads, square_avgs, grad_avgs, momentum_buffers),
                (True, True, True, centered, a.use_momentum), &b, &stack)
        with nogil:
            if b.typenum == cnp.NPY_FLOAT:
                _rmsprop_run(<float *>NULL, &b, &a, nt)
            else:
                _rmsprop_run(<double *>NULL, &b, &a, nt)
    finally:
        _release(&b, &stack)


# --------------------------------------------------------------------------- Adadelta

__all__ += ["adadelta_step", "adagrad_step"]

cdef Py_ssize_t ADADELTA_PARALLEL_MIN = 65536
cdef Py_ssize_t ADAGRAD_PARALLEL_MIN = 65536


cdef struct AdadeltaArgs:
    double neg_lr
    double rho
    double one_minus_rho
    double eps
    double weight_decay
    bint maximize


cdef inline void _adadelta_loop(floating *p, const floating *g, floating *sq, floating *acc, Py_ssize_t n,
                                floating sign, floating wd, floating rho, floating omr, floating eps,
                                floating neg_lr, bint l2) noexcept nogil:
    # Inlined with a constant l2 so that both variants vectorize; sign (+-1) multiplies exactly.
    cdef floating gi, si, std, delta, ai
    cdef Py_ssize_t i
    for i in range(n):
        gi = sign * g[i]
        if l2:
            gi = gi + wd * p[i]
        si = sq[i] * rho + omr * gi * gi
        sq[i] = si
        std = _sqrt(si + eps)
        ai = acc[i]
        delta = _sqrt(ai + eps) / std * gi
        acc[i] = ai * rho + omr * delta * delta
        p[i] = p[i] + neg_lr * delta


cdef void _adadelta_range(floating *p, const floating *g, floating *sq, floating *acc, Py_ssize_t n,
                          const AdadeltaArgs *a) noexcept nogil:
    cdef floating sign = <floating>-1 if a.maximize else <floating>1
    if a.weight_decay != 0:
        _adadelta_loop(p, g, sq, acc, n, sign, <floating>a.weight_decay, <floating>a.rho,
                       <floating>a.one_minus_rho, <floating>a.eps, <floating>a.neg_lr, True)
    else:
        _adadelta_loop(p, g, sq, acc, n, sign, <floating>a.weight_decay, <floating>a.rho,
                       <floating>a.one_minus_rho, <floating>a.eps, <floating>a.neg_lr, False)


cdef void _adadelta_span(floating *tag, const Batch *b, const AdadeltaArgs *a, Py_ssize_t lo,
                         Py_ssize_t hi) noexcept nogil:
    cdef Py_ssize_t i, off, n
    cdef void **d
    for i in range(b.count):
        if _part(b, i, lo, hi, &off, &n):
            d = b.data + i * MAX_ROLES
            _adadelta_range(_at(d[0], off, tag), _at(d[1], off, tag), _at(d[2], off, tag),
                            _at(d[3], off, tag), n, a)


cdef void _adadelta_run(floating *tag, const Batch *b, const AdadeltaArgs *a, int n_threads) noexcept nogil:
    cdef Py_ssize_t t
    if n_threads <= 1 or b.total < ADADELTA_PARALLEL_MIN:
        _adadelta_span(tag, b, a, 0, b.total)
        return
    for t in prange(n_threads, schedule="static", num_threads=n_threads):
        _adadelta_span(tag, b, a, _range_start(b.total, t, n_threads), _range_start(b.total, t + 1, n_threads))


def adadelta_step(params, grads, square_avgs, acc_deltas, lr, rho, eps, weight_decay, bint maximize, n_threads):
    """One Adadelta step over every tensor of a group, in place (PyTorch's Adadelta arithmetic).

    params:      IN/OUT, list of C-contiguous float32/float64 arrays (one dtype per call).
    grads:       IN, list of arrays, each of its param's shape and dtype.
    square_avgs: IN/OUT, like params.
    acc_deltas:  IN/OUT, like params.
    Per element: g = +-grad (+ weight_decay * p); s = rho * s + (1 - rho) * g * g;
    delta = sqrt(acc + eps) / sqrt(s + eps) * g; acc = rho * acc + (1 - rho) * delta * delta;
    p -= lr * delta.
    """
    cdef str k = "adadelta_step"
    cdef int nt = _threads(k, n_threads)
    cdef AdadeltaArgs a
    a.neg_lr = -_real(k, "lr", lr)
    a.rho = _real(k, "rho", rho)
    a.one_minus_rho = 1.0 - a.rho
    a.eps = _real(k, "eps", eps)
    a.weight_decay = _real(k, "weight_decay", weight_decay)
    a.maximize = maximize
    cdef Batch b
    cdef StackTables stack
    b.sizes = NULL
    try:
        _gather(k, ("params", "grads", "square_avgs", "acc_deltas"), (params, grads, square_avgs, acc_deltas),
                (True, True, True, True), &b, &stack)
        with nogil:
            if b.typenum == cnp.NPY_FLOAT:
                _adadelta_run(<float *>NULL, &b, &a, nt)
            else:
                _adadelta_run(<double *>NULL, &b, &a, nt)
    finally:
        _release(&b, &stack)


# --------------------------------------------------------------------------- Adagrad

cdef struct AdagradArgs:
    double neg_clr        # -lr / (1 + (step - 1) * lr_decay)
    double eps
    double weight_decay
    bint maximize


cdef inline void _adagrad_loop(floating *p, const floating *g, floating *s, Py_ssize_t n, floating sign,
                               floating wd, floating eps, floating neg_clr, bint l2) noexcept nogil:
    cdef floating gi, si
    cdef Py_ssize_t i
    for i in range(n):
        gi = sign * g[i]
        if l2:
            gi = gi + wd * p[i]
        si = s[i] + gi * gi
        s[i] = si
        p[i] = p[i] + neg_clr * gi / (_sqrt(si) + eps)


cdef void _adagrad_range(floating *p, const floating *g, floating *s, Py_ssize_t n,
                         const AdagradArgs *a) noexcept nogil:
    cdef floating sign = <floating>-1 if a.maximize else <floating>1
    if a.weight_decay != 0:
        _adagrad_loop(p, g, s, n, sign, <floating>a.weight_decay, <floating>a.eps, <floating>a.neg_clr, True)
    else:
        _adagrad_loop(p, g, s, n, sign, <floating>a.weight_decay, <floating>a.eps, <floating>a.neg_clr, False)


cdef void _adagrad_span(floating *tag, const Batch *b, const AdagradArgs *a, Py_ssize_t lo,
                        Py_ssize_t hi) noexcept nogil:
    cdef Py_ssize_t i, off, n
    cdef void **d
    for i in range(b.count):
        if _part(b, i, lo, hi, &off, &n):
            d = b.data + i * MAX_ROLES
            _adagrad_range(_at(d[0], off, tag), _at(d[1], off, tag), _at(d[2], off, tag), n, a)


cdef void _adagrad_run(floating *tag, const Batch *b, const AdagradArgs *a, int n_threads) noexcept nogil:
    cdef Py_ssize_t t
    if n_threads <= 1 or b.total < ADAGRAD_PARALLEL_MIN:
        _adagrad_span(tag, b, a, 0, b.total)
        return
    for t in prange(n_threads, schedule="static", num_threads=n_threads):
        _adagrad_span(tag, b, a, _range_start(b.total, t, n_threads), _range_start(b.total, t + 1, n_threads))


def adagrad_step(params, grads, state_sums, step, lr, lr_decay, eps, weight_decay, bint maximize, n_threads):
    """One Adagrad step over every tensor of a group, in place (PyTorch's Adagrad arithmetic).

    params:     IN/OUT, list of C-contiguous float32/float64 arrays (one dtype per call).
    grads:      IN, list of arrays, each of its param's shape and dtype.
    state_sums: IN/OUT, like params.
    step:       the step count of every tensor of the call, already incremented (>= 1).
    Per element: g = +-grad (+ weight_decay * p); s += g * g;
    p += -clr * g / (sqrt(s) + eps), with clr = lr / (1 + (step - 1) * lr_decay) in double.
    """
    cdef str k = "adagrad_step"
    cdef int nt = _threads(k, n_threads)
    if step < 1:
        raise ValueError(f"adagrad_step: step must be >= 1 (the count after this update), got {step}")
    cdef double lr_ = _real(k, "lr", lr)
    cdef double lr_decay_ = _real(k, "lr_decay", lr_decay)
    cdef AdagradArgs a
    a.neg_clr = -(lr_ / (1.0 + (<double>step - 1.0) * lr_decay_))
    a.eps = _real(k, "eps", eps)
    a.weight_decay = _real(k, "weight_decay", weight_decay)
    a.maximize = maximize
    cdef Batch b
    cdef StackTables stack
    b.sizes = NULL
    try:
        _gather(k, ("params", "grads", "state_sums"), (params, grads, state_sums), (True, True, True), &b, &stack)
        with nogil:
            if b.typenum == cnp.NPY_FLOAT:
                _adagrad_run(<float *>NULL, &b, &a, nt)
            else:
                _adagrad_run(<double *>NULL, &b, &a, nt)
    finally:
        _release(&b, &stack)
