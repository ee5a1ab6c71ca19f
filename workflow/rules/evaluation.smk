rule generate:
    # One prompt set in one prompt mode on one checkpoint, for the tables no checkpoint job
    # (generate_and_dump) writes: batched greedy generation and the refusal scores, before
    # judging (docs/method.md#1-the-phenomenon, #3-judging).
    input:
        reference=checkpoint_reference,
        table=evaluation_dataset,
    output:
        table="results/responses/{model}/{ckpt}/{promptset}/{mode}.parquet",
    log:
        "logs/generate/{model}/{ckpt}/{promptset}/{mode}.log",
    benchmark:
        "results/benchmarks/generate/{model}/{ckpt}/{promptset}/{mode}.tsv"
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
        generation=generation_params,
        checkpoint_step=checkpoint_step,
        device=lookup(dpath="device", within=config),
    script:
        "../../scripts/generate.py"


rule judge:
    # The verdicts on one responses table: the judges that apply to the prompt set's kind, and
    # math accuracy. Its params are the judges alone: a judge edit re-judges the stored
    # responses, never regenerates them (docs/method.md#3-judging).
    input:
        responses="results/responses/{model}/{ckpt}/{promptset}/{mode}.parquet",
    output:
        table="results/eval/{model}/{ckpt}/{promptset}/{mode}.parquet",
    log:
        "logs/judge/{model}/{ckpt}/{promptset}/{mode}.log",
    benchmark:
        "results/benchmarks/judge/{model}/{ckpt}/{promptset}/{mode}.tsv"
    wildcard_constraints:
        promptset=promptset_pattern(),
        mode=mode_pattern(),
    # As soon as its responses exist: a judge takes a second or two between model jobs. Without
    # the priority the greedy scheduler (default profile) prefers the model jobs' larger inputs
    # and left all 66 judges of results/ras.parquet to the end (63 s with nothing else to run).
    priority: 1
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=judge_memory,
        runtime=30,
        # A GPU only for the local classifier judge (no model is loaded otherwise).
        gpu=judge_gpus,
    params:
        prompt_set=evaluation_prompt_set,
        judges=evaluation_judges,
        device=lookup(dpath="device", within=config),
    script:
        "../../scripts/judge.py"


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
