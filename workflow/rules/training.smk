rule align:
    # Alignment warm-start (docs/method.md#1-the-phenomenon), only for models whose alignment is enabled: harmful
    # train prompts -> refusals, harmless train prompts -> their helpful answers. The trainer's
    # resumable state lives outside the outputs (results/.training_state/align/{model}).
    input:
        unpack(alignment_inputs),
    output:
        reference="results/models/{model}/aligned.json",
        weights=directory("results/models/{model}/aligned"),
    log:
        "logs/align/{model}.log",
    benchmark:
        "results/benchmarks/align/{model}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=6000,
        runtime=60,
        # GPUs per job: the model entry\'s `gpus` (more than one places the model across them).
        gpu=model_gpus,
    params:
        alignment=lookup(dpath="models/{model}/alignment", within=config),
        device=lookup(dpath="device", within=config),
        state_dir=lambda wildcards: training_state_dir("align", wildcards.model),
    script:
        "../../scripts/align.py"


rule finetune:
    # One fine-tuning run per (model, training set, seed) (docs/method.md#4-fine-tuning): checkpoints at the
    # configured steps, the run manifest that loads them, the loss curve. The resumable state
    # lives outside the outputs (results/.training_state/finetune/{model}/{run}/seed{seed}).
    input:
        base=lambda wildcards: base_reference(wildcards.model),
        dataset=finetune_dataset,
    output:
        manifest="results/finetune/{model}/{run}/seed{seed}/run.json",
        loss="results/finetune/{model}/{run}/seed{seed}/loss.parquet",
        checkpoints=directory("results/finetune/{model}/{run}/seed{seed}/checkpoints"),
    log:
        "logs/finetune/{model}/{run}/seed{seed}.log",
    benchmark:
        "results/benchmarks/finetune/{model}/{run}/seed{seed}.tsv"
    wildcard_constraints:
        run=run_pattern(),
        seed=r"\d+",
    # Before the evaluations: every checkpoint's jobs wait on their run, and a run started late
    # leaves one core idle at the end (measured: 2 x 40 s idle gaps and an 80 s one-core tail).
    priority: 10
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=6000,
        runtime=120,
        # GPUs per job: the model entry\'s `gpus` (more than one places the model across them).
        gpu=model_gpus,
    params:
        finetuning=lookup(dpath="models/{model}/finetuning", within=config),
        run=training_run_settings,
        device=lookup(dpath="device", within=config),
        state_dir=lambda wildcards: training_state_dir(
            "finetune", wildcards.model, wildcards.run, f"seed{wildcards.seed}"
        ),
    script:
        "../../scripts/finetune.py"
