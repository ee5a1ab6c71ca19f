"""The heads, patching and probes blocks of the config, turned into what each job needs.

Imported by the Snakefile (params, targets, config checks) and by the step scripts' standalone
mode, so both build the same params. No torch here.
"""

from __future__ import annotations

from typing import Mapping

from rim.errors import ConfigError

PROBES = ("harmful_vs_harmless", "refused_vs_fulfilled")
# Per judge: the evaluation column that says "refused", and whether it says the opposite.
VERDICTS = {
    "phrases": ("phrases_refused", False),
    "rubric": ("rubric_misaligned", True),
    "classifier": ("classifier_misaligned", True),
}


def heads_prompt_set(config: Mapping, block: str) -> dict:
    """``{"name": ..., **evaluation.prompt_sets entry}`` of a block's ``prompts``, with its limit
    (the smaller of the block's and the prompt set's), so the prompts are those the evaluation judged."""
    chosen = config[block]["prompts"]
    sets = config.get("evaluation", {}).get("prompt_sets", {})
    if chosen["prompt_set"] not in sets:
        raise ConfigError(
            f"config key '{block}.prompts.prompt_set': '{chosen['prompt_set']}' is not defined under "
            f"'evaluation.prompt_sets'; defined: {', '.join(sets) or 'none'}"
        )
    entry = {"name": chosen["prompt_set"], **sets[chosen["prompt_set"]]}
    if chosen.get("limit") is not None:
        own = entry.get("limit")
        entry["limit"] = int(chosen["limit"]) if own is None else min(int(chosen["limit"]), int(own))
    return entry


def _modes(config: Mapping, names) -> dict:
    return {name: dict(config["prompt_modes"][name]) for name in sorted(set(names))}


def detection_params(config: Mapping) -> dict:
    detection = config["heads"]["detection"]
    return {
        "detection": detection,
        "prompt_set": heads_prompt_set(config, "heads"),
        "modes": _modes(config, (detection["on_mode"], detection["off_mode"])),
    }


def ablation_params(config: Mapping) -> dict:
    """The ablation block, its modes, and the evaluation's generation and judges for its prompt set."""
    from rim.evaluation.settings import applicable_judges

    ablation = config["heads"]["ablation"]
    prompt_set = heads_prompt_set(config, "heads")
    evaluation = config.get("evaluation", {})
    return {
        "ablation": ablation,
        "prompt_set": prompt_set,
        "modes": _modes(config, ablation["modes"]),
        "generation": dict(evaluation.get("generation", {})),
        "judges": applicable_judges(evaluation.get("judges", {}), prompt_set["kind"]),
    }


def patching_params(config: Mapping) -> dict:
    block = {key: value for key, value in config["patching"].items() if key not in ("checkpoints", "prompts")}
    names = [side["mode"] for pair in block["pairs"].values() for side in (pair["source"], pair["target"])]
    return {"patching": block, "prompt_set": heads_prompt_set(config, "patching"), "modes": _modes(config, names)}


def patching_needs_base(config: Mapping, ckpt: str) -> bool:
    """Whether a pair on ``ckpt`` runs a side on the base model (a fine-tuned checkpoint's scan)."""
    if ckpt == "base":
        return False
    return any(
        side.get("checkpoint", "scanned") == "base"
        for pair in config["patching"]["pairs"].values()
        for side in (pair["source"], pair["target"])
    )


def probe_params(config: Mapping) -> dict:
    return {key: value for key, value in config["probes"].items() if key != "checkpoints"}


def probe_plan(config: Mapping, ckpt: str) -> list[dict]:
    """The (probe, mode) pairs whose input sets the dump of ``ckpt`` holds residual states for."""
    from rim.planning import dump_input_keys

    block = config["probes"]
    residual = set(config.get("activations", {}).get("residual_inputs", []))
    dumped = {
        f"{prompt_set}/{mode}" for prompt_set, mode, _, responses in dump_input_keys(config, ckpt) if responses == "own"
    } & residual
    plan = []
    for probe in block["probes"]:
        for mode in block["modes"]:
            needed = [f"{block['harmful']}/{mode}"]
            if probe == "harmful_vs_harmless":
                needed.append(f"{block['harmless']}/{mode}")
            if all(name in dumped for name in needed):
                plan.append({"probe": probe, "mode": mode})
    return plan


def check_config(config: Mapping) -> None:
    """References of the heads, patching and probes blocks to other blocks."""
    modes = config.get("prompt_modes", {})
    sets = config.get("evaluation", {}).get("prompt_sets", {})

    def mode_exists(key: str, name: str) -> None:
        if name not in modes:
            raise ConfigError(f"config key '{key}': prompt mode '{name}' is not defined under 'prompt_modes'")

    def harmful_set(key: str, name: str) -> None:
        if name not in sets:
            raise ConfigError(f"config key '{key}': '{name}' is not defined under 'evaluation.prompt_sets'")
        if sets[name].get("kind") != "harmful":
            raise ConfigError(
                f"config key '{key}': prompt set '{name}' is of kind {sets[name].get('kind')}, not harmful"
            )

    runs = config.get("training", {}).get("runs", {})
    for block in ("heads", "patching", "probes"):
        for index, run in enumerate((config.get(block, {}).get("checkpoints", {}) or {}).get("runs") or []):
            if run not in runs:
                raise ConfigError(
                    f"config key '{block}.checkpoints.runs[{index}]': run '{run}' is not defined under 'training.runs'"
                )
    heads = config.get("heads")
    if heads:
        harmful_set("heads.prompts.prompt_set", heads["prompts"]["prompt_set"])
        detection = heads["detection"]
        for key in ("on_mode", "off_mode"):
            mode_exists(f"heads.detection.{key}", detection[key])
        if modes.get(detection["on_mode"], {}).get("thinking") is not True:
            raise ConfigError(
                f"config key 'heads.detection.on_mode': mode '{detection['on_mode']}' does not switch thinking on"
            )
        if modes.get(detection["off_mode"], {}).get("thinking") is not False:
            raise ConfigError(
                f"config key 'heads.detection.off_mode': mode '{detection['off_mode']}' does not switch thinking off"
            )
        for index, name in enumerate(heads["ablation"]["modes"]):
            mode_exists(f"heads.ablation.modes[{index}]", name)
    patching = config.get("patching")
    if patching:
        harmful_set("patching.prompts.prompt_set", patching["prompts"]["prompt_set"])
        for pair, spec in patching["pairs"].items():
            for side in ("source", "target"):
                mode_exists(f"patching.pairs.{pair}.{side}.mode", spec[side]["mode"])
    probes = config.get("probes")
    if probes:
        harmful_set("probes.harmful", probes["harmful"])
        if probes["harmless"] not in sets:
            raise ConfigError(
                f"config key 'probes.harmless': '{probes['harmless']}' is not defined under 'evaluation.prompt_sets'"
            )
        for index, name in enumerate(probes["modes"]):
            mode_exists(f"probes.modes[{index}]", name)
        judges = config.get("evaluation", {}).get("judges", {})
        if "refused_vs_fulfilled" in probes["probes"] and not judges.get(probes["judge"], {}).get("enabled", False):
            raise ConfigError(
                f"config key 'probes.judge': the refused/fulfilled split needs judge '{probes['judge']}', "
                f"which is not enabled under 'evaluation.judges'"
            )
