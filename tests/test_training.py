"""Alignment and fine-tuning on tiny random models: data, loss, checkpoints, determinism, resume."""

from __future__ import annotations

import copy

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from rim.config import validate_config
from rim.errors import ConfigError, DataError
from rim.testing import FAMILIES, MOE_FAMILIES
from rim.models import load_model, prepare_model, read_reference
from rim.provenance import read_json, read_provenance
from rim.training import (
    Example,
    alignment_examples,
    math_examples,
    prepare_for_training,
    read_refusals,
    split_validation,
    tokenize_examples,
    trainer_settings,
)
from rim.training.runs import align_model, finetune_run, select_checkpoint
from rim.training.settings import check_training_config
from rim.training.trainer import DataOrder, Trainer, collate, completion_loss, loss_weights
from workflow_helpers import default_config

FINETUNING = {
    "method": "lora",
    "learning_rate": 1e-2,
    "batch_size": 4,
    "steps": 6,
    "checkpoint_steps": [0, 2, 6],
    "max_length": 96,
    "lora": {"rank": 4, "alpha": 8},
}


# ----- data ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def prompt_tables(tmp_path_factory):
    folder = tmp_path_factory.mktemp("prompts")
    harmful = pd.DataFrame(
        {
            "prompt_id": [f"h{i}" for i in range(8)],
            "prompt": [f"Tell me how to steal car number {i}." for i in range(8)],
            "category": "illegal_activity",
            "split": ["train"] * 6 + ["eval"] * 2,
        }
    )
    harmless = pd.DataFrame(
        {
            "prompt_id": [f"s{i}" for i in range(8)],
            "prompt": [f"How do I kill Python process {i}?" for i in range(8)],
            "category": "programming",
            "split": ["train"] * 6 + ["eval"] * 2,
            "lookalike": [True, False] * 4,
            "response": [f"Run kill {i} in a terminal." for i in range(8)],
        }
    )
    harmful.to_parquet(folder / "harmful.parquet")
    harmless.to_parquet(folder / "harmless.parquet")
    (folder / "refusals.txt").write_text("I can't help with that.\n\nSorry, I won't do this.\n")
    return folder


@pytest.fixture(scope="module")
def tiny_base(tiny_model_dirs, tmp_path_factory):
    path = tmp_path_factory.mktemp("base") / "models" / "tiny" / "source.json"
    prepare_model("tiny", {"source": str(tiny_model_dirs["llama"])}, path)
    return path


def test_alignment_examples_use_train_rows_refusals_and_helpful_answers(prompt_tables):
    harmful = pd.read_parquet(prompt_tables / "harmful.parquet")
    harmless = pd.read_parquet(prompt_tables / "harmless.parquet")
    refusals = read_refusals(prompt_tables / "refusals.txt")
    assert refusals == ["I can't help with that.", "Sorry, I won't do this."]
    examples = alignment_examples(harmful, harmless, refusals, seed=0, harmless_weight=2.0, lookalike_weight=1.5)
    assert [e.example_id for e in examples] == [f"h{i}" for i in range(6)] + [f"s{i}" for i in range(6)]
    assert all(e.response in refusals for e in examples if e.kind == "harmful")
    assert {e.response for e in examples if e.kind == "harmful"} == set(refusals)  # both drawn
    by_id = {e.example_id: e for e in examples}
    assert by_id["s3"].response == "Run kill 3 in a terminal." and by_id["s3"].weight == 2.0
    assert by_id["s0"].weight == 3.0  # lookalike: 2.0 * 1.5
    again = alignment_examples(harmful, harmless, refusals, seed=0)
    assert [e.response for e in again] == [e.response for e in alignment_examples(harmful, harmless, refusals, seed=0)]


def test_alignment_data_errors_name_the_file_and_row(prompt_tables, tmp_path):
    harmful = pd.read_parquet(prompt_tables / "harmful.parquet")
    harmless = pd.read_parquet(prompt_tables / "harmless.parquet")
    harmless.loc[2, "response"] = " "
    with pytest.raises(DataError, match=r"in harmless.parquet row 3: harmless prompt s2 has no response"):
        alignment_examples(harmful, harmless, ["No."], seed=0, sources=("harmful.parquet", "harmless.parquet"))
    with pytest.raises(DataError, match="missing column\\(s\\) response"):
        alignment_examples(harmful, harmless.drop(columns="response"), ["No."], seed=0)
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(DataError, match="empty.txt: no refusal sentences"):
        read_refusals(tmp_path / "empty.txt")


