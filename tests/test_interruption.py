"""A run interrupted mid-DAG, restarted with the same command, finishes with no manual cleanup.

Ctrl-C in a terminal sends SIGINT, and a batch system ending the job that runs Snakemake
(scancel, time limit) sends SIGTERM, to every process of the run. Snakemake then cancels its
jobs, marks their outputs incomplete and releases its lock; the default profile's
rerun-incomplete rebuilds those outputs on the next run, and the fine-tuning job resumes from
the trainer state it saved outside its outputs. (kill -9 of Snakemake leaves its lock behind:
`snakemake --unlock` once, then the same command; tests/test_training_workflow.py covers that.)
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import torch

from workflow_helpers import REPO, SNAKEMAKE, planned_jobs, snakemake, tiny_config, write_config

RUN = "results/finetune/tiny/gsm8k_style/seed0"
# Fine-tuning, then the evaluation of its last checkpoint: the interruptions hit the middle job.
TARGET = "results/eval/tiny/gsm8k_style/seed0/step200/harmful/no_think.parquet"
STATE = "results/.training_state/finetune/tiny/gsm8k_style/seed0/state.pt"


def interruption_config(model_dir) -> dict:
    config = tiny_config(model_dir, training={"runs": {"gsm8k_style": {"seeds": [0]}}})
    # Long enough to be interrupted twice, with the trainer state saved at every step.
    config["models"]["tiny"]["finetuning"].update(steps=200, checkpoint_steps=[0, 4, 200], state_every_steps=1)
    return config


def start(workdir: Path) -> subprocess.Popen:
    """`snakemake TARGET` exactly as a user types it (the default profile applies), in its own
    process group like a terminal's foreground job or a batch job's processes."""
    command = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--cores", "2", TARGET]
    env = dict(os.environ, PYTHONPATH=str(REPO / "scripts"))
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def interrupt_when(process: subprocess.Popen, ready, sig: signal.Signals, timeout: float = 900) -> str:
    deadline = time.monotonic() + timeout
    while not ready() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert process.poll() is None, f"the run ended before the interruption:\n{process.stdout.read()[-4000:]}"
    assert ready(), "the fine-tuning job did not reach a saved state in time"
    os.killpg(process.pid, sig)
    output, _ = process.communicate(timeout=120)
    # Not asserted: Snakemake's exit status. Under load (pytest -n 2) it was once 0 although the
    # fine-tuning job was killed mid-run; what matters is checked by the callers (no run.json, a
    # saved state short of the end, no lock).
    return output


def saved_step(workdir: Path) -> int:
    return torch.load(workdir / STATE, weights_only=False)["step"]


def test_interrupted_twice_then_the_same_command_finishes(tiny_model_dirs, tmp_path):
    workdir = tmp_path / "interrupted"
    write_config(workdir, interruption_config(tiny_model_dirs["llama"]))
    state = workdir / STATE

    # Ctrl-C while fine-tuning runs: the model and dataset jobs are done, the evaluation waits.
    interrupt_when(start(workdir), state.exists, signal.SIGINT)
    first = saved_step(workdir)
    assert 0 < first < 200 and not (workdir / RUN / "run.json").exists()
    assert not list((workdir / ".snakemake" / "locks").glob("*")), "the interrupted run left its lock"

    # The same command resumes fine-tuning; the batch system ends it (SIGTERM) once it has
    # saved a later state.
    after_first = state.stat().st_mtime_ns
    interrupt_when(start(workdir), lambda: state.exists() and state.stat().st_mtime_ns > after_first, signal.SIGTERM)
    second = saved_step(workdir)
    assert first < second < 200

    # The same command again: no IncompleteFilesException, no LockException, the DAG completes.
    process = start(workdir)
    output, _ = process.communicate(timeout=900)
    assert process.returncode == 0, output[-6000:]
    assert "IncompleteFilesException" not in output and "LockException" not in output
    log = (workdir / "logs/finetune/tiny/gsm8k_style/seed0.log").read_text()
    resumed = [int(step) for step in re.findall(r"resuming from the saved state at step (\d+)", log)]
    assert resumed and resumed[-1] == second, log[-3000:]
    assert (workdir / TARGET).exists() and not state.parent.exists()
    assert planned_jobs(snakemake(workdir, "-n", TARGET)) == {}
