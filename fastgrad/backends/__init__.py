"""``torch.backends`` for scripts that ask: no MPS, no cuDNN; the cuDNN switches are
plain settable attributes with PyTorch's defaults, read by nothing in fastgrad (its
kernels are deterministic for a given thread count; see
``fastgrad.use_deterministic_algorithms``)."""

from . import cudnn, mps  # noqa: F401