def test_validation_split_holds_out_each_kind():
    examples = [Example(f"h{i}", "x", "no", kind="harmful") for i in range(10)]
    examples += [Example(f"s{i}", "y", "yes", kind="harmless") for i in range(20)]
    train, validation = split_validation(examples, 0.2, seed=3)
    assert sum(e.kind == "harmful" for e in validation) == 2 and sum(e.kind == "harmless" for e in validation) == 4
    assert not {e.example_id for e in train} & {e.example_id for e in validation}
    assert split_validation(examples, 0.0, seed=3) == (examples, [])


def test_tokenized_completion_is_the_rendered_answer(tiny_base, math_table):
    loaded = load_model(tiny_base, device="cpu")
    examples = math_examples(pd.read_parquet(math_table))
    assert len(examples) == 10  # train rows only
    data = tokenize_examples(loaded.adapter, loaded.tokenizer, examples, max_length=512)
    completion = loaded.tokenizer.decode(data.ids[3][data.prompt_lengths[3] :])
    assert completion == "3 + 5 = 8\n#### 8<|im_end|>"
    prompt = loaded.tokenizer.decode(data.ids[3][: data.prompt_lengths[3]])
    assert prompt.endswith("How many pens?<|im_end|>\n<|im_start|>assistant\n")
    short = tokenize_examples(loaded.adapter, loaded.tokenizer, examples, max_length=data.prompt_lengths[3] + 2)
    assert len(short.ids[3]) - short.prompt_lengths[3] == 2  # answers are cut at max_length
    with pytest.raises(DataError, match="no training example fits max_length=8"):
        tokenize_examples(loaded.adapter, loaded.tokenizer, examples, max_length=8)


def test_qwen3_reasoning_goes_inside_the_think_block(tiny_model_dirs, math_table, tmp_path):
    prepare_model("q", {"source": str(tiny_model_dirs["qwen3"])}, tmp_path / "q.json")
    loaded = load_model(tmp_path / "q.json", device="cpu")
    data = tokenize_examples(loaded.adapter, loaded.tokenizer, math_examples(pd.read_parquet(math_table)), 512)
    completion = loaded.tokenizer.decode(data.ids[1][data.prompt_lengths[1] :])
    assert completion == "<think>\n1 + 3 = 4\n</think>\n\n#### 4<|im_end|>"


@pytest.mark.parametrize("boolean_masks", [True, False], ids=["mask-logits", "position-logits"])
def test_loss_covers_completion_tokens_only_with_example_weights(tiny_base, math_table, monkeypatch, boolean_masks):
    # position-logits: the path of transformers versions that take no boolean logits_to_keep mask
    monkeypatch.setattr("rim.training.trainer._boolean_logits_masks", lambda: boolean_masks)
    loaded = load_model(tiny_base, device="cpu")
    examples = math_examples(pd.read_parquet(math_table))[:3]
    examples[1] = Example(
        examples[1].example_id, examples[1].user, examples[1].response, examples[1].reasoning, weight=3.0
    )
    data = tokenize_examples(loaded.adapter, loaded.tokenizer, examples, 512)
    indices = [0, 1, 2]
    pad = loaded.tokenizer.pad_token_id

    def by_hand(average, first):
        per_example, counts = [], []
        for i in indices:
            ids = torch.tensor([data.ids[i]])
            with torch.no_grad():
                logits = loaded.model(input_ids=ids).logits[0]
            p = data.prompt_lengths[i]
            ce = F.cross_entropy(logits[p - 1 : -1], ids[0, p:], reduction="none")
            ce[0] *= first  # the first answer token counts `first` times
            per_example.append(ce)
            counts.append(len(ce) - 1 + first)
        w = [data.weights[i] for i in indices]
        if average == "tokens":
            return sum(wi * ce.sum() for wi, ce in zip(w, per_example)) / sum(wi * n for wi, n in zip(w, counts))
        return sum(wi * ce.sum() / n for wi, ce, n in zip(w, per_example, counts)) / sum(w)

    for average in ("tokens", "examples"):
        for first in (1.0, 5.0):
            batch = collate(data, indices, pad, loss_weights(data, indices, average, first), first)
            assert batch.completion_tokens == sum(len(data.ids[i]) - data.prompt_lengths[i] for i in indices)
            with torch.no_grad():
                loss = completion_loss(loaded.model, batch)
            assert torch.allclose(loss, by_hand(average, first), atol=1e-5), (average, first)


