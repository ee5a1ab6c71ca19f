"""Hooks addressed by module name, and the interventions of the paper built on them.

One context manager adds hooks and always removes them in ``finally`` (the refusal_direction
pattern), so an exception never leaves a model patched. Interventions read like the paper:
``with ablate(model, adapter, zero_heads={6: [20], 0: [11, 23]}):`` zeroes the per-head slices
entering the attention output projection (docs/method.md#5-refusal-heads); ``zero_neurons={layer: [channels]}``
zeroes MLP neurons, the channels entering the down projection (docs/method.md#6-safety-neurons-and-ras);
in a mixture-of-experts layer, the units are (expert, channel) pairs flattened as
``expert * channels + channel``.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Mapping, Sequence

import torch

Hook = Callable[..., object]


class WithKeywords:
    """Marks a forward-pre hook that takes ``(module, args, kwargs)`` (a module called with
    keyword arguments, such as a mixture-of-experts layer's experts)."""

    def __init__(self, hook: Hook):
        self.hook = hook


@contextlib.contextmanager
def attached(
    model: torch.nn.Module,
    forward_pre: Mapping[str, Hook] | None = None,
    forward: Mapping[str, Hook] | None = None,
) -> Iterator[None]:
    """Register forward-pre and forward hooks on named submodules for the ``with`` block."""
    handles = []
    try:
        for name, hook in (forward_pre or {}).items():
            module = model.get_submodule(name)
            if isinstance(hook, WithKeywords):
                handles.append(module.register_forward_pre_hook(hook.hook, with_kwargs=True))
            else:
                handles.append(module.register_forward_pre_hook(hook))
        for name, hook in (forward or {}).items():
            handles.append(model.get_submodule(name).register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _channel_index(units: Sequence[int], width: int, device: torch.device) -> torch.Tensor:
    index = torch.zeros(width, dtype=torch.bool, device=device)
    index[list(units)] = True
    return index


def _replace_channels(mask_cpu: torch.Tensor, values: torch.Tensor | None) -> Hook:
    """A forward-pre hook that overwrites the masked input channels (zeros or given values)."""

    def hook(module, args):
        (hidden, *rest) = args
        mask = mask_cpu.to(hidden.device)
        replacement = torch.zeros((), dtype=hidden.dtype, device=hidden.device) if values is None else values.to(hidden)
        patched = torch.where(mask, replacement, hidden)
        return (patched, *rest)

    return hook


def head_slices(heads: Sequence[int], head_dim: int) -> list[int]:
    """Input channels of the attention output projection that carry the given heads."""
    return [head * head_dim + offset for head in heads for offset in range(head_dim)]


@contextlib.contextmanager
def ablate(
    model: torch.nn.Module,
    adapter,
    *,
    zero_heads: Mapping[int, Sequence[int]] | None = None,
    mean_heads: Mapping[int, Sequence[int]] | None = None,
    head_means: Mapping[int, torch.Tensor] | None = None,
    zero_neurons: Mapping[int, Sequence[int]] | None = None,
) -> Iterator[None]:
    """Zero or mean-ablate attention heads and zero MLP neurons while the block runs.

    ``head_means[layer]`` is the mean input of that layer's output projection (width
    ``num_heads * head_dim``), required for ``mean_heads``.
    """
    hooks: dict[str, Hook] = {}
    head_dim = adapter.head_dim(model)
    width_heads = adapter.num_heads(model) * head_dim
    for layer, heads in (zero_heads or {}).items():
        if heads:
            mask = _channel_index(head_slices(heads, head_dim), width_heads, torch.device("cpu"))
            hooks[adapter.attention_output_name(int(layer))] = _replace_channels(mask, None)
    for layer, heads in (mean_heads or {}).items():
        if heads:
            if head_means is None or layer not in head_means:
                raise ValueError(f"mean ablation of layer {layer} needs its mean head outputs")
            mask = _channel_index(head_slices(heads, head_dim), width_heads, torch.device("cpu"))
            name = adapter.attention_output_name(int(layer))
            if name in hooks:
                raise ValueError(f"layer {layer} is both zero- and mean-ablated")
            hooks[name] = _replace_channels(mask, head_means[layer])
    if zero_neurons and adapter.is_moe:
        weights = zeroed_expert_channels(model, adapter, zero_neurons)
    else:
        weights = contextlib.nullcontext()
        width_neurons = adapter.num_neurons(model) if zero_neurons else 0
        for layer, channels in (zero_neurons or {}).items():
            if channels:
                mask = _channel_index(channels, width_neurons, torch.device("cpu"))
                hooks[adapter.mlp_output_name(int(layer))] = _replace_channels(mask, None)
    with weights, attached(model, forward_pre=hooks):
        yield


@contextlib.contextmanager
def zeroed_expert_channels(
    model: torch.nn.Module, adapter, zero_neurons: Mapping[int, Sequence[int]]
) -> Iterator[None]:
    """Zero mixture-of-experts neurons (flat units ``expert * channels + channel``) for the block.

    An expert's neuron is an input channel of its down projection; the experts module multiplies
    it by one column of the fused ``down_proj[expert]``, so zeroing that column is zeroing the
    neuron, whichever kernel the experts run (docs/method.md#mixture-of-experts-neurons). The
    columns are restored in ``finally``.
    """
    n_experts, channels = adapter.expert_layout(model)
    saved = []
    try:
        with torch.no_grad():
            for layer, units in zero_neurons.items():
                if not units:
                    continue
                units = torch.as_tensor(sorted(set(int(unit) for unit in units)), dtype=torch.long)
                if int(units.min()) < 0 or int(units.max()) >= n_experts * channels:
                    raise ValueError(f"layer {layer}: neuron index out of range 0..{n_experts * channels - 1}")
                down = adapter.experts_module(model, int(layer)).down_proj
                experts, columns = units // channels, units % channels
                experts, columns = experts.to(down.device), columns.to(down.device)
                saved.append((down, experts, columns, down.data[experts, :, columns].clone()))
                down.data[experts, :, columns] = 0
        yield
    finally:
        with torch.no_grad():
            for down, experts, columns, values in reversed(saved):
                down.data[experts, :, columns] = values


def units_by_layer(pairs: Sequence[Sequence[int]]) -> dict[int, list[int]]:
    """``[(layer, unit), ...]`` -> ``{layer: [units]}``, the shape ``ablate`` takes."""
    grouped: dict[int, list[int]] = {}
    for layer, unit in pairs:
        grouped.setdefault(int(layer), []).append(int(unit))
    return grouped
