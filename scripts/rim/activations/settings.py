"""Settings of a dump, its input sets and their tokenised examples (docs/method.md#6-safety-neurons-and-ras)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator, Mapping, Sequence

import h5py
import numpy as np

from rim.errors import ConfigError, DataError


if TYPE_CHECKING:
    from rim.prompts import PromptMode

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: neurons_prompt, @base_responses groups, kl_positions answer
SITES = ("mlp_intermediate", "mlp_gate_activation")
POOLINGS = ("max", "mean", "last")
POOLED_TOKENS = ("prompt_and_response", "user_and_response", "response")
KL_POSITIONS = ("answer", "prompt", "last")
# Whose response follows the prompt in an input set: the checkpoint's own (the paper's way) or the
# base model's, teacher-forced into every checkpoint (the fixed-token variant).
RESPONSES = ("own", "base")
BASE_RESPONSES_SUFFIX = "@base_responses"
NEURON_DTYPES = ("float16", "float32")
FLOAT16_MAX = float(np.finfo(np.float16).max)
STRING = h5py.string_dtype(encoding="utf-8")


@dataclass(frozen=True)
class DumpSettings:
    """How activations are read and stored (config block ``activations``)."""

    site: str = "mlp_intermediate"
    pooling: str = "max"
    tokens: str = "user_and_response"
    neuron_dtype: str = "float16"
    residual_positions: tuple[str, ...] = ("end_of_turn", "assistant_header", "last")
    batch_size: int = 8
    max_response_tokens: int | None = None
    compression_level: int = 4
    kl_top_k: int = 64
    kl_positions: str = "answer"
    share_prefix: bool = True

    def __post_init__(self):
        checks = (
            ("site", self.site, SITES),
            ("pooling", self.pooling, POOLINGS),
            ("tokens", self.tokens, POOLED_TOKENS),
            ("neuron_dtype", self.neuron_dtype, NEURON_DTYPES),
            ("kl_positions", self.kl_positions, KL_POSITIONS),
        )
        for key, value, allowed in checks:
            if value not in allowed:
                raise ConfigError(f"config key 'activations.{key}': '{value}' is not one of {', '.join(allowed)}")
        if self.batch_size < 1 or self.kl_top_k < 1:
            raise ConfigError("config keys 'activations.batch_size' and 'activations.kl_top_k' must be >= 1")

    @classmethod
    def from_config(cls, block: Mapping) -> "DumpSettings":
        names = {f for f in cls.__dataclass_fields__}
        values = {key: value for key, value in block.items() if key in names}
        if "residual_positions" in values:
            values["residual_positions"] = tuple(values["residual_positions"] or ())
        return cls(**values)


def group_name(mode: str, responses: str = "own") -> str:
    """The HDF5 group of an input set under its prompt set: the mode, suffixed for base responses."""
    if responses not in RESPONSES:
        raise ValueError(f"responses must be one of {RESPONSES}, not {responses!r}")
    return mode if responses == "own" else f"{mode}{BASE_RESPONSES_SUFFIX}"


@dataclass
class InputSet:
    """One group of the dump: an evaluation prompt set in one mode, with the model's responses."""

    prompt_set: str
    mode: PromptMode
    prompt_ids: list[str]
    users: list[str]
    responses: list[str]
    base_prompt_ids: list[str] | None = None
    residual: bool = False
    kl: bool = False
    response_source: str = ""
    dataset: str | None = None  # the prepared dataset behind the prompt set (default: same name)
    responses_from: str = "own"  # "base": the responses are the base model's (RESPONSES)

    def __post_init__(self):
        self.dataset = self.dataset or self.prompt_set
        if not (len(self.prompt_ids) == len(self.users) == len(self.responses)):
            raise DataError(f"input set {self.name}: prompt ids, prompts and responses differ in length")
        if len(set(self.prompt_ids)) != len(self.prompt_ids):
            raise DataError(f"input set {self.name}: duplicate prompt ids")
        if not self.prompt_ids:
            raise DataError(f"input set {self.name} has no prompts")

    @property
    def group(self) -> str:
        return group_name(self.mode.name, self.responses_from)

    @property
    def name(self) -> str:
        return f"{self.prompt_set}/{self.group}"


@dataclass
class Example:
    """One tokenized input: prompt tokens then response tokens."""

    index: int
    input_ids: list[int]
    prompt_length: int
    user_start: int
    positions: list[list[int]] = field(default_factory=list)  # per residual position

    @property
    def length(self) -> int:
        return len(self.input_ids)

    def pooled_span(self, tokens: str) -> tuple[int, int]:
        start = {"prompt_and_response": 0, "user_and_response": self.user_start, "response": self.prompt_length}[tokens]
        return start, self.length

    def prompt_span(self, tokens: str) -> tuple[int, int]:
        """The prompt part of ``pooled_span`` (empty for tokens: response)."""
        start, _ = self.pooled_span(tokens)
        return start, max(start, self.prompt_length)

    def kl_span(self, where: str) -> tuple[int, int]:
        """Positions whose next-token distribution the KL baseline compares: ``answer``, those
        that predict the response's tokens (teacher-forced; empty without a response);
        ``prompt``, those from the user's text to the end of the prompt; ``last``, the one that
        predicts the first response token."""
        if where == "answer":
            return self.prompt_length - 1, max(self.prompt_length - 1, self.length - 1)
        if where == "last":
            return self.prompt_length - 1, self.prompt_length
        return self.user_start, self.prompt_length


def encode_examples(adapter, tokenizer, inputs: InputSet, settings: DumpSettings) -> list[Example]:
    """Tokenize prompt and response separately (as generation saw them) and label positions."""
    from rim.positions import label_prompt

    examples = []
    for index, (user, response) in enumerate(zip(inputs.users, inputs.responses)):
        labelled = label_prompt(adapter, tokenizer, user, inputs.mode)
        response_ids = tokenizer(response or "", add_special_tokens=False)["input_ids"] if response else []
        if settings.max_response_tokens is not None:
            response_ids = response_ids[: settings.max_response_tokens]
        user_tokens = labelled.indices("user")
        if not user_tokens:
            raise DataError(
                f"input set {inputs.name}: prompt {inputs.prompt_ids[index]} has no user tokens after rendering"
            )
        examples.append(
            Example(
                index=index,
                input_ids=list(labelled.input_ids) + list(response_ids),
                prompt_length=labelled.prompt_length,
                user_start=user_tokens[0],
                positions=[
                    (
                        list(range(labelled.prompt_length, labelled.prompt_length + len(response_ids)))
                        if name == "response"
                        else labelled.position(name)
                    )
                    for name in settings.residual_positions
                ],
            )
        )
    return examples


def batches(examples: Sequence[Example], batch_size: int) -> Iterator[list[Example]]:
    """Longest first, so padding stays small and the peak memory shows in the first batch."""
    ordered = sorted(examples, key=lambda e: (-e.length, e.index))
    for start in range(0, len(ordered), batch_size):
        yield ordered[start : start + batch_size]
