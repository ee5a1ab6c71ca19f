rule detect_refusal_heads:
    # Argmax key position of the last prompt token per head, thinking ON and OFF; share of
    # prompts whose argmax makes the refusal-head move (docs/method.md#5-refusal-heads).
    input:
        reference=checkpoint_reference,
        table=heads_table("heads"),
    output:
        scores="results/heads/{model}/{ckpt}/refusal_heads.parquet",
        argmax="results/heads/{model}/{ckpt}/attention_argmax.parquet",
    log:
        "logs/detect_refusal_heads/{model}/{ckpt}.log",
    benchmark:
        "results/benchmarks/detect_refusal_heads/{model}/{ckpt}.tsv"
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
        detection=heads_param(heads_settings.detection_params, "detection"),
        prompt_set=heads_param(heads_settings.detection_params, "prompt_set"),
        modes=heads_param(heads_settings.detection_params, "modes"),
        device=lookup(dpath="device", within=config),
    script:
        "../../scripts/detect_refusal_heads.py"


rule ablate_refusal_heads:
    # Generation with the top-k refusal heads zeroed (or mean-ablated) vs random heads in the
    # same layers vs no intervention: misalignment and refusal score (docs/method.md#5-refusal-heads).
    input:
        reference=checkpoint_reference,
        heads="results/heads/{model}/{ckpt}/refusal_heads.parquet",
        table=heads_table("heads"),
    output:
        table="results/heads/{model}/{ckpt}/head_ablation.parquet",
        summary="results/heads/{model}/{ckpt}/head_ablation_summary.parquet",
    log:
        "logs/ablate_refusal_heads/{model}/{ckpt}.log",
    benchmark:
        "results/benchmarks/ablate_refusal_heads/{model}/{ckpt}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
        # GPUs per job: the model entry\'s `gpus` (more than one places the model across them).
        gpu=model_gpus,
    params:
        checkpoint_step=checkpoint_step,
        ablation=heads_param(heads_settings.ablation_params, "ablation"),
        prompt_set=heads_param(heads_settings.ablation_params, "prompt_set"),
        modes=heads_param(heads_settings.ablation_params, "modes"),
        generation=heads_param(heads_settings.ablation_params, "generation"),
        judges=heads_param(heads_settings.ablation_params, "judges"),
        outcomes=lookup(dpath="evaluation/outcomes", within=config),
        device=lookup(dpath="device", within=config),
    script:
        "../../scripts/ablate_refusal_heads.py"


rule patch_heads:
    # Head-patching scan: every (layer, head) patched from the source into the target run of
    # each configured pair, exact and attribution (docs/method.md#5-refusal-heads, decision).
    input:
        unpack(patching_inputs),
    output:
        table="results/heads/{model}/{ckpt}/head_patching.parquet",
    log:
        "logs/patch_heads/{model}/{ckpt}.log",
    benchmark:
        "results/benchmarks/patch_heads/{model}/{ckpt}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=6000,
        runtime=60,
        # GPUs per job: the model entry\'s `gpus` (more than one places the model across them).
        gpu=model_gpus,
    params:
        checkpoint_step=checkpoint_step,
        patching=heads_param(heads_settings.patching_params, "patching"),
        prompt_set=heads_param(heads_settings.patching_params, "prompt_set"),
        modes=heads_param(heads_settings.patching_params, "modes"),
        device=lookup(dpath="device", within=config),
    script:
        "../../scripts/patch_heads.py"


rule probe_residuals:
    # Difference-of-means probes per mode, layer and named position from the activation dump:
    # harmful vs harmless, refused vs fulfilled (docs/method.md#5-refusal-heads).
    input:
        unpack(probe_inputs),
    output:
        table="results/heads/{model}/{ckpt}/probes.parquet",
    log:
        "logs/probe_residuals/{model}/{ckpt}.log",
    benchmark:
        "results/benchmarks/probe_residuals/{model}/{ckpt}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        probes=heads_param(heads_settings.probe_params),
        plan=probe_plan_params,
    script:
        "../../scripts/probe_residuals.py"
