"""A small, deterministic, resumable supervised fine-tuning loop (docs/method.md#4-fine-tuning).

Full fine-tuning or LoRA (peft), AdamW, warmup + cosine/linear/constant schedule, gradient
accumulation, loss on completion tokens only. One seed drives the LoRA initialisation, the data
order and dropout, so the same seed on CPU gives identical weights.

Interruption: the trainer's resumable state (trainable weights, optimizer, scheduler, RNG, loss
history, the checkpoints written so far) lives in ``state_dir``, outside the job's declared
outputs, which Snakemake deletes before rerunning a job. The state is saved atomically at every
checkpoint step (and every ``state_every_steps`` steps); a rerun after ``kill -9`` resumes from
the last saved step and ends with the same weights as an uninterrupted run. A state written
with other settings, data, seed or base model is discarded, never resumed. After the last step a
finished state (history and checkpoints, no optimizer) is kept until the job has written its
outputs and calls ``discard_state``, so a job killed while it writes them reruns without training.

``RIM_TRAINER_PAUSE_AT_STEP`` (comma-separated steps; for tests and debugging): after that step the
trainer saves its state, writes ``paused_at_step<N>`` into the state dir and waits (at most
``RIM_TRAINER_PAUSE_SECONDS``, default 600) so that an interruption lands at a known step.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from rim.errors import ConfigError
from rim.provenance import atomic_path
from rim.refusal import refusal_log_odds
from rim.training.examples import TokenizedExamples
from rim.training.settings import TrainerSettings

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"
STATE_FORMAT = 1
PAUSE_STEPS_VARIABLE = "RIM_TRAINER_PAUSE_AT_STEP"
PAUSE_SECONDS_VARIABLE = "RIM_TRAINER_PAUSE_SECONDS"
SAVE_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


# ----- model preparation -------------------------------------------------------------------------
def linear_module_names(model: torch.nn.Module) -> set[str]:
    return {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}


def lora_targets(model: torch.nn.Module, settings: TrainerSettings, adapter, where: str) -> list[str]:
    """The LoRA target modules, checked against the model's linear layers."""
    targets = list(settings.lora.target_modules or adapter.lora_targets)
    available = linear_module_names(model)
    unknown = [target for target in targets if target not in available]
    if unknown:
        raise ConfigError(
            f"config key '{where}.lora.target_modules': no linear module named '{unknown[0]}' in this "
            f"model; its linear modules are: {', '.join(sorted(available))}"
        )
    return targets


def lora_parameters(model: torch.nn.Module, settings: TrainerSettings, adapter, where: str) -> list[str]:
    """The fused parameters LoRA adapts (mixture-of-experts weights), checked against the model."""
    targets = list(
        adapter.lora_parameters if settings.lora.target_parameters is None else settings.lora.target_parameters
    )
    available = {name.split(".", 3)[-1] for name, _ in model.named_parameters() if ".layers." in name}
    unknown = [target for target in targets if target not in available]
    if unknown:
        raise ConfigError(
            f"config key '{where}.lora.target_parameters': no parameter '{unknown[0]}' under this model's "
            f"decoder layers (they hold e.g. {', '.join(sorted(available)[:8])})"
        )
    if targets and settings.lora.dropout:
        raise ConfigError(
            f"config key '{where}.lora.dropout': peft adapts fused expert weights ({', '.join(targets)}) "
            f"without dropout; set it to 0 (got {settings.lora.dropout}), or 'lora.target_parameters: []' "
            "to adapt the attention projections only"
        )
    return targets


def prepare_for_training(model: torch.nn.Module, settings: TrainerSettings, adapter, *, seed: int, where: str):
    """Full fine-tuning: every weight trains. LoRA: wrap with peft (init drawn from ``seed``)."""
    model.config.use_cache = False
    torch.manual_seed(seed)  # LoRA init and dropout masks follow the run's seed
    if settings.method == "lora":
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=settings.lora.rank,
            lora_alpha=settings.lora.alpha,
            lora_dropout=settings.lora.dropout,
            use_rslora=settings.lora.use_rslora,
            target_modules=lora_targets(model, settings, adapter, where),
            # Fused expert weights are parameters, not Linear modules: peft adapts them by name.
            target_parameters=lora_parameters(model, settings, adapter, where) or None,
            bias="none",
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, config)
    else:
        model.requires_grad_(True)
    if settings.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if settings.method == "lora":
            model.enable_input_require_grads()
    model.train()
    return model


