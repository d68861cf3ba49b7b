"""One small CNN written twice, for PyTorch and for fastgrad, with the same state-dict keys
(conv, batch norm with running statistics, pooling, linear): the tests load PyTorch's
weights into fastgrad's copy and compare predictions."""

import numpy as np


def make_fastgrad_net():
    import fastgrad.nn as nn
    import fastgrad.nn.functional as F

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 4, 3)
            self.bn1 = nn.BatchNorm2d(4)
            self.conv2 = nn.Conv2d(4, 6, 3, stride=2, padding=1)
            self.fc = nn.Linear(6 * 3 * 3, 5)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
            x = F.relu(self.conv2(x))
            return F.log_softmax(self.fc(x.flatten(1)), dim=1)

    return Net()


def make_torch_net():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 4, 3)
            self.bn1 = nn.BatchNorm2d(4)
            self.conv2 = nn.Conv2d(4, 6, 3, stride=2, padding=1)
            self.fc = nn.Linear(6 * 3 * 3, 5)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
            x = F.relu(self.conv2(x))
            return F.log_softmax(self.fc(torch.flatten(x, 1)), dim=1)

    return Net()


def net_input():
    """A fixed batch of 3 images of 14x14, from a numpy seed (no torch needed)."""
    return np.random.default_rng(7).standard_normal((3, 1, 14, 14)).astype(np.float32)


def trained_torch_net():
    """The torch net after two SGD steps (so the running statistics are not the defaults),
    in eval mode, with its optimizer."""
    import torch

    torch.manual_seed(3)
    net = make_torch_net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    x = torch.from_numpy(net_input())
    for _ in range(2):
        opt.zero_grad()
        loss = -net(x)[:, 0].mean()
        loss.backward()
        opt.step()
    return net.eval(), opt


def expected_values():
    """The tensors of fixtures/tensors.pt, as numpy arrays (see make_fixtures.py)."""
    base = np.arange(12, dtype=np.float32).reshape(3, 4)
    return {
        "float32": base,
        "transposed": base.T,
        "row_view": base[1],
        "float64": np.linspace(-1, 1, 5),
        "int64": np.array([-3, 0, 7], dtype=np.int64),
        "int8": np.array([-128, 5, 127], dtype=np.int8),
        "uint8": np.array([0, 200, 255], dtype=np.uint8),
        "bool": np.array([True, False, True]),
        "scalar": np.array(2.5, dtype=np.float32),
        "empty": np.zeros((0, 3), dtype=np.float32),
        "half": np.array([0.5, -2.0, 1024.0], dtype=np.float32),
        "bfloat16": np.array([1.0, -0.5, 3.0], dtype=np.float32),
    }
