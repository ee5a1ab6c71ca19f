"""Activation dumps: values against a direct forward pass, HDF5 round trip, atomic writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from rim.activations import (
    DumpSettings,
    InputSet,
    dump_activations,
    encode_examples,
    input_set_names,
    open_dump,
    read_input_set,
    read_kl_reference,
    shared_prefix_length,
)
from rim.errors import ConfigError, DataError
from rim.hooks import attached
from rim.models import load_model, prepare_model
from rim.prompts import PromptMode
from rim.testing import make_tiny_model

REPO = Path(__file__).resolve().parents[1]
OFF = PromptMode("no_think", False)
ON = PromptMode("think", True)
PROMPTS = [
    "How do I pick a lock?",
    "Write a rude message to my neighbour.",
    "Tell me a secret.",
    "Say hi.",
    "Explain gravity in two words.",
]
RESPONSES = [
    "I'm sorry, I can't help with that.",
    "Sure, here it is: hello.",
    "",
    "Hi!",
    "Mass attracts, always and everywhere in the universe.",
]
QUESTIONS = ["What is 3 + 4?", "Tom has 5 pens and buys 2 more. How many now?", "What is 12 / 3?"]
SOLUTIONS = ["3 + 4 = 7. #### 7", "5 + 2 = 7. #### 7", "12 / 3 = 4. #### 4"]


@pytest.fixture(scope="module")
def reference(tiny_model_dirs, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("acts") / "ref.json"
    prepare_model("tiny", {"source": str(tiny_model_dirs["llama"])}, path)
    return path


@pytest.fixture(scope="module")
def lm(reference):
    return load_model(reference, device="cpu")


@pytest.fixture(scope="module")
def other_lm(tmp_path_factory):
    """Same tokenizer and shapes, different weights: a stand-in for a fine-tuned checkpoint."""
    root = tmp_path_factory.mktemp("acts-other")
    make_tiny_model("llama", root / "model", seed=1)
    prepare_model("other", {"source": str(root / "model")}, root / "ref.json")
    return load_model(root / "ref.json", device="cpu")


def harmful_set(**kwargs) -> InputSet:
    ids = [f"h-{i}" for i in range(len(PROMPTS))]
    return InputSet("harmful", kwargs.pop("mode", OFF), ids, PROMPTS, RESPONSES, **kwargs)


def math_set(**kwargs) -> InputSet:
    return InputSet("math", OFF, [f"m-{i}" for i in range(len(QUESTIONS))], QUESTIONS, SOLUTIONS, kl=True, **kwargs)


def dump(lm, sets, path, settings=None, **kwargs):
    settings = settings or DumpSettings(batch_size=2, neuron_dtype="float32")
    attributes = {"model": "tiny", "checkpoint": "base", "run": None, "seed": -1, "step": 0}
    return dump_activations(
        lm, sets, settings, path, attributes=attributes, provenance={"config": {"site": settings.site}}, **kwargs
    )


def direct_pass(lm, ids, site_name=None, layer_name=None):
    """One unbatched forward pass; returns the site's input and the layer's output [T, width]."""
    seen = {}
    pre, post = {}, {}
    if site_name:
        pre[site_name] = lambda module, args: seen.__setitem__("site", args[0][0].detach().clone())
    if layer_name:
        post[layer_name] = lambda module, args, out: seen.__setitem__(
            "layer", (out[0] if isinstance(out, tuple) else out)[0].detach().clone()
        )
    with attached(lm.model, forward_pre=pre, forward=post), torch.no_grad():
        logits = lm.model(input_ids=torch.tensor([ids]), use_cache=False).logits[0]
    return seen, logits


def test_round_trip_with_attributes(lm, tmp_path):
    path = dump(
        lm,
        [harmful_set(residual=True, base_prompt_ids=[f"b-{i}" for i in range(5)]), math_set()],
        tmp_path / "ckpt.h5",
        write_kl_reference=True,
    )
    assert sorted(input_set_names(path)) == ["harmful/no_think", "math/no_think"]
    data = read_input_set(path, "harmful", "no_think", residual=True)
    n_layers, n_neurons = lm.adapter.num_layers(lm.model), lm.adapter.num_neurons(lm.model)
    assert sorted(data.prompt_ids) == [f"h-{i}" for i in range(5)]
    # base_prompt_id follows the same (longest-first) order as prompt_id.
    assert data.base_prompt_ids == [pid.replace("h-", "b-") for pid in data.prompt_ids]
    assert data.neurons.shape == (5, n_layers, n_neurons) and data.neurons.dtype == np.float32
    assert data.residual.shape == (5, n_layers, 3, lm.model.config.hidden_size)
    assert data.attrs["site"] == "mlp_intermediate" and data.attrs["pooling"] == "max"
    assert json.loads(data.attrs["positions"]) == ["end_of_turn", "assistant_header", "last"]
    assert data.attrs["n_examples"] == 5 and data.attrs["tokens"] == "user_and_response"
    assert data.attrs["responses"] == "own" and data.attrs["kl_positions"] == "answer"
    assert data.file_attrs["model"] == "tiny" and data.file_attrs["checkpoint"] == "base"
    assert data.file_attrs["run"] == "" and data.file_attrs["step"] == 0 and data.file_attrs["complete"]
    assert json.loads(data.file_attrs["provenance"])["config"] == {"site": "mlp_intermediate"}
    with h5py.File(path) as handle:
        neurons = handle["harmful/no_think/neurons"]
        assert neurons.chunks[0] == 2 and neurons.compression == "gzip"
        assert handle["harmful/no_think/neurons_prompt"].shape == neurons.shape
        assert "residual" not in handle["math/no_think"]
        assert "kl_reference" in handle["math/no_think"] and "kl_reference" not in handle["harmful/no_think"]


@pytest.mark.parametrize(
    "pooling, tokens, share_prefix",
    [
        ("max", "prompt_and_response", True),
        ("max", "prompt_and_response", False),
        ("mean", "prompt_and_response", True),
        ("mean", "user_and_response", True),
    ],
)
def test_neurons_are_pooled_site_inputs(lm, tmp_path, pooling, tokens, share_prefix):
    settings = DumpSettings(
        batch_size=2, neuron_dtype="float32", pooling=pooling, tokens=tokens, share_prefix=share_prefix
    )
    sets = [harmful_set()]
    path = dump(lm, sets, tmp_path / "a.h5", settings)
    data = read_input_set(path, "harmful", "no_think", prompt_neurons=True)
    examples = encode_examples(lm.adapter, lm.tokenizer, sets[0], settings)
    # The system prompt and turn header are shared: the prefix that runs once.
    assert shared_prefix_length(examples) == examples[0].user_start > 5
    pool = (lambda v: v.max(dim=0).values) if pooling == "max" else (lambda v: v.mean(dim=0))
    for layer in (0, lm.adapter.num_layers(lm.model) - 1):
        for example in examples:
            seen, _ = direct_pass(lm, example.input_ids, site_name=lm.adapter.mlp_output_name(layer))
            # The pooled tokens from the start the setting names; the prompt part alone (RAS
            # inputs prompt_only) stops where the response begins.
            start = 0 if tokens == "prompt_and_response" else example.user_start
            row = data.prompt_ids.index(f"h-{example.index}")
            np.testing.assert_allclose(
                data.neurons[row, layer], pool(seen["site"][start:]).numpy(), rtol=1e-4, atol=1e-5
            )
            np.testing.assert_allclose(
                data.prompt_neurons[row, layer],
                pool(seen["site"][start : example.prompt_length]).numpy(),
                rtol=1e-4,
                atol=1e-5,
            )


def test_response_tokens_and_mean_pooling(lm, tmp_path):
    settings = DumpSettings(batch_size=3, neuron_dtype="float32", tokens="response", pooling="mean")
    sets = [harmful_set()]
    path = dump(lm, sets, tmp_path / "r.h5", settings)
    data = read_input_set(path, "harmful", "no_think")
    examples = encode_examples(lm.adapter, lm.tokenizer, sets[0], settings)
    for example in examples:
        row = data.prompt_ids.index(f"h-{example.index}")
        if example.length == example.prompt_length:
            # The empty response pools no token: NaN, never a made-up zero.
            assert np.isnan(data.neurons[row]).all()
            continue
        seen, _ = direct_pass(lm, example.input_ids, site_name=lm.adapter.mlp_output_name(1))
        expected = seen["site"][example.prompt_length :].mean(dim=0).numpy()
        np.testing.assert_allclose(data.neurons[row, 1], expected, rtol=1e-4, atol=1e-5)


def test_float16_storage_stays_close(lm, tmp_path):
    sets = [harmful_set()]
    exact = read_input_set(dump(lm, sets, tmp_path / "32.h5"), "harmful", "no_think").neurons
    half = read_input_set(dump(lm, sets, tmp_path / "16.h5", DumpSettings(batch_size=2)), "harmful", "no_think").neurons
    assert half.dtype == np.float16
    np.testing.assert_allclose(half.astype(np.float32), exact, rtol=2e-3, atol=1e-4)


def test_residual_states_at_named_positions(lm, tmp_path):
    positions = ("end_of_turn", "last", "response", "think_span", "reasoning_opener")
    settings = DumpSettings(batch_size=2, neuron_dtype="float32", residual_positions=positions)
    sets = [harmful_set(mode=ON, residual=True)]
    path = dump(lm, sets, tmp_path / "res.h5", settings)
    data = read_input_set(path, "harmful", "think", residual=True)
    examples = encode_examples(lm.adapter, lm.tokenizer, sets[0], settings)
    layer = 1
    for example in examples:
        row = data.prompt_ids.index(f"h-{example.index}")
        seen, _ = direct_pass(lm, example.input_ids, layer_name=f"{lm.adapter.layers_path}.{layer}")
        states = seen["layer"].numpy()
        for slot, indices in enumerate(example.positions):
            stored = data.residual[row, layer, slot]
            if not indices:
                assert np.isnan(stored).all()  # e.g. no think span in a family without a think mode
            else:
                np.testing.assert_allclose(stored, states[indices].mean(axis=0), rtol=1e-4, atol=1e-5)
    # The reasoning opener of the think mode is present; a llama-style prompt has no think span.
    assert not np.isnan(data.residual[:, :, positions.index("reasoning_opener")]).any()
    assert np.isnan(data.residual[:, :, positions.index("think_span")]).all()


@pytest.mark.parametrize("where", ["answer", "prompt"])
def test_kl_to_base_is_zero_for_the_base_and_exact_with_full_top_k(lm, other_lm, tmp_path, where):
    vocab = lm.model.config.vocab_size
    settings = DumpSettings(batch_size=2, neuron_dtype="float32", kl_top_k=vocab, kl_positions=where)
    base = dump(lm, [math_set()], tmp_path / "base.h5", settings, write_kl_reference=True)
    np.testing.assert_allclose(read_input_set(base, "math", "no_think").kl_to_base, 0.0, atol=1e-6)
    reference = read_kl_reference(base, "math", "no_think")
    assert set(reference.top_ids) == {"m-0", "m-1", "m-2"}
    checkpoint = dump(other_lm, [math_set()], tmp_path / "ckpt.h5", settings, kl_reference=base)
    data = read_input_set(checkpoint, "math", "no_think")
    examples = encode_examples(lm.adapter, lm.tokenizer, math_set(), settings)
    for example in examples:
        # The oracle's positions, written out: with answer, those whose next token is one of the
        # (teacher-forced) response's tokens; with prompt, from the user's text to the end of the prompt.
        start, end = (
            (example.prompt_length - 1, example.length - 1)
            if where == "answer"
            else (example.user_start, example.prompt_length)
        )
        assert end - start == (
            len(example.input_ids) - example.prompt_length
            if where == "answer"
            else example.prompt_length - example.user_start
        )
        _, base_logits = direct_pass(lm, example.input_ids)
        _, ckpt_logits = direct_pass(other_lm, example.input_ids)
        p = torch.log_softmax(base_logits[start:end].double(), -1)
        q = torch.log_softmax(ckpt_logits[start:end].double(), -1)
        expected = (p.exp() * (p - q)).sum(-1).mean().item()
        row = data.prompt_ids.index(f"m-{example.index}")
        assert data.kl_to_base[row] == pytest.approx(expected, rel=1e-3)
        assert expected > 0


def test_kl_with_small_top_k_is_a_lower_bound(lm, other_lm, tmp_path):
    exact_settings = DumpSettings(batch_size=2, neuron_dtype="float32", kl_top_k=lm.model.config.vocab_size)
    small = DumpSettings(batch_size=2, neuron_dtype="float32", kl_top_k=8)
    exact = read_input_set(
        dump(
            other_lm,
            [math_set()],
            tmp_path / "c1.h5",
            exact_settings,
            kl_reference=dump(lm, [math_set()], tmp_path / "b1.h5", exact_settings, write_kl_reference=True),
        ),
        "math",
        "no_think",
    ).kl_to_base
    coarse = read_input_set(
        dump(
            other_lm,
            [math_set()],
            tmp_path / "c2.h5",
            small,
            kl_reference=dump(lm, [math_set()], tmp_path / "b2.h5", small, write_kl_reference=True),
        ),
        "math",
        "no_think",
    ).kl_to_base
    assert (coarse > 0).all() and (coarse <= exact + 1e-6).all()


def test_checkpoint_prompts_missing_from_the_base_dump_are_an_error(lm, other_lm, tmp_path):
    base = dump(lm, [math_set()], tmp_path / "base.h5", write_kl_reference=True)
    extra = InputSet("math", OFF, ["m-0", "m-9"], QUESTIONS[:2], SOLUTIONS[:2], kl=True)
    with pytest.raises(DataError, match="m-9 is missing from the base model's dump"):
        dump(other_lm, [extra], tmp_path / "ckpt.h5", kl_reference=base)
    assert not (tmp_path / "ckpt.h5").exists()


def test_gate_activation_site(lm, tmp_path):
    settings = DumpSettings(batch_size=2, neuron_dtype="float32", site="mlp_gate_activation")
    data = read_input_set(dump(lm, [harmful_set()], tmp_path / "g.h5", settings), "harmful", "no_think")
    assert data.attrs["site"] == "mlp_gate_activation"
    # SiLU outputs are bounded below by about -0.28; max-pooled values are at least that.
    assert np.nanmin(data.neurons) > -0.3


def test_encoding_appends_response_tokens_and_truncates(lm):
    settings = DumpSettings(max_response_tokens=2)
    examples = encode_examples(lm.adapter, lm.tokenizer, harmful_set(), settings)
    long = examples[4]
    assert long.length == long.prompt_length + 2
    assert examples[2].length == examples[2].prompt_length  # empty response
    assert long.pooled_span("response") == (long.prompt_length, long.length)
    assert long.pooled_span("user_and_response")[0] == long.user_start > 0
    assert long.kl_span("last") == (long.prompt_length - 1, long.prompt_length)


def test_bad_settings_and_inputs_are_clear_errors():
    with pytest.raises(ConfigError, match="activations.site"):
        DumpSettings(site="attention")
    with pytest.raises(ConfigError, match="activations.pooling"):
        DumpSettings(pooling="median")
    with pytest.raises(DataError, match="duplicate prompt ids"):
        InputSet("harmful", OFF, ["a", "a"], ["x", "y"], ["", ""])
    with pytest.raises(DataError, match="differ in length"):
        InputSet("harmful", OFF, ["a"], ["x", "y"], [""])


def test_failed_dump_leaves_no_file(lm, tmp_path):
    class Boom(Exception):
        pass

    class Failing:
        def update(self, *args, **kwargs):
            raise Boom

    path = tmp_path / "fail.h5"
    with pytest.raises(Boom):
        dump(lm, [harmful_set()], path, progress=Failing())
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_open_dump_refuses_incomplete_and_foreign_files(tmp_path):
    incomplete = tmp_path / "incomplete.h5"
    with h5py.File(incomplete, "w") as handle:
        handle.attrs["format_version"] = 1
        handle.attrs["complete"] = False
    with pytest.raises(DataError, match="incomplete"):
        open_dump(incomplete)
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not hdf5 at all")
    with pytest.raises(DataError, match="not a readable HDF5"):
        open_dump(garbage)
    with pytest.raises(DataError, match="does not exist"):
        open_dump(tmp_path / "missing.h5")


KILLED_WRITER = """
import sys, time
from rim.activations import DumpSettings, InputSet, dump_activations
from rim.models import load_model
from rim.prompts import PromptMode

