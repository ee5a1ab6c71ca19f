rule prepare_dataset:
    # One job per dataset, so editing one dataset's config reruns only that dataset's job.
    input:
        unpack(dataset_inputs),
    output:
        table="results/data/{dataset}.parquet",
    log:
        "logs/prepare_dataset/{dataset}.log",
    conda:
        "../../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        dataset=lookup(dpath="datasets/{dataset}", within=config),
    script:
        "../../scripts/prepare_dataset.py"
