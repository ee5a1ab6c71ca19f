#!/usr/bin/env python
"""Dump the activations of one checkpoint to HDF5 (results/activations/{model}/{ckpt}.h5).

For each input set (an evaluation prompt set in one prompt mode) the model reads its prompts
followed by its own responses, taken from the evaluation table of the same checkpoint (no
generation here), and for the RAS inputs also followed by the base model's responses, from the
base model's evaluation table (the fixed-token variant); pooled MLP neuron activations, residual
states at named positions (for the sets named in activations.residual_inputs) and, on math
inputs, the KL to the base model are written batch by batch to a temporary file that is renamed
when complete (docs/method.md#6-safety-neurons-and-ras).

Standalone (settings from the config file):
    python scripts/dump_activations.py --model smollm2 --checkpoint base \\
        --reference results/models/smollm2/aligned.json --output /tmp/base.h5
    python scripts/dump_activations.py --model smollm2 --checkpoint gsm8k_style/seed0/step40 \\
        --reference results/finetune/smollm2/gsm8k_style/seed0/run.json \\
        --kl-reference /tmp/base.h5 --output /tmp/step40.h5
Evaluation tables are looked up under --results (default results/).
"""

from rim import cli
from rim.checkpoints import parse_checkpoint
from rim.activations import DumpSettings, InputSet, dump_activations
from rim.errors import DataError
from rim.models import load_model
from rim.prompts import prompt_mode
from rim.provenance import collect, read_table


def read_input_set(item: dict, max_examples: int | None) -> InputSet:
    """Prompts and the model's own responses of one input set, from its evaluation table."""
    responses = read_table(item["responses"])
    missing = [column for column in ("prompt_id", "prompt", "response") if column not in responses]
    if missing:
        raise DataError(f"evaluation table lacks columns {missing}", source=item["responses"])
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


def run(job: cli.Job) -> None:
    params, wildcards = job.params, job.wildcards
    settings = DumpSettings.from_config(params["activations"])
    ckpt = wildcards["ckpt"]
    input_sets = [read_input_set(item, params["activations"].get("max_examples")) for item in params["inputs"]]
    loaded = load_model(
        str(job.input["reference"]), step=params.get("checkpoint_step"), device=params.get("device", "auto")
    )
    total = sum(len(inputs.prompt_ids) for inputs in input_sets)
    cli.log.info(
        "%s at %s: %s",
        wildcards["model"],
        ckpt,
        ", ".join(f"{inputs.name} ({len(inputs.prompt_ids)})" for inputs in input_sets),
    )
    run_name, seed, number = _checkpoint_fields(ckpt)
    attributes = {
        "model": wildcards["model"],
        "checkpoint": ckpt,
        "run": run_name,
        "seed": -1 if seed is None else seed,
        "step": number,
    }
    provenance = collect(
        {"activations": params["activations"], "inputs": params["inputs"]},
        seed=seed,
        model=wildcards["model"],
        checkpoint=ckpt,
        reference=loaded.reference,
    )
    kl_reference = job.input.get("kl_reference")
    path = dump_activations(
        loaded,
        input_sets,
        settings,
        job.output["dump"],
        attributes=attributes,
        provenance=provenance,
        kl_reference=str(kl_reference) if kl_reference else None,
        write_kl_reference=ckpt == "base",
        progress=cli.Progress(total, "activations", unit="inputs"),
    )
    cli.log.info("wrote %s (%.1f MB)", path, path.stat().st_size / 2**20)


def _checkpoint_fields(ckpt: str) -> tuple[str | None, int | None, int]:
    return tuple(parse_checkpoint(ckpt))


def build_job(argv=None) -> cli.Job:
    from rim.config import load_config
    from rim.activations import dump_plan

    parser = cli.standalone_parser(__doc__)
    parser.add_argument("--model", required=True, help="model name under 'models' in the config")
    parser.add_argument("--checkpoint", default="base", help="base or <run>/seed<seed>/step<step>")
    parser.add_argument("--reference", required=True, help="model reference or training-run manifest (JSON)")
    parser.add_argument(
        "--kl-reference", default=None, help="the base model's dump (for the KL baseline of a checkpoint)"
    )
    parser.add_argument("--results", default="results", help="folder holding eval/ and data/")
    parser.add_argument("--output", required=True, help="HDF5 file to write")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    cli.config_entry(config, "models", args.model)
    run_name, _, number = _checkpoint_fields(args.checkpoint)
    return cli.Job(
        input={"reference": args.reference, **({"kl_reference": args.kl_reference} if args.kl_reference else {})},
        output={"dump": args.output},
        params={
            "activations": config["activations"],
            "inputs": dump_plan(config, args.model, args.checkpoint, results=args.results),
            "checkpoint_step": None if run_name is None else number,
            "device": config.get("device", "auto"),
        },
        wildcards={"model": args.model, "ckpt": args.checkpoint},
        threads=args.threads,
        log_path=args.log,
    )


if __name__ == "__main__":
    cli.main(run, build_job, globals())
