"""Capturing pooled neuron activations and residual states with forward hooks during a dump."""

from __future__ import annotations

from typing import Sequence


from rim.errors import ConfigError
from rim.activations.settings import (
    DumpSettings,
    Example,
)


# ----- capture ----------------------------------------------------------------------------------
def site_module_names(adapter, n_layers: int, site: str) -> tuple[str, list[str]]:
    """('pre', 'post' or 'experts', module names) of the neuron site in every layer."""
    if adapter.is_moe:
        # Both sites are recomputed from the expert weights for the routed tokens (experts_site).
        return "experts", [adapter.experts_name(layer) for layer in range(n_layers)]
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
        self.expert_layout = adapter.expert_layout(model) if self.kind == "experts" else None
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

    def _experts_site(self, layer, module, hidden, top_k_index):
        """A mixture-of-experts layer: pool each expert's activations over the tokens routed to it.

        ``hidden`` [tokens, hidden] is the experts' input (the batch's rows flattened), and
        ``top_k_index`` [tokens, k] the experts the router chose for each token. A token not routed
        to an expert contributes nothing to that expert's pooled values; an expert that no pooled
        token of an input reached has NaN there (docs/method.md#mixture-of-experts-neurons).
        """
        torch = self.torch
        n_experts, channels = self.expert_layout
        if self.recording_prefix:
            if self.prefix is None:
                return
            masks = [torch.zeros((1, hidden.shape[0]), dtype=torch.bool)]
            masks[0][0, : self.prefix_count] = True
        else:
            masks = [self.pool_mask, self.prompt_mask]
        rows, width = masks[0].shape
        masks = [mask.reshape(-1).to(hidden.device) for mask in masks]
        example = torch.arange(rows * width, device=hidden.device) // width
        last = [
            self._last_pooled(mask.reshape(rows, width)) if self.settings.pooling == "last" else None for mask in masks
        ]
        fill = 0.0 if self.settings.pooling == "mean" else float("-inf")
        pooled = [torch.full((n_experts, rows, channels), fill, device=hidden.device) for _ in masks]
        counts = [torch.zeros((n_experts, rows), device=hidden.device) for _ in masks]
        wanted = masks[0] | masks[1] if len(masks) > 1 else masks[0]
        routed = torch.zeros((hidden.shape[0], n_experts), dtype=torch.bool, device=hidden.device)
        routed.scatter_(1, top_k_index.long(), True)
        routed &= wanted[:, None]
        for expert in routed.any(dim=0).nonzero().flatten().tolist():
            tokens = routed[:, expert].nonzero().flatten()
            values = expert_activation(module, hidden[tokens], expert, self.settings.site).float()
            for mask, target, count, last_token in zip(masks, pooled, counts, last):
                keep = mask[tokens] if self.settings.pooling != "last" else (tokens[:, None] == last_token).any(1)
                if not bool(keep.any()):
                    continue
                where, selected = example[tokens[keep]], values[keep]
                if self.settings.pooling == "mean":
                    target[expert].index_add_(0, where, selected)
                else:  # max, or the one last pooled token
                    target[expert].scatter_reduce_(0, where[:, None].expand_as(selected), selected, "amax")
                count[expert] += torch.bincount(where, minlength=rows).float()
        if self.recording_prefix:
            self.prefix[layer] = (pooled[0][:, 0], counts[0][:, 0])
            return
        for target, count, out in zip(pooled, counts, (self.neurons, self.prompt_neurons)):
            if self.prefix is not None and self.settings.pooling != "last":
                prefix_values, prefix_counts = (part.to(hidden.device) for part in self.prefix[layer])
                if self.settings.pooling == "max":
                    target = torch.maximum(target, prefix_values[:, None])
                else:
                    target = target + prefix_values[:, None]
                count = count + prefix_counts[:, None]
            if self.settings.pooling == "mean":
                target = target / count.clamp(min=1)[..., None]
            target = target.masked_fill((count == 0)[..., None], float("nan"))
            out[:, layer] = target.permute(1, 0, 2).reshape(rows, n_experts * channels).cpu()

    def _last_pooled(self, mask):
        """Flat index of each row's last pooled token (pooling 'last'), -1 for a row without one."""
        torch = self.torch
        rows, width = mask.shape
        index = width - 1 - mask.flip(1).float().argmax(1)
        flat = torch.arange(rows, device=mask.device) * width + index
        return torch.where(mask.any(dim=1), flat, torch.full_like(flat, -1))

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

        from rim.hooks import WithKeywords

        def experts_pre(layer):
            def hook(module, args, kwargs):
                hidden = args[0] if args else kwargs["hidden_states"]
                top_k_index = args[1] if len(args) > 1 else kwargs["top_k_index"]
                self._experts_site(layer, module, hidden, top_k_index)

            return hook

        for layer, name in enumerate(self.site_names):
            if self.kind == "experts":
                pre[name] = WithKeywords(experts_pre(layer))
            else:
                (pre if self.kind == "pre" else post)[name] = (site_pre if self.kind == "pre" else site_post)(layer)
        if self.residual:
            for layer in range(self.n_layers):
                post[f"{self.adapter.layers_path}.{layer}"] = residual_post(layer)
        return pre, post


def expert_activation(module, hidden, expert: int, site: str = "mlp_intermediate"):
    """One expert's neuron activations for the tokens in ``hidden`` [tokens, hidden]: the input
    of its down projection, act(gate) * up (site mlp_intermediate), or act(gate) alone
    (mlp_gate_activation), computed from the fused weights as the experts module computes them."""
    import torch

    gate, up = torch.nn.functional.linear(hidden, module.gate_up_proj[expert]).chunk(2, dim=-1)
    activated = module.act_fn(gate)
    return activated * up if site == "mlp_intermediate" else activated


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
