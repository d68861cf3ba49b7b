"""The one switch between compiled and pure-Python kernels.

Every kernel has two homes with one name and one signature: ``src_c/_<family>.pyx``
(built into ``fastgrad._ext``) and ``fastgrad/reference/<family>.py``. This module
binds each public name of each family to one of them, as a module attribute:
``kernels.conv2d_forward`` is either the compiled or the reference function. The rest
of fastgrad calls kernels only through here, so the choice is made in one place.

The backend is chosen at import from ``FASTGRAD_BACKEND`` (``compiled``, the default,
or ``reference``) and can be changed later with ``use_backend``. When the compiled
modules are missing (no C compiler at install time) fastgrad warns loudly and runs on
the reference kernels. On x86-64 CPUs with AVX2 and FMA the ``fastgrad._ext.v3`` build
is used; elsewhere the baseline build.
"""
import importlib
import os
import pkgutil
import warnings

from . import reference as _reference_pkg

BACKENDS = ("compiled", "reference")

backend = None        # "compiled" or "reference": what is bound now
simd_variant = None   # "v3", "baseline", or None when running on the reference kernels
load_error = None     # why the compiled kernels could not be loaded, if they could not

FAMILIES = sorted(m.name for m in pkgutil.iter_modules(_reference_pkg.__path__)
                  if not m.name.startswith("_"))


def _cpu_has_v3():
    """True when numpy reports AVX2 and FMA3 on this CPU (what x86-64-v3 builds need)."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as feats
    except ImportError:  # numpy < 2
        try:
            from numpy.core._multiarray_umath import __cpu_features__ as feats
        except ImportError:
            return False
    return all(feats.get(f, False) for f in ("AVX2", "FMA3", "F16C", "BMI2"))


def _compiled_modules():
    """Import every family's compiled module from the best variant that has them all."""
    variants = (["v3"] if _cpu_has_v3() else []) + ["baseline"]
    last_error = None
    for variant in variants:
        pkg = "fastgrad._ext.v3" if variant == "v3" else "fastgrad._ext"
        try:
            mods = {f: importlib.import_module(f"{pkg}._{f}") for f in FAMILIES}
            mods["runtime"] = importlib.import_module(f"{pkg}._runtime")
            return variant, mods
        except ImportError as exc:
            last_error = exc
    raise ImportError(str(last_error))


def _bind(modules):
    for family in FAMILIES:
        ref = importlib.import_module(f"fastgrad.reference.{family}")
        mod = modules[family]
        for name in ref.__all__:
            if not hasattr(mod, name):
                raise ImportError(f"compiled module for {family!r} lacks kernel {name!r}")
            globals()[name] = getattr(mod, name)


def _reference_modules():
    return {f: importlib.import_module(f"fastgrad.reference.{f}") for f in FAMILIES}


def use_backend(name):
    """Bind every kernel to the ``compiled`` or ``reference`` implementation.

    Raises ImportError for ``compiled`` when the compiled modules are not installed.
    """
    global backend, simd_variant, runtime
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; expected one of {BACKENDS}")
    if name == "compiled":
        variant, mods = _compiled_modules()
        runtime = mods.pop("runtime")
        _bind(mods)
        simd_variant = variant
    else:
        _bind(_reference_modules())
        simd_variant = None
    backend = name


runtime = None  # the compiled _runtime module (build facts), when compiled kernels load


def _initial_backend():
    global load_error
    wanted = os.environ.get("FASTGRAD_BACKEND", "compiled").strip().lower() or "compiled"
    if wanted not in BACKENDS:
        raise ValueError(f"FASTGRAD_BACKEND={wanted!r}: expected 'compiled' or 'reference'")
    if wanted == "reference":
        use_backend("reference")
        return
    try:
        use_backend("compiled")
    except ImportError as exc:
        load_error = str(exc)
        warnings.warn(
            "fastgrad: the compiled kernels are not installed (" + load_error + "); running on "
            "the pure-Python reference kernels, hundreds of times slower. Reinstall with a C "
            "compiler available (pip install --force-reinstall .), or set "
            "FASTGRAD_BACKEND=reference to silence this.", RuntimeWarning, stacklevel=3)
        use_backend("reference")


_initial_backend()
