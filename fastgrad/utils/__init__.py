"""PyTorch-shaped paths for ported scripts: ``fastgrad.utils.data`` is ``torch.utils.data``,
there after ``import fastgrad`` as ``torch.utils.data`` is after ``import torch``."""

from . import data  # noqa: F401
