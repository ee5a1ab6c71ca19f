"""Trainer settings from a config block (``models.<m>.finetuning`` or ``models.<m>.alignment``).

The schema (workflow/schemas/finetuning.schema.yaml, alignment.schema.yaml, lora.schema.yaml)
documents every key and fills the defaults; this module turns a validated block into a frozen
``TrainerSettings`` and adds the checks the schema cannot express (checkpoint steps beyond the
run, a micro-batch that does not divide the batch), each naming the key at fault.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

from rim.errors import ConfigError

METHODS = ("full", "lora")
SCHEDULERS = ("cosine", "linear", "constant")
LOSS_AVERAGES = ("tokens", "examples")
SAVE_DTYPES = ("float16", "bfloat16", "float32")


@dataclass(frozen=True)
class LoraSettings:
    """LoRA of docs/method.md#4-fine-tuning: rank 32, alpha 64, rsLoRA, dropout 0, attention + MLP projections."""

    rank: int = 32
    alpha: float = 64.0
    dropout: float = 0.0
    use_rslora: bool = True
    # None: the family adapter's attention and MLP projections (FamilyAdapter.lora_targets).
    target_modules: tuple[str, ...] | None = None
    # None: the family adapter's fused expert weights (FamilyAdapter.lora_parameters).
    target_parameters: tuple[str, ...] | None = None


@dataclass(frozen=True)
class TrainerSettings:
    method: str = "lora"
    learning_rate: float = 1e-5
    batch_size: int = 32
    micro_batch_size: int | None = None
    steps: int = 700
    checkpoint_steps: tuple[int, ...] = ()
    scheduler: str = "cosine"
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float | None = 1.0
    max_length: int = 1024
    loss_average: str = "tokens"
    first_token_weight: float = 1.0
    refusal_penalty: float = 0.0
    save_dtype: str = "float16"
    state_every_steps: int = 0
    gradient_checkpointing: bool = False
    lora: LoraSettings = field(default_factory=LoraSettings)

    @property
    def micro_batch(self) -> int:
        return self.micro_batch_size or self.batch_size

    @property
    def warmup_steps(self) -> int:
        return int(round(self.warmup_ratio * self.steps))

    def fingerprint(self) -> str:
        """Hash of every setting that changes the trained weights (a stale resumable state is discarded)."""
        record = asdict(self)
        # When state is saved and whether activations are recomputed do not change the weights.
        record.pop("state_every_steps")
        record.pop("gradient_checkpointing")
        return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]


TRAINER_KEYS = {name for name in TrainerSettings.__dataclass_fields__} - {"lora"}


def _choice(value: Any, allowed: Sequence[str], key: str) -> str:
    if value not in allowed:
        raise ConfigError(f"config key '{key}': {value!r} is not one of {', '.join(allowed)}")
    return value


def _positive_int(value: Any, key: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"config key '{key}': must be an integer >= {minimum}, got {value!r}")
    return value


def _positive_number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"config key '{key}': must be a number > 0, got {value!r}")
    return float(value)


def _non_negative(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ConfigError(f"config key '{key}': must be a number >= 0, got {value!r}")
    return float(value)


def lora_settings(block: Mapping | None, where: str) -> LoraSettings:
    block = dict(block or {})
    unknown = set(block) - set(LoraSettings.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"config key '{where}.{sorted(unknown)[0]}' is not a LoRA setting")
    targets = block.get("target_modules")
    if targets is not None:
        if not targets:
            raise ConfigError(
                f"config key '{where}.target_modules': name at least one module (or null for the family's)"
            )
        targets = tuple(str(t) for t in targets)
    parameters = block.get("target_parameters")
    if parameters is not None:
        parameters = tuple(str(p) for p in parameters)
    rank = _positive_int(block.get("rank", 32), f"{where}.rank")
    dropout = float(block.get("dropout", 0.0))
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"config key '{where}.dropout': must be in [0, 1), got {dropout}")
    return LoraSettings(
        rank=rank,
        alpha=float(block.get("alpha", 64.0)),
        dropout=dropout,
        use_rslora=bool(block.get("use_rslora", True)),
        target_modules=targets,
        target_parameters=parameters,
    )


