"""Merge a saved LoRA adapter into a model already in memory, without peft.

A fine-tuning checkpoint is a LoRA adapter over the aligned base (docs/method.md#4-fine-tuning).
Every job that reads a checkpoint merges it once at load time, so that hooks see plain Linear
modules. peft does this too, but importing it and wrapping the model costs ~3 s per job on the
default CPU run (84 checkpoint jobs for results/ras.parquet), more than the merge itself.

For each adapted Linear, ``W += (B @ A) * scaling`` with ``scaling = alpha / r`` (rsLoRA:
``alpha / sqrt(r)``), computed in float32 and added in place: the operations peft's
``merge_and_unload`` runs, in the same order, so the merged weights are identical to peft's
(tests/test_lora_merge.py). Adapters that use a feature this merge does not implement (DoRA,
LoRA biases, fan-in/fan-out layout, embeddings, trainable extra modules, fused expert parameters,
per-module rank or alpha patterns)
return ``False`` from ``merge_lora`` and are left to peft by the caller.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# peft's saved key: base_model.model.<module path>.lora_A.weight (the adapter name is dropped).
KEY_PREFIX = "base_model.model."
# Settings under which the merge is more than W += (B @ A) * scaling: left to peft.
UNSUPPORTED = {
    "use_dora": False,
    "lora_bias": False,
    "fan_in_fan_out": False,
    "modules_to_save": None,
    "target_parameters": None,
    "layer_replication": None,
    "trainable_token_indices": None,
    "rank_pattern": {},  # peft matches these by regular expression: left to it
    "alpha_pattern": {},
}


def read_adapter_config(adapter_dir: str | Path) -> dict:
    return json.loads((Path(adapter_dir) / ADAPTER_CONFIG).read_text())


def supported(config: dict, adapter_dir: str | Path) -> bool:
    """True when merging is a plain ``W += (B @ A) * scaling`` for every adapted module."""
    if config.get("peft_type", "LORA") != "LORA" or config.get("bias", "none") != "none":
        return False
    if any(config.get(key) not in (default, None, [], {}) for key, default in UNSUPPORTED.items()):
        return False
    return (Path(adapter_dir) / ADAPTER_WEIGHTS).exists()


def scaling(config: dict) -> float:
    """alpha / r, or alpha / sqrt(r) for rsLoRA."""
    rank, alpha = config["r"], config["lora_alpha"]
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


def merge_lora(model: torch.nn.Module, adapter_dir: str | Path) -> bool:
    """Merge the adapter in ``adapter_dir`` into ``model``'s weights in place.

    Returns False (model untouched) when the adapter needs peft; raises ValueError when the
    adapter names a module the model lacks or its shapes do not fit.
    """
    from safetensors.torch import load_file

    config = read_adapter_config(adapter_dir)
    if not supported(config, adapter_dir):
        return False
    tensors = load_file(str(Path(adapter_dir) / ADAPTER_WEIGHTS))
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        if not key.startswith(KEY_PREFIX) or not key.endswith((".lora_A.weight", ".lora_B.weight")):
            return False  # an entry this merge does not know (embedding LoRA, extra modules)
        module, which = key[len(KEY_PREFIX) :].rsplit(".", 2)[:2]
        pairs.setdefault(module, {})[which] = tensor
    factor = scaling(config)
    modules = dict(model.named_modules())
    for name in pairs:
        if name not in modules:
            raise ValueError(f"{adapter_dir}: the adapter adapts module {name}, which the model does not have")
        if not isinstance(modules[name], torch.nn.Linear):
            return False
    with torch.no_grad():
        for name, pair in sorted(pairs.items()):
            if set(pair) != {"lora_A", "lora_B"}:
                raise ValueError(f"{adapter_dir}: module {name} lacks lora_A or lora_B")
            weight = modules[name].weight
            # float32 like peft's adapter weights (it upcasts half-precision adapters), on the
            # weight's device; the in-place add casts back to the weight's dtype.
            lora_a = pair["lora_A"].to(device=weight.device, dtype=torch.float32)
            lora_b = pair["lora_B"].to(device=weight.device, dtype=torch.float32)
            delta = (lora_b @ lora_a) * factor
            if delta.shape != weight.shape:
                raise ValueError(
                    f"{adapter_dir}: LoRA of {name} has shape {tuple(delta.shape)}, weight {tuple(weight.shape)}"
                )
            weight.data += delta
    return True
