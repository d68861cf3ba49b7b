"""Differentiable operations, by family. Each op is a ``Function`` subclass whose forward
and backward stand side by side, plus a plain function that validates its arguments and
calls ``Function.apply``. Ops compute with numpy or call ``fastgrad.kernels``."""
