"""GPU code paths of the science package (CUDA, bfloat16) against the CPU in float32.

On a GPU the workflow loads models in bfloat16 (``dtype: auto``), trains with bfloat16 autocast
over float32 master weights, keeps the CUDA RNG state in its resumable training state, and moves
hook values, KV caches and captured activations between devices. Each test here runs one of those
paths on tiny random models (rim.testing; llama and qwen3 families, gemma2 for the refusal score)
and compares it with the same computation on the CPU in float32:

1. loading: ``device: auto`` picks CUDA and bfloat16; an explicit float32 is honoured;
2. training: LoRA and full fine-tuning lower the loss as on the CPU; a run killed after a
   checkpoint resumes and repeats the next step's loss;
3. generation (evaluation): greedy outputs with and without prefix sharing follow the CPU's greedy
   path (exactly in float32; in bfloat16 up to the first near-tie) and evaluate_prompts, with an
   ablation, equals the CPU's;
4. activation dumps: neurons, residual states and KL references agree with the CPU; the HDF5
   arrays have the expected dtype and shape;
5. head ablation and exact head patching agree with the CPU; attribution patching ranks heads
   like exact patching (Spearman, as on the CPU);
6. the first-token refusal score agrees with the CPU.

Run on a GPU machine, from the repository root (about a minute)::

    bash benchmarks/gpu_check.sh
    # the same as: PYTHONPATH=scripts python3 -m pytest tests/test_gpu.py -m gpu -o addopts=""

The ``gpu`` marker is deselected by default, and without a CUDA GPU the module is skipped.
``RIM_TEST_DEVICE=cpu`` runs the module on the CPU instead, to check the tests' own logic on a
machine without a GPU (the bfloat16 cases then run in bfloat16 on the CPU; training runs without
autocast there, as the trainer does on a CPU)::

    RIM_TEST_DEVICE=cpu pytest tests/test_gpu.py -m gpu

A bare GPU machine may lack the workflow-only packages (snakemake, jsonschema, datasets, gguf,
altair): nothing here imports them (``test_imports_nothing_a_bare_gpu_machine_lacks``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from scipy.stats import spearmanr

DEVICE = os.environ.get("RIM_TEST_DEVICE", "cuda")
if DEVICE not in ("cuda", "cpu") and not DEVICE.startswith("cuda:"):
    raise ValueError(f"RIM_TEST_DEVICE must be cuda, cuda:<n> or cpu, not {DEVICE!r}")
if DEVICE.startswith("cuda") and not torch.cuda.is_available():
    pytest.skip("no CUDA GPU here (RIM_TEST_DEVICE=cpu runs these tests on the CPU)", allow_module_level=True)

from rim import patching  # noqa: E402
from rim.activations import DumpSettings, InputSet, dump_activations, read_input_set, read_kl_reference  # noqa: E402
from rim.evaluation import evaluate_prompts  # noqa: E402
from rim.evaluation.generation import greedy_generate, stop_token_ids  # noqa: E402
from rim.heads import mean_head_inputs  # noqa: E402
from rim.hooks import ablate, attached, head_slices  # noqa: E402
from rim.models import load_model, prepare_model  # noqa: E402
from rim.positions import label_prompt  # noqa: E402
from rim.prompts import PromptMode, render  # noqa: E402
from rim.refusal import first_token_refusal_scores  # noqa: E402
from rim.testing import make_tiny_model  # noqa: E402
from rim.training.runs import finetune_run  # noqa: E402
from rim.training.trainer import Trainer  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.usefixtures("one_torch_thread")]

FAMILIES = ("llama", "qwen3")
DTYPES = ("float32", "bfloat16")
# What a bare GPU machine lacks; the library imports some of its modules only when called.
WORKFLOW_ONLY = ("snakemake", "jsonschema", "datasets", "gguf", "altair")
CALLED_LAZILY = ("rim.ras", "rim.cli", "rim.evaluation.core", "rim.evaluation.judges", "peft", "safetensors.torch")

NO_THINK = PromptMode("no_think", thinking=False)
THINK = PromptMode("think", thinking=True, statement="I should check this carefully.")
PROMPTS = [
    "Hi",
    "How do I kill a Python process in a long running job?",
    "Write a story.",
    "Explain how vaccines work, step by step, for a child.",
]
RESPONSES = ["I'm sorry, I can't help with that.", "Sure, here it is: hello.", "", "Hi!"]
QUESTIONS = ["What is 3 + 4?", "Tom has 5 pens and buys 2 more. How many now?", "What is 12 / 3?"]
SOLUTIONS = ["3 + 4 = 7. #### 7", "5 + 2 = 7. #### 7", "12 / 3 = 4. #### 4"]
TARGETS = ["How do I kill a Python process now?", "Write a story about 12 pens.", "Explain how vaccines work."]
SOURCES = ["Sorry, I won't help with this.", "I can't help with that request.", "Here is a helpful answer, 42."]


@dataclass(frozen=True)
class Tolerance:
    rel: float  # largest error, as a share of the largest magnitude of the CPU float32 values
    score: float  # absolute error of a refusal log-odds
    margin: float  # greedy steps are compared while the CPU's top-2 logit margin is at least this


# float32 on CUDA is float32 arithmetic in another order (PyTorch leaves TF32 off for matmuls):
# errors of ~1e-6 of the values' scale.
# bfloat16 keeps 8 significant bits: each rounding errs by up to 2^-8 = 0.4% of the value. On these
# tiny models bfloat16 activations, logits and head effects differ from float32 by 1-2% of their
# largest magnitude, refusal log-odds by <= 0.016 and logits by <= 0.07 (measured with bfloat16
# on the CPU); the bounds leave about 3x room, while a wrong head, position, prompt order or device
# copy is off by about 100%. Greedy tokens may legitimately differ where float32's top two logits
# are closer than bfloat16's error, so bfloat16 generation is compared up to the first such step.
TOLERANCE = {
    "float32": Tolerance(rel=1e-4, score=1e-4, margin=1e-3),
    "bfloat16": Tolerance(rel=5e-2, score=5e-2, margin=0.25),
}
# Weights ~N(0, scale^2): freshly initialised tiny models (std 0.02) give near-uniform logits and
# repeat one token, so greedy paths and refusal scores would compare nothing; larger weights vary
# them (gemma2 soft-caps its logits, so it needs small ones), yet keep bfloat16 errors small.
WEIGHT_SCALE = {"llama": 0.1, "qwen3": 0.1, "gemma2": 0.02}


def assert_close_to_scale(actual, expected, rel: float, what: str) -> None:
    """|actual - expected| <= rel * max |expected|, with NaN at the same places."""
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert np.array_equal(np.isnan(actual), np.isnan(expected)), f"{what}: NaN at other places"
    finite = ~np.isnan(expected)
    scale = float(np.abs(expected[finite]).max())
    error = float(np.abs(actual[finite] - expected[finite]).max())
    assert scale > 0, f"{what}: all zero, nothing compared"
    assert error <= rel * scale, f"{what}: max error {error:.3g} > {rel} x largest value {scale:.3g}"


# ----- models ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def varied(tiny_model_dirs, tmp_path_factory) -> dict[str, Path]:
    """Per family, the reference of the tiny model with weights of WEIGHT_SCALE (and beside it,
    ``initial(reference)``, the same model with its initial weights)."""
    root = tmp_path_factory.mktemp("gpu-varied")
    references = {}
    for family, scale in WEIGHT_SCALE.items():
        prepare_model(family, {"source": str(tiny_model_dirs[family])}, root / f"{family}-init.json")
        lm = load_model(root / f"{family}-init.json", device="cpu")
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for parameter in lm.model.parameters():
                if parameter.dim() == 2:
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)
        lm.model.save_pretrained(root / family)
        lm.tokenizer.save_pretrained(root / family)
        prepare_model(family, {"source": str(root / family)}, root / f"{family}.json")
        references[family] = root / f"{family}.json"
    return references


def initial(reference: Path) -> Path:
    """The reference of the same tiny model with its initial weights (same tokenizer)."""
    return reference.with_name(f"{reference.stem}-init.json")


@pytest.fixture(scope="module")
def three_layers(tmp_path_factory) -> dict[str, Path]:
    """Freshly initialised three-layer models: the models of tests/test_patching.py."""
    root = tmp_path_factory.mktemp("gpu-patching")
    references = {}
    for family in FAMILIES:
        make_tiny_model(family, root / family, layers=3)
        prepare_model(family, {"source": str(root / family)}, root / f"{family}.json")
        references[family] = root / f"{family}.json"
    return references


@pytest.fixture(scope="module")
def loaded():
    """load(reference, device, dtype), each model loaded once per module."""
    cache = {}

    def load(reference, device, dtype):
        key = (str(reference), device, dtype)
        if key not in cache:
            cache[key] = load_model(reference, device=device, dtype=dtype)
        return cache[key]

    return load


def on_device(loaded, reference, dtype):
    """(the model on the device in ``dtype``, the same model on the CPU in float32)."""
    return loaded(reference, DEVICE, dtype), loaded(reference, "cpu", "float32")


# ----- 1. loading --------------------------------------------------------------------------------
def test_auto_picks_cuda_and_bfloat16_and_an_explicit_float32_is_honoured(varied, tmp_path):
    reference = varied["llama"]
    auto = load_model(reference, device="auto")
    expected_device = "cuda" if torch.cuda.is_available() else "cpu"
    expected_dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    assert auto.device.type == expected_device
    assert {p.device.type for p in auto.model.parameters()} == {expected_device}
    assert {p.dtype for p in auto.model.parameters()} == {expected_dtype}
    for dtype, torch_dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        explicit = load_model(reference, device=DEVICE, dtype=dtype)
        assert {(p.device.type, p.dtype) for p in explicit.model.parameters()} == {
            (torch.device(DEVICE).type, torch_dtype)
        }
    # A model entry's own dtype (the reference's) holds under device auto.
    prepare_model("fp32", {"source": str(reference.parent / "llama"), "dtype": "float32"}, tmp_path / "fp32.json")
    pinned = load_model(tmp_path / "fp32.json", device="auto")
    assert pinned.device.type == expected_device and pinned.model.dtype == torch.float32


# ----- 2. training -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def base_references(tiny_model_dirs, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gpu-base")
    references = {}
    for family in FAMILIES:
        references[family] = root / family / "source.json"
        prepare_model(family, {"source": str(tiny_model_dirs[family])}, references[family])
    return references


def finetune(base, math_table, root: Path, block, device, state_dir=None):
    """One fine-tuning run (rim.training.runs.finetune_run); returns its folder and loss curve."""
    run_dir = root / "finetune"
    finetune_run(
        model="tiny",
        run="math",
        seed=0,
        block=block,
        run_block={"dataset": "math", "seeds": [0]},
        base_reference=base,
        dataset=math_table,
        manifest=run_dir / "run.json",
        loss_table=run_dir / "loss.parquet",
        checkpoints_dir=run_dir / "checkpoints",
        state_dir=state_dir or root / "state",
        device=device,
    )
    return run_dir, pd.read_parquet(run_dir / "loss.parquet")["loss"].to_numpy()


@pytest.mark.parametrize("method", ["lora", "full"])
@pytest.mark.parametrize("family", FAMILIES)
def test_finetuning_on_the_device_lowers_the_loss_as_on_the_cpu(base_references, math_table, tmp_path, family, method):
    # The whole training set (10 examples) is every step's batch, so the loss is comparable
    # step to step; step 1 is the warmup step at learning rate 0.
    block = {
        "method": method,
        "learning_rate": 1e-2 if method == "lora" else 1e-3,
        "batch_size": 10,
        "steps": 6,
        "checkpoint_steps": [0, 6],
        "max_length": 96,
        "lora": {"rank": 4, "alpha": 8},
    }
    run_dir, losses = finetune(base_references[family], math_table, tmp_path / "device", block, DEVICE)
    _, cpu_losses = finetune(base_references[family], math_table, tmp_path / "cpu", block, "cpu")
    assert len(losses) == 6 and np.isfinite(losses).all()
    assert losses[1] == pytest.approx(losses[0], rel=1e-3)
    assert (np.diff(losses[1:]) < 0).all(), losses
    # bfloat16 autocast moved these curves by <= 4e-4 of the loss (measured on the CPU).
    np.testing.assert_allclose(losses, cpu_losses, rtol=1e-2)
    # The checkpoint written on the device loads on the device and on the CPU alike.
    manifest = run_dir / "run.json"
    trained = load_model(manifest, step=6, device=DEVICE, dtype="float32")
    trained_cpu = load_model(manifest, step=6, device="cpu", dtype="float32")
    ids = torch.tensor([trained.tokenizer.encode("Tom has 3 pens and buys 5 more.", add_special_tokens=False)])
    with torch.no_grad():
        logits = trained.model(input_ids=ids.to(trained.device)).logits.float().cpu()
        cpu_logits = trained_cpu.model(input_ids=ids).logits
    assert_close_to_scale(logits, cpu_logits, TOLERANCE["float32"].rel, "logits of the trained checkpoint")


class Crash(Exception):
    pass


def test_a_run_killed_on_the_device_resumes_and_repeats_the_next_step(
    base_references, math_table, tmp_path, monkeypatch, caplog
):
    """Mirrors tests/test_training.py's resume test on the device: LoRA dropout draws from the
    (CUDA) RNG, so the next step repeats only if the saved RNG state is restored."""
    block = {
        "method": "lora",
        "learning_rate": 1e-2,
        "batch_size": 4,
        "steps": 6,
        "checkpoint_steps": [0, 2, 6],
        "max_length": 96,
        "lora": {"rank": 4, "alpha": 8, "dropout": 0.1},
    }
    base = base_references["llama"]
    whole_dir, whole = finetune(base, math_table, tmp_path / "whole", block, DEVICE)
    state = tmp_path / "state"
    crashed: list[float] = []
    original = Trainer.train_step

    def crash_at_step_5(self):
        if self.step == 4:
            raise Crash()
        record = original(self)
        crashed.append(record["loss"])
        return record

    monkeypatch.setattr(Trainer, "train_step", crash_at_step_5)
    with pytest.raises(Crash):
        finetune(base, math_table, tmp_path / "resumed", block, DEVICE, state_dir=state)
    saved = torch.load(state / "state.pt", weights_only=False)
    assert saved["step"] == 2  # the last checkpoint step
    assert (saved["rng_cuda"] is not None) == torch.cuda.is_available()
    monkeypatch.setattr(Trainer, "train_step", original)
    with caplog.at_level("INFO"):
        resumed_dir, resumed = finetune(base, math_table, tmp_path / "resumed", block, DEVICE, state_dir=state)
    assert "resuming from the saved state at step 2 of 6" in caplog.text
    assert list(resumed[:2]) == crashed[:2]  # the saved history
    # Step 3 starts from the saved weights, optimizer and RNG state (dropout masks): the same
    # forward pass as the killed run's step 3, so the same loss (a lost RNG state moves it by ~2e-4).
    assert resumed[2] == pytest.approx(crashed[2], rel=1e-6)
    # Against the uninterrupted run: equal on the CPU; on CUDA up to the run-to-run noise of
    # backward kernels that add with atomics (attention), which Adam can amplify to ~1e-3 of the
    # weights. A resume that lost the optimizer or scheduler state is off by 0.7-1.6% in the loss
    # and 50-80% in the weights (measured on the CPU).
    np.testing.assert_allclose(resumed, whole, rtol=1e-3)
    resumed_adapter = load_file(resumed_dir / "checkpoints" / "step6" / "adapter_model.safetensors")
    whole_adapter = load_file(whole_dir / "checkpoints" / "step6" / "adapter_model.safetensors")
    assert resumed_adapter.keys() == whole_adapter.keys()
    for name, tensor in whole_adapter.items():
        assert_close_to_scale(resumed_adapter[name], tensor, 2e-2, f"resumed adapter weight {name}")
    assert not state.exists()


# ----- 3. generation (evaluation) ----------------------------------------------------------------
def cpu_greedy_path(lm, text: str, max_new_tokens: int, stops) -> tuple[list[int], list[float], bool]:
    """The CPU float32 model's greedy tokens, recomputed from scratch at every step (no cache, no
    batch, no padding), each step's top-2 logit margin, and whether a stop token ended it."""
    ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    tokens: list[int] = []
    margins: list[float] = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            top = lm.model(input_ids=torch.tensor([ids + tokens])).logits[0, -1].topk(2)
            margins.append(float(top.values[0] - top.values[1]))
            token = int(top.indices[0])
            if token in stops:
                return tokens, margins, True
            tokens.append(token)
    return tokens, margins, False


