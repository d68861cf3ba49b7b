"""Training: the Trainer (batch, stochastic and mini-batch gradient descent), its
History, and callbacks (EarlyStopping, ModelCheckpoint, LRScheduler, StopOnInterrupt)."""

from .callbacks import Callback, EarlyStopping, LambdaCallback, LRScheduler, ModelCheckpoint, StopOnInterrupt
from .history import History
from .trainer import MODES, NonFiniteLossError, Trainer, as_dataset

__all__ = [
    "Callback",
    "EarlyStopping",
    "History",
    "LambdaCallback",
    "LRScheduler",
    "MODES",
    "ModelCheckpoint",
    "NonFiniteLossError",
    "StopOnInterrupt",
    "Trainer",
    "as_dataset",
]
