# A ResNet-8 trained on CIFAR-10 as PyTorch users write one (basic residual blocks with
# batch norm, the usual augmentation, SGD with momentum and a cosine schedule). How it
# differs from the PyTorch script: the imports only (`import torch` became
# `import fastgrad as torch`, torch.nn / torch.nn.functional / torch.optim likewise, and
# `from torchvision import datasets, transforms` became fastgrad.vision). It reads CIFAR-10
# from --data (the python or binary batches, placed there by hand: nothing is downloaded).
import argparse
import time

import fastgrad as torch
import fastgrad.nn as nn
import fastgrad.nn.functional as F
import fastgrad.optim as optim
from fastgrad.vision import datasets, transforms


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + self.shortcut(x)
        return F.relu(out)


class ResNet(nn.Module):
    def __init__(self, block, num_blocks, num_classes=10):
        super().__init__()
        self.in_planes = 16
        self.conv1 = nn.Conv2d(3, 16, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._make_layer(block, 16, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(block, 32, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(block, 64, num_blocks[2], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(64, num_classes)

    def _make_layer(self, block, planes, num_blocks, stride):
        layers = []
        for s in [stride] + [1] * (num_blocks - 1):
            layers.append(block(self.in_planes, planes, s))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = torch.flatten(self.avgpool(out), 1)
        return self.fc(out)


def resnet8():
    return ResNet(BasicBlock, [1, 1, 1])


def train(model, device, loader, criterion, optimizer, epoch, log_interval):
    model.train()
    start = time.time()
    for batch_idx, (inputs, targets) in enumerate(loader):
        inputs, targets = inputs.to(device), targets.to(device)
        optimizer.zero_grad()
        loss = criterion(model(inputs), targets)
        loss.backward()
        optimizer.step()
        if batch_idx % log_interval == 0:
            print(
                f"epoch {epoch} [{batch_idx * len(inputs)}/{len(loader.dataset)}] loss {loss.item():.4f} "
                f"({time.time() - start:.1f} s)"
            )


def evaluate(model, device, loader, criterion):
    model.eval()
    loss, correct = 0.0, 0
    with torch.no_grad():
        for inputs, targets in loader:
            inputs, targets = inputs.to(device), targets.to(device)
            outputs = model(inputs)
            loss += criterion(outputs, targets).item() * targets.size(0)
            correct += (outputs.argmax(1) == targets).sum().item()
    n = len(loader.dataset)
    print(f"test: loss {loss / n:.4f}, accuracy {correct}/{n} ({100.0 * correct / n:.1f}%)")
    return correct / n


def main():
    parser = argparse.ArgumentParser(description="ResNet-8 on CIFAR-10")
    parser.add_argument("--data", default="./data", help="folder holding cifar-10-batches-py (or -bin)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-interval", type=int, default=50)
    parser.add_argument("--checkpoint", default="resnet8_cifar.pt")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    torch.backends.cudnn.benchmark = True
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    train_transform = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )
    test_transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])
    train_set = datasets.CIFAR10(args.data, train=True, download=True, transform=train_transform)
    test_set = datasets.CIFAR10(args.data, train=False, download=True, transform=test_transform)
    train_loader = torch.utils.data.DataLoader(
        train_set,
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.workers,
        pin_memory=torch.cuda.is_available(),
    )
    test_loader = torch.utils.data.DataLoader(test_set, batch_size=256, shuffle=False, num_workers=args.workers)

    model = resnet8().to(device)
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
    scheduler = optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)

    best = 0.0
    for epoch in range(1, args.epochs + 1):
        train(model, device, train_loader, criterion, optimizer, epoch, args.log_interval)
        accuracy = evaluate(model, device, test_loader, criterion)
        scheduler.step()
        if accuracy >= best:
            best = accuracy
            torch.save(
                {
                    "epoch": epoch,
                    "model_state_dict": model.state_dict(),
                    "optimizer_state_dict": optimizer.state_dict(),
                    "accuracy": accuracy,
                },
                args.checkpoint,
            )
    print(f"best accuracy {100.0 * best:.1f}%")


if __name__ == "__main__":
    main()
