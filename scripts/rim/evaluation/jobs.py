"""The two halves of an evaluation as the workflow runs them, and the tables they write.

- ``generate_table``: the model's half (responses, where answers start, refusal scores) of one
  prompt set in one mode on one loaded checkpoint, written to results/responses/...; a job that
  holds a checkpoint in memory calls it once per (prompt set, mode), so the checkpoint is loaded
  once for all of them.
- ``judge_table``: the verdicts on such a table, written to results/eval/..., the per-prompt table
  every later stage reads. It needs no model unless a model judge is enabled, and its params are
  the judges alone: editing a judge re-judges the stored responses without generating again.

``judge_table(generate_table(...))`` writes the same table as ``evaluate_prompts`` in one go
(tests/test_evaluation_core.py).
"""

from __future__ import annotations

from typing import Mapping

import pandas as pd

from rim import cli
from rim.evaluation.core import generate_responses, judge_responses
from rim.evaluation.settings import EvaluationSettings, ckpt_fields, select_prompts
from rim.prompts import prompt_mode
from rim.provenance import collect, read_provenance, read_table, write_table


def generation_settings(params: Mapping, device: str = "auto") -> EvaluationSettings:
    """Settings of a generation from its params (rim.planning.generation_params)."""
    return EvaluationSettings.from_params(
        params["prompt_set"],
        name=params["prompt_set"]["name"],
        generation=params["generation"],
        needs=params["needs"],
        device=device,
    )


def generate_table(
    loaded, params: Mapping, *, model: str, ckpt: str, dataset_table: str, output: str, device: str = "auto"
) -> pd.DataFrame:
    """Generate one prompt set in one mode (``params``: rim.planning.generation_params) and write
    the responses table, one row per prompt, to ``output``."""
    settings = generation_settings(params, device)
    mode_entry = {key: value for key, value in params["mode"].items() if key != "name"}
    mode = prompt_mode(params["mode"]["name"], mode_entry)
    prompts = select_prompts(read_table(dataset_table), settings, source=dataset_table)
    cli.log.info(
        "%s at %s: %d prompts of %s in mode %s (%d new tokens at most)",
        model,
        ckpt,
        len(prompts),
        settings.prompt_set,
        mode.name,
        settings.generation_length(mode.thinking),
    )
    frame = generate_responses(loaded, prompts, mode, settings)
    identity = {"model": model, **ckpt_fields(ckpt)}
    frame.insert(0, "dataset", params["prompt_set"]["dataset"])
    for position, (column, value) in enumerate(identity.items()):
        frame.insert(position, column, value)
    frame["seed"] = frame["seed"].astype("Int64")
    provenance = collect(dict(params), seed=identity["seed"], model=model, checkpoint=ckpt, reference=loaded.reference)
    write_table(frame, output, provenance)
    cli.log.info("wrote %s: %d prompts, %d tokens generated", output, len(frame), int(frame["response_tokens"].sum()))
    return frame


def judge_table(responses: str, params: Mapping, output: str, device: str = "auto") -> pd.DataFrame:
    """Judge the responses table ``responses`` with the judges in ``params`` (the prompt set's
    entry and its applicable judges) and write the evaluation table to ``output``; its
    provenance keeps the generation's beside the judges."""
    settings = EvaluationSettings.from_params(
        params["prompt_set"], name=params["prompt_set"]["name"], judges=params["judges"], device=device
    )
    frame = judge_responses(read_table(responses), settings)
    generated = read_provenance(responses)
    provenance = collect(
        {"prompt_set": params["prompt_set"], "judges": params["judges"], "generation": generated.get("config", {})},
        seed=generated.get("seed"),
        model=generated.get("model"),
        checkpoint=generated.get("checkpoint"),
        reference=generated.get("reference"),
        responses=responses,
    )
    write_table(frame, output, provenance)
    log_rates(frame)
    return frame


def log_rates(frame: pd.DataFrame) -> None:
    parts = [f"{len(frame)} prompts", f"{frame['response_tokens'].sum()} tokens generated"]
    if "phrases_refused" in frame:
        parts.append(f"refused {frame['phrases_refused'].mean():.1%} (phrases)")
    if "rubric_misaligned" in frame:
        parts.append(f"rubric unparseable {int((frame['rubric_status'] == 'unparseable').sum())}")
    if "correct" in frame:
        parts.append(f"accuracy {frame['correct'].mean():.1%}")
    if "refusal_score" in frame:
        parts.append(f"mean refusal score {frame['refusal_score'].mean():.2f}")
    cli.log.info("result: %s", ", ".join(parts))
