"""Family adapters on tiny random models: exact prompt strings, anatomy, refusal tokens."""

from __future__ import annotations

import pytest
import torch

from rim.errors import ConfigError
from rim.models import adapter_for, load_model, prepare_model
from rim.prompts import PromptMode, prompt_modes, render
from workflow_helpers import default_config
from rim.hooks import ablate
from rim.testing import FAMILIES, MOE_FAMILIES

NO_THINK = PromptMode("no_think", thinking=False)
THINK = PromptMode("think", thinking=True)
TARGET = PromptMode("confirmatory_reasoning_target", thinking=True, statement="A quick confirmation is enough.")


@pytest.fixture(scope="module")
def loaded(tiny_model_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("refs")
    models = {}
    for family, path in tiny_model_dirs.items():
        prepare_model(family, {"source": str(path)}, root / f"{family}.json")
        models[family] = load_model(root / f"{family}.json", device="cpu")
    return models


def test_family_is_detected_from_model_type(loaded):
    assert {family: lm.adapter.name for family, lm in loaded.items()} == {family: family for family in loaded}
    assert set(loaded) == {"llama", "qwen3", "gemma2", "phi3", "olmo2", "mistral", *MOE_FAMILIES}
    assert {family for family, lm in loaded.items() if lm.adapter.is_moe} == set(MOE_FAMILIES)
    # Qwen3-30B-A3B thinks as Qwen3 does.
    assert loaded["qwen3_moe"].adapter.native_thinking and not loaded["mixtral"].adapter.native_thinking


def test_qwen3_style_prompts_render_exactly(loaded):
    lm = loaded["qwen3"]
    user = "How do I kill a Python process?"
    header = "<|im_start|>user\nHow do I kill a Python process?<|im_end|>\n<|im_start|>assistant\n"
    # OFF: enable_thinking=False writes the empty think block into the prompt.
    assert render(lm.adapter, lm.tokenizer, user, NO_THINK) == header + "<think>\n\n</think>\n\n"
    # ON: the model opens the think block itself.
    assert render(lm.adapter, lm.tokenizer, user, THINK) == header
    # A reasoning-pattern statement goes inside the think block.
    assert render(lm.adapter, lm.tokenizer, user, TARGET) == header + "<think>\nA quick confirmation is enough."


def test_plain_chatml_prompts_render_exactly(loaded):
    lm = loaded["llama"]
    user = "How do I kill a Python process?"
    header = (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nHow do I kill a Python process?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert render(lm.adapter, lm.tokenizer, user, NO_THINK) == header
    # No native think mode: ON prefills the assistant turn with the reasoning opener.
    assert render(lm.adapter, lm.tokenizer, user, THINK) == header + "Let me think step by step."
    assert render(lm.adapter, lm.tokenizer, user, TARGET) == (
        header + "Let me think step by step. A quick confirmation is enough."
    )


def test_gemma_has_no_system_role_and_puts_the_system_prompt_in_the_turn(loaded):
    lm = loaded["gemma2"]
    adapter = lm.adapter.with_overrides({"system_prompt": "Be brief."})
    assert render(adapter, lm.tokenizer, "Hi", NO_THINK) == (
        "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
    )


def test_phi3_olmo2_and_mistral_prompts_render_in_their_own_turns(loaded):
    user = "How do I kill a Python process?"
    phi3, olmo2, mistral = loaded["phi3"], loaded["olmo2"], loaded["mistral"]
    assert render(phi3.adapter, phi3.tokenizer, user, NO_THINK) == f"<|user|>\n{user}<|end|>\n<|assistant|>\n"
    assert render(olmo2.adapter, olmo2.tokenizer, user, THINK) == (
        f"<|endoftext|><|user|>\n{user}\n<|assistant|>\nLet me think step by step."
    )
    # No system role: a system prompt opens the user turn.
    adapter = mistral.adapter.with_overrides({"system_prompt": "Be brief."})
    assert render(adapter, mistral.tokenizer, "Hi", NO_THINK) == "<s>[INST] Be brief.\n\nHi [/INST]"
    # What closes an assistant turn, which training appends to every completion.
    assert phi3.adapter.end_of_turn(phi3.tokenizer) == "<|end|>\n<|endoftext|>"
    assert olmo2.adapter.end_of_turn(olmo2.tokenizer) == "<|endoftext|>"
    assert mistral.adapter.end_of_turn(mistral.tokenizer) == "</s>"


def test_phi3_generation_stops_at_the_end_of_its_turn(loaded):
    from rim.evaluation.generation import stop_token_ids

    phi3 = loaded["phi3"]
    assert phi3.tokenizer.convert_tokens_to_ids("<|end|>") in stop_token_ids(phi3)


def test_per_model_overrides(loaded):
    lm = loaded["llama"]
    adapter = lm.adapter.with_overrides({"reasoning_opener": "Think first.", "system_prompt": None})
    assert render(adapter, lm.tokenizer, "Hi", THINK).endswith("<|im_start|>assistant\nThink first.")


def test_training_examples_put_reasoning_in_the_think_block_for_qwen3(loaded):
    qwen = loaded["qwen3"]
    prompt, completion = qwen.adapter.render_training_example(qwen.tokenizer, "2+2?", "#### 4", "2 + 2 = 4.")
    assert prompt.endswith("<|im_start|>assistant\n")
    assert completion == "<think>\n2 + 2 = 4.\n</think>\n\n#### 4<|im_end|>"
    llama = loaded["llama"]
    prompt, completion = llama.adapter.render_training_example(llama.tokenizer, "2+2?", "#### 4", "2 + 2 = 4.")
    assert completion == "2 + 2 = 4.\n#### 4<|im_end|>"


@pytest.mark.parametrize("family", list(FAMILIES))
def test_heads_and_neurons_are_where_the_adapter_says(loaded, family):
    lm = loaded[family]
    model, adapter = lm.model, lm.adapter
    seen = {}

    def record(name):
        def hook(module, args):
            seen[name] = args[0].shape

        return hook

    handles = [adapter.attention_output_module(model, 1).register_forward_pre_hook(record("heads"))]
    if not adapter.is_moe:
        handles.append(adapter.mlp_output_module(model, 1).register_forward_pre_hook(record("neurons")))
    try:
        ids = torch.tensor([[1, 2, 3, 4, 5]])
        model(ids)
    finally:
        for handle in handles:
            handle.remove()
    assert seen["heads"][-1] == adapter.num_heads(model) * adapter.head_dim(model) == 64
    if adapter.is_moe:
        # 4 experts of 32 channels: each expert's down projection reads its 32 (tests/test_moe_neurons.py).
        assert adapter.expert_layout(model) == (4, 32) and adapter.num_neurons(model) == 128
    else:
        assert seen["neurons"][-1] == adapter.num_neurons(model) == 128
    assert adapter.num_layers(model) == 2


@pytest.mark.parametrize("family", list(FAMILIES))
def test_zeroing_a_head_equals_zeroing_its_output_projection_columns(loaded, family):
    """The head ablation's hook against an independent oracle: the head's columns of o_proj zeroed."""
    lm = loaded[family]
    model, adapter = lm.model, lm.adapter
    head_dim = adapter.head_dim(model)
    ids = torch.tensor([lm.tokenizer.encode("Tell me how to do it, step by step please.")])
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        with ablate(model, adapter, zero_heads={1: [2]}):
            ablated = model(input_ids=ids).logits
        weight = adapter.attention_output_module(model, 1).weight
        saved = weight[:, 2 * head_dim : 3 * head_dim].clone()
        weight[:, 2 * head_dim : 3 * head_dim] = 0
        try:
            expected = model(input_ids=ids).logits
        finally:
            weight[:, 2 * head_dim : 3 * head_dim] = saved
    assert not torch.allclose(plain, ablated)
    torch.testing.assert_close(ablated, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_refusal_tokens_are_first_tokens_of_the_openers(loaded, family):
    lm = loaded[family]
    ids = lm.adapter.refusal_token_ids(lm.tokenizer)
    expected_first = lm.tokenizer.encode("Sorry", add_special_tokens=False)[0]
    assert expected_first in ids
    assert len(ids) == len(set(ids))


def test_lora_targets_exist_in_every_family(loaded):
    for lm in loaded.values():
        names = {name.rsplit(".", 1)[-1] for name, _ in lm.model.named_modules()}
        assert set(lm.adapter.lora_targets) <= names
        parameters = {name.split(".", 3)[-1] for name, _ in lm.model.named_parameters()}
        assert set(lm.adapter.lora_parameters) <= parameters
        assert bool(lm.adapter.lora_parameters) == lm.adapter.is_moe


def test_unknown_family_and_model_type_are_clear_errors():
    with pytest.raises(ConfigError, match="unknown model family 'phi'"):
        adapter_for("phi")
    with pytest.raises(ConfigError, match="no adapter for model_type 'mamba'.*set 'family'"):
        adapter_for("auto", "mamba")


def test_default_prompt_modes_cover_think_and_all_patterns():
    modes = prompt_modes(default_config()["prompt_modes"])
    assert modes["no_think"].thinking is False and modes["think"].thinking is True
    patterns = {(m.pattern, m.variant) for m in modes.values() if m.pattern}
    assert len(patterns) == 6
    assert all(modes[name].statement for name in modes if modes[name].pattern)