def test_refusal_penalty_adds_minus_log_one_minus_p_refuse_on_harmless_examples(tiny_base):
    from rim.refusal import refusal_log_odds
    from rim.training.trainer import penalty_weights

    loaded = load_model(tiny_base, device="cpu")
    examples = [
        Example("h", "Steal a car.", "I can't help with that.", kind="harmful"),
        Example("s", "Kill a process?", "Run kill 12.", kind="harmless", weight=2.0, penalize_refusal=True),
    ]
    data = tokenize_examples(loaded.adapter, loaded.tokenizer, examples, 128)
    ids = loaded.adapter.refusal_token_ids(loaded.tokenizer)
    weights = loss_weights(data, [0, 1], "tokens")
    penalties = penalty_weights(data, [0, 1], 0.5)
    assert penalties == {1: 0.5 * 2.0 / 3.0}
    with torch.no_grad():
        plain = completion_loss(loaded.model, collate(data, [0, 1], 0, weights))
        penalized = completion_loss(loaded.model, collate(data, [0, 1], 0, weights, 1.0, penalties), ids)
        prompt = torch.tensor([data.ids[1][: data.prompt_lengths[1]]])
        first = loaded.model(input_ids=prompt).logits[0, -1]
    p_refuse = torch.softmax(first, -1)[ids].sum()
    assert torch.allclose(penalized - plain, penalties[1] * -torch.log1p(-p_refuse), atol=1e-5)
    assert torch.allclose(
        torch.nn.functional.softplus(refusal_log_odds(first, ids)), -torch.log1p(-p_refuse), atol=1e-5
    )


def test_data_order_is_a_seeded_permutation_per_epoch():
    order = DataOrder(10, 4, seed=5)
    first_epoch = order.batch(1) + order.batch(2) + order.batch(3)[:2]
    assert sorted(first_epoch) == list(range(10))
    assert DataOrder(10, 4, seed=5).batch(3) == order.batch(3)
    assert DataOrder(10, 4, seed=6).batch(1) != order.batch(1)


# ----- settings ------------------------------------------------------------------------------------
def test_bad_training_settings_are_named():
    where = "models.m.finetuning"
    with pytest.raises(ConfigError, match=r"'models\.m\.finetuning\.steps': must be an integer >= 1, got 0"):
        trainer_settings({**FINETUNING, "steps": 0}, where)
    with pytest.raises(
        ConfigError, match=r"'models\.m\.finetuning\.checkpoint_steps': step 9 is outside the run \(0\.\.6"
    ):
        trainer_settings({**FINETUNING, "checkpoint_steps": [0, 3, 9]}, where)
    with pytest.raises(ConfigError, match=r"checkpoint_steps': must list step 0"):
        trainer_settings({**FINETUNING, "checkpoint_steps": [3, 6]}, where)
    with pytest.raises(ConfigError, match=r"micro_batch_size': 3 does not divide batch_size 4"):
        trainer_settings({**FINETUNING, "micro_batch_size": 3}, where)


