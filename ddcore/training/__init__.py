"""Classifier training shared by every classifier plugin: the loop, the batch plan, the images."""

from ddcore.training.info import ClassifierInfo, read_info, write_info
from ddcore.training.loop import (CHECKPOINT, TrainableModel, TrainingOptions, eval_transform, predict_scores,
                                  remove_checkpoint, train, warmup_cosine, workers)

__all__ = ["CHECKPOINT", "ClassifierInfo", "TrainableModel", "TrainingOptions", "eval_transform", "predict_scores",
           "read_info", "remove_checkpoint", "train", "warmup_cosine", "workers", "write_info"]
