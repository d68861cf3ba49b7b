"""Build the compiled kernels: one extension per ``src_c/_<family>.pyx``.

Everything else about the package lives in pyproject.toml. This file only knows:
- the extension list (every ``src_c/_*.pyx``, plus the C files a family names in EXTRA_C);
- the compiler flags (``-O3 -fno-math-errno``; never ``-ffast-math``, it breaks NaN/inf);
- the OpenMP probe (kernels build serial, with a warning, where ``-fopenmp`` fails);
- a second, x86-64-v3 (AVX2+FMA) build of each extension under ``fastgrad/_ext/v3/``,
  chosen at import time only on CPUs that have those instructions, so a wheel never
  runs an instruction its CPU lacks;
- the fallback: without a working C compiler the install still succeeds, and fastgrad
  runs on its pure-Python kernels, with a loud warning;
- build mechanics: extensions compile in parallel (one job per CPU unless ``-j`` says
  otherwise), the compiler's output is shown only when a compile fails, and a rebuild in
  the same tree reuses what is up to date (see ``fresh_c_file``), so ``pip install
  ".[test]"`` after ``pip install .`` does not compile everything again.

Environment knobs (all optional):
  FASTGRAD_SANITIZE=address,undefined  build with ASan/UBSan (see README, Reliability)
  FASTGRAD_NO_SIMD_VARIANT=1           skip the x86-64-v3 build (faster dev builds)
  FASTGRAD_EXT=_conv,_pool             build only these families (dev builds)
"""

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import textwrap
from glob import glob

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = "src_c"
# Hand-written C compiled into a family's extension, beside its .pyx.
EXTRA_C = {}

BASE_FLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-std=c11"]
V3_FLAGS = ["-march=x86-64-v3", "-mtune=generic"]


def warn(msg):
    bar = "!" * 78
    print(f"\n{bar}\nfastgrad: {msg}\n{bar}\n", file=sys.stderr)


def compiler_accepts(compiler, flags, source, link=True):
    """Compile (and link) a tiny program with ``flags``; True when it works."""
    tmp = tempfile.mkdtemp(prefix="fastgrad-probe-")
    try:
        path = os.path.join(tmp, "probe.c")
        with open(path, "w") as f:
            f.write(textwrap.dedent(source))
        objs = compiler.compile([path], output_dir=tmp, extra_postargs=flags)
        if link:
            compiler.link_executable(objs, os.path.join(tmp, "probe"), extra_postargs=flags)
        return True
    except Exception:
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


OPENMP_PROBE = """
    #include <omp.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel reduction(+:n)
        n += 1;
        return n > 0 ? 0 : 1;
    }
"""


def quiet_run(cmd, env=None, **kwargs):
    """Run a compiler command; show its output only when it fails."""
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        print(subprocess.list2cmdline(cmd), proc.stdout, sep="\n", file=sys.stderr)
        raise subprocess.CalledProcessError(proc.returncode, cmd)


class BuildExt(build_ext):
    """Probes the compiler once, sets flags per extension, and never fails the install."""

    def finalize_options(self):
        super().finalize_options()
        if not self.parallel:  # one compile job per CPU unless -j says otherwise
            self.parallel = os.cpu_count() or 1

    def rebuild_when_flags_change(self):
        """Drop the built file of every extension whose flags differ from its last build in
        this tree (the up-to-date check compares file times only, not how they were made)."""
        stamp = os.path.join(self.build_temp, "fastgrad-flags.json")
        try:
            with open(stamp) as f:
                before = json.load(f)
        except (OSError, ValueError):
            before = {}
        now = {
            ext.name: json.loads(json.dumps([ext.extra_compile_args, ext.extra_link_args, ext.define_macros]))
            for ext in self.extensions
        }
        for name, flags in now.items():
            if before.get(name) != flags and os.path.exists(self.get_ext_fullpath(name)):
                os.remove(self.get_ext_fullpath(name))
        os.makedirs(self.build_temp, exist_ok=True)
        with open(stamp, "w") as f:
            json.dump({**before, **now}, f)

    def build_extensions(self):
        cc = self.compiler
        # setuptools >= 80 runs commands through Compiler.call, older versions through spawn
        if hasattr(cc, "call"):
            cc.call = quiet_run
        else:
            cc.spawn = quiet_run
        openmp = compiler_accepts(cc, ["-fopenmp"], OPENMP_PROBE)
        if not openmp:
            warn("the C compiler does not support OpenMP (-fopenmp); kernels build single-threaded.")
        sanitize = os.environ.get("FASTGRAD_SANITIZE", "").strip()
        # Debug info would triple the size of the install; sanitizer builds keep it for reports.
        san_flags = [f"-fsanitize={sanitize}", "-fno-omit-frame-pointer", "-g"] if sanitize else ["-g0"]
        for ext in self.extensions:
            extra = list(BASE_FLAGS) + san_flags
            if ".v3." in ext.name:
                extra += V3_FLAGS
            if openmp:
                extra.append("-fopenmp")
            ext.extra_compile_args = extra
            # symbols stripped unless asked for (FASTGRAD_NOSTRIP=1: perf report names functions)
            strip = [] if sanitize or os.environ.get("FASTGRAD_NOSTRIP") else ["-s"]
            ext.extra_link_args = (["-fopenmp"] if openmp else []) + san_flags + strip
            ext.define_macros = list(ext.define_macros or []) + [
                ("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"),
                ("FASTGRAD_OPENMP", "1" if openmp else "0"),
            ]
        self.rebuild_when_flags_change()
        try:
            super().build_extensions()
        except Exception as exc:  # no compiler, broken toolchain: fall back, loudly
            warn(
                f"building the compiled kernels failed ({exc!r}).\n"
                "fastgrad is installed with its pure-Python kernels only: correct but\n"
                "hundreds of times slower. Install a C compiler and reinstall."
            )

    def run(self):
        try:
            super().run()
        except Exception as exc:
            warn(f"no usable C compiler ({exc!r}); installing the pure-Python kernels only.")


