"""``fastgrad.Generator``, as ``torch.Generator``: a seedable source of random numbers that
``random_split``, ``DataLoader`` and the random transforms take as ``generator=``, so a
split or a shuffle can be reproduced without touching the global seed.

It wraps a numpy Generator (PCG64). The numbers differ from PyTorch's (a different
algorithm), but the contract is PyTorch's: the same seed gives the same split and the
same shuffled order, run after run.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from .._device import CPU, as_cpu, device
from .._typing import DeviceLike

# torch.Generator().initial_seed() before any manual_seed: a fixed default, so an unseeded
# Generator is reproducible too.
DEFAULT_SEED = 67280421310721
_MASK = (1 << 64) - 1


class Generator:
    def __init__(self, device: DeviceLike = "cpu") -> None:
        as_cpu(device, "Generator")
        self._seed = DEFAULT_SEED
        self._rng = np.random.default_rng(DEFAULT_SEED)

    @property
    def device(self) -> device:
        return CPU

    def manual_seed(self, seed: int) -> Generator:
        """Reseed; returns this generator (so ``Generator().manual_seed(42)`` chains)."""
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise TypeError(f"manual_seed expected an int, got {type(seed).__name__}")
        self._seed = int(seed) & _MASK
        self._rng = np.random.default_rng(self._seed)
        return self

    def seed(self) -> int:
        """Reseed from the operating system's entropy; returns the new seed."""
        self.manual_seed(int.from_bytes(os.urandom(8), "little"))
        return self._seed

    def initial_seed(self) -> int:
        return self._seed

    def get_state(self) -> dict[str, Any]:
        """The state, to restore with ``set_state`` (a dict here, where PyTorch returns a
        byte tensor)."""
        return {"seed": self._seed, "bit_generator": self._rng.bit_generator.state}

    def set_state(self, new_state: dict[str, Any]) -> Generator:
        if not isinstance(new_state, dict) or set(new_state) != {"seed", "bit_generator"}:
            raise TypeError("set_state expects a state returned by Generator.get_state()")
        rng = np.random.default_rng()
        rng.bit_generator.state = new_state["bit_generator"]
        self._seed, self._rng = int(new_state["seed"]), rng
        return self

    @property
    def numpy(self) -> np.random.Generator:
        """The numpy Generator that draws the numbers."""
        return self._rng

    def __getattr__(self, name: str) -> Any:
        # The numpy Generator's methods (uniform, normal, permutation, ...), so that every
        # fastgrad function taking a numpy Generator as ``generator=`` takes this one too.
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._rng, name)

    def __repr__(self) -> str:
        return f"<fastgrad.Generator seed={self._seed}>"


def numpy_rng(
    generator: Generator | np.random.Generator | None, default: Callable[[], np.random.Generator]
) -> np.random.Generator:
    """The numpy Generator behind ``generator``: a fastgrad Generator, a numpy Generator,
    or None for ``default()``."""
    if generator is None:
        return default()
    if isinstance(generator, Generator):
        return generator.numpy
    if isinstance(generator, np.random.Generator):
        return generator
    raise TypeError(f"generator must be a fastgrad.Generator (or a numpy Generator), got {type(generator).__name__}")
