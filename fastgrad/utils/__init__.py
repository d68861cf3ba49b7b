"""PyTorch-shaped paths for ported scripts: ``fastgrad.utils.data`` is ``fastgrad.data``."""
from .. import data  # noqa: F401
