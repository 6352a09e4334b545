"""Training: the Trainer, optimizers and schedules, callbacks, checkpoints and run directories."""

from cnnkit.train.callbacks import BestCheckpoint, Callback, EarlyStopping, LambdaCallback
from cnnkit.train.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from cnnkit.train.optim import OPTIMIZERS, SCHEDULES, make_optimizer, make_schedule
from cnnkit.train.rundir import RunDir
from cnnkit.train.trainer import NonFiniteLossError, Trainer, seed_everything

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "BestCheckpoint",
    "Callback",
    "EarlyStopping",
    "LambdaCallback",
    "NonFiniteLossError",
    "RunDir",
    "Trainer",
    "load_checkpoint",
    "make_optimizer",
    "make_schedule",
    "read_checkpoint",
    "save_checkpoint",
    "seed_everything",
]
