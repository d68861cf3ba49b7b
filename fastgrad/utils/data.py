"""``from fastgrad.utils.data import DataLoader`` works as ``torch.utils.data`` does."""
from ..data import *  # noqa: F401,F403
from ..data import __all__  # noqa: F401
