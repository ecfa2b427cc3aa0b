"""Training: optimisers, schedules, the epoch loop with a checkpoint schedule, and checkpoints."""

from netgeom.training.checkpoints import list_checkpoints, load_checkpoint, save_checkpoint
from netgeom.training.loop import TrainingHooks, TrainResult, evaluate, train

__all__ = ["TrainResult", "TrainingHooks", "evaluate", "list_checkpoints", "load_checkpoint", "save_checkpoint", "train"]