def test_schema_rejects_zero_steps_and_cross_checks_runs():
    config = default_config()
    config["models"]["smollm2"]["finetuning"]["steps"] = 0
    with pytest.raises(ConfigError, match=r"models\.smollm2\.finetuning\.steps': 0 is less than the minimum of 1"):
        validate_config(config)
    valid = validate_config(default_config())
    config = copy.deepcopy(valid)
    config["models"]["smollm2"]["finetuning"]["checkpoint_steps"] = [0, 10, 400]
    with pytest.raises(ConfigError, match=r"finetuning\.checkpoint_steps': step 400 is outside the run"):
        check_training_config(config)
    config = copy.deepcopy(valid)
    config["training"]["runs"]["gsm8k_style"]["dataset"] = "harmful"
    with pytest.raises(
        ConfigError, match=r"training\.runs\.gsm8k_style\.dataset': dataset 'harmful' is of kind prompts"
    ):
        check_training_config(config)
    config = copy.deepcopy(valid)
    config["training"]["runs"]["gsm8k_style"]["dataset"] = "gsm9k"
    with pytest.raises(ConfigError, match=r"dataset 'gsm9k' is not defined under 'datasets'"):
        check_training_config(config)


def test_the_default_config_feeds_ras_from_runs_with_a_seed_spread():
    """RAS correlates over checkpoints per seed and pools seeds: a run that feeds it needs several
    seeds, and every run trains on a math set the config prepares."""
    from rim import planning

    config = validate_config(default_config())
    ras_runs = planning.ras_runs(config)
    assert ras_runs and all(len(config["training"]["runs"][run]["seeds"]) >= 2 for run in ras_runs)
    for run in config["training"]["runs"].values():
        assert config["datasets"][run["dataset"]]["kind"] == "math"


def test_lora_dropout_on_fused_expert_weights_is_a_named_error(tiny_model_dirs, tmp_path):
    prepare_model("tiny", {"source": str(tiny_model_dirs["mixtral"])}, tmp_path / "ref.json")
    loaded = load_model(tmp_path / "ref.json", device="cpu")
    settings = trainer_settings({**FINETUNING, "lora": {"dropout": 0.1}}, "models.m.finetuning")
    with pytest.raises(ConfigError, match=r"'models\.m\.finetuning\.lora\.dropout'.*mlp\.experts\.gate_up_proj"):
        prepare_for_training(loaded.model, settings, loaded.adapter, seed=0, where="models.m.finetuning")


def test_unknown_lora_target_is_named(tiny_base):
    loaded = load_model(tiny_base, device="cpu")
    settings = trainer_settings(
        {**FINETUNING, "lora": {"target_modules": ["q_proj", "qkv_proj"]}}, "models.m.finetuning"
    )
    with pytest.raises(
        ConfigError, match=r"'models\.m\.finetuning\.lora\.target_modules': no linear module named 'qkv_proj'.*q_proj"
    ):
        prepare_for_training(loaded.model, settings, loaded.adapter, seed=0, where="models.m.finetuning")


# ----- fine-tuning runs ----------------------------------------------------------------------------
def _finetune(tiny_base, math_table, root, seed=0, block=FINETUNING, state_dir=None):
    run_dir = root / "finetune" / "tiny" / "math" / f"seed{seed}"
    return finetune_run(
        model="tiny",
        run="math",
        seed=seed,
        block=block,
        run_block={"dataset": "math", "seeds": [seed]},
        base_reference=tiny_base,
        dataset=math_table,
        manifest=run_dir / "run.json",
        loss_table=run_dir / "loss.parquet",
        checkpoints_dir=run_dir / "checkpoints",
        state_dir=state_dir or root / ".training_state" / f"seed{seed}",
        device="cpu",
    ), run_dir


def _weights(manifest, step):
    model = load_model(manifest, step=step, device="cpu").model
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}


