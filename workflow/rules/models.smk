rule prepare_model:
    # Embedded GGUF -> plain safetensors directory, once; local and hub models are checked
    # and referenced where they are.
    output:
        reference="results/models/{model}/source.json",
    log:
        "logs/prepare_model/{model}.log",
    benchmark:
        "results/benchmarks/prepare_model/{model}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        model=model_settings,
    script:
        "../../scripts/prepare_model.py"
