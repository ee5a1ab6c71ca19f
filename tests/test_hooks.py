"""Interventions: zeroing heads and neurons touches exactly their slices; hooks never linger."""

from __future__ import annotations

import pytest
import torch

from rim.hooks import ablate, attached, head_slices, units_by_layer
from rim.models import load_model, prepare_model


@pytest.fixture(scope="module")
def lm(tiny_model_dirs, tmp_path_factory):
    path = tmp_path_factory.mktemp("hooks") / "ref.json"
    prepare_model("tiny", {"source": str(tiny_model_dirs["llama"])}, path)
    return load_model(path, device="cpu")


def capture_input(lm, name):
    seen = {}

    def hook(module, args):
        seen["x"] = args[0].detach().clone()

    return seen, hook


def test_zeroing_a_head_changes_exactly_its_slice(lm):
    model, adapter = lm.model, lm.adapter
    ids = torch.tensor([[3, 5, 7, 11, 13]])
    name = adapter.attention_output_name(1)
    # The hook registered first sees the input before ablation; one registered after sees it after.
    before, hook_before = capture_input(lm, name)
    with attached(model, forward_pre={name: hook_before}):
        with ablate(model, adapter, zero_heads={1: [2]}):
            after, hook_after = capture_input(lm, name)
            with attached(model, forward_pre={name: hook_after}):
                model(ids)
    head_dim = adapter.head_dim(model)
    changed = (before["x"] != after["x"]).any(dim=(0, 1))
    expected = torch.zeros_like(changed)
    expected[2 * head_dim : 3 * head_dim] = True
    assert torch.equal(changed, expected)
    assert torch.all(after["x"][..., 2 * head_dim : 3 * head_dim] == 0)


def test_zeroing_neurons_and_hooks_are_removed_after_an_exception(lm):
    model, adapter = lm.model, lm.adapter
    ids = torch.tensor([[3, 5, 7]])
    reference = model(ids).logits
    with pytest.raises(RuntimeError):
        with ablate(model, adapter, zero_neurons={0: [1, 5, 9]}):
            assert not torch.allclose(model(ids).logits, reference)
            raise RuntimeError("boom")
    assert torch.allclose(model(ids).logits, reference)
    assert all(not module._forward_pre_hooks for module in model.modules())


def test_mean_ablation_writes_the_given_means(lm):
    model, adapter = lm.model, lm.adapter
    width = adapter.num_heads(model) * adapter.head_dim(model)
    means = {0: torch.arange(width, dtype=torch.float32)}
    seen, hook = capture_input(lm, adapter.attention_output_name(0))
    with ablate(model, adapter, mean_heads={0: [1]}, head_means=means):
        with attached(model, forward_pre={adapter.attention_output_name(0): hook}):
            model(torch.tensor([[1, 2, 3]]))
    slice_ = head_slices([1], adapter.head_dim(model))
    assert torch.equal(seen["x"][0, :, slice_], means[0][slice_].expand(3, -1))


def test_units_by_layer():
    assert units_by_layer([(6, 20), (0, 11), (0, 23)]) == {6: [20], 0: [11, 23]}