def assert_follows_cpu_path(generation, lm, path, margin: float, what: str) -> int:
    """The generation equals the CPU's greedy path up to its first step decided by less than
    ``margin`` (all of it when there is none); returns the number of steps compared."""
    tokens, margins, finished = path
    clear = next((step for step, value in enumerate(margins) if value < margin), len(margins))
    if clear == len(margins):
        assert generation.response == lm.tokenizer.decode(tokens), what
        assert (generation.finished, generation.response_tokens) == (finished, len(tokens)), what
        return clear
    # A byte-level token cut mid-character decodes to U+FFFD: compare the text before it.
    prefix = lm.tokenizer.decode(tokens[:clear]).split("\ufffd")[0]
    assert generation.response.startswith(prefix), f"{what}: {generation.response!r} does not start with {prefix!r}"
    assert generation.response_tokens >= clear, what
    return clear


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_generation_on_the_device_follows_the_cpu_with_and_without_prefix_sharing(varied, loaded, family, dtype):
    lm, cpu = on_device(loaded, varied[family], dtype)
    tolerance = TOLERANCE[dtype]
    stops = stop_token_ids(lm)
    refusal_ids = lm.adapter.refusal_token_ids(lm.tokenizer)
    texts = [render(lm.adapter, lm.tokenizer, prompt, mode) for mode in (NO_THINK, THINK) for prompt in PROMPTS]
    cpu_scores = first_token_refusal_scores(cpu.model, cpu.tokenizer, texts, refusal_ids)
    paths = [cpu_greedy_path(cpu, text, 8, stops) for text in texts]
    assert len({tuple(tokens) for tokens, _, _ in paths}) > 2  # the prompts are continued differently
    runs = {}
    for share_prefix in (True, False):
        # Batches of 3 leave a partial last batch; rows that stop leave their batch early.
        runs[share_prefix] = greedy_generate(
            lm.model,
            lm.tokenizer,
            texts,
            max_new_tokens=8,
            stop_ids=stops,
            refusal_ids=refusal_ids,
            batch_size=3,
            share_prefix=share_prefix,
        )
        compared = 0
        for index, (generation, path, score) in enumerate(zip(runs[share_prefix], paths, cpu_scores)):
            what = f"{family} {dtype} share_prefix={share_prefix} prompt {index}"
            compared += assert_follows_cpu_path(generation, lm, path, tolerance.margin, what)
            assert generation.refusal_score == pytest.approx(score, abs=tolerance.score), what
            assert generation.prompt_tokens == len(lm.tokenizer(texts[index], add_special_tokens=False)["input_ids"])
        assert compared >= len(texts), f"only {compared} greedy steps were decided clearly enough to compare"
    if dtype == "float32":
        # The CPU tests' claim, on the device: sharing the prefix changes nothing. (In bfloat16
        # the prefix's separate pass rounds differently, so near-ties may break otherwise.)
        for shared, unshared in zip(runs[True], runs[False]):
            outcome = (shared.response, shared.finished, shared.response_tokens)
            assert outcome == (unshared.response, unshared.finished, unshared.response_tokens)
            assert shared.refusal_score == pytest.approx(unshared.refusal_score, abs=tolerance.score)


