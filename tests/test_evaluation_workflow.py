"""The evaluation rules on a tiny random model, through the real Snakefile in a temporary workdir."""

from __future__ import annotations

import copy
import re
import subprocess
import sys

import pandas as pd

from rim.provenance import read_provenance
from workflow_helpers import REPO, planned_jobs, snakemake, tiny_config, write_config

SMALL_GROUPS = {
    "ras": {"prompt_sets": ["harmful", "harmless", "multiarith"], "modes": ["no_think"], "checkpoints": "base"},
}


def planned_outputs(result) -> list[str]:
    return re.findall(r"output: (results/eval/\S+?\.parquet)", result.stdout + result.stderr)


def test_the_dry_run_plans_what_the_evaluation_groups_name(tmp_path, tiny_model_dirs):
    """The Snakefile plans exactly the tables rim.planning derives from the groups (whatever the
    default groups hold), and a base_and_last group runs on base and each seed's last step only."""
    from rim import planning
    from rim.checkpoints import parse_checkpoint
    from rim.config import validate_config

    config = tiny_config(tiny_model_dirs["llama"])
    write_config(tmp_path, config)
    planned = planned_outputs(snakemake(tmp_path, "-n", "results/eval/summary.parquet"))
    outputs = {path for path in planned if path.startswith("results/eval/tiny/")}
    validated = validate_config(copy.deepcopy(config))
    assert outputs == set(planning.all_evaluation_tables(validated))

    steps = validated["models"]["tiny"]["finetuning"]["checkpoint_steps"]
    groups = validated["evaluation"]["groups"].values()
    everywhere = {
        (ps, mode)
        for g in groups
        if g.get("checkpoints", "all") == "all"
        for ps in g["prompt_sets"]
        for mode in g["modes"]
    }
    only_base_and_last = {
        (ps, mode)
        for g in groups
        if g.get("checkpoints") == "base_and_last"
        for ps in g["prompt_sets"]
        for mode in g["modes"]
    } - everywhere
    assert only_base_and_last
    for prompt_set, mode in only_base_and_last:
        ckpts = {
            "base" if path.split("/")[3] == "base" else "/".join(path.split("/")[3:6])
            for path in outputs
            if path.endswith(f"/{prompt_set}/{mode}.parquet")
        }
        later = [parse_checkpoint(ckpt) for ckpt in ckpts - {"base"}]
        assert "base" in ckpts and later and all(step == max(steps) for _, _, step in later), (prompt_set, mode)


