"""The align and finetune rules in the real Snakefile, on a tiny model: outputs, reruns, kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import torch

from rim.models import load_model, read_reference
from rim.provenance import read_json
from workflow_helpers import REPO, SNAKEMAKE, planned_jobs, snakemake, tiny_config, write_config

MANIFEST = "results/finetune/tiny/gsm8k_style/seed{seed}/run.json"


def _config(model_dir, **finetuning):
    config = tiny_config(model_dir)
    config["models"]["tiny"]["alignment"].update(enabled=True, validation_fraction=0.2, checkpoint_steps=[2])
    config["models"]["tiny"]["finetuning"].update(finetuning)
    return config


def test_align_then_finetune_seeds_and_rerun_only_what_changed(tiny_model_dirs, tmp_path):
    workdir = tmp_path / "wd"
    config = _config(tiny_model_dirs["llama"])
    write_config(workdir, config)
    targets = [MANIFEST.format(seed=0), MANIFEST.format(seed=1)]
    planned = planned_jobs(snakemake(workdir, "-n", *targets))
    assert planned["align"] == 1 and planned["finetune"] == 2

    snakemake(workdir, *targets)
    aligned = read_json(workdir / "results/models/tiny/aligned.json")
    assert aligned["checkpoint"] == "aligned" and aligned["alignment"]["step"] in (2, 4)
    manifest = read_json(workdir / targets[0])
    assert manifest["base_reference"] == "../../../../models/tiny/aligned.json"
    assert sorted(manifest["checkpoints"], key=int) == ["0", "2", "4"]
    assert read_reference(workdir / targets[0], step=0)["checkpoint"] == "aligned"
    assert read_reference(workdir / targets[1], step=4)["checkpoint"] == "gsm8k_style/seed1/step4"
    assert (workdir / "logs/finetune/tiny/gsm8k_style/seed1.log").exists()
    assert (workdir / "results/benchmarks/align/tiny.tsv").exists()
    assert not (workdir / "results/.training_state/finetune/tiny/gsm8k_style/seed0").exists()
    assert planned_jobs(snakemake(workdir, "-n", *targets)) == {}

    # A fine-tuning setting reruns the fine-tuning jobs only; an alignment setting reruns everything.
    config["models"]["tiny"]["finetuning"]["learning_rate"] = 2e-5
    write_config(workdir, config)
    assert planned_jobs(snakemake(workdir, "-n", *targets)) == {"finetune": 2}
    config["models"]["tiny"]["alignment"]["learning_rate"] = 2e-5
    write_config(workdir, config)
    planned = planned_jobs(snakemake(workdir, "-n", *targets))
    assert planned["align"] == 1 and planned["finetune"] == 2


def test_kill_9_mid_run_resumes_to_the_same_weights(tiny_model_dirs, tmp_path):
    settings = {"steps": 200, "checkpoint_steps": [0, 4, 200], "state_every_steps": 1}
    config = tiny_config(tiny_model_dirs["llama"])
    config["models"]["tiny"]["finetuning"].update(settings)
    target = MANIFEST.format(seed=0)
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    for workdir in (killed, whole):
        write_config(workdir, config)
    snakemake(whole, target)
    snakemake(killed, "results/models/tiny/source.json", "results/data/gsm8k_style.parquet")

    state = killed / "results/.training_state/finetune/tiny/gsm8k_style/seed0/state.pt"
    env = dict(os.environ, PYTHONPATH=str(REPO / "scripts"))
    command = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(killed), "--cores", "2", target]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while not state.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(1.0)  # a few more steps
    os.killpg(process.pid, signal.SIGKILL)  # snakemake and the training job, no cleanup
    process.wait()
    assert state.exists() and not (killed / target).exists()
    saved = torch.load(state, weights_only=False)["step"]
    assert 0 < saved < 200

    snakemake(killed, "--unlock")
    snakemake(killed, target, "--rerun-incomplete")
    log = (killed / "logs/finetune/tiny/gsm8k_style/seed0.log").read_text()
    assert "resuming from the saved state at step" in log
    for step in (4, 200):
        a = load_model(killed / target, step=step, device="cpu").model.state_dict()
        b = load_model(whole / target, step=step, device="cpu").model.state_dict()
        assert all(torch.equal(a[name], b[name]) for name in a), step
    assert not state.parent.exists()
