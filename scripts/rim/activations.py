"""Activation dumps: pooled MLP neuron activations and residual states per checkpoint.

The method: docs/method.md#5-refusal-heads (residual states, probes) and
docs/method.md#6-safety-neurons-and-ras (neurons, KL baseline).

One HDF5 file per (model, checkpoint), written by one process to a temporary name beside the
final path and renamed only when complete, so a killed job never leaves a file that looks valid
(the layout is documented in docs/architecture.md, "Activation dumps"). Each input set (an
evaluation prompt set in one prompt mode, with the model's own responses) becomes a group
``/<prompt set>/<mode>``:

- ``neurons`` [n, n_layers, n_neurons]: each neuron's activation at the configured site, pooled
  over the configured tokens (default: the MLP intermediate activation, i.e. the input of the
  down projection, max-pooled over prompt + response; docs/method.md#6-safety-neurons-and-ras);
- ``residual`` [n, n_layers, n_positions, hidden]: the output of each decoder layer (the residual
  stream before the final norm) at named positions of ``rim.positions`` (spans averaged; NaN where
  a prompt lacks the position), for the probes of docs/method.md#5-refusal-heads;
- ``neurons_prompt`` [n, n_layers, n_neurons]: the same pooled over the prompt part of those
  tokens only (no response: what the checkpoint does with inputs every checkpoint shares);
- for math inputs, ``kl_to_base`` [n]: KL(pi_0 || pi_t) of the next-token distributions, from the
  base model's top-k log-probabilities stored in the base dump under ``kl_reference/`` (see
  ``rim.ras.coarse_kl``), by default over the positions that predict the base model's own
  response, teacher-forced into every checkpoint (``kl_positions: answer``).

Each input set is read with the checkpoint's own responses (group ``/<prompt set>/<mode>``) and,
for the fixed-token variants of RAS and the KL on answers, with the base model's responses fed to
the checkpoint (group ``/<prompt set>/<mode>@base_responses``; docs/method.md#ras-inputs).

Activations stream to disk batch by batch, in the order the batches run (longest first); the
``prompt_id`` array gives that order. Memory is the model plus one batch, whatever the number of
prompts.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Mapping, Sequence

import h5py
import numpy as np

from rim.errors import ConfigError, DataError, RimError
from rim.provenance import atomic_path, rebuild_advice, unreadable

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


# ----- capture ----------------------------------------------------------------------------------
def site_module_names(adapter, n_layers: int, site: str) -> tuple[str, list[str]]:
    """('pre' or 'post', module names) of the neuron site in every layer."""
    if site == "mlp_intermediate":
        # The input of the down projection: the channels rim.hooks.ablate(zero_neurons=) zeroes.
        return "pre", [adapter.mlp_output_name(layer) for layer in range(n_layers)]
    # The activation function's output act(gate(x)), before it multiplies up(x).
    mlp = adapter.mlp_output_name(0).rsplit(".", 1)[0]
    return "post", [f"{mlp.replace('.0.', f'.{layer}.', 1)}.act_fn" for layer in range(n_layers)]


class Capture:
    """Hooks that pool neuron activations and gather residual states for one batch at a time.

    With a shared prefix (the chat template and system prompt every input of a set starts with),
    the prefix runs once: ``record_prefix`` keeps its pooled activations, and each batch, run on
    the rest of its tokens over the prefix's key/value cache, combines them with its own.
    """

    def __init__(self, model, adapter, settings: DumpSettings, residual: bool):
        import torch

        self.torch = torch
        self.model, self.adapter, self.settings = model, adapter, settings
        self.n_layers = adapter.num_layers(model)
        self.kind, self.site_names = site_module_names(adapter, self.n_layers, settings.site)
        for name in self.site_names:
            try:
                model.get_submodule(name)
            except AttributeError:
                raise ConfigError(
                    f"config key 'activations.site': '{settings.site}' needs module '{name}', which this model lacks"
                ) from None
        self.residual = residual and bool(settings.residual_positions)
        self.recording_prefix = False
        self.prefix: list | None = None  # per layer: max or sum over the pooled prefix tokens
        self.prefix_count = 0
        self.pool_mask = None
        self.prompt_mask = None
        self.position_weights = None
        self.neurons = None
        self.prompt_neurons = None
        self.states = None

    def record_prefix(self, pooled_tokens: int) -> None:
        """The next forward pass is the shared prefix; ``pooled_tokens`` of it are pooled."""
        self.recording_prefix = True
        self.prefix_count = pooled_tokens
        self.prefix = [None] * self.n_layers if pooled_tokens > 0 else None

    def prepare(self, pool_mask, prompt_mask, position_weights, n_neurons: int, hidden: int) -> None:
        """Masks over the batch's tokens: ``pool_mask`` the pooled tokens, ``prompt_mask`` their
        prompt part (pooled into ``prompt_neurons``)."""
        torch = self.torch
        self.recording_prefix = False
        batch = pool_mask.shape[0]
        self.pool_mask, self.prompt_mask = pool_mask, prompt_mask
        self.neurons = torch.empty(batch, self.n_layers, n_neurons, dtype=torch.float32)
        self.prompt_neurons = torch.empty(batch, self.n_layers, n_neurons, dtype=torch.float32)
        if self.residual:
            self.position_weights = position_weights
            self.states = torch.empty(batch, self.n_layers, position_weights.shape[1], hidden, dtype=torch.float32)

    def _site(self, layer, x):
        x = x.float()
        if self.recording_prefix:
            if self.prefix is not None:
                tokens = x[0, : self.prefix_count]
                self.prefix[layer] = tokens.amax(dim=0) if self.settings.pooling == "max" else tokens.sum(dim=0)
            return
        self.neurons[:, layer] = self._pool(layer, x, self.pool_mask)
        self.prompt_neurons[:, layer] = self._pool(layer, x, self.prompt_mask)

    def _pool(self, layer, x, mask):
        torch = self.torch
        mask = mask.to(x.device)
        prefix = None if self.prefix is None else self.prefix[layer].to(x.device)
        count = mask.sum(dim=1) + (self.prefix_count if prefix is not None else 0)
        if self.settings.pooling == "max":
            pooled = x.masked_fill(~mask[..., None], float("-inf")).amax(dim=1)
            if prefix is not None:
                pooled = torch.maximum(pooled, prefix)
        elif self.settings.pooling == "mean":
            total = (x * mask[..., None]).sum(dim=1) + (prefix if prefix is not None else 0.0)
            pooled = total / count.clamp(min=1)[:, None]
        else:
            last_index = mask.shape[1] - 1 - mask.flip(1).float().argmax(1)
            pooled = x[torch.arange(x.shape[0], device=x.device), last_index]
        # No pooled token (an empty response with tokens: response) -> NaN, never a fake zero.
        return pooled.masked_fill((count == 0)[:, None], float("nan")).cpu()

    def hooks(self) -> tuple[dict, dict]:
        pre, post = {}, {}

        def site_pre(layer):
            def hook(module, args):
                self._site(layer, args[0])

            return hook

        def site_post(layer):
            def hook(module, args, output):
                self._site(layer, output)

            return hook

        def residual_post(layer):
            def hook(module, args, output):
                if self.recording_prefix:
                    return
                hidden = output[0] if isinstance(output, tuple) else output
                weights = self.position_weights.to(hidden.device)
                self.states[:, layer] = self.torch.einsum("bpt,bth->bph", weights, hidden.float()).cpu()

            return hook

        for layer, name in enumerate(self.site_names):
            (pre if self.kind == "pre" else post)[name] = (site_pre if self.kind == "pre" else site_post)(layer)
        if self.residual:
            for layer in range(self.n_layers):
                post[f"{self.adapter.layers_path}.{layer}"] = residual_post(layer)
        return pre, post


def shared_prefix_length(examples: Sequence[Example]) -> int:
    """Tokens every input starts with, up to where the first user text begins.

    Everything read per input (named positions, KL positions, user_and_response and response
    pooling) lies at or after the user text, so only prompt_and_response pooling meets the prefix.
    """
    if len(examples) < 2:
        return 0
    first, length = examples[0].input_ids, 0
    limit = min(e.user_start for e in examples)
    while length < limit and all(e.input_ids[length] == first[length] for e in examples):
        length += 1
    return length


def batch_tensors(examples: Sequence[Example], settings: DumpSettings, pad_id: int, offset: int = 0):
    """Right-padded ids (after the first ``offset`` shared tokens), attention mask over prefix
    and ids, pooled-token mask, its prompt part and position-averaging weights (over the ids)."""
    import torch

    width = max(e.length for e in examples) - offset
    n_positions = len(examples[0].positions)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(examples), offset + width), dtype=torch.long)
    pool = torch.zeros((len(examples), width), dtype=torch.bool)
    prompt_pool = torch.zeros((len(examples), width), dtype=torch.bool)
    weights = torch.zeros((len(examples), n_positions, width), dtype=torch.float32)
    for row, example in enumerate(examples):
        ids[row, : example.length - offset] = torch.tensor(example.input_ids[offset:])
        attention[row, : example.length] = 1
        start, end = example.pooled_span(settings.tokens)
        pool[row, max(start - offset, 0) : end - offset] = True
        start, end = example.prompt_span(settings.tokens)
        prompt_pool[row, max(start - offset, 0) : max(end - offset, 0)] = True
        for slot, indices in enumerate(example.positions):
            if indices:
                weights[row, slot, [i - offset for i in indices]] = 1.0 / len(indices)
    return ids, attention, pool, prompt_pool, weights


# ----- writing ----------------------------------------------------------------------------------
def _compression(settings: DumpSettings) -> dict:
    if settings.compression_level <= 0:
        return {}
    return {"compression": "gzip", "compression_opts": int(settings.compression_level), "shuffle": True}


def _dataset(group, name, shape, dtype, chunk_rows, settings, fill=None):
    chunks = (max(1, min(chunk_rows, shape[0])),) + tuple(shape[1:])
    kwargs = {"fillvalue": fill} if fill is not None else {}
    return group.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks, **_compression(settings), **kwargs)


def remove_stale_temporaries(path: str | Path) -> None:
    """Temporary files a killed writer of ``path`` left behind (never mistaken for the output)."""
    path = Path(path)
    if path.parent.is_dir():
        for stale in path.parent.glob(f".{path.name}.*.tmp"):
            stale.unlink(missing_ok=True)


@dataclass
class KLReference:
    """The base model's top-k next-token log-probabilities on one math input set."""

    token_ids: dict[str, np.ndarray]  # prompt id -> token ids at the compared positions
    top_ids: dict[str, np.ndarray]  # prompt id -> [positions, k]
    top_logprobs: dict[str, np.ndarray]


