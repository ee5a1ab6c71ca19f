rule dump_activations:
    # Pooled MLP neuron activations (and residual states, KL to base) of one checkpoint on its
    # own evaluation responses, streamed to an HDF5 file renamed when complete
    # (docs/method.md#6-safety-neurons-and-ras).
    input:
        unpack(dump_inputs),
    output:
        dump="results/activations/{model}/{ckpt}.h5",
    log:
        "logs/dump_activations/{model}/{ckpt}.log",
    benchmark:
        "results/benchmarks/dump_activations/{model}/{ckpt}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
        # GPUs per job: the model entry\'s `gpus` (more than one places the model across them).
        gpu=model_gpus,
    params:
        activations=lookup(dpath="activations", within=config),
        inputs=dump_plan_params,
        checkpoint_step=checkpoint_step,
        device=lookup(dpath="device", within=config),
    script:
        "../../scripts/dump_activations.py"


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
    conda:
        "../../envs/torch.yaml"
    threads: 2
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
