"""``from fastgrad.utils.data import DataLoader`` works as ``torch.utils.data`` does: this
package re-exports ``fastgrad.data``.

Submodules mirror PyTorch's where fastgrad has the feature: a ``distributed.py`` beside
this file re-exports ``fastgrad.data.distributed`` (``DistributedSampler``), so that
``from torch.utils.data.distributed import DistributedSampler`` ports by its import.
"""

from ...data import *  # noqa: F401,F403
from ...data import __all__  # noqa: F401