def read_kl_reference(path: str | Path, prompt_set: str, mode: str) -> KLReference:
    with _reading(path) as handle:
        group = _group(handle, prompt_set, mode, path)
        if "kl_reference" not in group:
            raise DataError(
                f"group /{prompt_set}/{mode} has no kl_reference (was it dumped as the base model?)", source=str(path)
            )
        ref = group["kl_reference"]
        ids = [s.decode() if isinstance(s, bytes) else s for s in group["prompt_id"][()]]
        counts = ref["n_positions"][()]
        token_ids, top_ids, top_logprobs = ref["token_ids"][()], ref["top_ids"][()], ref["top_logprobs"][()]
    return KLReference(
        token_ids={pid: token_ids[i, : counts[i]] for i, pid in enumerate(ids)},
        top_ids={pid: top_ids[i, : counts[i]] for i, pid in enumerate(ids)},
        top_logprobs={pid: top_logprobs[i, : counts[i]] for i, pid in enumerate(ids)},
    )


class _GroupWriter:
    """The datasets of one input set's group, filled batch by batch (one chunk per batch)."""

    def __init__(
        self,
        handle,
        inputs: InputSet,
        examples: list[Example],
        settings: DumpSettings,
        shape: dict,
        *,
        residual: bool,
        kl: bool,
        kl_reference_out: bool,
    ):
        self.settings = settings
        self.inputs = inputs
        n, rows = len(examples), settings.batch_size
        order = sorted(examples, key=lambda e: (-e.length, e.index))
        group = handle.require_group(inputs.prompt_set).create_group(inputs.group)
        group.attrs.update(
            {
                "dataset": inputs.dataset,
                "mode": inputs.mode.name,
                "responses": inputs.responses_from,
                "kl_positions": settings.kl_positions,
                "thinking": bool(inputs.mode.thinking),
                "statement": inputs.mode.statement,
                "site": settings.site,
                "pooling": settings.pooling,
                "tokens": settings.tokens,
                "neuron_dtype": settings.neuron_dtype,
                "positions": json.dumps(list(settings.residual_positions) if residual else []),
                "n_examples": n,
                "n_layers": shape["n_layers"],
                "n_neurons": shape["n_neurons"],
                "hidden_size": shape["hidden"],
                "max_response_tokens": -1 if settings.max_response_tokens is None else settings.max_response_tokens,
                "response_source": inputs.response_source,
            }
        )
        group.create_dataset(
            "prompt_id", data=np.array([inputs.prompt_ids[e.index] for e in order], dtype=object), dtype=STRING
        )
        if inputs.base_prompt_ids is not None:
            base_ids = np.array([inputs.base_prompt_ids[e.index] for e in order], dtype=object)
            group.create_dataset("base_prompt_id", data=base_ids, dtype=STRING)
        group.create_dataset("n_tokens", data=np.array([e.length for e in order], dtype=np.int32))
        group.create_dataset("prompt_tokens", data=np.array([e.prompt_length for e in order], dtype=np.int32))
        self.neurons = _dataset(
            group, "neurons", (n, shape["n_layers"], shape["n_neurons"]), settings.neuron_dtype, rows, settings
        )
        self.prompt_neurons = _dataset(
            group, "neurons_prompt", (n, shape["n_layers"], shape["n_neurons"]), settings.neuron_dtype, rows, settings
        )
        self.residual = (
            _dataset(
                group,
                "residual",
                (n, shape["n_layers"], len(settings.residual_positions), shape["hidden"]),
                np.float32,
                rows,
                settings,
            )
            if residual
            else None
        )
        self.kl = group.create_dataset("kl_to_base", shape=(n,), dtype=np.float32) if kl else None
        self.reference = None
        if kl_reference_out:
            spans = [e.kl_span(settings.kl_positions) for e in order]
            longest, k = max(end - start for start, end in spans), settings.kl_top_k
            ref = group.create_group("kl_reference")
            ref.attrs.update({"top_k": k, "positions": settings.kl_positions})
            self.reference = {
                "n_positions": ref.create_dataset("n_positions", shape=(n,), dtype=np.int32),
                "token_ids": _dataset(ref, "token_ids", (n, longest), np.int32, rows, settings, fill=-1),
                "top_ids": _dataset(ref, "top_ids", (n, longest, k), np.int32, rows, settings, fill=-1),
                "top_logprobs": _dataset(ref, "top_logprobs", (n, longest, k), np.float32, rows, settings, fill=np.nan),
            }
        self.written = 0

    def write(
        self,
        batch: list[Example],
        neurons: np.ndarray,
        prompt_neurons: np.ndarray,
        states: np.ndarray | None,
        kl: dict | None,
    ) -> None:
        start, end = self.written, self.written + len(batch)
        if self.settings.neuron_dtype == "float16" and np.nanmax(np.abs(neurons), initial=0.0) > FLOAT16_MAX:
            raise RimError(
                f"input set {self.inputs.name}: a neuron activation exceeds the float16 range "
                f"({np.nanmax(np.abs(neurons)):.4g}); set 'activations.neuron_dtype: float32'"
            )
        self.neurons[start:end] = neurons.astype(self.settings.neuron_dtype)
        self.prompt_neurons[start:end] = prompt_neurons.astype(self.settings.neuron_dtype)
        if self.residual is not None:
            for row, example in enumerate(batch):
                for slot, indices in enumerate(example.positions):
                    if not indices:
                        states[row, :, slot] = np.nan
            self.residual[start:end] = states
        if self.kl is not None:
            self.kl[start:end] = kl["kl_to_base"]
        if self.reference is not None:
            self.reference["n_positions"][start:end] = kl["n_positions"]
            for key, fill in (("token_ids", -1), ("top_ids", -1), ("top_logprobs", np.nan)):
                # The batch's arrays are as wide as its longest span; the file's as the set's.
                target = self.reference[key]
                block = np.full((len(batch),) + target.shape[1:], fill, dtype=target.dtype)
                block[:, : kl[key].shape[1]] = kl[key]
                target[start:end] = block
        self.written = end


