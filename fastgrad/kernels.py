"""The one switch between compiled and pure-Python kernels.

Every kernel has two homes with one name and one signature: ``src_c/_<family>.pyx``
(built into ``fastgrad._ext``) and ``fastgrad/reference/<family>.py``. This module
binds each public name of each family to one of them, as a module attribute:
``kernels.conv2d_forward`` is either the compiled or the reference function. The rest
of fastgrad calls kernels only through here, so the choice is made in one place.

The backend is chosen at import from ``FASTGRAD_BACKEND`` (``compiled``, the default,
or ``reference``) and can be changed later with ``use_backend``. When the compiled
modules are missing (no C compiler at install time) fastgrad warns loudly and runs on
the reference kernels.

The compiled kernels run on one SIMD path, the same in every family: ``avx512``
(AVX-512F), ``avx2`` (AVX2+FMA, x86-64-v3) or ``baseline`` (portable code).
``simd_paths()`` lists the paths this CPU can run, best first (from
src_c/cpu_features.h, asked through the baseline build, which runs on any CPU).
``FASTGRAD_SIMD`` (unset or ``auto``: the best) or ``use_simd`` chooses one; a path the
CPU cannot run is refused with a RuntimeError before any of its code is loaded. The
``avx2`` and ``avx512`` paths run the ``fastgrad._ext.v3`` build (every loop compiled
for x86-64-v3; the AVX-512 kernels chosen inside it at run time), ``baseline`` runs the
baseline build with its run-time dispatch held at the portable kernels.
"""

import importlib
import os
import pkgutil
import warnings

from . import reference as _reference_pkg

BACKENDS = ("compiled", "reference")
# SIMD paths, best first, and the level src_c/cpu_features.h gives each
SIMD_PATHS = ("avx512", "avx2", "baseline")
SIMD_LEVELS = {"avx512": 2, "avx2": 1, "baseline": 0}

backend = None  # "compiled" or "reference": what is bound now
simd_path = None  # the SIMD path the compiled kernels run, or None on the reference ones
simd_variant = None  # the build that runs it: "v3", "baseline", or None (reference)
load_error = None  # why the compiled kernels could not be loaded, if they could not

FAMILIES = sorted(m.name for m in pkgutil.iter_modules(_reference_pkg.__path__) if not m.name.startswith("_"))


def _cpu_simd_level():
    """The best level this CPU runs (0 when the compiled kernels are not installed)."""
    try:
        return importlib.import_module("fastgrad._ext._runtime").cpu_simd_level()
    except ImportError:
        return 0


def simd_paths():
    """The SIMD paths this CPU can run, best first, e.g. ``["avx2", "baseline"]``."""
    level = _cpu_simd_level()
    return [p for p in SIMD_PATHS if SIMD_LEVELS[p] <= level]


def _path_name(value):
    """The path a FASTGRAD_SIMD value names, or 'auto'; ValueError for an unknown one."""
    name = (value or "").strip().lower() or "auto"
    if name != "auto" and name not in SIMD_LEVELS:
        raise ValueError(f"FASTGRAD_SIMD={value!r}: expected one of 'auto', " + ", ".join(repr(p) for p in SIMD_PATHS))
    return name


def _requested_path(value):
    """The path named by a FASTGRAD_SIMD value ('' or 'auto': the best this CPU runs);
    raises when the name is unknown or this CPU cannot run it."""
    name = _path_name(value)
    runnable = simd_paths()
    if name == "auto":
        return runnable[0]
    if name not in runnable:
        raise RuntimeError(
            f"FASTGRAD_SIMD={name}: this CPU ({_cpu_name()}) cannot run the {name} path; "
            f"the paths it can run are: {', '.join(runnable)}"
        )
    return name


def _cpu_name():
    from ._config import _cpu_model

    return _cpu_model()


def _compiled_modules(path):
    """Import every family's compiled module from the build that runs ``path`` and select
    the path's level in each; the baseline build when the x86-64-v3 one is missing."""
    level = SIMD_LEVELS[path]
    variants = (["v3"] if level >= 1 else []) + ["baseline"]
    last_error = None
    for variant in variants:
        pkg = "fastgrad._ext.v3" if variant == "v3" else "fastgrad._ext"
        try:
            mods = {f: importlib.import_module(f"{pkg}._{f}") for f in FAMILIES}
            mods["runtime"] = importlib.import_module(f"{pkg}._runtime")
        except ImportError as exc:
            last_error = exc
            continue
        for mod in mods.values():
            select = getattr(mod, "_select_simd", None)
            if select is not None:  # a family without run-time dispatch runs its build's code
                select(level)
        return variant, mods
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
    global backend, simd_path, simd_variant, runtime
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; expected one of {BACKENDS}")
    if name == "compiled":
        path = _requested_path(_wanted_path or os.environ.get("FASTGRAD_SIMD"))
        variant, mods = _compiled_modules(path)
        runtime = mods.pop("runtime")
        _bind(mods)
        simd_path, simd_variant = path, variant
    else:
        _bind(_reference_modules())
        simd_path = simd_variant = None
    backend = name


def use_simd(path):
    """Run the compiled kernels on SIMD ``path`` (one of ``simd_paths()``, or ``"auto"``)
    from now on, in every family; as FASTGRAD_SIMD does at import. Raises RuntimeError,
    changing nothing, when this CPU cannot run it. With the reference backend bound, the
    path is remembered for the next ``use_backend("compiled")``."""
    global _wanted_path
    wanted = _requested_path(path) if backend == "compiled" else _path_name(path)
    previous, _wanted_path = _wanted_path, wanted
    if backend == "compiled":
        try:
            use_backend("compiled")
        except BaseException:
            _wanted_path = previous
            raise
    return wanted


runtime = None  # the compiled _runtime module (build facts), when compiled kernels load
_wanted_path = None  # set by use_simd; None: FASTGRAD_SIMD decides


def _initial_backend():
    global load_error
    wanted = os.environ.get("FASTGRAD_BACKEND", "compiled").strip().lower() or "compiled"
    if wanted not in BACKENDS:
        raise ValueError(f"FASTGRAD_BACKEND={wanted!r}: expected 'compiled' or 'reference'")
    if wanted == "reference":
        _path_name(os.environ.get("FASTGRAD_SIMD"))  # a misspelt path is refused even so
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
            "FASTGRAD_BACKEND=reference to silence this.",
            RuntimeWarning,
            stacklevel=3,
        )
        use_backend("reference")


_initial_backend()
