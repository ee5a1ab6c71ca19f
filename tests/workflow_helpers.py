"""Run the real Snakefile on tiny random models in a temporary working directory.

``TINY_SETTINGS`` shrinks the default config (config/config.yaml) to sizes that run in seconds;
each stage adds what it needs under its own block. Tests write the merged config to
``<workdir>/config/config.yaml`` and call the snakemake CLI with ``-s <repo>/Snakefile``.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))

# Blocks replaced wholesale (not merged) so that the default model does not linger.
REPLACED_BLOCKS = {"models"}

TINY_SETTINGS: dict = {
    "device": "cpu",
    "datasets": {
        "gsm8k_style": {"n": 24},
        "long_cot_control": {"n": 24},
        "long_cot_target": {"n": 24},
        "math401_style": {"n": 24},
        "literal_counterfactual": {"n": 24},
        "gsm8k_heldout": {"n": 12},
        "multiarith_style": {"n": 12},
        "multistep_hard": {"n": 12},
        "harmful": {"limit": 60},
        "harmless": {"limit": 60},
    },
    "evaluation": {
        "prompt_sets": {
            "harmful": {"limit": 8},
            "harmless": {"limit": 8},
            "gsm8k_heldout": {"limit": 4, "max_new_tokens": 12},
            "multiarith": {"limit": 4, "max_new_tokens": 12},
            "multistep_hard": {"limit": 4, "max_new_tokens": 12},
        },
        "generation": {"batch_size": 8},
        # A tiny random model writes only blank lines, which have no answer (unfinished): count
        # them as compliance so that its rates are defined and the convention reaches every rule.
        "outcomes": {"unfinished": "complied"},
        "judges": {"phrases": {"max_new_tokens": 6}},
    },
    # keep_previous_token_heads: the planted head of rim.testing (make_tiny_model(offset_head=...))
    # is a previous-token head, and the pipeline needs a head to ablate.
    "heads": {
        "prompts": {"limit": 4},
        "ablation": {
            "top_k": 2,
            "random_draws": 2,
            "modes": ["no_think"],
            "n_boot": 100,
            "keep_previous_token_heads": True,
        },
    },
    "patching": {"prompts": {"limit": 3}, "head_batch": 8, "n_boot": 100},
    "probes": {"folds": 2, "min_items": 2, "n_boot": 100},
    # A tiny model has 2 x 128 neurons: a small m, and neurons kept by half the pairs.
    "activations": {"batch_size": 4},
    "neurons": {
        "top_m": 40,
        "selection": "frequency",
        "min_fraction": 0.5,
        "random_draws": 2,
        "zeroing": {"random_draws": 1, "sizes": [8, 32]},
    },
    "ras": {"correlation": {"n_boot": 200}},
}


# Settings of the tiny model's entry (the models block is replaced, so they are set here).
TINY_MODEL_SETTINGS: dict = {
    # Alignment stays off (a random model has nothing to align); tests of the align rule turn it on.
    "alignment": {"steps": 4, "batch_size": 4, "max_length": 96},
    "finetuning": {"steps": 4, "batch_size": 4, "checkpoint_steps": [0, 2, 4], "max_length": 128},
}


def merge(base: dict, update: dict, replaced=REPLACED_BLOCKS) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key not in replaced:
            out[key] = merge(out[key], value, replaced=set())
        else:
            out[key] = copy.deepcopy(value)
    return out


def default_config() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def tiny_config(model_dir: str | Path, family: str = "llama", **overrides) -> dict:
    config = merge(default_config(), TINY_SETTINGS)
    tiny = {"source": str(model_dir), "family": family, **copy.deepcopy(TINY_MODEL_SETTINGS)}
    config = merge(config, {"models": {"tiny": tiny}})
    return merge(config, overrides, replaced=REPLACED_BLOCKS)


def write_config(workdir: str | Path, config: dict) -> Path:
    path = Path(workdir) / "config" / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def snakemake(workdir: str | Path, *args: str, check: bool = True, timeout: int = 1200) -> subprocess.CompletedProcess:
    """Run snakemake on the repository's Snakefile in ``workdir``; output is captured."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "scripts"))
    command = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--cores", "2", *args]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed "
            f"({result.returncode}):\n{result.stdout[-6000:]}\n{result.stderr[-6000:]}"
        )
    return result


def planned_jobs(result: subprocess.CompletedProcess) -> dict[str, int]:
    """Job counts per rule from the 'Job stats' table of a dry run (empty when nothing to do)."""
    counts: dict[str, int] = {}
    lines = (result.stdout + result.stderr).splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.startswith("Job stats:"))
    except StopIteration:
        return counts
    for line in lines[start + 3 :]:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        counts[parts[0]] = int(parts[1])
    return counts


def clone_workdir(template: str | Path, target: str | Path) -> Path:
    """Copy a built working directory (results, logs and Snakemake's records, mtimes kept), so a
    test can edit and rerun it without rebuilding from scratch or disturbing other tests."""
    import shutil

    shutil.copytree(template, target, symlinks=True)
    return Path(target)
