"""fastgrad against PyTorch on whole training steps and inference of LeNet-5 and CIFAR-small.

The benchmark lives in the package (fastgrad/benchmarks.py) so that an installed fastgrad
runs it too, as ``fastgrad bench --vs torch``. Options: ``--help``; ``--memory`` compares
peak resident memory instead of speed, ``--sweep --plot docs/batch_sweep.png`` plots
images/s against batch size.
"""

import sys

try:
    from fastgrad.benchmarks import main
except ImportError as exc:  # the bench scripts use the installed fastgrad
    sys.exit(
        f"compare_torch.py: cannot import fastgrad ({exc}); install it (pip install .) "
        "or run from the repository root with PYTHONPATH=. for an in-place build"
    )

if __name__ == "__main__":
    sys.exit(main())
