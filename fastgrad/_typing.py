"""Type aliases shared by fastgrad's annotations.

``TensorLike`` is what the ops accept wherever a tensor goes: a Tensor, a numpy array or a
Python number (arrays and numbers are wrapped as constants). It names ``Tensor`` by a
forward reference, so that this module can be imported before ``fastgrad.tensor`` (which
uses it); a module whose annotations use it imports ``Tensor`` as well, which is what
resolves the reference when the annotations are evaluated (``typing.get_type_hints``).

``DeviceLike`` is what a ``device=`` argument takes (layers accept it as PyTorch's do; the
one device is the CPU).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Union

import numpy as np

from ._device import device

if TYPE_CHECKING:
    from .tensor import Tensor

# a Tensor, or data the ops turn into a constant one
TensorLike = Union["Tensor", np.ndarray, float, int, bool]

# what a ``device=`` argument takes: a name such as "cpu", or a fastgrad.device
DeviceLike = Union[str, device]
