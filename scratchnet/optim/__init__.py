"""scratchnet.optim: optimizers and learning-rate schedules, by torch.optim's names and rules."""
from . import lr_scheduler
from .adam import Adam, AdamW
from .optimizer import Optimizer
from .sgd import SGD
