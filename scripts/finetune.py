#!/usr/bin/env python
"""Fine-tune the base model on one training set with one seed (docs/method.md#4-fine-tuning).

LoRA (rank 32, alpha 64, rsLoRA, attention + MLP projections) or full fine-tuning, as the
model's `finetuning` block says; AdamW with warmup and a cosine schedule; loss on the answer
(reasoning + final answer) tokens only. Saves a loadable checkpoint at every configured step
and writes the run manifest run.json (rim.models.load_model(run.json, step=k)) and the loss
curve loss.parquet beside it. The resumable trainer state lives in --state-dir until the run
completes, so a killed run resumes where it stopped and ends with the same weights.

Standalone:
    python scripts/finetune.py --model smollm2 --run gsm8k_style --seed 0 \
        --output results/finetune/smollm2/gsm8k_style/seed0/run.json
"""

from pathlib import Path

from rim import cli
from rim.config import load_config
from rim.training.runs import finetune_run


def run(job: cli.Job) -> None:
    record = finetune_run(
        model=job.wildcards["model"],
        run=job.wildcards["run"],
        seed=int(job.wildcards["seed"]),
        block=job.params["finetuning"],
        run_block=job.params["run"],
        base_reference=job.input["base"],
        dataset=job.input["dataset"],
        manifest=job.output["manifest"],
        loss_table=job.output["loss"],
        checkpoints_dir=job.output["checkpoints"],
        state_dir=job.params["state_dir"],
        device=job.params["device"],
    )
    cli.log.info("run %s: checkpoints at steps %s", job.output["manifest"], ", ".join(record["checkpoints"]))


def build_job(argv=None) -> cli.Job:
    parser = cli.standalone_parser(__doc__)
    parser.add_argument("--model", required=True, help="model name under 'models' in the config")
    parser.add_argument("--run", required=True, help="training run name under 'training.runs' in the config")
    parser.add_argument("--seed", required=True, type=int, help="seed (LoRA init, data order, dropout)")
    parser.add_argument(
        "--output", required=True, help="run manifest to write (run.json); loss.parquet and checkpoints/ go beside it"
    )
    parser.add_argument(
        "--base",
        default=None,
        help="base model reference (default: aligned.json when the model's alignment is on, else source.json)",
    )
    parser.add_argument("--data", default="results/data", help="folder of the prepared dataset tables")
    parser.add_argument(
        "--state-dir",
        default=None,
        help="resumable trainer state (default: results/.training_state/finetune/<model>/<run>/seed<seed>)",
    )
    args = parser.parse_args(argv)
    config = load_config(args.config)
    entry = cli.config_entry(config, "models", args.model)
    run_block = cli.config_entry(config.get("training", {}), "runs", args.run)
    base = "aligned" if entry["alignment"]["enabled"] else "source"
    folder = Path(args.output).parent
    return cli.Job(
        input={
            "base": args.base or f"results/models/{args.model}/{base}.json",
            "dataset": f"{args.data}/{run_block['dataset']}.parquet",
        },
        output={
            "manifest": args.output,
            "loss": str(folder / "loss.parquet"),
            "checkpoints": str(folder / "checkpoints"),
        },
        params={
            "finetuning": entry["finetuning"],
            "run": run_block,
            "device": config["device"],
            "state_dir": args.state_dir or f"results/.training_state/finetune/{args.model}/{args.run}/seed{args.seed}",
        },
        wildcards={"model": args.model, "run": args.run, "seed": str(args.seed)},
        threads=args.threads,
        log_path=args.log,
    )


if __name__ == "__main__":
    cli.main(run, build_job, globals())
