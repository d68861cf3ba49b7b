"""fastgrad.optim: optimizers that update parameters in place with one compiled call per
parameter group (SGD, Adam, AdamW, RMSprop), and learning-rate schedulers."""

from . import lr_scheduler
from .adadelta import Adadelta
from .adagrad import Adagrad
from .adam import Adam, AdamW
from .optimizer import Optimizer, required
from .rmsprop import RMSprop
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "lr_scheduler", "required"]
__all__ += ["Adadelta", "Adagrad"]