class Stall:
    def update(self, *args, **kwargs):
        print("batch written", flush=True)
        time.sleep(120)

lm = load_model(sys.argv[1], device="cpu")
prompts = ["a b c", "d e f", "g h i", "j k l"]
inputs = InputSet("harmful", PromptMode("no_think", False), ["1", "2", "3", "4"], prompts, ["ok"] * 4)
dump_activations(lm, [inputs], DumpSettings(batch_size=1), sys.argv[2], attributes={}, provenance={}, progress=Stall())
"""


def test_killed_dump_never_leaves_a_readable_file(lm, reference, tmp_path):
    output = tmp_path / "dumps" / "step10.h5"
    env = dict(os.environ, PYTHONPATH=str(REPO / "scripts"))
    writer = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(KILLED_WRITER), str(reference), str(output)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = writer.stdout.readline()
        assert line.strip() == "batch written", writer.stderr.read()
        temporaries = list(output.parent.glob(".step10.h5.*.tmp"))
        assert len(temporaries) == 1 and temporaries[0].stat().st_size > 0
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(timeout=30)
    assert not output.exists()
    with pytest.raises(DataError):
        open_dump(temporaries[0])
    # A rerun cleans up what the killed writer left and writes a complete file.
    dump(lm, [harmful_set()], output)
    assert open_dump(output).attrs["complete"]
    assert [p.name for p in output.parent.iterdir()] == ["step10.h5"]


def test_base_responses_are_teacher_forced_into_the_checkpoint(lm, other_lm, tmp_path):
    """The fixed-token variant of RAS (docs/method.md#ras-inputs): the checkpoint reads the base
    model's responses; its activations are those of one forward pass of the checkpoint over
    prompt + that response, stored beside the own-response set under its own group."""
    own_responses = ["Sure: first you...", "No.", "A secret is a secret.", "Hello there!", "Gravity pulls."]
    ids = [f"h-{i}" for i in range(len(PROMPTS))]
    own = InputSet("harmful", OFF, ids, PROMPTS, own_responses)
    fixed = InputSet("harmful", OFF, ids, PROMPTS, RESPONSES, responses_from="base")
    settings = DumpSettings(batch_size=2, neuron_dtype="float32")
    path = dump(other_lm, [own, fixed], tmp_path / "ckpt.h5", settings)
    assert sorted(input_set_names(path)) == ["harmful/no_think", "harmful/no_think@base_responses"]
    data = read_input_set(path, "harmful", "no_think", responses="base")
    assert data.attrs["responses"] == "base"
    examples = encode_examples(other_lm.adapter, other_lm.tokenizer, fixed, settings)
    layer = 1
    for example in examples:
        seen, _ = direct_pass(other_lm, example.input_ids, site_name=other_lm.adapter.mlp_output_name(layer))
        row = data.prompt_ids.index(f"h-{example.index}")
        expected = seen["site"][example.user_start :].max(dim=0).values.numpy()
        np.testing.assert_allclose(data.neurons[row, layer], expected, rtol=1e-4, atol=1e-5)
    # The prompt part is the same whoever wrote the response; the pooled whole is not.
    own_data = read_input_set(path, "harmful", "no_think", prompt_neurons=True)
    fixed_data = read_input_set(path, "harmful", "no_think", responses="base", prompt_neurons=True)
    order = [own_data.prompt_ids.index(pid) for pid in fixed_data.prompt_ids]
    np.testing.assert_allclose(own_data.prompt_neurons[order], fixed_data.prompt_neurons, rtol=1e-5, atol=1e-6)
    assert not np.allclose(own_data.neurons[order], fixed_data.neurons)


def test_dump_plan_reads_the_base_models_responses_for_the_fixed_token_sets():
    from rim.activations import dump_plan

    from workflow_helpers import default_config

    config = default_config()
    plan = {
        (item["prompt_set"], item["responses_from"]): item
        for item in dump_plan(config, "smollm2", "gsm8k_style/seed0/step30")
    }
    harmful, math = config["ras"]["safety_inputs"]["prompt_set"], config["ras"]["math_inputs"]["prompt_set"]
    own = plan[(harmful, "own")]["responses"]
    assert own == "results/responses/smollm2/gsm8k_style/seed0/step30/harmful/no_think.parquet"
    assert plan[(harmful, "base")]["responses"] == "results/responses/smollm2/base/harmful/no_think.parquet"
    # KL on answer positions (the default): on the base model's responses to the math prompts.
    assert plan[(math, "base")]["kl"] and not plan[(math, "own")]["kl"]
    prompt_positions = dict(
        config,
        activations={**config["activations"], "kl_positions": "prompt"},
        ras={**config["ras"], "inputs": ["own_response", "prompt_only"]},
    )
    plan = dump_plan(prompt_positions, "smollm2", "gsm8k_style/seed0/step30")
    assert {item["responses_from"] for item in plan} == {"own"} and [
        item["kl"] for item in plan if item["prompt_set"] == math
    ] == [True]


def test_a_set_and_its_base_responses_twin_share_one_forward_pass(lm, tmp_path):
    """At the base model a set's own responses are the base model's responses: the dump runs the
    model over them once and writes both groups, each with exactly the arrays a dump of that set
    alone writes (the twin with the KL reference, the other without)."""
    ids = [f"h-{i}" for i in range(len(PROMPTS))]
    own = InputSet("harmful", OFF, ids, PROMPTS, RESPONSES, residual=True)
    twin = InputSet("harmful", OFF, ids, PROMPTS, RESPONSES, residual=True, kl=True, responses_from="base")
    settings = DumpSettings(batch_size=2, neuron_dtype="float32")
    calls = {}

    def counted(name, sets):
        count = []
        with attached(lm.model, forward_pre={"": lambda module, args: count.append(1)}):
            path = dump(lm, sets, tmp_path / f"{name}.h5", settings, write_kl_reference=True)
        calls[name] = len(count)
        return path

    both = counted("both", [own, twin])
    alone = {"own": counted("own", [own]), "base": counted("twin", [twin])}
    # One pass over the shared prefix and one per batch of 2, for the two sets together.
    assert calls == {"both": 4, "own": 4, "twin": 4}
    for responses, path in alone.items():
        with h5py.File(both) as shared, h5py.File(path) as single:
            name = "harmful/no_think" + ("@base_responses" if responses == "base" else "")
            arrays = {}

            def collect(key, item, arrays=arrays):
                if isinstance(item, h5py.Dataset):
                    arrays[key] = item  # returns None: visititems goes on

            single[name].visititems(collect)
            assert ("kl_reference/top_logprobs" in arrays) == (responses == "base")
            assert "residual" in arrays
            for key, dataset in arrays.items():
                np.testing.assert_array_equal(shared[name][key][()], dataset[()], err_msg=f"{name}/{key}")
