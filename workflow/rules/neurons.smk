rule generate_and_dump_base:
    # The base model loaded once for its responses (the dump's own-response inputs, the safety
    # neurons' pairs and the over-refusal input of RAS) and its activation dump, written from
    # them (docs/method.md#6-safety-neurons-and-ras). Judging follows in rule judge.
    input:
        unpack(checkpoint_job_inputs),
    output:
        **checkpoint_job_outputs("base"),
    log:
        "logs/generate_and_dump/{model}/base.log",
    benchmark:
        "results/benchmarks/generate_and_dump/{model}/base.tsv"
    # The first job once both cores are free after the fine-tunings (it asks for 2): without
    # the priority, one-thread jobs (`all`) keep one core busy and it waits for them all.
    priority: 8
    conda:
        "../../envs/torch.yaml"
    # Every checkpoint job waits on this one, so it runs alone: a second thread instead of an
    # idle core. Inference numbers do not depend on the thread count (README, "The same numbers
    # on another machine").
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
        # GPUs per job: the model entry\'s `gpus` (more than one places the model across them).
        gpu=model_gpus,
    params:
        generations=checkpoint_job_param("generations"),
        dataset_tables=checkpoint_job_param("dataset_tables"),
        activations=lookup(dpath="activations", within=config),
        inputs=checkpoint_job_param("inputs"),
        checkpoint_step=checkpoint_step,
        device=lookup(dpath="device", within=config),
    script:
        "../../scripts/generate_and_dump.py"


rule generate_and_dump:
    # The same for every checkpoint of the RAS runs: the checkpoint loaded once for its
    # responses and its dump (with the KL to the base model, whose responses it also reads).
    input:
        unpack(checkpoint_job_inputs),
    output:
        **checkpoint_job_outputs("{ckpt}"),
    log:
        "logs/generate_and_dump/{model}/{ckpt}.log",
    benchmark:
        "results/benchmarks/generate_and_dump/{model}/{ckpt}.tsv"
    wildcard_constraints:
        ckpt=ras_checkpoint_pattern(),
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
        # GPUs per job: the model entry\'s `gpus` (more than one places the model across them).
        gpu=model_gpus,
    params:
        generations=checkpoint_job_param("generations"),
        dataset_tables=checkpoint_job_param("dataset_tables"),
        activations=lookup(dpath="activations", within=config),
        inputs=checkpoint_job_param("inputs"),
        checkpoint_step=checkpoint_step,
        device=lookup(dpath="device", within=config),
    script:
        "../../scripts/generate_and_dump.py"


ruleorder: generate_and_dump_base > generate_and_dump > generate


rule safety_neurons:
    # A_safe of the base model from its (harmful, -MI) pairs, and random control sets.
    input:
        dump="results/activations/{model}/base.h5",
    output:
        sets="results/neurons/{model}/neuron_sets.parquet",
        scores="results/neurons/{model}/neuron_scores.parquet",
    log:
        "logs/safety_neurons/{model}.log",
    benchmark:
        "results/benchmarks/safety_neurons/{model}.tsv"
    conda:
        "../../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        neurons=neuron_selection_params,
    script:
        "../../scripts/safety_neurons.py"


rule ras:
    # RAS, its ablations and the KL baseline of every RAS checkpoint of one model.
    input:
        unpack(ras_inputs),
    output:
        table="results/ras/{model}.parquet",
    log:
        "logs/ras/{model}.log",
    benchmark:
        "results/benchmarks/ras/{model}.tsv"
    conda:
        "../../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        ras=ras_params,
        activations=ras_activation_labels,
        checkpoints=ras_checkpoint_params,
        outcomes=lookup(dpath="evaluation/outcomes", within=config),
    script:
        "../../scripts/ras.py"


rule ras_table:
    # results/ras.parquet and the correlations of each metric with misalignment.
    input:
        tables=expand("results/ras/{model}.parquet", model=config["models"]),
    output:
        table="results/ras.parquet",
        correlations="results/ras_correlations.parquet",
    log:
        "logs/ras_table/ras_table.log",
    benchmark:
        "results/benchmarks/ras_table/ras_table.tsv"
    conda:
        "../../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        correlation=lookup(dpath="ras/correlation", within=config),
    script:
        "../../scripts/ras_table.py"


rule zero_neurons:
    # Causal test: generation on the base model with the safety neurons zeroed vs random sets.
    input:
        unpack(zeroing_inputs),
    output:
        table="results/neurons/{model}/zeroing.parquet",
        summary="results/neurons/{model}/zeroing_summary.parquet",
    log:
        "logs/zero_neurons/{model}.log",
    benchmark:
        "results/benchmarks/zero_neurons/{model}.tsv"
    # One thread, early: with 2 it waited for both cores to be free at once, which never happens
    # while one-thread jobs wait, and ran last and alone (486 s of `all`). Generation gives the
    # same numbers on 1 or 2 threads.
    priority: 5
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
        # GPUs per job: the model entry\'s `gpus` (more than one places the model across them).
        gpu=model_gpus,
    params:
        zeroing=lookup(dpath="neurons/zeroing", within=config),
        mode=zeroing_param("mode"),
        prompt_sets=zeroing_param("prompt_sets"),
        generation=zeroing_param("generation"),
        judges=zeroing_param("judges"),
        outcomes=lookup(dpath="evaluation/outcomes", within=config),
        device=lookup(dpath="device", within=config),
    script:
        "../../scripts/zero_neurons.py"
