"""rim.planning: what the workflow builds for a config, tested without Snakemake."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest

from rim import planning
from rim.config import load_config
from rim.errors import ConfigError
from workflow_helpers import REPO


@pytest.fixture(scope="module")
def default_config():
    return load_config(REPO / "config" / "config.yaml")


@pytest.fixture
def config(default_config):
    """The default config with one small run: two seeds, checkpoints at steps 0, 5 and 10."""
    config = copy.deepcopy(default_config)
    config["models"]["smollm2"]["finetuning"]["checkpoint_steps"] = [0, 5, 10]
    runs = config["training"]["runs"]
    first = next(name for name, run in runs.items() if run.get("ras"))
    config["training"]["runs"] = {first: {**runs[first], "seeds": [0, 1]}}
    config["ras"]["runs"] = None
    return config, first


def test_checkpoint_ids_start_with_base_and_map_step_zero_to_it(config):
    config, run = config
    ids = planning.checkpoint_ids(config, "smollm2")
    assert ids == ["base", f"{run}/seed0/step5", f"{run}/seed0/step10", f"{run}/seed1/step5", f"{run}/seed1/step10"]
    assert planning.checkpoint_ids(config, "smollm2", runs=[]) == ["base"]
    assert planning.last_checkpoints(config, "smollm2", [run]) == [f"{run}/seed0/step10", f"{run}/seed1/step10"]


def test_a_checkpoint_loads_from_its_run_manifest_and_base_from_the_aligned_model(config):
    config, run = config
    assert planning.checkpoint_reference(config, "smollm2", "base") == "results/models/smollm2/aligned.json"
    assert planning.checkpoint_reference(config, "smollm2", f"{run}/seed1/step5") == (
        f"results/finetune/smollm2/{run}/seed1/run.json"
    )
    assert planning.checkpoint_step(f"{run}/seed1/step5") == 5 and planning.checkpoint_step("base") is None
    config["models"]["smollm2"]["alignment"]["enabled"] = False
    assert planning.checkpoint_reference(config, "smollm2", "base") == "results/models/smollm2/source.json"


def test_evaluation_groups_choose_their_checkpoints_and_overlap_once(config):
    config, run = config
    config["evaluation"]["groups"] = {
        "ras": {"prompt_sets": ["harmful"], "modes": ["no_think"], "checkpoints": "all"},
        "thinking": {"prompt_sets": ["harmful"], "modes": ["no_think", "think"], "checkpoints": "base_and_last"},
    }
    ckpts = planning.checkpoint_ids(config, "smollm2")
    every = planning.evaluation_targets(config, "smollm2", ckpts)
    think = {path for path in every if path.endswith("/think.parquet")}
    assert think == {
        "results/eval/smollm2/base/harmful/think.parquet",
        f"results/eval/smollm2/{run}/seed0/step10/harmful/think.parquet",
        f"results/eval/smollm2/{run}/seed1/step10/harmful/think.parquet",
    }
    assert len(every) == len(set(every)) == 5 + 3  # no_think on every checkpoint, think on 3
    assert planning.evaluation_targets(config, "smollm2", ckpts, "ras") == [
        planning.evaluation_table("smollm2", ckpt, "harmful", "no_think") for ckpt in ckpts
    ]
    with pytest.raises(ConfigError, match="defined: ras, thinking"):
        planning.evaluation_targets(config, "smollm2", ckpts, "patterns")


def test_the_base_dump_holds_the_neuron_pairs_and_a_checkpoint_reads_the_base_responses(config):
    config, run = config
    base = planning.dump_plan(config, "smollm2", "base")
    later = planning.dump_plan(config, "smollm2", f"{run}/seed0/step5")
    intent = config["neurons"]["intent"]["prompt_set"]
    assert intent in {item["prompt_set"] for item in base} and intent not in {item["prompt_set"] for item in later}
    fixed = [item for item in later if item["responses_from"] == "base"]
    assert fixed and all(item["responses"].startswith("results/responses/smollm2/base/") for item in fixed)
    own = [item for item in later if item["responses_from"] == "own"]
    assert all(f"/{run}/seed0/step5/" in item["responses"] for item in own)
    # The KL baseline sits on the base responses of the math inputs (kl_positions: answer).
    math = config["ras"]["math_inputs"]["prompt_set"]
    assert [item["prompt_set"] for item in later if item["kl"]] == [math]
    inputs = planning.dump_inputs(config, "smollm2", f"{run}/seed0/step5")
    assert inputs["kl_reference"] == "results/activations/smollm2/base.h5"
    assert "kl_reference" not in planning.dump_inputs(config, "smollm2", "base")


def test_ras_reads_every_checkpoints_dump_and_needs_a_run_that_feeds_it(config):
    config, run = config
    inputs = planning.ras_inputs(config, "smollm2")
    assert inputs["dumps"][0] == "results/activations/smollm2/base.h5" and len(inputs["dumps"]) == 5
    assert len(inputs["evals"]) == 5 * 3  # safety, math and over-refusal inputs per checkpoint
    assert planning.ras_targets(config) == ["results/ras.parquet", "results/ras_correlations.parquet"]
    config["training"]["runs"][run]["ras"] = False
    assert planning.ras_checkpoints(config, "smollm2") == ["base"] and planning.ras_targets(config) == []


def test_heads_blocks_follow_the_ras_runs_unless_they_name_their_own(config):
    config, run = config
    config["heads"]["checkpoints"] = {"runs": None, "which": "base_and_last"}
    assert planning.block_checkpoints(config, "smollm2", "heads") == [
        "base",
        f"{run}/seed0/step10",
        f"{run}/seed1/step10",
    ]
    config["heads"]["checkpoints"] = {"runs": [], "which": "all"}
    assert planning.block_checkpoints(config, "smollm2", "heads") == ["base"]


def test_the_figure_names_are_those_the_plotting_module_draws():
    from rim.figures import FIGURES

    assert tuple(FIGURES) == planning.FIGURE_NAMES


def test_parsing_the_snakefile_imports_no_torch_h5py_or_altair(tmp_path):
    """Every dry run, lint and report parses the Snakefile: it must not pay for the ML stack."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text((REPO / "config" / "config.yaml").read_text())
    command = [sys.executable, "-X", "importtime", "-m", "snakemake", "-s", str(REPO / "Snakefile")]
    targets = ["results/ras.parquet"]  # `all` adds the figure jobs, whose params read rim.figures
    result = subprocess.run(
        command + targets + ["-n", "--quiet", "all"], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    imported = {
        line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines() if "import time" in line
    }
    assert "snakemake" in imported and "rim" in imported
    assert not imported & {"torch", "h5py", "altair", "transformers"}, imported & {"torch", "h5py", "altair"}


def test_a_dumped_checkpoint_is_one_job_for_its_responses_and_its_dump(config):
    config, run = config
    ras, neurons = config["ras"], config["neurons"]
    safety, math, over = (
        (ras[key]["prompt_set"], ras[key]["mode"]) for key in ("safety_inputs", "math_inputs", "over_refusal_inputs")
    )
    intent = (neurons["intent"]["prompt_set"], neurons["intent"]["mode"])
    later = f"{run}/seed1/step10"
    assert planning.checkpoint_pairs(config, later) == [safety, math, over]
    assert set(planning.checkpoint_pairs(config, "base")) == {safety, math, over, intent}
    outputs = planning.checkpoint_outputs(config, "{model}", "{ckpt}")
    assert outputs["dump"] == "results/activations/{model}/{ckpt}.h5"
    assert (
        outputs[planning.checkpoint_output_key(*math)]
        == f"results/responses/{{model}}/{{ckpt}}/{math[0]}/{math[1]}.parquet"
    )
    # The dump reads the responses the same job writes, and the base model's from the base job.
    own = [
        item["responses"] for item in planning.dump_plan(config, "smollm2", later) if item["responses_from"] == "own"
    ]
    assert set(own) <= set(planning.checkpoint_outputs(config, "smollm2", later).values())
    inputs = planning.dump_inputs(config, "smollm2", later)
    assert set(inputs["base_responses"]) <= set(planning.checkpoint_outputs(config, "smollm2", "base").values())
    assert inputs["base_responses"] and not planning.dump_inputs(config, "smollm2", "base")["base_responses"]
    params = planning.checkpoint_params(config, "smollm2", later)
    assert [(g["prompt_set"]["name"], g["mode"]["name"]) for g in params["generations"]] == [safety, math, over]
    assert params["checkpoint_step"] == 10 and set(params["dataset_tables"]) == {
        f"{a}/{b}" for a, b in [safety, math, over]
    }


def test_generation_reads_of_the_judges_only_what_changes_the_responses(config):
    config, _ = config
    before = planning.generation_params(config, "harmful", "no_think")
    edited = copy.deepcopy(config)
    judges = edited["evaluation"]["judges"]
    judges["phrases"]["phrases"] = ["I refuse"]  # a verdict changes, the responses do not
    assert planning.generation_params(edited, "harmful", "no_think") == before
    judges["phrases"]["max_new_tokens"] = before["needs"]["answer_tokens"] + 8  # longer answers
    assert planning.generation_params(edited, "harmful", "no_think")["needs"]["answer_tokens"] == (
        before["needs"]["answer_tokens"] + 8
    )
    judges["refusal_score"]["enabled"] = False
    assert planning.generation_params(edited, "harmful", "no_think")["needs"]["refusal_score"] is False