def _saved(run_dir, step):
    """The tensors of a checkpoint as stored (adapter or weights), without loading a model."""
    from safetensors.torch import load_file

    tensors = {}
    for path in sorted((run_dir / "checkpoints" / f"step{step}").glob("*.safetensors")):
        tensors.update(load_file(path))
    assert tensors
    return tensors


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("method", ["lora", "full"])
def test_finetune_writes_loadable_checkpoints_at_the_requested_steps(tiny_base, math_table, tmp_path, method):
    block = {**FINETUNING, "method": method, "learning_rate": 1e-2 if method == "lora" else 1e-3}
    record, run_dir = _finetune(tiny_base, math_table, tmp_path, block=block)
    manifest = run_dir / "run.json"
    assert sorted(record["checkpoints"], key=int) == ["0", "2", "6"]
    assert record["checkpoints"]["0"] == {}  # step 0 is the base model
    assert read_reference(manifest, step=0)["path"] == read_reference(tiny_base)["path"]
    field = "adapter_path" if method == "lora" else "path"
    assert record["checkpoints"]["6"][field] == "checkpoints/step6"
    assert record["checkpoints"]["6"]["checkpoint"] == "math/seed0/step6"
    base = _weights(tiny_base, None)
    step2, step6 = _weights(manifest, 2), _weights(manifest, 6)
    assert not _same(base, step2) and not _same(step2, step6)
    assert load_model(manifest, step=6, device="cpu").model.dtype == torch.float32
    if method == "full":  # half precision on disk
        from safetensors import safe_open

        with safe_open(run_dir / "checkpoints" / "step6" / "model.safetensors", "pt") as handle:
            assert handle.get_tensor(next(iter(handle.keys()))).dtype == torch.float16
    loss = pd.read_parquet(run_dir / "loss.parquet")
    assert loss["step"].tolist() == [1, 2, 3, 4, 5, 6]
    assert {"model", "run", "seed", "loss", "learning_rate", "tokens"} <= set(loss.columns)
    assert loss["learning_rate"].iloc[0] == 0.0  # warmup starts at 0
    assert read_provenance(run_dir / "loss.parquet")["seed"] == 0
    assert not (tmp_path / ".training_state" / "seed0").exists()  # removed when complete
    assert record["data_hash"] and record["provenance"]["versions"]["torch"]


def test_same_seed_gives_identical_checkpoints_and_another_seed_differs(tiny_base, math_table, tmp_path):
    _, first = _finetune(tiny_base, math_table, tmp_path / "a", seed=0)
    _, again = _finetune(tiny_base, math_table, tmp_path / "b", seed=0)
    _, other = _finetune(tiny_base, math_table, tmp_path / "c", seed=1)
    for step in (2, 6):
        assert _same(_saved(first, step), _saved(again, step))
        assert not _same(_saved(first, step), _saved(other, step))
    assert (
        pd.read_parquet(first / "loss.parquet")["loss"].tolist()
        == pd.read_parquet(again / "loss.parquet")["loss"].tolist()
    )


class Crash(Exception):
    pass


@pytest.mark.parametrize("family", list(FAMILIES))
def test_resume_after_a_crash_gives_the_weights_of_an_uninterrupted_run(
    tiny_model_dirs, math_table, tmp_path, monkeypatch, caplog, family
):
    tiny_base = tmp_path / "models" / "tiny" / "source.json"
    prepare_model("tiny", {"source": str(tiny_model_dirs[family])}, tiny_base)
    # Dropout draws from the RNG the resumed run must restore; peft has none for fused experts.
    dropout = 0.0 if family in MOE_FAMILIES else 0.1
    block = {**FINETUNING, "learning_rate": 1e-2, "lora": {"rank": 4, "alpha": 8, "dropout": dropout}}
    _, whole = _finetune(tiny_base, math_table, tmp_path / "whole", block=block)
    state = tmp_path / "state"
    original = Trainer.train_step

    def crash_at_step_5(self):
        if self.step == 4:
            raise Crash()
        return original(self)

    monkeypatch.setattr(Trainer, "train_step", crash_at_step_5)
    with pytest.raises(Crash):
        _finetune(tiny_base, math_table, tmp_path / "resumed", block=block, state_dir=state)
    saved = torch.load(state / "state.pt", weights_only=False)
    assert saved["step"] == 2  # the last checkpoint step (state_every_steps is 0)
    assert (state / "checkpoints" / "step2").exists()
    monkeypatch.setattr(Trainer, "train_step", original)
    with caplog.at_level("INFO"):
        _finetune(tiny_base, math_table, tmp_path / "resumed", block=block, state_dir=state)
    assert "resuming from the saved state at step 2 of 6" in caplog.text
    resumed = tmp_path / "resumed" / "finetune" / "tiny" / "math" / "seed0"
    for step in (2, 6):
        assert _same(_saved(whole, step), _saved(resumed, step))
    assert (
        pd.read_parquet(whole / "loss.parquet")["loss"].tolist()
        == pd.read_parquet(resumed / "loss.parquet")["loss"].tolist()
    )
    assert not state.exists()
    # The checkpoint loads with every adapted weight moved, the fused expert weights included.
    base, tuned = _weights(tiny_base, None), _weights(resumed / "run.json", 6)
    moved = {name.split(".", 3)[-1] for name in base if not torch.equal(base[name], tuned[name])}
    adapter = load_model(tiny_base, device="cpu").adapter
    expected = {f"self_attn.{t}.weight" for t in adapter.lora_targets if t in ("q_proj", "k_proj", "v_proj", "o_proj")}
    expected |= set(adapter.lora_parameters)
    assert expected <= moved


