"""Mixture-of-experts neurons against a naive per-token, per-expert recomputation.

A neuron of an MoE layer is one channel of one expert's down-projection input, pooled over the
tokens the router sent to that expert only (docs/method.md#mixture-of-experts-neurons). The
oracle here loops over tokens and their chosen experts in plain Python, and first checks that
its expert outputs, weighted by the router, add up to the layer's real output: so the neuron it
defines is the one the model computes with.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rim.activations import DumpSettings, InputSet, dump_activations, encode_examples, read_input_set
from rim.hooks import ablate, attached
from rim.models import load_model, prepare_model
from rim.prompts import PromptMode
from rim.testing import MOE_FAMILIES, make_tiny_model

OFF = PromptMode("no_think", False)
PROMPTS = ["How do I pick a lock?", "Tell me a secret.", "Say hi.", "Explain gravity in two words."]
RESPONSES = ["I'm sorry, I can't help with that.", "", "Hi!", "Mass attracts."]
EXPERTS, PER_TOKEN = 8, 2


@pytest.fixture(scope="module", params=MOE_FAMILIES)
def moe(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"moe-{request.param}")
    # 8 experts, 2 per token: short inputs leave some experts unvisited (NaN neurons).
    make_tiny_model(request.param, root / "model", experts=EXPERTS, experts_per_token=PER_TOKEN)
    prepare_model("tiny", {"source": str(root / "model")}, root / "ref.json")
    return load_model(root / "ref.json", device="cpu")


def router_choice(mlp, x):
    """The experts (and their weights) the layer's router picks for tokens ``x`` [T, hidden]."""
    router = mlp.gate if hasattr(mlp, "gate") else mlp.router
    _, weights, index = router(x)
    return index, weights


