"""``torch.accelerator``: fastgrad has none, so scripts that pick
``torch.accelerator.current_accelerator()`` when one is available fall back to the CPU."""


def is_available():
    return False


def device_count():
    return 0


def current_accelerator(check_available=False):
    return None