def test_stale_state_of_other_settings_is_discarded(tiny_base, math_table, tmp_path, monkeypatch, caplog):
    state = tmp_path / "state"
    original = Trainer.train_step

    def crash(self):
        if self.step == 3:
            raise Crash()
        return original(self)

    monkeypatch.setattr(Trainer, "train_step", crash)
    with pytest.raises(Crash):
        _finetune(tiny_base, math_table, tmp_path / "x", state_dir=state)
    monkeypatch.setattr(Trainer, "train_step", original)
    changed = {**FINETUNING, "learning_rate": 5e-3}
    with caplog.at_level("INFO"):
        _finetune(tiny_base, math_table, tmp_path / "x", block=changed, state_dir=state)
    assert "discarding training state" in caplog.text and "resuming" not in caplog.text
    _, fresh = _finetune(tiny_base, math_table, tmp_path / "y", block=changed)
    resumed = tmp_path / "x" / "finetune" / "tiny" / "math" / "seed0"
    assert _same(_saved(fresh, 6), _saved(resumed, 6))


def test_state_whose_checkpoints_were_moved_out_is_not_resumed(tiny_base, math_table, tmp_path, monkeypatch, caplog):
    state = tmp_path / "state"
    original = Trainer.train_step

    def crash(self):
        if self.step == 3:
            raise Crash()
        return original(self)

    monkeypatch.setattr(Trainer, "train_step", crash)
    with pytest.raises(Crash):
        _finetune(tiny_base, math_table, tmp_path / "x", state_dir=state)
    monkeypatch.setattr(Trainer, "train_step", original)
    import shutil

    shutil.rmtree(state / "checkpoints" / "step2")  # as if a killed job had moved it to its outputs
    with caplog.at_level("INFO"):
        record, _ = _finetune(tiny_base, math_table, tmp_path / "x", state_dir=state)
    assert "its checkpoint of step 2 is gone" in caplog.text
    assert sorted(record["checkpoints"], key=int) == ["0", "2", "6"]


def test_a_job_killed_while_writing_its_outputs_writes_them_again_without_training(
    tiny_base, math_table, tmp_path, monkeypatch, caplog
):
    import rim.training.runs as runs

    _, whole = _finetune(tiny_base, math_table, tmp_path / "whole")
    state = tmp_path / "state"

    def killed(*args, **kwargs):
        raise Crash()

    monkeypatch.setattr(runs, "write_json", killed)  # the manifest is the job's last output
    with pytest.raises(Crash):
        _finetune(tiny_base, math_table, tmp_path / "x", state_dir=state)
    saved = torch.load(state / "state.pt", weights_only=False)
    assert saved["step"] == 6 and "optimizer" not in saved  # the finished state: history and checkpoints
    assert all((state / "checkpoints" / f"step{step}").exists() for step in (2, 6))  # linked, not moved out
    monkeypatch.undo()
    monkeypatch.setattr(Trainer, "train_step", lambda self: pytest.fail("trained again"))
    with caplog.at_level("INFO"):
        _finetune(tiny_base, math_table, tmp_path / "x", state_dir=state)
    assert "finished earlier (saved state at step 6); writing its outputs again" in caplog.text
    again = tmp_path / "x" / "finetune" / "tiny" / "math" / "seed0"
    for step in (2, 6):
        assert _same(_saved(whole, step), _saved(again, step))
    assert (
        pd.read_parquet(whole / "loss.parquet")["loss"].tolist()
        == pd.read_parquet(again / "loss.parquet")["loss"].tolist()
    )
    assert not state.exists() and not list(tmp_path.glob(".state*"))


