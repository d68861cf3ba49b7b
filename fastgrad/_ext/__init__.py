"""Compiled kernels, built from ``src_c/`` (baseline instruction set).

``fastgrad/_ext/v3/`` holds the same modules built for x86-64-v3 (AVX2 + FMA);
``fastgrad.kernels`` picks one of the two at import time. Nothing here is imported
directly by the rest of fastgrad.
"""
