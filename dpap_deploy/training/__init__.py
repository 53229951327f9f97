"""Training with or without DPAP: the run (:mod:`.run`) and the loop (:mod:`.loop`)."""
from ..evaluation import evaluate, evaluate_outputs, model_output
from ..train_config import TrainConfig
from .loop import fit, history_row, loss_fn, train, train_epoch
from .run import (CHECKPOINT, HISTORY, Run, WindowForward, build_run, make_executor,
                  pruner_masks, resolve_device, restore_run, save_run, write_history)

__all__ = ["CHECKPOINT", "HISTORY", "Run", "TrainConfig", "WindowForward", "build_run",
           "evaluate", "evaluate_outputs", "fit", "history_row", "loss_fn", "make_executor",
           "model_output", "pruner_masks", "resolve_device", "restore_run", "save_run", "train",
           "train_epoch", "write_history"]