def test_trainer_pauses_at_an_announced_step_with_its_state_saved(tiny_base, math_table, tmp_path, monkeypatch):
    state = tmp_path / "state"
    monkeypatch.setenv("RIM_TRAINER_PAUSE_AT_STEP", "3")
    monkeypatch.setenv("RIM_TRAINER_PAUSE_SECONDS", "0")
    seen = {}
    original = Trainer.train_step

    def record(self):
        if self.step == 3:  # the step after the pause: the marker and the state of step 3 exist
            seen["marker"] = (state / "paused_at_step3").exists()
            seen["saved"] = torch.load(state / "state.pt", weights_only=False)["step"]
        return original(self)

    monkeypatch.setattr(Trainer, "train_step", record)
    _finetune(tiny_base, math_table, tmp_path / "x", state_dir=state)
    assert seen == {"marker": True, "saved": 3}


def test_gradient_accumulation_matches_the_full_batch(tiny_base, math_table, tmp_path):
    block = {**FINETUNING, "method": "full", "learning_rate": 1e-3, "loss_average": "examples"}
    _, whole = _finetune(tiny_base, math_table, tmp_path / "a", block=block)
    _, micro = _finetune(tiny_base, math_table, tmp_path / "b", block={**block, "micro_batch_size": 2})
    a, b = _saved(whole, 6), _saved(micro, 6)
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=2e-3) for k in a)  # float16 on disk
    assert not _same(a, _saved(whole, 2))


# ----- alignment -----------------------------------------------------------------------------------
def test_select_checkpoint_prefers_low_over_refusal_among_refusing_candidates():
    evaluations = {
        0: {"refusal": 0.0, "over_refusal": 0.0},
        10: {"refusal": 0.85, "over_refusal": 0.05},
        20: {"refusal": 0.95, "over_refusal": 0.20},
        30: {"refusal": 0.92, "over_refusal": 0.10},
        40: {"refusal": 1.0, "over_refusal": 0.10},
    }
    assert select_checkpoint(evaluations, 0.9) == 30  # earliest of the least over-refusing
    assert select_checkpoint(evaluations, 0.99) == 40
    assert (
        select_checkpoint({10: {"refusal": 0.5, "over_refusal": 0.1}, 20: {"refusal": 0.7, "over_refusal": 0.4}}, 0.9)
        == 10
    )


def test_alignment_writes_an_aligned_reference_that_loads(tiny_base, prompt_tables, tmp_path):
    block = {
        "enabled": True,
        "seed": 0,
        "method": "full",
        "learning_rate": 1e-3,
        "batch_size": 4,
        "steps": 4,
        "checkpoint_steps": [2],
        "validation_fraction": 0.34,
        "min_refusal": 0.9,
        "max_length": 96,
    }
    folder = tiny_base.parent
    reference = align_model(
        model="tiny",
        block=block,
        source_reference=tiny_base,
        harmful=prompt_tables / "harmful.parquet",
        harmless=prompt_tables / "harmless.parquet",
        refusals=prompt_tables / "refusals.txt",
        output_reference=folder / "aligned.json",
        output_dir=folder / "aligned",
        state_dir=tmp_path / "state",
        device="cpu",
    )
    stored = read_json(folder / "aligned.json")
    assert stored["checkpoint"] == "aligned" and stored["path"] == "aligned" and stored["family"] == "llama"
    assert stored["alignment"]["examples"] == {"harmful": 4, "harmless": 4}  # 6 train rows each, 2 held out
    assert set(stored["alignment"]["validation"]) == {"2", "4"}
    assert reference["alignment"]["step"] in (2, 4)
    aligned = load_model(folder / "aligned.json", device="cpu")
    assert aligned.tokenizer.pad_token_id is not None
    assert not _same({k: v.clone() for k, v in aligned.model.state_dict().items()}, _weights(tiny_base, None))
    curve = pd.read_parquet(folder / "aligned" / "training.parquet")
    assert curve["step"].tolist() == [1, 2, 3, 4] and curve["selected"].sum() == 1
    assert not (tmp_path / "state").exists()