def dump_activations(
    loaded,
    input_sets: Sequence[InputSet],
    settings: DumpSettings,
    output: str | Path,
    *,
    attributes: Mapping,
    provenance: Mapping,
    kl_reference: str | Path | None = None,
    write_kl_reference: bool = False,
    progress=None,
) -> Path:
    """Run every input set through the model and write the dump atomically to ``output``.

    ``loaded`` is a ``rim.models.LoadedModel``. ``kl_reference`` is the base model's dump (for
    ``kl_to_base`` on input sets with ``kl``); ``write_kl_reference`` stores this model's own top-k
    log-probabilities there instead (the base model's dump; its ``kl_to_base`` is then 0).
    """
    import torch

    from rim.hooks import attached

    model, adapter, tokenizer = loaded.model, loaded.adapter, loaded.tokenizer
    shape = {
        "n_layers": adapter.num_layers(model),
        "n_neurons": adapter.num_neurons(model)
        if settings.site == "mlp_intermediate"
        else int(model.config.intermediate_size),
        "hidden": int(model.config.hidden_size),
    }
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    n_positions = len(settings.residual_positions)
    encoded = [(inputs, encode_examples(adapter, tokenizer, inputs, settings)) for inputs in input_sets]
    remove_stale_temporaries(output)
    with atomic_path(output) as tmp, h5py.File(tmp, "w") as handle:
        for key, value in attributes.items():
            handle.attrs[key] = "" if value is None else value
        handle.attrs["format_version"] = FORMAT_VERSION
        handle.attrs["provenance"] = json.dumps(provenance, default=str)
        handle.attrs["complete"] = False
        for inputs, examples in encoded:
            reference = (
                read_kl_reference(kl_reference, inputs.prompt_set, inputs.group)
                if (inputs.kl and kl_reference and not write_kl_reference)
                else None
            )
            want_kl = inputs.kl and (reference is not None or write_kl_reference)
            residual = inputs.residual and n_positions > 0
            writer = _GroupWriter(
                handle,
                inputs,
                examples,
                settings,
                shape,
                residual=residual,
                kl=want_kl,
                kl_reference_out=want_kl and write_kl_reference,
            )
            capture = Capture(model, adapter, settings, residual)
            pre, post = capture.hooks()
            with attached(model, forward_pre=pre, forward=post), torch.no_grad():
                prefix_length, prefix_cache = _shared_prefix(model, loaded.device, capture, examples, settings)
                for batch in batches(examples, settings.batch_size):
                    ids, attention, pool, prompt_pool, weights = batch_tensors(batch, settings, pad_id, prefix_length)
                    capture.prepare(pool, prompt_pool, weights, shape["n_neurons"], shape["hidden"])
                    spans = [e.kl_span(settings.kl_positions) for e in batch]
                    # Logits only where the KL baseline reads them: the lm head is a large matmul.
                    first = min(start for start, _ in spans)
                    keep = (
                        torch.arange(first - prefix_length, max(end for _, end in spans) - prefix_length)
                        if want_kl
                        else 1
                    )
                    cache = None
                    if prefix_cache is not None:
                        cache = copy.deepcopy(prefix_cache)
                        cache.batch_repeat_interleave(len(batch))
                    logits = model(
                        input_ids=ids.to(loaded.device),
                        attention_mask=attention.to(loaded.device),
                        use_cache=cache is not None,
                        logits_to_keep=keep,
                        **({_cache_keyword(model): cache} if cache is not None else {}),
                    ).logits
                    kl = _kl_batch(batch, spans, first, logits, inputs, reference, settings) if want_kl else None
                    writer.write(
                        batch,
                        capture.neurons.numpy(),
                        capture.prompt_neurons.numpy(),
                        capture.states.numpy() if residual else None,
                        kl,
                    )
                    if progress is not None:
                        progress.update(len(batch), set=inputs.name)
        handle.attrs["complete"] = True
    return Path(output)


