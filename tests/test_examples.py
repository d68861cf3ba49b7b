"""The two worked examples of the README run as written for PyTorch, with only the import
changed, and print PyTorch's numbers."""

import subprocess
import sys

EXAMPLE = """
import fastgrad as torch
x = torch.tensor([2.0], requires_grad=True); y_true = torch.tensor([4.0])
loss = (x - y_true) ** 2; loss.backward()
print(x.grad.item())
x.data = x.data - 0.1 * x.grad.data
print(x.item())
W = torch.tensor([2.0], requires_grad=True); b = torch.tensor([1.0], requires_grad=True); x = torch.tensor([3.0])
loss = (W * x + b - 10) ** 2; loss.backward()
print(W.grad.item(), b.grad.item())
"""


def test_worked_examples_print_pytorchs_numbers(tmp_path):
    # cwd=tmp_path: `python -c` puts the working folder first on sys.path
    out = subprocess.run(
        [sys.executable, "-c", EXAMPLE], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["-4.0", "2.4000000953674316", "-18.0", "-6.0"]


def test_worked_examples_in_process():
    import fastgrad as torch

    x = torch.tensor([2.0], requires_grad=True)
    loss = (x - torch.tensor([4.0])) ** 2
    loss.backward()
    assert x.grad.item() == -4.0
    x.data = x.data - 0.1 * x.grad.data
    assert x.item() == float(__import__("numpy").float32(2.4))
