"""Evaluation on the embedded SmolLM2 (slow group: pytest -m slow).

Batched greedy generation with a shared prefix must give the responses and first-token refusal
scores of one plain forward pass / one ``generate`` call per prompt on the real model too (float
arithmetic in a batch may flip a near-tie late in a response, hence 7 of 8).
"""

from __future__ import annotations

import pytest

from rim.config import load_config
from rim.data.prepare import prepare_dataset
from rim.evaluation import EvaluationSettings, evaluate_prompts, select_prompts
from rim.evaluation.generation import stop_token_ids
from rim.models import load_model, prepare_model
from rim.prompts import prompt_modes, render
from rim.refusal import first_token_refusal_scores
from workflow_helpers import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    reference = tmp_path_factory.mktemp("embedded-eval") / "source.json"
    prepare_model("smollm2", {"source": "embedded:smollm2", "dtype": "float32"}, reference)
    return load_model(reference, device="cpu")


def test_default_harmful_evaluation_matches_per_prompt_generation(embedded):
    config = load_config(REPO / "config" / "config.yaml")
    settings = EvaluationSettings.from_config(config, "harmful")
    settings.limit = 8
    table = prepare_dataset("harmful", config["datasets"]["harmful"])
    prompts = select_prompts(table, settings)
    mode = prompt_modes(config["prompt_modes"])["no_think"]
    frame = evaluate_prompts(embedded, prompts, mode, settings)
    assert len(frame) == 8 and frame["category"].nunique() == 8

    texts = [render(embedded.adapter, embedded.tokenizer, p, mode) for p in prompts["prompt"]]
    scores = first_token_refusal_scores(
        embedded.model, embedded.tokenizer, texts, embedded.adapter.refusal_token_ids(embedded.tokenizer), batch_size=1
    )
    assert frame["refusal_score"].tolist() == pytest.approx(scores, abs=1e-3)
    stops = stop_token_ids(embedded)
    length = settings.generation_length(False)
    agree = 0
    for text, response in zip(texts, frame["response"]):
        encoded = embedded.tokenizer(text, return_tensors="pt", add_special_tokens=False)
        out = embedded.model.generate(
            **encoded,
            max_new_tokens=length,
            do_sample=False,
            eos_token_id=stops,
            pad_token_id=embedded.tokenizer.pad_token_id,
        )
        tokens = [t for t in out[0, encoded["input_ids"].shape[1] :].tolist() if t not in stops]
        agree += embedded.tokenizer.decode(tokens) == response
    assert agree >= 7
