"""The small networks the ``fastgrad`` command, the benchmarks and the tests train.

Each builder returns an ``nn.Sequential`` whose layers, order and shapes are those of
the same network written with ``torch.nn``, so ``state_dict`` keys ("0.weight",
"3.bias", ...) match PyTorch's one to one.
"""

from . import nn

# name -> (builder, the input shape (C, H, W) it is built for by default)
MODELS = {}


def _register(name, input_shape):
    def wrap(fn):
        MODELS[name] = (fn, input_shape)
        return fn

    return wrap


@_register("lenet5", (1, 28, 28))
def lenet5(num_classes=10, in_channels=1, image_size=28):
    """LeNet-5 (with ReLU and max pooling) for 28x28 images: 61,706 parameters for MNIST."""
    side = (image_size // 2 - 4) // 2  # conv1 keeps the size (padding 2), pool halves, conv2 (5x5) trims 4
    if side < 1:
        raise ValueError(f"lenet5: image_size {image_size} is too small (at least 12)")
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * side * side, 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, num_classes),
    )


@_register("cifar_small", (3, 32, 32))
def cifar_small(num_classes=10, in_channels=3, image_size=32):
    """A small CIFAR-style CNN: two 3x3 conv blocks (32 and 64 channels) and two linear
    layers; for 32x32 RGB images by default (545,098 parameters)."""
    side = image_size // 4
    if side < 1:
        raise ValueError(f"cifar_small: image_size {image_size} is too small (at least 4)")
    return nn.Sequential(
        nn.Conv2d(in_channels, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * side * side, 128),
        nn.ReLU(),
        nn.Linear(128, num_classes),
    )


@_register("mlp", (1, 28, 28))
def mlp(num_classes=10, in_channels=1, image_size=28, hidden=(256, 128)):
    """A multilayer perceptron on flattened images: Linear + ReLU per hidden width."""
    layers = [nn.Flatten()]
    width = in_channels * image_size * image_size
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def build(name, **kwargs):
    """The model called ``name`` ("lenet5", "cifar_small" or "mlp")."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return MODELS[name][0](**kwargs)


def count_parameters(model):
    return sum(int(p.data.size) for p in model.parameters())
