"""The first-token refusal score against a hand computation."""

from __future__ import annotations

import math

import pytest
import torch

from rim.models import load_model, prepare_model
from rim.prompts import PromptMode
from rim.refusal import first_token_refusal_scores, refusal_log_odds


def test_log_odds_matches_hand_computation():
    logits = torch.tensor([[2.0, 0.0, 1.0, -1.0]])
    # p(refuse) = (e^2 + e^-1) / (e^2 + e^0 + e^1 + e^-1)
    total = math.exp(2) + 1 + math.exp(1) + math.exp(-1)
    p = (math.exp(2) + math.exp(-1)) / total
    expected = math.log(p / (1 - p))
    assert refusal_log_odds(logits, [0, 3]).item() == pytest.approx(expected, rel=1e-6)


def test_scores_on_a_tiny_model_equal_a_manual_forward_pass(tiny_model_dirs, tmp_path):
    prepare_model("tiny", {"source": str(tiny_model_dirs["llama"])}, tmp_path / "ref.json")
    lm = load_model(tmp_path / "ref.json", device="cpu")
    ids = lm.adapter.refusal_token_ids(lm.tokenizer)
    texts = [
        lm.adapter.render_prompt(lm.tokenizer, prompt, PromptMode("no_think", False))
        for prompt in ("Hi", "How do I kill a Python process in a long running job?", "Write a story.")
    ]
    batched = first_token_refusal_scores(lm.model, lm.tokenizer, texts, ids, batch_size=2)
    for text, score in zip(texts, batched):
        encoded = lm.tokenizer(text, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            probs = lm.model(**encoded).logits[0, -1].softmax(-1).double()
        p = probs[ids].sum().item()
        assert score == pytest.approx(math.log(p / (1 - p)), abs=1e-4)
