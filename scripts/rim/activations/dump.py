"""Writing a dump: the forward passes, the KL baseline and the HDF5 groups, atomically."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import h5py
import numpy as np

from rim.errors import DataError, RimError
from rim.provenance import atomic_path
from rim.activations.settings import (
    DumpSettings,
    Example,
    FLOAT16_MAX,
    FORMAT_VERSION,
    InputSet,
    STRING,
    batches,
    encode_examples,
)
from rim.activations.capture import (
    Capture,
    batch_tensors,
    shared_prefix_length,
)
from rim.activations.reading import (
    _group,
    _reading,
)


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
                "n_experts": shape["n_experts"],
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

    model, adapter, tokenizer = loaded.model, loaded.adapter, loaded.tokenizer
    shape = {
        "n_layers": adapter.num_layers(model),
        "n_neurons": adapter.num_neurons(model)
        if settings.site == "mlp_intermediate" or adapter.is_moe
        else int(model.config.intermediate_size),
        # Mixture-of-experts layers: neuron = expert * expert_channels + channel.
        "n_experts": adapter.expert_layout(model)[0] if adapter.is_moe else 0,
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
        groups = []
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
            groups.append(_Group(inputs, examples, residual, want_kl, reference, writer))
        for twins in _same_tokens(groups):
            _run_groups(model, adapter, loaded.device, twins, settings, shape, pad_id, progress)
        handle.attrs["complete"] = True
    return Path(output)


@dataclass
class _Group:
    """One input set on its way into the dump."""

    inputs: InputSet
    examples: list[Example]
    residual: bool
    want_kl: bool
    reference: KLReference | None
    writer: _GroupWriter


def _same_tokens(groups: Sequence[_Group]) -> list[list[_Group]]:
    """The groups in order, those with the same token sequences and residual positions together.

    At the base model an input set's own responses are the base model's responses, so the set
    and its ``@base_responses`` twin need one forward pass, not two: the activations are the same
    bits, and the lm head runs on the KL span where either twin reads the KL."""
    together: list[list[_Group]] = []
    for group in groups:
        twin = next((t for t in together if t[0].residual == group.residual and t[0].examples == group.examples), None)
        if twin is None:
            together.append([group])
        else:
            twin.append(group)
    return together


def _run_groups(model, adapter, device, twins: list[_Group], settings: DumpSettings, shape, pad_id, progress) -> None:
    """One pass of the model over the twins' examples, written to each twin's group."""
    import torch

    from rim.hooks import attached

    examples, residual = twins[0].examples, twins[0].residual
    want_logits = any(group.want_kl for group in twins)
    capture = Capture(model, adapter, settings, residual)
    pre, post = capture.hooks()
    with attached(model, forward_pre=pre, forward=post), torch.no_grad():
        prefix_length, prefix_cache = _shared_prefix(model, device, capture, examples, settings)
        for batch in batches(examples, settings.batch_size):
            ids, attention, pool, prompt_pool, weights = batch_tensors(batch, settings, pad_id, prefix_length)
            capture.prepare(pool, prompt_pool, weights, shape["n_neurons"], shape["hidden"])
            spans = [e.kl_span(settings.kl_positions) for e in batch]
            # Logits only where the KL baseline reads them: the lm head is a large matmul.
            first = min(start for start, _ in spans)
            keep = (
                torch.arange(first - prefix_length, max(end for _, end in spans) - prefix_length) if want_logits else 1
            )
            cache = None
            if prefix_cache is not None:
                cache = copy.deepcopy(prefix_cache)
                cache.batch_repeat_interleave(len(batch))
            logits = model(
                input_ids=ids.to(device),
                attention_mask=attention.to(device),
                use_cache=cache is not None,
                logits_to_keep=keep,
                **({_cache_keyword(model): cache} if cache is not None else {}),
            ).logits
            for group in twins:
                kl = (
                    _kl_batch(batch, spans, first, logits, group.inputs, group.reference, settings)
                    if group.want_kl
                    else None
                )
                group.writer.write(
                    batch,
                    capture.neurons.numpy(),
                    capture.prompt_neurons.numpy(),
                    capture.states.numpy() if residual else None,
                    kl,
                )
                if progress is not None:
                    progress.update(len(batch), set=group.inputs.name)


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
