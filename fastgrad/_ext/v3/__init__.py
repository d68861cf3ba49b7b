"""The compiled kernels built with ``-march=x86-64-v3`` (AVX2 + FMA); see ``fastgrad.kernels``."""