def own_sources():
    """The files every generated C file depends on besides its .pyx: the shared .pxd, the
    included .pxi and the C headers of src_c (the Cython directives are in the stamp, the
    compiler flags in BuildExt's)."""
    return [path for ext in ("pxd", "pxi", "h") for path in glob(os.path.join(SRC, f"*.{ext}"))]


def fresh_c_file(pyx, build_dir, stamp):
    """The C file Cython made from ``pyx`` in an earlier build of this tree, when it is
    still good: newer than the .pyx and ``own_sources()``, and made by the same Cython
    and numpy versions with the same directives (``stamp``). Else None.

    Cython's own check also compares against the .pxd files of numpy and Cython, which
    pip's fresh build environment installs anew on every ``pip install``, so it would
    regenerate (and the compiler recompile) everything each time.
    """
    c_file = os.path.join(build_dir, SRC, os.path.basename(pyx)[:-4] + ".c")
    try:
        with open(os.path.join(build_dir, "stamp.json")) as f:
            if json.load(f) != stamp:
                return None
        made = os.path.getmtime(c_file)
    except (OSError, ValueError):
        return None
    if all(os.path.getmtime(src) < made for src in [pyx] + own_sources()):
        return c_file
    return None


def extensions():
    try:
        import numpy
        from Cython.Build import cythonize
    except ImportError as exc:  # only when someone bypasses the PEP 517 build requirements
        warn(f"Cython or numpy missing at build time ({exc}); pure-Python kernels only.")
        return []
    import Cython
    from setuptools import Extension

    only = {s.strip() for s in os.environ.get("FASTGRAD_EXT", "").split(",") if s.strip()}
    variants = [""]
    is_x86 = platform.machine().lower() in ("x86_64", "amd64")
    if is_x86 and not os.environ.get("FASTGRAD_NO_SIMD_VARIANT"):
        variants.append("v3")
    directives = {
        "language_level": "3",
        "boundscheck": False,
        "wraparound": False,
        "cdivision": True,
        "initializedcheck": False,
        "embedsignature": True,
    }
    stamp = {"cython": Cython.__version__, "numpy": numpy.__version__, "directives": directives}
    built = []
    for variant in variants:
        pkg = "fastgrad._ext" + (f".{variant}" if variant else "")
        # One build folder per variant: the generated C embeds the full module name.
        build_dir = os.path.join("build", "cython", variant or "base")
        stale = []
        for pyx in sorted(glob(os.path.join(SRC, "_*.pyx"))):
            family = os.path.splitext(os.path.basename(pyx))[0]
            if only and family not in only:
                continue
            c_file = fresh_c_file(pyx, build_dir, stamp)
            sources = [c_file or pyx] + [os.path.join(SRC, c) for c in EXTRA_C.get(family, [])]
            ext = Extension(f"{pkg}.{family}", sources, include_dirs=[numpy.get_include(), SRC], depends=own_sources())
            (built if c_file else stale).append(ext)
        if stale:
            # A Cython error is a bug in fastgrad, not a missing tool: let it fail the build.
            built += cythonize(
                stale, compiler_directives=directives, include_path=[SRC], build_dir=build_dir, quiet=True, force=True
            )
            with open(os.path.join(build_dir, "stamp.json"), "w") as f:
                json.dump(stamp, f)
    return built


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt})
