"""Pure-Python twins of the compiled kernels in ``src_c/``.

Each module here mirrors one ``src_c/_<family>.pyx``: same function names, same
signatures, same results. They loop over Python floats (taken with ``.tolist()``)
with no numpy vectorization, so they are the correctness oracle in the tests and the
"pure Python" that the benchmarks race against. ``fastgrad.kernels`` finds every
public name listed in a module's ``__all__`` and binds it to one home or the other.
"""
