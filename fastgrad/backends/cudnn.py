"""``torch.backends.cudnn``: fastgrad has no cuDNN. ``deterministic``, ``benchmark``,
``enabled`` and ``allow_tf32`` are settable module attributes with PyTorch's defaults,
so ``torch.backends.cudnn.benchmark = True`` runs unchanged."""

enabled = True
benchmark = False
deterministic = False
allow_tf32 = True


def is_available():
    return False


def version():
    return None
