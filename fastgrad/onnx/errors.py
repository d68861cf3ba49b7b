"""The errors of ONNX export (importable without the onnx package)."""


class UnsupportedOperatorError(RuntimeError):
    """An op of the recorded forward has no ONNX form (as torch.onnx's error of that name)."""


class Unsupported(Exception):
    """Raised by a mapping for a case it cannot express; export names the op and module."""
