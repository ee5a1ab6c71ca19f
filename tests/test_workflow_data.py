"""The data and model-preparation stages through Snakemake: build, cache, partial reruns, errors."""

from __future__ import annotations

import pytest
import yaml

from workflow_helpers import default_config, planned_jobs, snakemake, tiny_config, write_config

DATA_TARGETS = [f"results/data/{name}.parquet" for name in default_config()["datasets"]]


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_model_dirs):
    workdir = tmp_path_factory.mktemp("wf-data")
    write_config(workdir, tiny_config(tiny_model_dirs["llama"]))
    snakemake(workdir, *DATA_TARGETS, "results/models/tiny/source.json")
    return workdir


def test_data_targets_are_built_with_logs(built):
    for target in DATA_TARGETS:
        assert (built / target).exists()
    assert "dataset harmful_mi:" in (built / "logs/prepare_dataset/harmful_mi.log").read_text()
    assert (built / "results/models/tiny/source.json").exists()


def test_second_run_plans_nothing(built):
    result = snakemake(built, *DATA_TARGETS, "-n")
    assert planned_jobs(result) == {}
    assert "Nothing to be done" in result.stdout + result.stderr


def test_editing_one_dataset_key_reruns_only_that_dataset(built):
    config = yaml.safe_load((built / "config/config.yaml").read_text())
    config["datasets"]["multiarith_style"]["n"] = 13
    write_config(built, config)
    try:
        result = snakemake(built, *DATA_TARGETS, "-n")
        assert planned_jobs(result) == {"prepare_dataset": 1}
        assert "dataset=multiarith_style" in result.stdout
        # Editing the parent of a derived set reruns both, and nothing else.
        config["datasets"]["harmful"]["split_seed"] = 5
        write_config(built, config)
        result = snakemake(built, *DATA_TARGETS, "-n")
        assert planned_jobs(result) == {"prepare_dataset": 3}  # multiarith, harmful, harmful_mi
    finally:
        config["datasets"]["multiarith_style"]["n"] = 12
        config["datasets"]["harmful"]["split_seed"] = 0
        write_config(built, config)


def test_config_typo_stops_the_run_naming_the_key(tmp_path, tiny_model_dirs):
    config = tiny_config(tiny_model_dirs["llama"])
    config["datasets"]["harmful"]["eval_fracion"] = 0.3
    write_config(tmp_path, config)
    result = snakemake(tmp_path, "-n", check=False)
    assert result.returncode != 0
    assert (
        "config key 'datasets.harmful.eval_fracion' is not a known setting (did you mean 'eval_fraction'?)"
        in result.stdout + result.stderr
    )


def test_bad_dataset_fails_its_job_and_keeps_the_others(tmp_path, tiny_model_dirs):
    bad = tmp_path / "bad.csv"
    bad.write_text('prompt\nFine prompt\n""\n')
    config = tiny_config(tiny_model_dirs["llama"])
    config["datasets"]["broken"] = {"source": str(bad)}
    write_config(tmp_path, config)
    result = snakemake(
        tmp_path, "--keep-going", "results/data/broken.parquet", "results/data/harmless.parquet", check=False
    )
    assert result.returncode != 0
    assert "bad.csv row 2: empty prompt" in (tmp_path / "logs/prepare_dataset/broken.log").read_text()
    assert (tmp_path / "results/data/harmless.parquet").exists()
    assert not (tmp_path / "results/data/broken.parquet").exists()
