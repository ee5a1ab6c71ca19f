rule evaluate:
    # One prompt set in one prompt mode on one checkpoint: batched greedy generation, judges,
    # first-token refusal score; one row per prompt (docs/method.md#1-the-phenomenon, #3-judging).
    input:
        reference=checkpoint_reference,
        table=evaluation_dataset,
    output:
        table="results/eval/{model}/{ckpt}/{promptset}/{mode}.parquet",
    log:
        "logs/evaluate/{model}/{ckpt}/{promptset}/{mode}.log",
    benchmark:
        "results/benchmarks/evaluate/{model}/{ckpt}/{promptset}/{mode}.tsv"
    wildcard_constraints:
        promptset=promptset_pattern(),
        mode=mode_pattern(),
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
        # GPUs per job: the model entry\'s `gpus` (more than one places the model across them).
        gpu=model_gpus,
    params:
        checkpoint_step=checkpoint_step,
        prompt_set=evaluation_prompt_set,
        mode=lookup(dpath="prompt_modes/{mode}", within=config),
        generation=lookup(dpath="evaluation/generation", within=config),
        judges=evaluation_judges,
        device=lookup(dpath="device", within=config),
    script:
        "../../scripts/evaluate.py"


rule summarize_evaluation:
    # Rates with bootstrap intervals per (checkpoint, prompt set, mode), and paired mode
    # contrasts (thinking ON - OFF, pattern target - control).
    input:
        tables=all_evaluation_tables(),
    output:
        summary="results/eval/summary.parquet",
        contrasts="results/eval/contrasts.parquet",
    log:
        "logs/summarize_evaluation/summary.log",
    conda:
        "../../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        bootstrap=lookup(dpath="evaluation/bootstrap", within=config),
        outcomes=lookup(dpath="evaluation/outcomes", within=config),
    script:
        "../../scripts/summarize_evaluation.py"
