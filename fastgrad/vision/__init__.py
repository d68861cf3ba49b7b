"""torchvision's layout without torchvision: ``from fastgrad.vision import datasets,
transforms`` stands for ``from torchvision import datasets, transforms``.

Images are numpy arrays where torchvision has PIL images: uint8, (H, W) for grayscale and
(H, W, C) for colour. ``transforms.ToTensor`` turns one into a float32 (C, H, W) Tensor
scaled to [0, 1], as it does a PIL image; the other transforms take either form.
"""

from . import datasets, transforms  # noqa: F401
