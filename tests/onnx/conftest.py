"""The ONNX tests import their networks (onnx_nets.py) by name: with pytest's importlib
import mode, this directory is put on sys.path here."""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
