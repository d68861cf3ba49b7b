"""Image transforms with torchvision's names, arguments and defaults.

An image is a numpy array, uint8 (H, W) or (H, W, C) (what torchvision holds as a PIL
image), or a Tensor / float array (..., H, W) after ``ToTensor``; the geometric transforms
(``Pad``, ``RandomCrop``, ``RandomHorizontalFlip``) take either and return the same kind.
Random choices come from fastgrad's generator (``fastgrad.manual_seed``; DataLoader
workers each get their own seed), as torchvision's come from torch's.
"""

import numbers

import numpy as np

from .. import _config
from ..tensor import Tensor

_PAD_MODES = {"constant": "constant", "edge": "edge", "reflect": "reflect", "symmetric": "symmetric"}


def _split(img):
    """(array, rebuild, h_axis): the pixels, a function that wraps an array back into the
    input's kind, and where the height axis is (width follows it)."""
    if isinstance(img, Tensor):
        if img.ndim < 2:
            raise ValueError(f"expected an image tensor of shape (..., H, W), got {tuple(img.shape)}")
        return img.data, lambda a: Tensor._from_op(np.ascontiguousarray(a), None), img.ndim - 2
    if isinstance(img, np.ndarray):
        if img.ndim not in (2, 3):
            raise ValueError(f"expected an image array of shape (H, W) or (H, W, C), got {img.shape}")
        return img, np.ascontiguousarray, 0
    raise TypeError(f"expected an image as a numpy array or a Tensor, got {type(img).__name__}")


def _pair(size, name):
    if isinstance(size, numbers.Integral):
        return int(size), int(size)
    if isinstance(size, (tuple, list)) and len(size) == 1:
        return int(size[0]), int(size[0])
    if isinstance(size, (tuple, list)) and len(size) == 2:
        return int(size[0]), int(size[1])
    raise ValueError(f"{name}: size should be an int or a sequence of one or two ints, got {size!r}")


def _padding(padding):
    """(left, top, right, bottom) from torchvision's forms: int, (lr, tb) or (l, t, r, b)."""
    if isinstance(padding, numbers.Integral):
        p = int(padding)
        return p, p, p, p
    if (
        isinstance(padding, (tuple, list))
        and len(padding) in (1, 2, 4)
        and all(isinstance(v, numbers.Integral) for v in padding)
    ):
        if len(padding) == 1:
            return (int(padding[0]),) * 4
        if len(padding) == 2:
            return int(padding[0]), int(padding[1]), int(padding[0]), int(padding[1])
        return tuple(int(v) for v in padding)
    raise ValueError(f"Padding must be an int or a 1, 2, or 4 element tuple, not {padding!r}")


def pad(img, padding, fill=0, padding_mode="constant"):
    if padding_mode not in _PAD_MODES:
        raise ValueError(f"Padding mode should be either constant, edge, reflect or symmetric, got {padding_mode!r}")
    left, top, right, bottom = _padding(padding)
    if min(left, top, right, bottom) < 0:
        raise ValueError(f"padding must be non-negative, got {padding!r}")
    array, rebuild, h = _split(img)
    widths = [(0, 0)] * array.ndim
    widths[h], widths[h + 1] = (top, bottom), (left, right)
    kwargs = {"constant_values": fill} if padding_mode == "constant" else {}
    return rebuild(np.pad(array, widths, mode=_PAD_MODES[padding_mode], **kwargs))


class Compose:
    """Apply the transforms one after the other."""

    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, img):
        for t in self.transforms:
            img = t(img)
        return img

    def __repr__(self):
        return "Compose(\n" + "".join(f"    {t}\n" for t in self.transforms) + ")"


class ToTensor:
    """uint8 (H, W) or (H, W, C) -> float32 Tensor (C, H, W) in [0, 1]; arrays of other
    dtypes are moved to (C, H, W) without scaling, as torchvision does."""

    def __call__(self, pic):
        if isinstance(pic, Tensor):
            raise TypeError("ToTensor: the input is already a Tensor")
        if not isinstance(pic, np.ndarray) or pic.ndim not in (2, 3):
            raise TypeError(
                f"ToTensor: pic should be an (H, W) or (H, W, C) numpy array, got "
                f"{getattr(pic, 'shape', type(pic).__name__)}"
            )
        chw = pic[None] if pic.ndim == 2 else pic.transpose(2, 0, 1)
        if chw.dtype == np.uint8:
            out = chw.astype(np.float32)
            out /= np.float32(255)
        else:
            out = np.array(chw, dtype=np.float32 if chw.dtype.kind != "f" or chw.dtype == np.float16 else chw.dtype)
        return Tensor._from_op(np.ascontiguousarray(out), None)

    def __repr__(self):
        return "ToTensor()"


