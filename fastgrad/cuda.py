"""``torch.cuda`` for scripts that ask: fastgrad has no CUDA backend, so nothing is
available, there are no devices, and seeding is a no-op (as ``torch.cuda.manual_seed``
is on a machine without a GPU). Anything that needs a GPU raises the CPU-only error."""

from ._device import cpu_only_error


def is_available():
    return False


def device_count():
    return 0


def is_initialized():
    return False


def manual_seed(seed):
    """No-op: there is no CUDA generator to seed."""


def manual_seed_all(seed):
    """No-op: there is no CUDA generator to seed."""


def current_device():
    raise cpu_only_error("fastgrad.cuda.current_device")


def set_device(device):
    raise cpu_only_error("fastgrad.cuda.set_device")


def synchronize(device=None):
    raise cpu_only_error("fastgrad.cuda.synchronize")


def empty_cache():
    """No-op: there is no CUDA memory to free."""