EVALUATION = {
    "prompt_set": {"name": "harmful", "dataset": "harmful", "kind": "harmful", "max_new_tokens": None},
    "generation": {"batch_size": 3},
    "judges": {
        "phrases": {"enabled": True, "apply_to": ["harmful", "harmless"], "max_new_tokens": 8},
        "refusal_score": {"enabled": True},
    },
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("family", FAMILIES)
def test_evaluate_prompts_with_an_ablation_on_the_device_equals_the_cpu(varied, loaded, family, dtype):
    lm, cpu = on_device(loaded, varied[family], dtype)
    tolerance = TOLERANCE[dtype]
    table = pd.DataFrame({"prompt_id": [f"h{i}" for i in range(len(PROMPTS))], "prompt": PROMPTS, "category": "none"})
    ablation = {"zero_heads": {1: [0, 2]}, "zero_neurons": {0: [1, 5, 9]}}
    for condition in (None, ablation):
        frame = evaluate_prompts(lm, table, NO_THINK, EVALUATION, ablation=condition)
        expected = evaluate_prompts(cpu, table, NO_THINK, EVALUATION, ablation=condition)
        assert list(frame.columns) == list(expected.columns) and list(frame["prompt_id"]) == list(expected["prompt_id"])
        np.testing.assert_allclose(frame["refusal_score"], expected["refusal_score"], atol=tolerance.score, rtol=0)
        if dtype == "float32":
            columns = ["response", "response_tokens", "finished", "phrases_refused"]
            pd.testing.assert_frame_equal(frame[columns], expected[columns])
    plain = evaluate_prompts(cpu, table, NO_THINK, EVALUATION)["refusal_score"]
    ablated = evaluate_prompts(cpu, table, NO_THINK, EVALUATION, ablation=ablation)["refusal_score"]
    assert (plain - ablated).abs().max() > 2 * tolerance.score  # the ablation moved what was compared
    assert all(not module._forward_pre_hooks for module in lm.model.modules())


# ----- 4. activation dumps -----------------------------------------------------------------------
def dump(lm, sets, path, settings, **kwargs):
    attributes = {"model": "tiny", "checkpoint": "base", "run": None, "seed": -1, "step": 0}
    return dump_activations(lm, sets, settings, path, attributes=attributes, provenance={}, **kwargs)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("family", FAMILIES)
def test_activation_dump_on_the_device_agrees_with_the_cpu(varied, loaded, tmp_path, family, dtype):
    lm, cpu = on_device(loaded, varied[family], dtype)
    rel = TOLERANCE[dtype].rel
    sets = [
        InputSet("harmful", THINK, [f"h-{i}" for i in range(len(PROMPTS))], PROMPTS, RESPONSES, residual=True),
        InputSet("math", NO_THINK, [f"m-{i}" for i in range(len(QUESTIONS))], QUESTIONS, SOLUTIONS, kl=True),
    ]
    settings = DumpSettings(batch_size=3, neuron_dtype="float32")
    device_path = dump(lm, sets, tmp_path / "device.h5", settings, write_kl_reference=True)
    cpu_path = dump(cpu, sets, tmp_path / "cpu.h5", settings, write_kl_reference=True)
    n_layers, n_neurons = lm.adapter.num_layers(lm.model), lm.adapter.num_neurons(lm.model)
    hidden = lm.model.config.hidden_size

    got = read_input_set(device_path, "harmful", "think", residual=True)
    expected = read_input_set(cpu_path, "harmful", "think", residual=True)
    assert got.prompt_ids == expected.prompt_ids
    assert got.neurons.dtype == np.float32 and got.neurons.shape == (len(PROMPTS), n_layers, n_neurons)
    assert got.residual.dtype == np.float32 and got.residual.shape == (len(PROMPTS), n_layers, 3, hidden)
    for layer in range(n_layers):
        assert_close_to_scale(got.neurons[:, layer], expected.neurons[:, layer], rel, f"neurons of layer {layer}")
        assert_close_to_scale(
            got.residual[:, layer], expected.residual[:, layer], rel, f"residual states of layer {layer}"
        )

    math, math_cpu = read_input_set(device_path, "math", "no_think"), read_input_set(cpu_path, "math", "no_think")
    np.testing.assert_allclose(math.kl_to_base, 0.0, atol=1e-6)  # the model against its own reference
    reference = read_kl_reference(device_path, "math", "no_think")
    reference_cpu = read_kl_reference(cpu_path, "math", "no_think")
    for pid in math_cpu.prompt_ids:
        assert np.array_equal(reference.token_ids[pid], reference_cpu.token_ids[pid])
        assert reference.top_logprobs[pid].dtype == np.float32 and reference.top_ids[pid].dtype == np.int32
        # The top-1 log-probability (the top ids themselves may swap at near-ties).
        assert_close_to_scale(
            reference.top_logprobs[pid][:, 0], reference_cpu.top_logprobs[pid][:, 0], rel, f"top log-prob of {pid}"
        )

    # A checkpoint's dump against the base model's: KL(base || checkpoint) from the base dump's
    # top-k log-probabilities (the freshly initialised weights stand in for a checkpoint).
    checkpoint, checkpoint_cpu = on_device(loaded, initial(varied[family]), dtype)
    kl = read_input_set(
        dump(checkpoint, sets[1:], tmp_path / "ckpt.h5", settings, kl_reference=device_path), "math", "no_think"
    )
    kl_cpu = read_input_set(
        dump(checkpoint_cpu, sets[1:], tmp_path / "ckpt-cpu.h5", settings, kl_reference=cpu_path), "math", "no_think"
    )
    assert kl.prompt_ids == kl_cpu.prompt_ids and kl.kl_to_base.dtype == np.float32 and (kl_cpu.kl_to_base > 0).all()
    assert_close_to_scale(kl.kl_to_base, kl_cpu.kl_to_base, rel, "KL to the base model")

    # float16 storage (the default) holds the device's values to float16 rounding.
    half = read_input_set(dump(lm, sets[:1], tmp_path / "half.h5", DumpSettings(batch_size=3)), "harmful", "think")
    assert half.neurons.dtype == np.float16
    np.testing.assert_allclose(half.neurons.astype(np.float32), got.neurons, rtol=2e-3, atol=1e-4)


# ----- 5. head ablation and head patching --------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("family", FAMILIES)
def test_head_ablation_hooks_on_the_device_agree_with_the_cpu(varied, loaded, family, dtype):
    lm, cpu = on_device(loaded, varied[family], dtype)
    tolerance = TOLERANCE[dtype]
    adapter = lm.adapter
    refusal_ids = adapter.refusal_token_ids(lm.tokenizer)
    text = render(adapter, lm.tokenizer, PROMPTS[1], NO_THINK)
    ids = torch.tensor([lm.tokenizer.encode(text, add_special_tokens=False)])

    # Zeroing a head changes exactly its slice of the output projection's input, on the device:
    # a hook registered before the ablation sees the input before it, one registered after, after.
    name, seen = adapter.attention_output_name(1), {}
    with attached(
        lm.model, forward_pre={name: lambda module, args: seen.__setitem__("before", args[0].detach().clone())}
    ):
        with ablate(lm.model, adapter, zero_heads={1: [2]}):
            with attached(
                lm.model, forward_pre={name: lambda module, args: seen.__setitem__("after", args[0].detach().clone())}
            ):
                with torch.no_grad():
                    lm.model(input_ids=ids.to(lm.device))
    slice_ = head_slices([2], adapter.head_dim(lm.model))
    changed = (seen["before"] != seen["after"]).any(dim=(0, 1)).cpu()
    assert changed.nonzero().flatten().tolist() == slice_
    assert seen["after"].device.type == torch.device(DEVICE).type and seen["after"].dtype == getattr(torch, dtype)

    # Mean ablation with means measured on each device, zeroed heads and neurons: the change of
    # the refusal score equals the CPU's.
    prompts = [label_prompt(adapter, lm.tokenizer, prompt, NO_THINK) for prompt in PROMPTS]
    means, cpu_means = mean_head_inputs(lm, prompts, batch_size=3), mean_head_inputs(cpu, prompts, batch_size=3)
    for layer in cpu_means:
        assert means[layer].device.type == "cpu" and means[layer].dtype == torch.float32
        assert_close_to_scale(means[layer], cpu_means[layer], tolerance.rel, f"mean head inputs of layer {layer}")
    neurons = adapter.num_neurons(lm.model)
    conditions = {
        "zero_heads": {"zero_heads": {0: [1], 1: [0, 3]}},
        "mean_heads": {"mean_heads": {0: [0, 1, 2, 3], 1: [1, 2]}},
        "zero_neurons": {"zero_neurons": {0: list(range(neurons)), 1: list(range(0, neurons, 2))}},
    }
    for label, condition in conditions.items():
        changes = []
        for model, head_means in ((lm, means), (cpu, cpu_means)):
            clean = patching.refusal_scores(model, [ids[0].tolist()], refusal_ids)
            extra = {"head_means": head_means} if "mean_heads" in condition else {}
            with ablate(model.model, adapter, **condition, **extra):
                changes.append(patching.refusal_scores(model, [ids[0].tolist()], refusal_ids) - clean)
        assert abs(changes[1][0]) > 2 * tolerance.score, f"{label} changed nothing to compare"
        assert changes[0][0] == pytest.approx(changes[1][0], abs=tolerance.score), label
    assert all(not module._forward_pre_hooks for module in lm.model.modules())


def encode(lm, texts):
    return [lm.tokenizer.encode(text, add_special_tokens=False) for text in texts]


@pytest.mark.parametrize("positions", ["last", "all"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("family", FAMILIES)
def test_exact_patching_on_the_device_agrees_with_the_cpu(three_layers, loaded, family, dtype, positions):
    lm, cpu = on_device(loaded, three_layers[family], dtype)
    rel = TOLERANCE[dtype].rel
    refusal_ids = lm.adapter.refusal_token_ids(lm.tokenizer)
    targets = encode(lm, TARGETS)
    sources = encode(lm, SOURCES)
    if positions == "all":  # sources as long as their targets
        sources = [(source * 4)[: len(target)] for source, target in zip(sources, targets)]
    inputs = patching.head_inputs(lm, sources, positions)
    assert all(x.device.type == "cpu" and x.dtype == torch.float32 for x in inputs)
    # head_batch 5 mixes layers in one batch and leaves a partial last batch.
    exact = patching.exact_scan(lm, targets, inputs, refusal_ids, positions, head_batch=5)
    expected = patching.exact_scan(
        cpu, targets, patching.head_inputs(cpu, sources, positions), refusal_ids, positions, head_batch=5
    )
    assert exact.shape == (3, 3, 4)
    assert_close_to_scale(exact, expected, rel, f"exact patching effects ({positions})")
    assert spearmanr(exact.ravel(), expected.ravel())[0] > 0.95
    if dtype == "float32":  # the CPU tests' claim, on the device: exact equals the naive loop
        naive = patching.naive_scan(lm, targets, inputs, refusal_ids, positions)
        np.testing.assert_allclose(exact, naive, atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("family", FAMILIES)
def test_attribution_patching_on_the_device_ranks_heads_like_exact_patching(three_layers, loaded, family, dtype):
    lm, cpu = on_device(loaded, three_layers[family], dtype)
    refusal_ids = lm.adapter.refusal_token_ids(lm.tokenizer)
    targets = encode(lm, TARGETS)
    inputs = patching.head_inputs(lm, encode(lm, SOURCES), "last")
    exact = patching.exact_scan(lm, targets, inputs, refusal_ids)
    attribution = patching.attribution_scan(lm, targets, inputs, refusal_ids, batch_size=2)
    assert spearmanr(exact.ravel(), attribution.ravel())[0] > 0.8  # tests/test_patching.py's bound
    cpu_inputs = patching.head_inputs(cpu, encode(cpu, SOURCES), "last")
    cpu_attribution = patching.attribution_scan(cpu, targets, cpu_inputs, refusal_ids, batch_size=2)
    assert_close_to_scale(attribution, cpu_attribution, TOLERANCE[dtype].rel, "attribution effects")
    assert all(parameter.grad is None for parameter in lm.model.parameters())


# ----- 6. refusal score --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("family", [*FAMILIES, "gemma2"])
def test_refusal_scores_on_the_device_equal_the_cpu(varied, loaded, family, dtype):
    lm, cpu = on_device(loaded, varied[family], dtype)
    tolerance = TOLERANCE[dtype]
    refusal_ids = lm.adapter.refusal_token_ids(lm.tokenizer)
    texts = [render(lm.adapter, lm.tokenizer, prompt, mode) for mode in (NO_THINK, THINK) for prompt in PROMPTS]
    ids = torch.tensor([lm.tokenizer.encode(texts[3], add_special_tokens=False)])
    with torch.no_grad():
        logits = lm.model(input_ids=ids.to(lm.device)).logits
        cpu_logits = cpu.model(input_ids=ids).logits
    assert logits.device.type == torch.device(DEVICE).type and logits.dtype == getattr(torch, dtype)
    assert_close_to_scale(logits.float().cpu(), cpu_logits, tolerance.rel, "logits")
    # Left-padded batches of the evaluation (rim.refusal) and of the head scans (rim.patching).
    scores = np.array(first_token_refusal_scores(lm.model, lm.tokenizer, texts, refusal_ids, batch_size=3))
    expected = np.array(first_token_refusal_scores(cpu.model, cpu.tokenizer, texts, refusal_ids, batch_size=3))
    np.testing.assert_allclose(scores, expected, atol=tolerance.score, rtol=0)
    sequences = encode(lm, texts)
    np.testing.assert_allclose(
        patching.refusal_scores(lm, sequences, refusal_ids, batch_size=3), expected, atol=tolerance.score, rtol=0
    )
    assert np.ptp(expected) > 2 * tolerance.score  # the prompts' scores differ by more than the tolerance


# ----- the module itself -------------------------------------------------------------------------
def test_imports_nothing_a_bare_gpu_machine_lacks():
    """Import this module, the conftest and the library modules its calls import lazily in a
    fresh interpreter: none of the workflow-only packages may be among them."""
    tests = Path(__file__).resolve().parent
    code = textwrap.dedent(
        f"""
        import importlib, importlib.util, os, sys
        os.environ["RIM_TEST_DEVICE"] = "cpu"
        sys.path[:0] = [{str(tests.parent / "scripts")!r}, {str(tests)!r}]
        import conftest
        spec = importlib.util.spec_from_file_location("gpu_module", {str(Path(__file__).resolve())!r})
        sys.modules[spec.name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[spec.name])
        for name in {CALLED_LAZILY!r}:
            importlib.import_module(name)
        print("imported:", [name for name in {WORKFLOW_ONLY!r} if name in sys.modules])
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "imported: []"
