"""Alignment warm-start and fine-tuning with resumable checkpoints (docs/method.md#1-the-phenomenon, #4-fine-tuning).

The names below load on first use: the Snakefile reads ``rim.training.settings`` (no torch) when
it parses, and importing the trainer would import torch.
"""

import importlib

_EXPORTS = {
    "rim.data.sources": ("refusals_path",),
    "rim.training.examples": (
        "Example",
        "TokenizedExamples",
        "alignment_examples",
        "math_examples",
        "read_refusals",
        "split_validation",
        "tokenize_examples",
    ),
    "rim.training.settings": ("LoraSettings", "TrainerSettings", "trainer_settings"),
    "rim.training.trainer": ("Trainer", "TrainingResult", "prepare_for_training", "save_weights"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'rim.training' has no attribute {name!r}")
    return getattr(importlib.import_module(_MODULE_OF[name]), name)
