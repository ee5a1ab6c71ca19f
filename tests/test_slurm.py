"""The SLURM profile (workflow/profiles/slurm) against the workflow's rules, and the tiny-model DAG
run through a real single-node SLURM with `--executor slurm`.

The profile checks run by default (seconds). The SLURM run is opt-in (`pytest -m slurm`, as root):
it installs Debian's slurm-wlm and munge when missing, starts munged, slurmctld and slurmd on
localhost (tests/slurm/start.sh), runs the longest chain of the workflow and stops what it started.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from workflow_helpers import REPO, SNAKEMAKE, planned_jobs, snakemake, tiny_config, write_config

PROFILE_DIR = REPO / "workflow" / "profiles" / "slurm"
SCRIPTS = REPO / "tests" / "slurm"

# The longest chain of the workflow on the tiny model: source -> alignment -> fine-tuning ->
# evaluation -> activation dumps -> safety neurons -> RAS -> results/ras.parquet, plus the GPU
# rules off that chain (neuron zeroing, refusal heads, their ablation, head patching).
SLURM_TARGETS = [
    "results/ras.parquet",
    "results/neurons/tiny/zeroing_summary.parquet",
    "results/heads/tiny/base/refusal_heads.parquet",
    "results/heads/tiny/base/head_ablation_summary.parquet",
    "results/heads/tiny/base/head_patching.parquet",
]
# Test-cluster settings only; everything else comes from the profile unchanged.
SLURM_TEST_ARGS = [
    "--jobs",
    "2",  # two cores on CI
    "--local-cores",
    "1",
    "--latency-wait",
    "5",  # one local filesystem
    # No accounting daemon here, so job states come from squeue (MinJobAge=7200 in slurm.conf).
    "--slurm-status-command",
    "squeue",
    "--slurm-init-seconds-before-status-checks",
    "2",
    "--seconds-between-status-checks",
    "2",
]
SLURM_RUN_TIMEOUT = 1800


def profile() -> dict:
    return yaml.safe_load((PROFILE_DIR / "config.yaml").read_text())


def resource_value(expression, attempt: int) -> int:
    """A profile resource ("64000 * attempt" or 4) as Snakemake evaluates it for one attempt."""
    return int(eval(str(expression), {"__builtins__": {}}, {"attempt": attempt}))


def workflow_rules(workdir: Path) -> dict:
    """name -> {"local": bool, "params": [...]} of the real Snakefile under workdir's config."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "scripts"))
    result = subprocess.run(
        [sys.executable, str(SCRIPTS / "list_rules.py"), str(workdir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def slurm_config(model_dir) -> dict:
    """Tiny config with alignment on (so the chain starts at the align rule) and one seed."""
    config = tiny_config(model_dir, training={"runs": {"gsm8k_style": {"seeds": [0]}}})
    config["models"]["tiny"]["alignment"].update(enabled=True, validation_fraction=0.2, checkpoint_steps=[2])
    return config


@pytest.fixture(scope="module")
def rules(tiny_model_dirs, tmp_path_factory) -> dict:
    workdir = tmp_path_factory.mktemp("slurm-rules")
    write_config(workdir, slurm_config(tiny_model_dirs["llama"]))
    return workflow_rules(workdir)


# ----- the profile, without SLURM ------------------------------------------------------------------
def test_every_key_of_the_profile_has_a_comment():
    # Top-level keys, and the entries of default-resources and set-resources (set-threads has
    # one comment for its block), each carry a comment on the line before or on the line itself.
    lines = (PROFILE_DIR / "config.yaml").read_text().splitlines()
    uncommented, block = [], None
    for number, line in enumerate(lines):
        top = re.match(r"^([a-z-]+):", line)
        if top:
            block = top.group(1)
        entry = re.match(r"^  [a-z_]+:", line) and block in ("default-resources", "set-resources")
        if (top or entry) and "#" not in line and not lines[number - 1].lstrip().startswith("#"):
            uncommented.append(line)
    assert not uncommented, f"keys of {PROFILE_DIR / 'config.yaml'} without a comment: {uncommented}"


def test_profile_gives_a_gpu_to_every_model_rule_and_none_to_local_rules(rules):
    settings = profile()
    resources = settings["set-resources"]
    threads = settings["set-threads"]
    assert settings["executor"] == "slurm" and settings["rerun-incomplete"] is True and settings["retries"] >= 1
    unknown = (set(resources) | set(threads)) - set(rules)
    assert not unknown, f"the SLURM profile names rules the workflow does not define: {sorted(unknown)}"

    # A rule that runs a model on the configured device (a `device` param) is a GPU job; judging
    # only when the local classifier judge is on (off here: string judges run locally).
    assert rules["judge"]["local"] and "device" in rules["judge"]["params"]
    model_rules = {name for name, rule in rules.items() if "device" in rule["params"] and name != "judge"}
    assert {"align", "finetune", "generate", "generate_and_dump", "generate_and_dump_base"} <= model_rules
    for name in sorted(model_rules):
        assert not rules[name]["local"], f"rule {name} runs a model but is a localrule"
        entry = resources.get(name)
        assert entry, f"rule {name} runs a model but has no entry under set-resources in the SLURM profile"
        # The GPU count is the rule's own (the model entry's `gpus`): the profile must not fix it.
        assert "gpu" in rules[name]["resources"] and "gpu" not in entry, name
        assert resource_value(entry["cpus_per_gpu"], 1) >= 1, name
        assert threads[name] == resource_value(entry["cpus_per_gpu"], 1), name
    gpu_rules = {name for name, rule in rules.items() if "gpu" in rule["resources"] and name != "judge"}
    assert gpu_rules == model_rules, "only rules that run a model should hold a GPU"
    assert {name for name, entry in resources.items() if "cpus_per_gpu" in entry} == model_rules
    assert not {name for name, rule in rules.items() if rule["local"]} & set(resources)


def test_judging_is_a_gpu_job_only_with_the_classifier_judge(tiny_model_dirs, tmp_path):
    config = slurm_config(tiny_model_dirs["llama"])
    config["evaluation"]["judges"]["classifier"] = {"enabled": True, "model": str(tiny_model_dirs["llama"])}
    write_config(tmp_path, config)
    judge = workflow_rules(tmp_path)["judge"]
    assert not judge["local"] and "gpu" in judge["resources"]
    result = snakemake(tmp_path, "-n", "--workflow-profile", str(PROFILE_DIR), *SLURM_TARGETS)
    blocks = re.findall(r"^rule judge:\n(.*?)(?=\n\n|\Z)", result.stdout + result.stderr, flags=re.M | re.S)
    # The classifier judges the answers to harmful requests only (its default apply_to): those
    # judge jobs hold a GPU and room for its weights, the others neither.
    asked = {
        re.search(r"promptset=(\w+)", block).group(1): re.search(r"mem_mb=(\d+),.*gpu=(\d+)", block).groups()
        for block in blocks
    }
    assert asked["harmful"] == ("32000", "1") and asked["harmless"] == ("2000", "0"), asked
    assert asked["gsm8k_heldout"] == ("2000", "0") and len(blocks) == 3 * 3, (asked, len(blocks))


def test_memory_and_time_grow_with_each_attempt():
    settings = profile()
    entries = {"default-resources": settings["default-resources"], **settings["set-resources"]}
    for name, entry in entries.items():
        for key in ("mem_mb", "runtime"):
            assert key in entry, f"{name} lacks {key}"
            assert resource_value(entry[key], 2) == 2 * resource_value(entry[key], 1), (name, key)


def test_partition_and_account_are_never_hard_coded():
    # They are the user's to set (docs/cluster.md): commented out in the profile, absent from rules.
    assert not {"slurm_account", "slurm_partition"} & set(profile()["default-resources"])
    for path in [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]:
        text = path.read_text()
        assert "slurm_account" not in text and "slurm_partition" not in text, path


def test_dry_run_with_the_profile_requests_the_profile_resources(tiny_model_dirs, tmp_path):
    config = slurm_config(tiny_model_dirs["llama"])
    config["models"]["tiny"]["gpus"] = 2  # a model placed across two GPUs: every model job asks for 2
    write_config(tmp_path, config)
    result = snakemake(tmp_path, "-n", "--workflow-profile", str(PROFILE_DIR), *SLURM_TARGETS)
    output = result.stdout + result.stderr
    assert "Using workflow specific profile" in output and str(PROFILE_DIR) in output
    jobs = re.findall(r"^(?:local)?rule (\w+):\n(.*?)(?=\n\n|\Z)", output, flags=re.M | re.S)
    seen = set()
    for name, block in jobs:
        entry = profile()["set-resources"].get(name)
        if not entry:
            continue
        line = re.search(r"resources: (.*)", block).group(1)
        assert f"mem_mb={resource_value(entry['mem_mb'], 1)}," in line, (name, line)
        assert f"runtime={resource_value(entry['runtime'], 1)}" in line, (name, line)
        if "cpus_per_gpu" in entry:
            assert "gpu=2," in line and f"cpus_per_gpu={entry['cpus_per_gpu']}" in line, (name, line)
        else:
            assert "gpu=" not in line, (name, line)
        seen.add(name)
    assert {"align", "finetune", "generate_and_dump", "generate_and_dump_base", "prepare_model"} <= seen


# ----- a real SLURM on localhost (opt-in) ---------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """A single-node SLURM on localhost: environment for its clients, stopped afterwards."""
    if os.geteuid() != 0:
        pytest.fail("the SLURM test needs root: it installs and starts slurmctld, slurmd and munged")
    state = tmp_path_factory.mktemp("slurm-state")
    ports = {"RIM_SLURMCTLD_PORT": str(free_port()), "RIM_SLURMD_PORT": str(free_port())}
    start = subprocess.run(
        ["bash", str(SCRIPTS / "start.sh"), str(state)],
        capture_output=True,
        text=True,
        env=dict(os.environ, **ports),
        timeout=600,
    )
    try:
        if start.returncode != 0:
            pytest.fail(f"tests/slurm/start.sh failed ({start.returncode}):\n{start.stdout}\n{start.stderr}")
        yield {"SLURM_CONF": str(state / "slurm.conf")}
    finally:
        subprocess.run(["bash", str(SCRIPTS / "stop.sh"), str(state)], capture_output=True, timeout=120)


def run_bounded(command: list[str], env: dict, log: Path, timeout: int) -> int:
    """Run Snakemake; past the timeout stop it with SIGINT (it cancels its SLURM jobs on SIGINT,
    whereas a waiting run can ignore SIGTERM), then kill what is left."""
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            pytest.fail(f"snakemake did not finish within {timeout} s; last output:\n{log.read_text()[-6000:]}")


def slurm_jobs(env: dict, run_id: str) -> list[dict]:
    """Fields of every job of this run that slurmctld still knows (finished ones for MinJobAge)."""
    shown = subprocess.run(["scontrol", "-o", "show", "job"], capture_output=True, text=True, env=env, check=True)
    jobs = [dict(re.findall(r"(\w[\w/:]*)=(\S*)", line)) for line in shown.stdout.splitlines() if line.strip()]
    return [job for job in jobs if job.get("JobName") == run_id]


def megabytes(memory: str) -> float:
    """SLURM's memory field ("16000M", "62.50G") in MB."""
    return float(memory[:-1]) * {"M": 1, "G": 1024, "T": 1024**2}[memory[-1]]


def minutes(limit: str) -> int:
    days, _, clock = limit.rpartition("-")
    hours, mins, _ = (int(part) for part in clock.split(":"))
    return int(days or 0) * 1440 + hours * 60 + mins


@pytest.mark.slurm
def test_tiny_dag_runs_through_sbatch(slurm_cluster, tiny_model_dirs, tmp_path, rules):
    started = time.monotonic()
    workdir = tmp_path / "workdir"
    write_config(workdir, slurm_config(tiny_model_dirs["llama"]))
    env = dict(
        os.environ,
        **slurm_cluster,
        PYTHONPATH=str(REPO / "scripts"),
        # Jobs run `python` from this environment, on this machine.
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    base = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--workflow-profile", str(PROFILE_DIR)]
    dry = subprocess.run([*base, "-n", *SLURM_TARGETS], capture_output=True, text=True, env=env, timeout=600)
    planned = planned_jobs(dry)
    remote = {name: count for name, count in planned.items() if not rules[name]["local"]}
    assert {"align", "finetune", "generate_and_dump", "zero_neurons", "patch_heads"} <= set(remote)

    log = tmp_path / "snakemake.log"
    returncode = run_bounded([*base, *SLURM_TEST_ARGS, *SLURM_TARGETS], env, log, SLURM_RUN_TIMEOUT)
    output = log.read_text()
    assert returncode == 0, output[-8000:]

    # Every non-local job went through sbatch, and no local job did.
    submitted: dict[str, int] = {}
    for name in re.findall(r"has been submitted with SLURM jobid \d+ \(log: \S*/rule_(\w+)/", output):
        submitted[name] = submitted.get(name, 0) + 1
    assert submitted == remote

    # SLURM's own record: each job completed, and asked for what the profile says.
    run_id = re.search(r"SLURM run ID: (\S+)", output).group(1)
    jobs = slurm_jobs(env, run_id)
    recorded: dict[str, int] = {}
    settings = profile()
    for job in jobs:
        name = re.match(r"rule_(\w+?)_wildcards_", job["Comment"]).group(1)
        recorded[name] = recorded.get(name, 0) + 1
        assert job["JobState"] == "COMPLETED" and job["ExitCode"] == "0:0", job
        entry = settings["set-resources"].get(name)
        if entry is None:
            continue
        # SLURM prints memory in G with two decimals above 1024 M, hence the tolerance.
        assert abs(megabytes(job["MinMemoryNode"]) - resource_value(entry["mem_mb"], 1)) < 6, (
            name,
            job["MinMemoryNode"],
        )
        assert minutes(job["TimeLimit"]) == resource_value(entry["runtime"], 1), (name, job["TimeLimit"])
        if "cpus_per_gpu" in entry:
            assert job["TresPerJob"] == "gres:gpu:1", (name, job)  # the model entry's default `gpus`
            assert job["CpusPerTres"] == f"gres:gpu:{entry['cpus_per_gpu']}", (name, job)
        else:
            assert int(job["NumCPUs"]) == settings["set-threads"][name], (name, job["NumCPUs"])
    assert recorded == remote

    # The targets are complete: they exist, and a second dry run has nothing to do.
    assert all((workdir / target).exists() for target in SLURM_TARGETS)
    again = subprocess.run([*base, "-n", *SLURM_TARGETS], capture_output=True, text=True, env=env, timeout=600)
    assert planned_jobs(again) == {}, again.stdout[-3000:]
    print(
        f"SLURM run of {sum(remote.values())} sbatch jobs and {sum(planned.values()) - sum(remote.values())} "
        f"local jobs: {time.monotonic() - started:.0f} s"
    )


def test_slurm_scripts_are_valid_bash():
    for script in ("start.sh", "stop.sh"):
        subprocess.run(["bash", "-n", str(SCRIPTS / script)], check=True)