def _shared_prefix(model, device, capture: Capture, examples: Sequence[Example], settings: DumpSettings):
    """Run the tokens every input of the set shares once; (their count, their key/value cache)."""
    import torch

    length = shared_prefix_length(examples) if settings.share_prefix else 0
    capture.prefix = None
    if not length:
        return 0, None
    capture.record_prefix(length if settings.tokens == "prompt_and_response" else 0)
    prefix = torch.tensor([examples[0].input_ids[:length]], device=device)
    output = model(input_ids=prefix, use_cache=True, logits_to_keep=1)
    capture.recording_prefix = False
    cache = getattr(output, "cache", None)
    return length, cache if cache is not None else output.past_key_values


def _cache_keyword(model) -> str:
    """transformers 5.2x renamed ``past_key_values`` to ``cache``; accept both."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _kl_batch(batch, spans, offset, logits, inputs, reference: KLReference | None, settings) -> dict:
    """KL to the base per example; with no reference (the base dump), this model's own top-k."""
    import torch

    from rim.ras import coarse_kl

    width = max(end - start for start, end in spans)
    k = settings.kl_top_k
    out = {
        "kl_to_base": np.zeros(len(batch), dtype=np.float32),
        "n_positions": np.zeros(len(batch), dtype=np.int32),
        "token_ids": np.full((len(batch), width), -1, dtype=np.int32),
        "top_ids": np.full((len(batch), width, k), -1, dtype=np.int32),
        "top_logprobs": np.full((len(batch), width, k), np.nan, dtype=np.float32),
    }
    for row, (example, (start, end)) in enumerate(zip(batch, spans)):
        # One row at a time: a batch's [rows, positions, vocab] log-probs would double the peak.
        # On the CPU from here on: the top-k go to numpy and the base's ids come from numpy.
        rows = torch.log_softmax(logits[row, start - offset : end - offset].float(), dim=-1).cpu()
        token_ids = np.asarray(example.input_ids[start:end], dtype=np.int32)
        pid = inputs.prompt_ids[example.index]
        if reference is None:
            values, indices = torch.topk(rows, k, dim=-1)
            count = end - start
            out["n_positions"][row] = count
            out["token_ids"][row, :count] = token_ids
            out["top_ids"][row, :count] = indices.numpy()
            out["top_logprobs"][row, :count] = values.numpy()
            base_ids, base_logprobs = indices, values.numpy()
        else:
            if pid not in reference.token_ids:
                raise DataError(
                    f"input set {inputs.name}: prompt {pid} is missing from the base model's dump (KL reference)"
                )
            if not np.array_equal(reference.token_ids[pid], token_ids):
                raise DataError(
                    f"input set {inputs.name}: prompt {pid} tokenizes differently from the base model's dump; "
                    "the KL baseline needs the same inputs x (same tokenizer, prompt mode and fixed responses)"
                )
            base_ids = torch.from_numpy(reference.top_ids[pid].astype(np.int64))
            base_logprobs = reference.top_logprobs[pid]
        at_top = torch.gather(rows, -1, base_ids.long()).numpy()
        per_position = coarse_kl(base_logprobs, at_top)
        out["kl_to_base"][row] = float(per_position.mean()) if per_position.size else np.nan
    return out


