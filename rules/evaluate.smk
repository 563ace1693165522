rule evaluate:
    input:
        model="results/models/{dataset}/{teacher}/{student}/{ablation}/seed{seed}",
        data="results/data/{dataset}/test.parquet",
    output:
        json="results/eval/{dataset}/{teacher}/{student}/{ablation}/seed{seed}.json",
        predictions="results/eval/{dataset}/{teacher}/{student}/{ablation}/seed{seed}.predictions.parquet",
        speed="results/eval/{dataset}/{teacher}/{student}/{ablation}/seed{seed}.speed.json",
    log:
        "results/logs/eval/{dataset}/{teacher}/{student}/{ablation}/seed{seed}.log",
    benchmark:
        "results/benchmarks/eval/{dataset}/{teacher}/{student}/{ablation}/seed{seed}.tsv"
    conda:
        "../envs/cotdistill.yaml"
    threads: 2
    resources:
        gpu=1,
    params:
        evaluation=evaluation_params,
        label_format=config["targets"]["label_format"],
    script:
        "../workflow_scripts/evaluate.py"


rule evaluate_transfer:
    input:
        model="results/models/{dataset}/{teacher}/{student}/{ablation}/seed{seed}",
        data="results/data/{testset}/test.parquet",
    output:
        json="results/transfer/{testset}/{dataset}/{teacher}/{student}/{ablation}/seed{seed}.json",
        predictions="results/transfer/{testset}/{dataset}/{teacher}/{student}/{ablation}/seed{seed}.predictions.parquet",
        speed="results/transfer/{testset}/{dataset}/{teacher}/{student}/{ablation}/seed{seed}.speed.json",
    log:
        "results/logs/transfer/{testset}/{dataset}/{teacher}/{student}/{ablation}/seed{seed}.log",
    benchmark:
        "results/benchmarks/transfer/{testset}/{dataset}/{teacher}/{student}/{ablation}/seed{seed}.tsv"
    conda:
        "../envs/cotdistill.yaml"
    threads: 2
    resources:
        gpu=1,
    params:
        evaluation=evaluation_params,
        label_format=config["targets"]["label_format"],
    script:
        "../workflow_scripts/evaluate.py"
