"""rim.models.lora merges a saved LoRA checkpoint exactly as peft's merge_and_unload does."""

from __future__ import annotations

import pytest
import torch

from rim.models import adapter_for, load_model
from rim.models.loading import LoadedModel, merge_adapter
from rim.models.lora import merge_lora
from rim.provenance import write_json
from rim.testing import FAMILIES

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def save_adapter(
    base_dir, out_dir, *, seed: int, use_rslora: bool, use_dora: bool = False, rank: int = 4, targets=TARGETS
):
    """A LoRA adapter with random non-zero A and B (peft initialises B to 0: nothing to merge)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(
        r=rank, lora_alpha=2 * rank, use_rslora=use_rslora, use_dora=use_dora, target_modules=list(targets)
    )
    peft_model = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    peft_model.save_pretrained(out_dir)
    return out_dir


def peft_merged(base_dir, adapter_dir) -> dict[str, torch.Tensor]:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    return PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload().state_dict()


@pytest.mark.parametrize(
    "family, use_rslora",
    [("llama", True), ("llama", False), *((family, True) for family in FAMILIES if family != "llama")],
)
def test_merged_weights_equal_peft_bit_for_bit(tiny_model_dirs, tmp_path, family, use_rslora):
    """Every family's LoRA targets (Phi-3's fused qkv_proj and gate_up_proj among them)."""
    from transformers import AutoModelForCausalLM

    base_dir = tiny_model_dirs[family]
    targets = adapter_for(family).lora_targets
    adapter = save_adapter(base_dir, tmp_path / "adapter", seed=1, use_rslora=use_rslora, targets=targets)
    expected = peft_merged(base_dir, adapter)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    before = {name: value.clone() for name, value in model.state_dict().items()}
    assert merge_lora(model, adapter) is True
    merged = model.state_dict()
    assert set(merged) == set(expected)
    for name, value in merged.items():
        assert torch.equal(value, expected[name]), name
    # Every targeted projection moved, nothing else did.
    changed = {name for name in merged if not torch.equal(merged[name], before[name])}
    assert changed and all(any(f".{target}." in name for target in targets) for name in changed)
    assert len(changed) == 2 * len(targets)  # two layers


def test_an_adapter_this_merge_does_not_implement_goes_to_peft(tiny_model_dirs, tmp_path):
    from transformers import AutoModelForCausalLM

    base_dir = tiny_model_dirs["llama"]
    adapter = save_adapter(base_dir, tmp_path / "dora", seed=2, use_rslora=False, use_dora=True)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    untouched = {name: value.clone() for name, value in model.state_dict().items()}
    assert merge_lora(model, adapter) is False
    assert all(torch.equal(value, untouched[name]) for name, value in model.state_dict().items())
    # load_model's merge falls back to peft and gets peft's weights.
    merged = merge_adapter(model, str(adapter)).state_dict()
    expected = peft_merged(base_dir, adapter)
    assert all(torch.equal(merged[name], expected[name]) for name in expected)


def test_an_adapter_for_another_model_is_refused_by_name(tiny_model_dirs, tmp_path):
    from rim.errors import ModelSourceError
    from rim.testing import make_tiny_model
    from transformers import AutoModelForCausalLM

    # Phi-3's fused projections do not exist in a Llama model.
    phi3 = save_adapter(tiny_model_dirs["phi3"], tmp_path / "phi3", seed=3, use_rslora=True, targets=["qkv_proj"])
    llama = AutoModelForCausalLM.from_pretrained(tiny_model_dirs["llama"], dtype=torch.float32)
    with pytest.raises(ValueError, match=r"adapts module model\.layers\.0\.self_attn\.qkv_proj, which the model"):
        merge_lora(llama, phi3)
    # The same names with other shapes: a Llama adapter over a narrower Llama.
    adapter = save_adapter(tiny_model_dirs["llama"], tmp_path / "llama", seed=3, use_rslora=True)
    narrow = AutoModelForCausalLM.from_pretrained(make_tiny_model("llama", tmp_path / "narrow", hidden=32))
    with pytest.raises(ModelSourceError, match=r"does not fit its base model: .*shape"):
        merge_adapter(narrow, str(adapter))


def test_a_checkpoint_over_a_model_in_memory_equals_one_read_from_disk(tiny_model_dirs, tmp_path):
    base_dir = tiny_model_dirs["llama"]
    adapter = save_adapter(base_dir, tmp_path / "adapter", seed=4, use_rslora=True)
    base_reference = {
        "name": "tiny",
        "checkpoint": "source",
        "kind": "local",
        "path": str(base_dir),
        "family": "llama",
        "model_type": "llama",
        "dtype": "float32",
        "adapter_path": None,
    }
    write_json(base_reference, tmp_path / "base.json")
    checkpoint = {**base_reference, "checkpoint": "run/seed0/step2", "adapter_path": str(adapter)}
    base = load_model(tmp_path / "base.json", device="cpu")
    assert isinstance(base, LoadedModel)
    from_memory = load_model(checkpoint, device="cpu", base=base).model.state_dict()
    from_disk = load_model(checkpoint, device="cpu").model.state_dict()
    assert all(torch.equal(from_memory[name], from_disk[name]) for name in from_disk)
    # Frozen like peft's merged model (the flag changes how CPU kernels round).
    assert not any(parameter.requires_grad for parameter in load_model(checkpoint, device="cpu").model.parameters())
    # The base in memory is left as it was.
    reread = load_model(tmp_path / "base.json", device="cpu").model.state_dict()
    assert all(torch.equal(value, reread[name]) for name, value in base.model.state_dict().items())
