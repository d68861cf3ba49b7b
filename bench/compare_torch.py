"""fastgrad against PyTorch on whole training steps and inference of LeNet-5 and CIFAR-small.

The benchmark lives in the package (fastgrad/benchmarks.py) so that an installed fastgrad
runs it too, as ``fastgrad bench --vs torch``. Options: ``--help``.
"""
import sys

from fastgrad.benchmarks import main

if __name__ == "__main__":
    sys.exit(main())
