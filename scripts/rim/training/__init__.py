"""Alignment warm-start and fine-tuning with resumable checkpoints (docs/method.md#1-the-phenomenon, #4-fine-tuning)."""

from rim.training.examples import (
    Example,
    TokenizedExamples,
    alignment_examples,
    math_examples,
    read_refusals,
    refusals_path,
    split_validation,
    tokenize_examples,
)
from rim.training.settings import LoraSettings, TrainerSettings, trainer_settings
from rim.training.trainer import Trainer, TrainingResult, prepare_for_training, save_weights

__all__ = [
    "Example",
    "LoraSettings",
    "TokenizedExamples",
    "Trainer",
    "TrainerSettings",
    "TrainingResult",
    "alignment_examples",
    "math_examples",
    "prepare_for_training",
    "read_refusals",
    "refusals_path",
    "save_weights",
    "split_validation",
    "tokenize_examples",
    "trainer_settings",
]