# ----- reading ----------------------------------------------------------------------------------
def open_dump(path: str | Path) -> h5py.File:
    """Open a dump for reading; refuse one that was not completed or has another format."""
    path = Path(path)
    if not path.exists():
        raise DataError("activation dump does not exist", source=str(path))
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise unreadable(path, error, "activation dump: not a readable HDF5 file") from None
    if not bool(handle.attrs.get("complete", False)):
        handle.close()
        raise DataError(
            f"activation dump is incomplete (its writer did not finish); {rebuild_advice(path)}", source=str(path)
        )
    if int(handle.attrs.get("format_version", -1)) != FORMAT_VERSION:
        version = handle.attrs.get("format_version")
        handle.close()
        raise DataError(
            f"activation dump has format version {version}, this code reads {FORMAT_VERSION}; {rebuild_advice(path)}",
            source=str(path),
        )
    return handle


@contextlib.contextmanager
def _reading(path: str | Path) -> Iterator[h5py.File]:
    """``open_dump`` for a ``with`` block: a dataset that fails to read (a corrupt chunk) raises
    the same ``DataError`` as a file that fails to open."""
    with open_dump(path) as handle:
        try:
            yield handle
        except OSError as error:
            raise unreadable(path, error, "activation dump") from None


def _group(handle: h5py.File, prompt_set: str, mode: str, path) -> h5py.Group:
    """The group of an input set; ``mode`` is its group name (``group_name``)."""
    key = f"{prompt_set}/{mode}"
    if key not in handle:
        present = [f"{p}/{m}" for p in handle for m in handle[p]]
        raise DataError(f"no input set {key} in the dump; present: {', '.join(present) or 'none'}", source=str(path))
    return handle[key]