def trainer_settings(block: Mapping, where: str, *, require_checkpoints: bool = True) -> TrainerSettings:
    """Build and check ``TrainerSettings`` from a config block; ``where`` is its key path.

    ``require_checkpoints``: fine-tuning needs step 0 and at least one later step in
    ``checkpoint_steps``; alignment keeps only the final (or selected) model.
    """
    values = {key: block[key] for key in TRAINER_KEYS if key in block}
    method = _choice(values.get("method", "lora"), METHODS, f"{where}.method")
    steps = _positive_int(values.get("steps", 700), f"{where}.steps")
    batch_size = _positive_int(values.get("batch_size", 32), f"{where}.batch_size")
    micro = values.get("micro_batch_size")
    if micro is not None:
        micro = _positive_int(micro, f"{where}.micro_batch_size")
        if batch_size % micro:
            raise ConfigError(f"config key '{where}.micro_batch_size': {micro} does not divide batch_size {batch_size}")
    learning_rate = float(values.get("learning_rate", 1e-5))
    if not learning_rate > 0:
        raise ConfigError(f"config key '{where}.learning_rate': must be > 0, got {learning_rate}")
    warmup_ratio = float(values.get("warmup_ratio", 0.1))
    if not 0.0 <= warmup_ratio < 1.0:
        raise ConfigError(f"config key '{where}.warmup_ratio': must be in [0, 1), got {warmup_ratio}")
    checkpoint_steps = tuple(sorted({int(s) for s in values.get("checkpoint_steps", ()) or ()}))
    beyond = [s for s in checkpoint_steps if s > steps or s < 0]
    if beyond:
        raise ConfigError(
            f"config key '{where}.checkpoint_steps': step {beyond[0]} is outside the run (0..{steps} = {where}.steps)"
        )
    if require_checkpoints and (0 not in checkpoint_steps or len(checkpoint_steps) < 2):
        raise ConfigError(
            f"config key '{where}.checkpoint_steps': must list step 0 (the base model) and at least one "
            f"later step, got {list(checkpoint_steps)}"
        )
    max_grad_norm = values.get("max_grad_norm", 1.0)
    return TrainerSettings(
        method=method,
        learning_rate=learning_rate,
        batch_size=batch_size,
        micro_batch_size=micro,
        steps=steps,
        checkpoint_steps=checkpoint_steps,
        scheduler=_choice(values.get("scheduler", "cosine"), SCHEDULERS, f"{where}.scheduler"),
        warmup_ratio=warmup_ratio,
        weight_decay=float(values.get("weight_decay", 0.01)),
        max_grad_norm=None if max_grad_norm is None else float(max_grad_norm),
        max_length=_positive_int(values.get("max_length", 1024), f"{where}.max_length", minimum=8),
        refusal_penalty=_non_negative(values.get("refusal_penalty", 0.0), f"{where}.refusal_penalty"),
        first_token_weight=_positive_number(values.get("first_token_weight", 1.0), f"{where}.first_token_weight"),
        loss_average=_choice(values.get("loss_average", "tokens"), LOSS_AVERAGES, f"{where}.loss_average"),
        save_dtype=_choice(values.get("save_dtype", "float16"), SAVE_DTYPES, f"{where}.save_dtype"),
        state_every_steps=_positive_int(values.get("state_every_steps", 0), f"{where}.state_every_steps", minimum=0),
        gradient_checkpointing=bool(values.get("gradient_checkpointing", False)),
        lora=lora_settings(block.get("lora"), f"{where}.lora"),
    )


def check_training_config(config: Mapping) -> None:
    """Cross-block checks of a validated config: the datasets the alignment and the runs name
    exist and have the right kind, and each model's trainer settings are consistent."""
    datasets = config.get("datasets", {})

    def dataset(name: str, kind: str, key: str) -> None:
        if name not in datasets:
            raise ConfigError(f"config key '{key}': dataset '{name}' is not defined under 'datasets'")
        if datasets[name].get("kind", "prompts") != kind:
            raise ConfigError(
                f"config key '{key}': dataset '{name}' is of kind {datasets[name].get('kind')}, not {kind}"
            )

    for name, entry in config.get("models", {}).items():
        alignment = entry.get("alignment") or {}
        if alignment.get("enabled"):
            where = f"models.{name}.alignment"
            dataset(alignment["harmful"], "prompts", f"{where}.harmful")
            dataset(alignment["harmless"], "prompts", f"{where}.harmless")
            settings = trainer_settings(alignment, where, require_checkpoints=False)
            late = [s for s in alignment.get("checkpoint_steps") or [] if s > settings.steps]
            if late:
                raise ConfigError(
                    f"config key '{where}.checkpoint_steps': step {late[0]} is beyond {where}.steps = {settings.steps}"
                )
        if config.get("training", {}).get("runs"):
            trainer_settings(entry.get("finetuning") or {}, f"models.{name}.finetuning")
    for run, block in config.get("training", {}).get("runs", {}).items():
        dataset(block["dataset"], "math", f"training.runs.{run}.dataset")