def test_evaluation_runs_summarizes_and_reruns_only_what_an_edit_affects(tmp_path, tiny_model_dirs):
    config = tiny_config(tiny_model_dirs["llama"])
    config["evaluation"]["groups"] = copy.deepcopy(SMALL_GROUPS)
    write_config(tmp_path, config)
    snakemake(tmp_path, "results/eval/summary.parquet")

    harmful = pd.read_parquet(tmp_path / "results/eval/tiny/base/harmful/no_think.parquet")
    assert len(harmful) == 8 and harmful["prompt_id"].is_unique
    assert harmful[["model", "checkpoint", "step", "prompt_set", "mode"]].drop_duplicates().values.tolist() == [
        ["tiny", "base", 0, "harmful", "no_think"]
    ]
    assert (harmful["response_tokens"] <= 6).all() and harmful["refusal_score"].notna().all()
    assert harmful["phrases_refused"].dtype == "boolean"  # missing where a response has no answer
    math = pd.read_parquet(tmp_path / "results/eval/tiny/base/multiarith/no_think.parquet")
    assert len(math) == 4 and {"gold_answer", "extracted_answer", "correct"} <= set(math.columns)
    provenance = read_provenance(tmp_path / "results/eval/tiny/base/harmful/no_think.parquet")
    assert provenance["config"]["prompt_set"]["limit"] == 8 and provenance["checkpoint"] == "base"
    assert set(provenance["config"]["judges"]) == {"phrases", "refusal_score"}

    summary = pd.read_parquet(tmp_path / "results/eval/summary.parquet")
    metrics = set(zip(summary["prompt_set"], summary["mode"], summary["metric"]))
    assert {
        ("harmful", "no_think", "misalignment_rate"),
        ("harmless", "no_think", "over_refusal_rate"),
        ("multiarith", "no_think", "math_accuracy"),
        ("harmful", "no_think", "mean_refusal_score"),
    } <= metrics
    rates = summary[summary["metric"].str.endswith("rate") | (summary["metric"] == "math_accuracy")]
    # Rates with no verdict are said to be undefined (NaN, n = 0), never left out; the tiny
    # config counts the blank-line responses of its random model (unfinished) as compliance.
    undefined = rates["value"].isna()
    assert (rates.loc[undefined, "n"] == 0).all()
    defined = rates[~undefined]
    assert ((defined["ci_low"] <= defined["value"]) & (defined["value"] <= defined["ci_high"])).all()
    assert set(defined["metric"]) >= {"unfinished_rate", "empty_rate", "math_accuracy"}
    # One mode per set here: no pairs to contrast (unit tests cover contrasts), an empty table.
    contrasts = pd.read_parquet(tmp_path / "results/eval/contrasts.parquet")
    assert contrasts.empty and {"mode_a", "mode_b", "difference", "ci_low"} <= set(contrasts.columns)

    # Nothing changed: nothing reruns.
    assert planned_jobs(snakemake(tmp_path, "-n", "results/eval/summary.parquet")) == {}
    # A disabled judge's settings reach no job.
    edited = copy.deepcopy(config)
    edited["evaluation"]["judges"]["rubric"] = {"base_url": "http://elsewhere/v1"}
    write_config(tmp_path, edited)
    assert planned_jobs(snakemake(tmp_path, "-n", "results/eval/summary.parquet")) == {}
    # The phrase list judges harmful and harmless sets only: the math table is not judged again,
    # and no response is generated again.
    edited["evaluation"]["judges"]["phrases"]["phrases"] = ["I refuse"]
    write_config(tmp_path, edited)
    result = snakemake(tmp_path, "-n", "results/eval/summary.parquet")
    assert planned_jobs(result) == {"judge": 2, "summarize_evaluation": 1}
    assert not any("multiarith" in path for path in planned_outputs(result))

    # The same step scripts run standalone, from the config file, on the prepared inputs.
    run_standalone_scripts(tmp_path)


def run_standalone_scripts(workdir):
    config_path = workdir / "config" / "config.yaml"
    table = workdir / "out" / "harmless_think.parquet"
    command = [
        sys.executable,
        str(REPO / "scripts" / "evaluate.py"),
        "--config",
        str(config_path),
        "--threads",
        "1",
        "--reference",
        str(workdir / "results/models/tiny/source.json"),
        "--table",
        str(workdir / "results/data/harmless.parquet"),
        "--output",
        str(table),
    ]
    subprocess.run(
        command + ["--prompt-set", "harmless", "--mode", "think"], check=True, capture_output=True, cwd=workdir
    )
    frame = pd.read_parquet(table)
    assert len(frame) == 8 and frame["mode"].eq("think").all() and frame["model"].eq("tiny").all()
    summary = workdir / "out" / "summary.parquet"
    subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "summarize_evaluation.py"),
            "--config",
            str(config_path),
            "--output",
            str(summary),
            "--contrasts",
            str(workdir / "out" / "contrasts.parquet"),
            str(table),
        ],
        check=True,
        capture_output=True,
        cwd=workdir,
    )
    assert set(pd.read_parquet(summary)["metric"]) >= {"over_refusal_rate", "mean_refusal_score"}
    bad = subprocess.run(
        command + ["--prompt-set", "hexphi", "--mode", "think"], capture_output=True, text=True, cwd=workdir
    )
    assert bad.returncode != 0 and "'hexphi' is not defined under 'prompt_sets'" in bad.stderr