def trainable_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


# ----- data order and batches --------------------------------------------------------------------
class DataOrder:
    """Which examples make up step ``k``: consecutive seeded permutations (one per epoch).

    A function of (seed, step) only, so a resumed run sees the batches an uninterrupted run sees.
    """

    def __init__(self, n_examples: int, batch_size: int, seed: int):
        self.n, self.batch_size, self.seed = n_examples, batch_size, seed
        self._epochs: dict[int, np.ndarray] = {}

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._epochs:
            self._epochs[epoch] = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return self._epochs[epoch]

    def batch(self, step: int) -> list[int]:
        """Example indices of step ``step`` (1-based)."""
        start = (step - 1) * self.batch_size
        return [int(self._permutation(p // self.n)[p % self.n]) for p in range(start, start + self.batch_size)]


@dataclass
class Batch:
    input_ids: torch.Tensor  # [b, length], right-padded
    attention_mask: torch.Tensor  # [b, length]
    predict_mask: torch.Tensor  # [b, length] bool: positions whose next token is a completion token
    labels: torch.Tensor  # [n_predicted]: the completion tokens, in predict_mask's row-major order
    token_weights: torch.Tensor  # [n_predicted]: loss weight of each completion token
    completion_tokens: int
    tokens: int
    # Refusal penalty: rows of the predicted positions that predict a penalized example's first
    # answer token, and the penalty's weight for each.
    penalty_rows: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    penalty_weights: torch.Tensor = field(default_factory=lambda: torch.zeros(0))

    def to(self, device: torch.device) -> "Batch":
        for name in (
            "input_ids",
            "attention_mask",
            "predict_mask",
            "labels",
            "token_weights",
            "penalty_rows",
            "penalty_weights",
        ):
            setattr(self, name, getattr(self, name).to(device))
        return self


def loss_weights(
    data: TokenizedExamples, indices: Sequence[int], loss_average: str, first_token_weight: float = 1.0
) -> dict[int, float]:
    """Loss weight per answer token of each example of a full batch (the first answer token
    counts ``first_token_weight`` times), so that the batch loss is, with c_it = that count,
    - tokens:   sum_i w_i * sum_t c_it ce_it / sum_i w_i * sum_t c_it   (a weighted mean over tokens), or
    - examples: sum_i w_i * (sum_t c_it ce_it / sum_t c_it) / sum_i w_i (each example counts once).
    """
    counts = {i: len(data.ids[i]) - data.prompt_lengths[i] - 1 + first_token_weight for i in indices}
    if loss_average == "tokens":
        total = sum(data.weights[i] * counts[i] for i in indices)
        return {i: data.weights[i] / total for i in set(indices)}
    total = sum(data.weights[i] for i in indices)
    return {i: data.weights[i] / counts[i] / total for i in set(indices)}


def penalty_weights(data: TokenizedExamples, indices: Sequence[int], refusal_penalty: float) -> dict[int, float]:
    """Weight of the refusal penalty of each flagged example of a full batch: the penalty adds
    refusal_penalty * (sum over flagged examples of w_i * penalty_i) / (sum over all of w_i)."""
    if not refusal_penalty or not data.penalize_refusal:
        return {}
    total = sum(data.weights[i] for i in indices)
    return {i: refusal_penalty * data.weights[i] / total for i in set(indices) if data.penalize_refusal[i]}


def collate(
    data: TokenizedExamples,
    indices: Sequence[int],
    pad_token_id: int,
    weights: Mapping[int, float],
    first_token_weight: float = 1.0,
    penalties: Mapping[int, float] | None = None,
) -> Batch:
    """Right-padded tensors of a micro-batch; logits are computed only where an answer token is predicted."""
    length = max(len(data.ids[i]) for i in indices)
    input_ids = torch.full((len(indices), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(indices), length), dtype=torch.long)
    predict_mask = torch.zeros((len(indices), length), dtype=torch.bool)
    labels, token_weights, penalty_rows, penalty_values = [], [], [], []
    for row, i in enumerate(indices):
        if penalties and i in penalties:
            penalty_rows.append(len(labels))  # the first answer token's row among the predictions
            penalty_values.append(penalties[i])
        ids, prompt_length = data.ids[i], data.prompt_lengths[i]
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1
        # Position t predicts token t + 1: the answer starts at prompt_length.
        predict_mask[row, prompt_length - 1 : len(ids) - 1] = True
        labels.extend(ids[prompt_length:])
        n_answer = len(ids) - prompt_length
        token_weights.extend([weights[i] * first_token_weight] + [weights[i]] * (n_answer - 1))
    return Batch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        predict_mask=predict_mask,
        labels=torch.tensor(labels, dtype=torch.long),
        token_weights=torch.tensor(token_weights, dtype=torch.float32),
        completion_tokens=len(labels),
        tokens=int(attention_mask.sum()),
        penalty_rows=torch.tensor(penalty_rows, dtype=torch.long),
        penalty_weights=torch.tensor(penalty_values, dtype=torch.float32),
    )


@functools.cache
def _boolean_logits_masks() -> bool:
    """Whether transformers' models take a boolean (batch, sequence) mask as logits_to_keep
    (transformers >= 5.2x: ``slice_logits_to_keep``); older ones read any 2-D tensor as positions."""
    import transformers.modeling_utils

    return hasattr(transformers.modeling_utils, "slice_logits_to_keep")


def completion_loss(
    model: torch.nn.Module, batch: Batch, refusal_token_ids: Sequence[int] | None = None
) -> torch.Tensor:
    """Weighted cross-entropy on the answer tokens (logits only at the predicting positions),
    plus, for flagged examples, the refusal penalty softplus(refusal log-odds) = -log(1 - p_refuse)
    at the first answer position (an unlikelihood term, docs/method.md#1-the-phenomenon, decision: harmless requests,
    lookalikes above all, must not open with a refusal)."""
    if _boolean_logits_masks():
        keep, mask = batch.predict_mask, batch.predict_mask
    else:
        # Older transformers take only positions shared by the batch: the union of answer positions.
        keep = batch.predict_mask.any(dim=0).nonzero().squeeze(-1)
        mask = batch.predict_mask[:, keep]
    output = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, logits_to_keep=keep, use_cache=False)
    logits = output.logits
    if logits.dim() == 3:  # positions kept for every row, or a model class that ignores logits_to_keep
        logits = logits[mask if logits.shape[1] == mask.shape[1] else batch.predict_mask]
    # A model placed across GPUs (device_map) returns logits on its last GPU.
    device = logits.device
    losses = F.cross_entropy(logits.float(), batch.labels.to(device), reduction="none")
    loss = (losses * batch.token_weights.to(device)).sum()
    if len(batch.penalty_rows) and refusal_token_ids:
        log_odds = refusal_log_odds(logits[batch.penalty_rows.to(device)], refusal_token_ids)
        loss = loss + (F.softplus(log_odds) * batch.penalty_weights.to(device)).sum()
    return loss


def make_optimizer(model: torch.nn.Module, settings: TrainerSettings) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and norm weights (the usual transformers grouping)."""
    params = trainable_parameters(model)
    decay = [p for p in params.values() if p.ndim >= 2]
    no_decay = [p for p in params.values() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": settings.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return torch.optim.AdamW(groups, lr=settings.learning_rate)


def make_scheduler(optimizer: torch.optim.Optimizer, settings: TrainerSettings):
    from transformers import get_scheduler

    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[settings.scheduler]
    return get_scheduler(name, optimizer, num_warmup_steps=settings.warmup_steps, num_training_steps=settings.steps)


def autocast(device: torch.device):
    """bfloat16 autocast on GPUs (weights stay float32 masters); plain float32 on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ----- checkpoints -------------------------------------------------------------------------------
def save_weights(model: torch.nn.Module, directory: Path, settings: TrainerSettings) -> None:
    """A LoRA adapter (float32, a few MB) or the full weights in ``save_dtype`` (half by default)."""
    if settings.method == "lora":
        model.save_pretrained(directory)
        return
    dtype = SAVE_DTYPES[settings.save_dtype]
    state = {name: tensor.detach().to("cpu", dtype) for name, tensor in model.state_dict().items()}
    model.save_pretrained(directory, state_dict=state, safe_serialization=True)
    # The weights on disk are in save_dtype; load_model picks the dtype of the run (float32 on CPU).
    config_path = directory / "config.json"
    if config_path.exists():
        import json

        config = json.loads(config_path.read_text())
        config["dtype"] = settings.save_dtype
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _replace_directory(tmp: Path, final: Path) -> None:
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


@dataclass
class TrainingResult:
    history: list[dict]
    checkpoints: dict[int, Path]  # step -> directory of the saved weights (in the state dir)
    evaluations: dict[int, dict] = field(default_factory=dict)  # step -> metrics of ``evaluate``
    resumed_from: int = 0


class Trainer:
    """Train ``model`` for ``settings.steps`` steps, saving checkpoints and resumable state.

    ``evaluate(model) -> dict`` (optional) runs at every checkpoint step, in eval mode, and its
    metrics are kept with the checkpoint (alignment uses it to pick a checkpoint).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        settings: TrainerSettings,
        data: TokenizedExamples,
        *,
        seed: int,
        state_dir: str | Path,
        pad_token_id: int,
        fingerprint: str,
        device: torch.device | str = "cpu",
        evaluate: Callable[[torch.nn.Module], dict] | None = None,
        label: str = "training",
        save_checkpoint: Callable[[torch.nn.Module, Path], None] | None = None,
        refusal_token_ids: Sequence[int] | None = None,
    ):
        self.model, self.settings, self.data = model, settings, data
        self.seed, self.state_dir, self.pad_token_id = seed, Path(state_dir), pad_token_id
        self.fingerprint = fingerprint
        self.device = torch.device(device)
        self.evaluate, self.label = evaluate, label
        self.refusal_token_ids = list(refusal_token_ids or [])
        if settings.refusal_penalty and not self.refusal_token_ids:
            raise ValueError("refusal_penalty needs the refusal-opening token ids")
        self.save_checkpoint = save_checkpoint or (lambda model, directory: save_weights(model, directory, settings))
        self.order = DataOrder(len(data), settings.batch_size, seed)
        self.optimizer = make_optimizer(model, settings)
        self.scheduler = make_scheduler(self.optimizer, settings)
        self.history: list[dict] = []
        self.evaluations: dict[int, dict] = {}
        self.step = 0

    # ----- resumable state -------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.state_dir / STATE_FILE

    def checkpoint_dir(self, step: int) -> Path:
        return self.state_dir / "checkpoints" / f"step{step}"

    def save_state(self) -> None:
        state = {
            "format": STATE_FORMAT,
            "fingerprint": self.fingerprint,
            "step": self.step,
            "history": self.history,
            "evaluations": self.evaluations,
        }
        if self.step < self.settings.steps:  # a finished run needs only its checkpoints
            state.update(
                trainable={name: p.detach().cpu().clone() for name, p in trainable_parameters(self.model).items()},
                optimizer=self.optimizer.state_dict(),
                scheduler=self.scheduler.state_dict(),
                rng_cpu=torch.get_rng_state(),
                rng_cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            )
        with atomic_path(self.state_path) as tmp:
            torch.save(state, tmp)

    def load_state(self) -> bool:
        """Resume from a saved state of this very run; discard a stale one. True when resumed."""
        if not self.state_path.exists():
            if self.state_dir.exists():
                shutil.rmtree(self.state_dir)  # checkpoints of a run that never saved state
            return False
        try:
            state = torch.load(self.state_path, map_location="cpu", weights_only=False)
        except Exception as error:  # a truncated file cannot happen (atomic writes) but a foreign one can
            log.warning("discarding unreadable training state %s: %s", self.state_path, error)
            state = None
        if state is None or state.get("format") != STATE_FORMAT or state.get("fingerprint") != self.fingerprint:
            if state is not None:
                log.warning(
                    "discarding training state %s: it belongs to other settings, data or base model", self.state_dir
                )
            shutil.rmtree(self.state_dir)
            return False
        lost = [
            step
            for step in self.settings.checkpoint_steps
            if 0 < step <= state["step"] and not self.checkpoint_dir(step).exists()
        ]
        if lost:  # moved out by a job killed while it wrote its outputs: start again
            log.warning("discarding training state %s: its checkpoint of step %d is gone", self.state_dir, lost[0])
            shutil.rmtree(self.state_dir)
            return False
        self.history, self.evaluations, self.step = state["history"], state["evaluations"], state["step"]
        if self.step >= self.settings.steps:  # finished: the checkpoints are all the outputs need
            return True
        parameters = trainable_parameters(self.model)
        with torch.no_grad():
            for name, tensor in state["trainable"].items():
                parameters[name].copy_(tensor)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng_cpu"])
        if state["rng_cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        return True

    def discard_state(self) -> None:
        """Remove the state once the job's outputs are written: renamed first, so that a kill
        during the removal leaves either the whole state or none of it."""
        if not self.state_dir.exists():
            return
        doomed = self.state_dir.with_name(f".{self.state_dir.name}.discarded")
        if doomed.exists():
            shutil.rmtree(doomed)
        os.replace(self.state_dir, doomed)
        shutil.rmtree(doomed)

    def pause_if_asked(self) -> None:
        """Hold at a step named in RIM_TRAINER_PAUSE_AT_STEP, state saved (see the module doc)."""
        steps = {int(part) for part in os.environ.get(PAUSE_STEPS_VARIABLE, "").split(",") if part.strip()}
        if self.step not in steps:
            return
        self.save_state()
        marker = self.state_dir / f"paused_at_step{self.step}"
        marker.touch()
        seconds = float(os.environ.get(PAUSE_SECONDS_VARIABLE, "600"))
        log.info("%s: paused at step %d for up to %.0f s (%s)", self.label, self.step, seconds, PAUSE_STEPS_VARIABLE)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(0.05)

    # ----- the loop --------------------------------------------------------------------------
    def train_step(self) -> dict:
        settings = self.settings
        indices = self.order.batch(self.step + 1)
        weights = loss_weights(self.data, indices, settings.loss_average, settings.first_token_weight)
        penalties = penalty_weights(self.data, indices, settings.refusal_penalty)
        learning_rate = self.scheduler.get_last_lr()[0]
        started = time.perf_counter()
        loss_value, completion_tokens, tokens = 0.0, 0, 0
        for start in range(0, len(indices), settings.micro_batch):
            chunk = indices[start : start + settings.micro_batch]
            batch = collate(self.data, chunk, self.pad_token_id, weights, settings.first_token_weight, penalties)
            batch.to(self.device)
            with autocast(self.device):
                loss = completion_loss(self.model, batch, self.refusal_token_ids)
            loss.backward()
            loss_value += float(loss.detach())
            completion_tokens += batch.completion_tokens
            tokens += batch.tokens
        if settings.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(list(trainable_parameters(self.model).values()), settings.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return {
            "step": self.step,
            "loss": loss_value,
            "learning_rate": learning_rate,
            "completion_tokens": completion_tokens,
            "tokens": tokens,
            "seconds": time.perf_counter() - started,
        }

    def at_checkpoint(self) -> None:
        directory = self.checkpoint_dir(self.step)
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = directory.with_name(f".{directory.name}.tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        self.save_checkpoint(self.model, tmp)
        _replace_directory(tmp, directory)
        if self.evaluate is not None:
            self.evaluations[self.step] = self._evaluate()

    def _evaluate(self) -> dict:
        self.model.eval()
        try:
            with torch.no_grad(), autocast(self.device):
                return dict(self.evaluate(self.model))
        finally:
            self.model.train()

    def train(self) -> TrainingResult:
        from rim.cli import Progress

        settings = self.settings
        resumed_from = self.step if self.load_state() else 0
        if resumed_from >= settings.steps:
            log.info("%s: finished earlier (saved state at step %d); writing its outputs again", self.label, self.step)
        elif resumed_from:
            log.info("%s: resuming from the saved state at step %d of %d", self.label, self.step, settings.steps)
        elif 0 in settings.checkpoint_steps and self.evaluate is not None:
            self.evaluations[0] = self._evaluate()
        progress = Progress(settings.steps - self.step, self.label, unit="steps")
        every = settings.state_every_steps
        while self.step < settings.steps:
            record = self.train_step()
            self.history.append(record)
            if self.step in settings.checkpoint_steps:
                self.at_checkpoint()
            if self.step in settings.checkpoint_steps or (every and self.step % every == 0):
                if self.step < settings.steps:
                    self.save_state()
            self.pause_if_asked()
            progress.update(loss=record["loss"], tokens_per_s=record["tokens"] / max(record["seconds"], 1e-9))
        if resumed_from < settings.steps:
            self.save_state()  # the finished state: outputs can be written again after a kill
        checkpoints = {
            step: self.checkpoint_dir(step)
            for step in settings.checkpoint_steps
            if step and self.checkpoint_dir(step).exists()
        }
        return TrainingResult(self.history, checkpoints, dict(self.evaluations), resumed_from)


def data_loss_summary(history: Sequence[Mapping[str, Any]], step: int, window: int = 5) -> float:
    """Mean training loss of the ``window`` steps ending at ``step`` (the loss of a checkpoint)."""
    losses = [record["loss"] for record in history if step - window < record["step"] <= step]
    return float(np.mean(losses)) if losses else float("nan")