@dataclass
class ActivationSet:
    """One input set read back from a dump."""

    prompt_ids: list[str]
    base_prompt_ids: list[str] | None
    neurons: np.ndarray | None
    prompt_neurons: np.ndarray | None
    residual: np.ndarray | None
    kl_to_base: np.ndarray | None
    attrs: dict
    file_attrs: dict


def _strings(dataset) -> list[str]:
    return [s.decode() if isinstance(s, bytes) else str(s) for s in dataset[()]]


def read_input_set(
    path: str | Path,
    prompt_set: str,
    mode: str,
    *,
    neurons: bool = True,
    residual: bool = False,
    responses: str = "own",
    prompt_neurons: bool = False,
) -> ActivationSet:
    """One input set of a dump (``responses``: the checkpoint's own or the base model's);
    ``residual`` also reads the residual states where stored, ``prompt_neurons`` the activations
    pooled over the prompt part only."""
    with _reading(path) as handle:
        group = _group(handle, prompt_set, group_name(mode, responses), path)
        return ActivationSet(
            prompt_ids=_strings(group["prompt_id"]),
            base_prompt_ids=_strings(group["base_prompt_id"]) if "base_prompt_id" in group else None,
            neurons=group["neurons"][()] if neurons else None,
            prompt_neurons=group["neurons_prompt"][()] if prompt_neurons else None,
            residual=group["residual"][()] if (residual and "residual" in group) else None,
            kl_to_base=group["kl_to_base"][()] if "kl_to_base" in group else None,
            attrs={key: _attr(value) for key, value in group.attrs.items()},
            file_attrs={key: _attr(value) for key, value in handle.attrs.items()},
        )


