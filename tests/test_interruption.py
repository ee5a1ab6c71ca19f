"""A run interrupted mid-DAG, restarted with the same command, finishes with no manual cleanup.

Ctrl-C in a terminal sends SIGINT, and a batch system ending the job that runs Snakemake
(scancel, time limit) sends SIGTERM, to every process of the run. Snakemake then cancels its
jobs, marks their outputs incomplete and releases its lock; the default profile's
rerun-incomplete rebuilds those outputs on the next run, and the fine-tuning job resumes from
the trainer state it saved outside its outputs. The fine-tuning job is told to pause at a step
(RIM_TRAINER_PAUSE_AT_STEP) and the test signals only once the job announces that pause, so each
interruption lands at a known step however fast or loaded the machine is. (kill -9 of Snakemake leaves its lock behind:
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

# The fine-tuning run's length and the steps at which the two interruptions land.
STEPS, FIRST, SECOND = 40, 7, 23
RUN = "results/finetune/tiny/gsm8k_style/seed0"
# Fine-tuning, then the evaluation of its last checkpoint: the interruptions hit the middle job.
TARGET = f"results/eval/tiny/gsm8k_style/seed0/step{STEPS}/harmful/no_think.parquet"
STATE_DIR = "results/.training_state/finetune/tiny/gsm8k_style/seed0"


def interruption_config(model_dir) -> dict:
    config = tiny_config(model_dir, training={"runs": {"gsm8k_style": {"seeds": [0]}}})
    config["models"]["tiny"]["finetuning"].update(steps=STEPS, checkpoint_steps=[0, 4, STEPS])
    return config


def start(workdir: Path, pause_at: int | None = None) -> subprocess.Popen:
    """`snakemake TARGET` exactly as a user types it (the default profile applies), in its own
    process group like a terminal's foreground job or a batch job's processes. With ``pause_at``
    the fine-tuning job holds after saving its state at that step (RIM_TRAINER_PAUSE_AT_STEP), so
    the interruption lands at a known step however fast or loaded the machine is."""
    command = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--cores", "2", TARGET]
    env = dict(os.environ, PYTHONPATH=str(REPO / "scripts"))
    env.pop("RIM_TRAINER_PAUSE_AT_STEP", None)
    if pause_at is not None:
        env["RIM_TRAINER_PAUSE_AT_STEP"] = str(pause_at)
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def interrupt_when_paused(process: subprocess.Popen, workdir: Path, step: int, sig: signal.Signals) -> str:
    """Wait for the fine-tuning job to announce its pause at ``step``, then send ``sig`` to the run."""
    marker = workdir / STATE_DIR / f"paused_at_step{step}"
    deadline = time.monotonic() + 900
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, f"the run ended before the interruption:\n{process.stdout.read()[-4000:]}"
    assert marker.exists(), f"the fine-tuning job did not pause at step {step} within 900 s"
    os.killpg(process.pid, sig)
    # Generous: on a loaded machine Snakemake may take a while to cancel and record its jobs.
    try:
        output, _ = process.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        processes = subprocess.run(
            ["ps", "-eo", "pid,ppid,pgid,stat,etime,args"], capture_output=True, text=True
        ).stdout
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        raise AssertionError(
            f"Snakemake did not exit within 600 s of {sig.name}.\nprocesses:\n{processes}\n"
            f"its output:\n{output[-4000:]}\nfine-tuning log:\n{finetune_log(workdir)[-3000:]}"
        ) from None
    # Not asserted: Snakemake's exit status. Under load (pytest -n 2) it was once 0 although the
    # fine-tuning job was killed mid-run; what matters is checked by the callers (no run.json, a
    # saved state short of the end, no lock).
    return output


def saved_step(workdir: Path) -> int:
    return torch.load(workdir / STATE_DIR / "state.pt", weights_only=False)["step"]


def finetune_log(workdir: Path) -> str:
    return (workdir / "logs/finetune/tiny/gsm8k_style/seed0.log").read_text()


def test_interrupted_three_times_then_the_same_command_finishes(tiny_model_dirs, tmp_path):
    workdir = tmp_path / "interrupted"
    write_config(workdir, interruption_config(tiny_model_dirs["llama"]))

    # Ctrl-C while fine-tuning runs: the model and dataset jobs are done, the evaluation waits.
    interrupt_when_paused(start(workdir, pause_at=FIRST), workdir, FIRST, signal.SIGINT)
    assert saved_step(workdir) == FIRST and not (workdir / RUN / "run.json").exists()
    assert not list((workdir / ".snakemake" / "locks").glob("*")), "the interrupted run left its lock"

    # The same command resumes fine-tuning; the batch system ends it (SIGTERM) at a later step.
    interrupt_when_paused(start(workdir, pause_at=SECOND), workdir, SECOND, signal.SIGTERM)
    assert f"resuming from the saved state at step {FIRST} of {STEPS}" in finetune_log(workdir)
    assert saved_step(workdir) == SECOND and not (workdir / RUN / "run.json").exists()

    # Ended once more after the last step, before the job wrote its outputs: the finished state
    # (its checkpoints) outlives the training loop until the outputs exist.
    interrupt_when_paused(start(workdir, pause_at=STEPS), workdir, STEPS, signal.SIGTERM)
    assert f"resuming from the saved state at step {SECOND} of {STEPS}" in finetune_log(workdir)
    assert saved_step(workdir) == STEPS and not (workdir / RUN / "run.json").exists()

    # The same command again: no IncompleteFilesException, no LockException, no training step,
    # the DAG completes.
    process = start(workdir)
    output, _ = process.communicate(timeout=900)
    assert process.returncode == 0, output[-6000:]
    assert "IncompleteFilesException" not in output and "LockException" not in output
    log = finetune_log(workdir)
    assert f"finished earlier (saved state at step {STEPS}); writing its outputs again" in log, log[-3000:]
    assert not re.search(r"\d+/\d+ steps", log), "the last run trained again"  # a progress line
    assert (workdir / TARGET).exists() and not (workdir / STATE_DIR).exists()
    assert planned_jobs(snakemake(workdir, "-n", TARGET)) == {}
