"""One checkpoint's activation dump as a job writes it: the input sets read from response tables
(rim.planning.dump_plan), the HDF5 attributes and provenance (docs/method.md#6-safety-neurons-and-ras)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from rim import cli
from rim.activations.dump import dump_activations
from rim.activations.settings import DumpSettings, InputSet
from rim.checkpoints import BASE, parse_checkpoint
from rim.errors import DataError
from rim.prompts import prompt_mode
from rim.provenance import collect, read_table


def input_set_from_table(item: Mapping, max_examples: int | None) -> InputSet:
    """Prompts and responses of one input set of the dump plan, from its responses table."""
    responses = read_table(item["responses"])
    missing = [column for column in ("prompt_id", "prompt", "response") if column not in responses]
    if missing:
        raise DataError(f"responses table lacks columns {missing}", source=item["responses"])
    responses = responses.sort_values("prompt_id", kind="stable")
    if max_examples is not None:
        responses = responses.head(max_examples)
    base_ids = None
    dataset = read_table(item["dataset_table"])
    if "base_prompt_id" in dataset:
        # A derived set (-MI): each prompt's plain version, to pair them for the safety neurons.
        lookup = dict(zip(dataset["prompt_id"].astype(str), dataset["base_prompt_id"].astype(str)))
        unknown = [pid for pid in responses["prompt_id"] if str(pid) not in lookup]
        if unknown:
            raise DataError(f"prompt ids {unknown[:3]} are not in {item['dataset_table']}", source=item["responses"])
        base_ids = [lookup[str(pid)] for pid in responses["prompt_id"]]
    return InputSet(
        prompt_set=item["prompt_set"],
        mode=prompt_mode(item["mode"], item["mode_entry"]),
        prompt_ids=responses["prompt_id"].astype(str).tolist(),
        users=responses["prompt"].astype(str).tolist(),
        responses=responses["response"].fillna("").astype(str).tolist(),
        base_prompt_ids=base_ids,
        residual=bool(item["residual"]),
        kl=bool(item["kl"]),
        response_source=item["responses"],
        dataset=item["dataset"],
        responses_from=item.get("responses_from", "own"),
    )


def dump_checkpoint(
    loaded,
    *,
    model: str,
    ckpt: str,
    activations: Mapping,
    inputs: list[Mapping],
    output: str,
    kl_reference: str | None = None,
) -> Path:
    """Dump checkpoint ``ckpt`` of ``model`` (loaded) on the input sets ``inputs`` (the dump plan)
    with the settings ``activations`` (the config block) to ``output``."""
    settings = DumpSettings.from_config(activations)
    input_sets = [input_set_from_table(item, activations.get("max_examples")) for item in inputs]
    total = sum(len(inputs.prompt_ids) for inputs in input_sets)
    cli.log.info(
        "%s at %s: %s", model, ckpt, ", ".join(f"{inputs.name} ({len(inputs.prompt_ids)})" for inputs in input_sets)
    )
    run_name, seed, number = parse_checkpoint(ckpt)
    attributes = {
        "model": model,
        "checkpoint": ckpt,
        "run": run_name,
        "seed": -1 if seed is None else seed,
        "step": number,
    }
    provenance = collect(
        {"activations": activations, "inputs": inputs},
        seed=seed,
        model=model,
        checkpoint=ckpt,
        reference=loaded.reference,
    )
    path = dump_activations(
        loaded,
        input_sets,
        settings,
        output,
        attributes=attributes,
        provenance=provenance,
        kl_reference=kl_reference,
        write_kl_reference=ckpt == BASE,
        progress=cli.Progress(total, "activations", unit="inputs"),
    )
    cli.log.info("wrote %s (%.1f MB)", path, path.stat().st_size / 2**20)
    return path
