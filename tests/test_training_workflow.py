"""The align and finetune rules in the real Snakefile, on a tiny model: outputs, reruns, kill -9."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import time

import torch

from rim.config import validate_config
from rim.models import load_model, read_reference
from rim.provenance import read_json
from rim.training.runs import finetune_run
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
    steps, killed_at = 40, 17
    config = tiny_config(tiny_model_dirs["llama"])
    config["models"]["tiny"]["finetuning"].update(steps=steps, checkpoint_steps=[0, 4, steps])
    target = MANIFEST.format(seed=0)
    workdir = tmp_path / "killed"
    write_config(workdir, config)

    # The job pauses after saving its state at step 17 (RIM_TRAINER_PAUSE_AT_STEP) and is killed
    # there, so the kill lands at a known step however fast or loaded the machine is.
    state_dir = workdir / "results/.training_state/finetune/tiny/gsm8k_style/seed0"
    env = dict(os.environ, PYTHONPATH=str(REPO / "scripts"), RIM_TRAINER_PAUSE_AT_STEP=str(killed_at))
    command = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--cores", "2", target]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    paused = state_dir / f"paused_at_step{killed_at}"
    deadline = time.monotonic() + 600
    while not paused.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert paused.exists(), "the fine-tuning job did not pause at its step"
    os.killpg(process.pid, signal.SIGKILL)  # snakemake and the training job, no cleanup
    process.wait()
    state = state_dir / "state.pt"
    assert state.exists() and not (workdir / target).exists()
    assert torch.load(state, weights_only=False)["step"] == killed_at

    snakemake(workdir, "--unlock")
    snakemake(workdir, target, "--rerun-incomplete")
    log = (workdir / "logs/finetune/tiny/gsm8k_style/seed0.log").read_text()
    assert f"resuming from the saved state at step {killed_at} of {steps}" in log
    assert not state.parent.exists()

    # The same run without interruption, in-process, on the same prepared inputs.
    block = validate_config(copy.deepcopy(config))["models"]["tiny"]["finetuning"]
    whole = tmp_path / "whole"
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # as the job had: float sums may depend on the thread count
    try:
        _finetune_whole(config, block, workdir, whole, tmp_path / "state")
    finally:
        torch.set_num_threads(threads)
    for step in (4, steps):
        a = load_model(workdir / target, step=step, device="cpu").model.state_dict()
        b = load_model(whole / "run.json", step=step, device="cpu").model.state_dict()
        assert all(torch.equal(a[name], b[name]) for name in a), step


def _finetune_whole(config, block, workdir, whole, state_dir):
    finetune_run(
        model="tiny",
        run="gsm8k_style",
        seed=0,
        block=block,
        run_block=config["training"]["runs"]["gsm8k_style"],
        base_reference=workdir / "results/models/tiny/source.json",
        dataset=workdir / "results/data/gsm8k_style.parquet",
        manifest=whole / "run.json",
        loss_table=whole / "loss.parquet",
        checkpoints_dir=whole / "checkpoints",
        state_dir=state_dir,
        device="cpu",
    )
