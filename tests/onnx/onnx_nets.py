"""The networks the ONNX tests export: PyTorch's classic examples written with fastgrad
(only the imports differ), a ResNet-8 with batch norm, and one net that runs every op
fastgrad.onnx maps."""

import numpy as np

import fastgrad
import fastgrad as torch
import fastgrad.nn.functional as F
from fastgrad import nn


class CifarTutorialNet(nn.Module):
    """The net of PyTorch's "Training a classifier" (CIFAR-10) tutorial."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1)  # flatten all dimensions except batch
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        x = self.fc3(x)
        return x


class MnistExampleNet(nn.Module):
    """The net of PyTorch's examples/mnist/main.py."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = self.conv1(x)
        x = F.relu(x)
        x = self.conv2(x)
        x = F.relu(x)
        x = F.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = self.fc1(x)
        x = F.relu(x)
        x = self.dropout2(x)
        x = self.fc2(x)
        output = F.log_softmax(x, dim=1)
        return output


def conv3x3(in_planes, out_planes, stride=1):
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet8(nn.Module):
    """conv3x3 (3->16) + BN + ReLU, three basic blocks (16 s1, 32 s2, 64 s2), global average
    pooling and a linear classifier."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = conv3x3(3, 16)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()
        self.layer1 = BasicBlock(16, 16)
        self.layer2 = BasicBlock(16, 32, stride=2)
        self.layer3 = BasicBlock(32, 64, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def settle_batch_norms(model, input_shape, steps=3):
    """Give every BatchNorm running statistics and affine weights far from their initial
    1s and 0s (training-mode forwards on shifted data, then random weights), so that an
    export that ignored them would be caught."""
    model.train()
    with fastgrad.no_grad():
        for _ in range(steps):
            model(fastgrad.randn(8, *input_shape) * 2.0 + 0.5)
    rng = np.random.default_rng(1)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.weight.data[...] = rng.uniform(0.5, 1.5, m.weight.shape)
            m.bias.data[...] = rng.uniform(-0.5, 0.5, m.bias.shape)
    return model.eval()


class EveryOp(nn.Module):
    """One forward through every op fastgrad.onnx maps, on a (N, 4, 12, 12) input."""

    def __init__(self):
        super().__init__()
        self.strided = nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2)  # 12 -> 6
        self.dilated = nn.Conv2d(4, 6, 3, padding=2, dilation=2, bias=False)  # 12 -> 12
        self.same = nn.Conv2d(6, 6, 4, padding="same")  # even kernel
        self.bn2d = nn.BatchNorm2d(6)
        self.leaky = nn.LeakyReLU(0.2)
        self.pool_ceil = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)  # 12 -> 7 (ceil)
        self.pool_dil = nn.MaxPool2d(2, stride=1, dilation=2)
        self.avg_ceil = nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=True)
        self.avg_excl = nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
        self.avg_div = nn.AvgPool2d(2, stride=2, divisor_override=3)
        self.adapt_uneven = nn.AdaptiveAvgPool2d((5, 4))
        self.adapt_even = nn.AdaptiveAvgPool2d(3)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(6 * 3 * 3, 16)
        self.fc3d = nn.Linear(4, 5)
        self.w4 = nn.Parameter(fastgrad.randn(4, 16) * 0.3)
        self.bn1d = nn.BatchNorm1d(16)
        self.mix = nn.Parameter(fastgrad.randn(16, 10))
        self.softmax = nn.Softmax(dim=1)
        self.log_softmax = nn.LogSoftmax(dim=1)
        self.register_buffer("offset", fastgrad.randn(1, 10))
        self.sigmoid, self.tanh = nn.Sigmoid(), nn.Tanh()
        # the layers and functions added since: a second branch, from the same input
        self.up = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2)
        self.gn = nn.GroupNorm(3, 6)
        self.prelu = nn.PReLU(6, init=0.1)
        self.prelu_shared = nn.PReLU()
        self.elu, self.silu, self.hardswish = nn.ELU(0.7), nn.SiLU(), nn.Hardswish()
        self.gelu, self.gelu_tanh = nn.GELU(), nn.GELU(approximate="tanh")
        self.ln = nn.LayerNorm(12)
        self.ln2d = nn.LayerNorm((7, 8), eps=1e-3, elementwise_affine=False)
        self.drop2d = nn.Dropout2d(0.4)
        self.register_buffer("mask", fastgrad.tensor(np.arange(56).reshape(7, 8) % 3 == 0))
        self.conv1d = nn.Conv1d(3, 4, 3, padding=1)
        self.maxpool1d, self.avgpool1d = nn.MaxPool1d(2), nn.AvgPool1d(4)
        self.unflatten = nn.Unflatten(1, (4, 7))
        self.emb = nn.Embedding(9, 7)
        self.register_buffer("tokens", fastgrad.tensor(np.array([3, 0, 8, 3])))
        self.chained = nn.Sequential(nn.Conv2d(6, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 10))
        self.head = nn.Linear(28, 10)
        rng = np.random.default_rng(5)  # affine weights away from their initial 1s and 0s
        for norm in (self.gn, self.ln):
            norm.weight.data[...] = rng.uniform(0.5, 1.5, norm.weight.shape)
            norm.bias.data[...] = rng.uniform(-0.5, 0.5, norm.bias.shape)
        self.prelu.weight.data[...] = rng.uniform(-0.5, 0.5, 6)

    def forward(self, x):
        a = self.leaky(self.strided(x))  # (N, 8, 6, 6)
        b = self.bn2d(self.same(F.relu(self.dilated(x))))  # (N, 6, 12, 12)
        p = self.pool_ceil(b) + self.avg_ceil(b) - self.avg_excl(b)  # (N, 6, 7, 7)
        p = p.clone() * 0.5 + self.pool_dil(b)[:, :, 2:9, 1:8] / 3.0  # slicing, scalars
        q = self.adapt_even(b) + self.adapt_uneven(p)[:, :, 1:4, :3] * self.avg_div(b)[:, :, ::2, 1:4]
        h = self.drop(self.fc(self.tanh(q).flatten(1)))  # (N, 16)
        h = self.bn1d(h)
        h = F.linear(h.unsqueeze(1), self.w4)  # (N, 1, 4): MatMul
        h = self.fc3d(self.sigmoid(h))[:, 0]  # (N, 5): Linear on 3-d
        g = self.gap(a).reshape(a.shape[0], 8).permute(1, 0).transpose(0, 1)  # (N, 8)
        g = torch.cat([g[:, :5], h.exp().log(), h.abs().sqrt()], dim=1)  # (N, 15)
        s = torch.stack([g, g.clamp(min=-0.5, max=0.5)], dim=2).sum(dim=2)  # (N, 15)
        s = s - s.mean(dim=1, keepdim=True) + s.max(dim=1, keepdim=True).values
        s = (s**2 - s.min(dim=1).values.unsqueeze(1)).double().float()
        t = s @ torch.ones(15, 16) / 15 + (-h).sum(dim=1, keepdim=True).expand(s.shape[0], 16)
        out = t @ self.mix + self.offset + t.max() * 0.0 + self.newer_ops(x)
        return self.softmax(out) + self.log_softmax(out)

    def newer_ops(self, x):
        u = self.up(x[:, :, ::2, ::2])  # (N, 6, 12, 12)
        u = self.prelu(self.gn(u)) + self.prelu_shared(u)
        u = self.gelu(u) + self.gelu_tanh(u) * 0.5 + self.elu(u) - self.silu(u) + self.hardswish(u)
        u = self.drop2d(self.ln(u)).double().float()
        v = (
            F.pad(u, (1, 2, 0, 1), value=0.25)
            + F.pad(u, (2, 1, 1, 0), mode="reflect")
            - F.pad(u, (0, 3, 1, 0), mode="replicate") * F.pad(u, (1, 2, 1, 0), mode="circular") * 0.1
        )
        r = (
            F.interpolate(v, size=(7, 8), mode="bilinear")  # (N, 6, 7, 8)
            + F.interpolate(v, size=(7, 8), mode="bilinear", align_corners=True)
            + F.interpolate(v, size=(7, 8))
            + F.interpolate(v, scale_factor=0.55)
        )
        a, b = r.chunk(2, dim=1)  # (N, 3, 7, 8) each
        c1, c2, c3 = r.split([1, 2, 3], dim=1)
        w = fastgrad.where(self.mask, a, b) + c3.masked_fill(self.mask, -1.0) + c2.sum(1, keepdim=True) + c1
        w = self.ln2d(w)
        s = self.avgpool1d(self.maxpool1d(self.conv1d(w.flatten(2))))  # (N, 4, 7)
        s = self.unflatten(s.flatten(1)) * self.emb(self.tokens)  # (N, 4, 7)
        up2 = F.interpolate(self.up(x[:, :, 1::3, 1::3]), scale_factor=1.7, mode="bilinear")  # (N, 6, 13, 13)
        return self.head(s.flatten(1)) + self.chained(up2[:, :, 3:9, 3:9]) * 0.1