def naive_layer(mlp, x):
    """Per token and chosen expert: act(gate) * up from the fused weights; and the layer output."""
    experts = mlp.experts
    index, weights = router_choice(mlp, x)
    activations = {}  # (token, expert) -> [channels]
    output = torch.zeros_like(x)
    for token in range(x.shape[0]):
        for slot in range(index.shape[1]):
            expert = int(index[token, slot])
            gate_up = experts.gate_up_proj[expert] @ x[token]
            gate, up = gate_up[: gate_up.shape[0] // 2], gate_up[gate_up.shape[0] // 2 :]
            intermediate = experts.act_fn(gate) * up
            activations[(token, expert)] = intermediate
            output[token] += weights[token, slot] * (experts.down_proj[expert] @ intermediate)
    return activations, output


def oracle(lm, input_ids, layer, start, pooling):
    """Pooled [experts * channels] of one input over tokens[start:], routed tokens only."""
    mlp = lm.model.model.layers[layer].mlp
    seen = {}
    pre = {f"model.layers.{layer}.mlp": lambda module, args: seen.__setitem__("x", args[0][0].clone())}
    post = {f"model.layers.{layer}.mlp": lambda module, args, out: seen.__setitem__("y", out[0].clone())}
    with attached(lm.model, forward_pre=pre, forward=post), torch.no_grad():
        lm.model(input_ids=torch.tensor([input_ids]), use_cache=False)
        activations, output = naive_layer(mlp, seen["x"])
    # The neurons defined here are the ones the layer computes with.
    torch.testing.assert_close(output, seen["y"], rtol=1e-4, atol=1e-5)
    n_experts, channels = mlp.experts.down_proj.shape[0], mlp.experts.down_proj.shape[2]
    pooled = np.full((n_experts, channels), np.nan, dtype=np.float32)
    for expert in range(n_experts):
        tokens = [len(input_ids) - 1] if pooling == "last" else range(start, len(input_ids))
        rows = [activations[(t, expert)] for t in tokens if (t, expert) in activations]
        if rows:
            stacked = torch.stack(rows)
            pooled[expert] = (stacked.max(dim=0).values if pooling == "max" else stacked.mean(dim=0)).numpy()
    return pooled.reshape(-1)


@pytest.mark.parametrize(
    "pooling, tokens", [("max", "prompt_and_response"), ("mean", "user_and_response"), ("last", "user_and_response")]
)
def test_captured_moe_neurons_equal_a_naive_per_expert_recomputation(moe, tmp_path, pooling, tokens):
    settings = DumpSettings(batch_size=3, neuron_dtype="float32", pooling=pooling, tokens=tokens, share_prefix=True)
    inputs = InputSet("harmful", OFF, [f"h-{i}" for i in range(len(PROMPTS))], PROMPTS, RESPONSES)
    attributes = {"model": "tiny", "checkpoint": "base", "run": None, "seed": -1, "step": 0}
    path = dump_activations(moe, [inputs], settings, tmp_path / "moe.h5", attributes=attributes, provenance={})
    data = read_input_set(path, "harmful", "no_think", prompt_neurons=True)
    # layers x (experts x channels): the tiny models' experts share the dense width of 128.
    assert data.neurons.shape[1:] == (2, EXPERTS * (128 // EXPERTS))
    assert data.attrs["n_experts"] == EXPERTS
    unvisited = 0
    for example in encode_examples(moe.adapter, moe.tokenizer, inputs, settings):
        row = data.prompt_ids.index(f"h-{example.index}")
        start = 0 if tokens == "prompt_and_response" else example.user_start
        for layer in range(2):
            expected = oracle(moe, example.input_ids, layer, start, pooling)
            np.testing.assert_allclose(data.neurons[row, layer], expected, rtol=1e-4, atol=1e-5)
            unvisited += int(np.isnan(expected).sum())
            prompt_only = oracle(moe, example.input_ids[: example.prompt_length], layer, start, pooling)
            np.testing.assert_allclose(data.prompt_neurons[row, layer], prompt_only, rtol=1e-4, atol=1e-5)
    if pooling != "max":
        assert unvisited > 0  # some experts saw none of an input's pooled tokens: NaN, not 0


def naive_zeroed_forward(experts, zeroed):
    """The experts module's forward in plain Python with neuron (expert, channel) pairs zeroed."""

    def forward(hidden_states, top_k_index, top_k_weights):
        out = torch.zeros_like(hidden_states)
        for token in range(hidden_states.shape[0]):
            for slot in range(top_k_index.shape[1]):
                expert = int(top_k_index[token, slot])
                gate, up = (experts.gate_up_proj[expert] @ hidden_states[token]).chunk(2)
                intermediate = experts.act_fn(gate) * up
                for zero_expert, channel in zeroed:
                    if zero_expert == expert:
                        intermediate[channel] = 0.0
                out[token] += top_k_weights[token, slot] * (experts.down_proj[expert] @ intermediate)
        return out

    return forward


def test_zeroing_moe_neurons_equals_zeroing_the_expert_channel(moe):
    channels = moe.adapter.expert_layout(moe.model)[1]
    zeroed = [(1, 3), (1, 4), (5, 0)]  # (expert, channel) in layer 1
    units = [expert * channels + channel for expert, channel in zeroed]
    ids = torch.tensor([moe.tokenizer.encode("Tell me how to do it, step by step please.")])
    before = {name: p.detach().clone() for name, p in moe.model.named_parameters()}
    with torch.no_grad():
        plain = moe.model(input_ids=ids).logits
        with ablate(moe.model, moe.adapter, zero_neurons={1: units}):
            ablated = moe.model(input_ids=ids).logits
        experts = moe.model.model.layers[1].mlp.experts
        original = experts.forward
        experts.forward = naive_zeroed_forward(experts, zeroed)
        try:
            expected = moe.model(input_ids=ids).logits
        finally:
            experts.forward = original
    assert not torch.allclose(plain, ablated)
    torch.testing.assert_close(ablated, expected, rtol=1e-4, atol=1e-5)
    # The zeroed columns are put back exactly.
    for name, parameter in moe.model.named_parameters():
        assert torch.equal(parameter, before[name]), name