def _attr(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


def input_set_names(path: str | Path) -> list[str]:
    with _reading(path) as handle:
        return [f"{prompt_set}/{mode}" for prompt_set in handle for mode in handle[prompt_set]]


def file_size_mb(path: str | Path) -> float:
    return os.path.getsize(path) / 2**20


# ----- which input sets a checkpoint's dump holds -------------------------------------------------
# The variants of RAS's inputs (docs/method.md#ras-inputs), config key ras.inputs: which tokens the
# activations of the safety and math inputs are pooled over.
RAS_INPUTS = {
    "own_response": "prompt + the checkpoint's own response (the paper's way)",
    "base_response": "prompt + the base model's response, teacher-forced into the checkpoint",
    "prompt_only": "the prompt alone",
}


def _input_key(entry: Mapping) -> tuple[str, str]:
    return str(entry["prompt_set"]), str(entry["mode"])


def uses_base_responses(config: Mapping) -> bool:
    """Whether dumps read the RAS inputs with the base model's responses too: for the
    base_response variant of RAS, or for the KL baseline on answer positions."""
    ras, block = config.get("ras", {}), config.get("activations", {})
    return "base_response" in ras.get("inputs", list(RAS_INPUTS)) or block.get("kl_positions", "answer") == "answer"


def dump_input_keys(config: Mapping, ckpt: str) -> list[tuple[str, str, bool, str]]:
    """(prompt set, mode, kl, responses) of every input set in the dump of ``ckpt``.

    The base model's dump holds the (harmful, -MI) pairs of the safety neurons; every dump holds
    the safety and math inputs of RAS with the checkpoint's own responses and, where
    ``uses_base_responses``, with the base model's (math with the KL baseline on the answer
    positions there, or on the prompt positions of the own-response set), plus
    activations.extra_inputs.
    """
    neurons, ras, block = config.get("neurons", {}), config.get("ras", {}), config.get("activations", {})
    kl_on_answers = block.get("kl_positions", "answer") == "answer"
    wanted: list[tuple[tuple[str, str, str], bool]] = []
    if ckpt == "base":
        wanted += [(_input_key(neurons["plain"]) + ("own",), False), (_input_key(neurons["intent"]) + ("own",), False)]
    wanted += [
        (_input_key(ras["safety_inputs"]) + ("own",), False),
        (_input_key(ras["math_inputs"]) + ("own",), not kl_on_answers),
    ]
    if uses_base_responses(config):
        wanted += [
            (_input_key(ras["safety_inputs"]) + ("base",), False),
            (_input_key(ras["math_inputs"]) + ("base",), kl_on_answers),
        ]
    for extra in block.get("extra_inputs", []):
        if ckpt == "base" or extra.get("checkpoints", "base") == "all":
            wanted.append((_input_key(extra) + ("own",), False))
    keys: dict[tuple[str, str, str], bool] = {}
    for key, kl in wanted:
        keys[key] = keys.get(key, False) or kl
    return [(prompt_set, mode, kl, responses) for (prompt_set, mode, responses), kl in keys.items()]


def dump_plan(config: Mapping, model: str, ckpt: str, results: str = "results") -> list[dict]:
    """The input sets of one dump with everything the dump job needs to read them."""
    block = config.get("activations", {})
    residual = set(block.get("residual_inputs", []))
    prompt_sets = config.get("evaluation", {}).get("prompt_sets", {})
    plan = []
    for prompt_set, mode, kl, responses in dump_input_keys(config, ckpt):
        dataset = prompt_sets[prompt_set]["dataset"]
        source = ckpt if responses == "own" else "base"
        plan.append(
            {
                "prompt_set": prompt_set,
                "mode": mode,
                "mode_entry": dict(config["prompt_modes"][mode]),
                "dataset": dataset,
                "dataset_table": f"{results}/data/{dataset}.parquet",
                "responses": f"{results}/eval/{model}/{source}/{prompt_set}/{mode}.parquet",
                "responses_from": responses,
                "residual": responses == "own" and f"{prompt_set}/{mode}" in residual,
                "kl": kl,
            }
        )
    return plan
