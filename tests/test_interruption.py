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
import sys
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
    return launch(command, env)


def launch(command: list[str], env: dict) -> subprocess.Popen:
    """Snakemake in its own process group with Ctrl-C's default action, as a terminal starts it;
    its output captured as text."""
    return subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        preexec_fn=as_in_a_terminal,
    )


def as_in_a_terminal() -> None:
    """Ctrl-C's default disposition in the run's processes, as in a terminal. A test suite started
    in the background of a non-interactive shell (`bash .ci/run &`) has SIGINT ignored, which its
    children inherit: Snakemake then never reacts to Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


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


def test_ctrl_c_ends_a_job_even_one_that_swallows_the_interrupt(tmp_path):
    """Snakemake waits for its local jobs on Ctrl-C; Python delivers SIGINT as an exception only
    when the main thread runs Python code, so a job held in native code (or a library catching
    BaseException, simulated here) would hold Snakemake too. A step script's job ends at once."""
    marker = tmp_path / "started"
    (tmp_path / "job.py").write_text(
        "import time\n"
        "import rim  # noqa: F401  (every step script imports the package first)\n"
        f"open({str(marker)!r}, 'w').close()\n"
        "while True:\n"
        "    try:\n"
        "        time.sleep(0.1)\n"
        "    except BaseException:\n"
        "        pass\n"
    )
    (tmp_path / "Snakefile").write_text(
        'rule stuck:\n    output:\n        "never.txt",\n    script:\n        "job.py"\n'
    )
    env = dict(os.environ, PYTHONPATH=str(REPO / "scripts"))
    command = [SNAKEMAKE, "-s", str(tmp_path / "Snakefile"), "-d", str(tmp_path), "--cores", "1"]
    process = launch(command, env)
    deadline = time.monotonic() + 120
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), process.communicate()[0][-3000:]
    os.killpg(process.pid, signal.SIGINT)
    try:
        process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise AssertionError("Snakemake still waited for its job 60 s after Ctrl-C") from None
    assert not (tmp_path / "never.txt").exists()
    # Outside Snakemake (a standalone run, a test, a notebook) importing rim leaves Ctrl-C as it was.
    check = (
        "import signal; before = signal.getsignal(signal.SIGINT); "
        "import rim; print(signal.getsignal(signal.SIGINT) is before)"
    )
    standalone = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True, check=True)
    assert standalone.stdout.strip() == "True"
