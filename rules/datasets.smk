rule dataset:
    output:
        "results/data/{dataset}/{split}.parquet",
    log:
        "results/logs/data/{dataset}/{split}.log",
    conda:
        "../envs/cotdistill.yaml"
    params:
        spec=dataset_params,
        seed=config["seed"],
    script:
        "../workflow_scripts/prepare_dataset.py"
