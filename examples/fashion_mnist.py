# A Fashion-MNIST classifier as PyTorch users write one: a small CNN whose head uses
# LayerNorm and GELU, trained with AdamW. How it differs from the PyTorch script: the
# imports only (`import torch` became `import fastgrad as torch`, torch.nn /
# torch.nn.functional / torch.optim likewise, and `from torchvision import datasets,
# transforms` became fastgrad.vision). It reads the four Fashion-MNIST IDX files from
# --data/FashionMNIST/raw (placed there by hand: nothing is downloaded).
import argparse

import fastgrad as torch
import fastgrad.nn as nn
import fastgrad.nn.functional as F
import fastgrad.optim as optim
from fastgrad.vision import datasets, transforms


class FashionNet(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, kernel_size=3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=3, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * 7 * 7, 256),
            nn.LayerNorm(256),
            nn.GELU(),
            nn.Dropout(0.3),
            nn.Linear(256, num_classes),
        )

    def forward(self, x):
        return self.head(self.features(x))


def run_epoch(model, device, loader, optimizer=None):
    training = optimizer is not None
    model.train(training)
    total_loss, correct, seen = 0.0, 0, 0
    with torch.set_grad_enabled(training):
        for images, labels in loader:
            images, labels = images.to(device), labels.to(device)
            logits = model(images)
            loss = F.cross_entropy(logits, labels)
            if training:
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            total_loss += loss.item() * labels.size(0)
            correct += (logits.argmax(dim=1) == labels).sum().item()
            seen += labels.size(0)
    return total_loss / seen, correct / seen


def main():
    parser = argparse.ArgumentParser(description="Fashion-MNIST with LayerNorm and GELU")
    parser.add_argument("--data", default="./data")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--save", default="fashion_mnist.pt")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.2860,), (0.3530,))])
    full_train = datasets.FashionMNIST(args.data, train=True, download=True, transform=transform)
    test_set = datasets.FashionMNIST(args.data, train=False, download=True, transform=transform)
    n_val = max(1, len(full_train) // 10)
    train_set, val_set = torch.utils.data.random_split(
        full_train, [len(full_train) - n_val, n_val], generator=torch.Generator().manual_seed(args.seed)
    )
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=args.batch_size, shuffle=True)
    val_loader = torch.utils.data.DataLoader(val_set, batch_size=512)
    test_loader = torch.utils.data.DataLoader(test_set, batch_size=512)

    model = FashionNet().to(device)
    optimizer = optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-2)
    for epoch in range(1, args.epochs + 1):
        train_loss, train_acc = run_epoch(model, device, train_loader, optimizer)
        val_loss, val_acc = run_epoch(model, device, val_loader)
        print(
            f"epoch {epoch}: train loss {train_loss:.4f} acc {train_acc:.3f} | "
            f"val loss {val_loss:.4f} acc {val_acc:.3f}"
        )
    test_loss, test_acc = run_epoch(model, device, test_loader)
    print(f"test loss {test_loss:.4f} acc {test_acc:.3f}")
    torch.save(model.state_dict(), args.save)


if __name__ == "__main__":
    main()