class Normalize:
    """``(x - mean[c]) / std[c]`` on each channel of a (..., C, H, W) Tensor."""

    def __init__(self, mean, std, inplace=False):
        self.mean, self.std, self.inplace = mean, std, inplace

    def __call__(self, tensor):
        if not isinstance(tensor, Tensor):
            raise TypeError(f"Normalize: expected a Tensor (apply ToTensor first), got {type(tensor).__name__}")
        if tensor.ndim < 3:
            raise ValueError(f"Normalize: expected a tensor image of shape (..., C, H, W), got {tuple(tensor.shape)}")
        if tensor.dtype.kind != "f":
            raise TypeError(f"Normalize: input tensor should be a float tensor, got {tensor.dtype}")
        data = tensor.data
        mean = np.asarray(self.mean, dtype=data.dtype).reshape(-1, 1, 1)
        std = np.asarray(self.std, dtype=data.dtype).reshape(-1, 1, 1)
        if (std == 0).any():
            raise ValueError(f"std evaluated to zero after conversion to {data.dtype}, leading to division by zero.")
        if mean.shape[0] not in (1, data.shape[-3]) or std.shape[0] not in (1, data.shape[-3]):
            raise ValueError(
                f"Normalize: {mean.shape[0]} means and {std.shape[0]} stds for an image of {data.shape[-3]} channels"
            )
        if self.inplace:
            data -= mean
            data /= std
            return tensor
        out = data - mean
        out /= std
        return Tensor._from_op(out, None)

    def __repr__(self):
        return f"Normalize(mean={self.mean}, std={self.std})"


class Pad:
    def __init__(self, padding, fill=0, padding_mode="constant"):
        _padding(padding)
        if padding_mode not in _PAD_MODES:
            raise ValueError(
                f"Padding mode should be either constant, edge, reflect or symmetric, got {padding_mode!r}"
            )
        self.padding, self.fill, self.padding_mode = padding, fill, padding_mode

    def __call__(self, img):
        return pad(img, self.padding, self.fill, self.padding_mode)

    def __repr__(self):
        return f"Pad(padding={self.padding}, fill={self.fill}, padding_mode={self.padding_mode})"


class RandomCrop:
    """Pad by ``padding`` (if given), then cut a ``size`` window at a random position."""

    def __init__(self, size, padding=None, pad_if_needed=False, fill=0, padding_mode="constant"):
        self.size = _pair(size, "RandomCrop")
        if padding is not None:
            _padding(padding)
        self.padding, self.pad_if_needed, self.fill, self.padding_mode = padding, pad_if_needed, fill, padding_mode

    def __call__(self, img):
        if self.padding is not None:
            img = pad(img, self.padding, self.fill, self.padding_mode)
        th, tw = self.size
        array, rebuild, h = _split(img)
        height, width = array.shape[h], array.shape[h + 1]
        if self.pad_if_needed and (height < th or width < tw):
            dh, dw = max(th - height, 0), max(tw - width, 0)
            img = pad(img, (dw, dh), self.fill, self.padding_mode)
            array, rebuild, h = _split(img)
            height, width = array.shape[h], array.shape[h + 1]
        if height < th or width < tw:
            raise ValueError(f"Required crop size {(th, tw)} is larger than input image size {(height, width)}")
        rng = _config.rng()
        i = int(rng.integers(0, height - th + 1))
        j = int(rng.integers(0, width - tw + 1))
        index = [slice(None)] * array.ndim
        index[h], index[h + 1] = slice(i, i + th), slice(j, j + tw)
        return rebuild(array[tuple(index)])

    def __repr__(self):
        return f"RandomCrop(size={self.size}, padding={self.padding})"


class RandomHorizontalFlip:
    """Mirror left-right with probability ``p``."""

    def __init__(self, p=0.5):
        self.p = p

    def __call__(self, img):
        array, rebuild, h = _split(img)
        if _config.rng().random() < self.p:
            return rebuild(np.flip(array, axis=h + 1))
        return img

    def __repr__(self):
        return f"RandomHorizontalFlip(p={self.p})"


class Lambda:
    """Apply a user function."""

    def __init__(self, lambd):
        if not callable(lambd):
            raise TypeError(f"Argument lambd should be callable, got {type(lambd).__name__!r}")
        self.lambd = lambd

    def __call__(self, img):
        return self.lambd(img)

    def __repr__(self):
        return "Lambda()"
