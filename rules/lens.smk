rule lens:
    input:
        model="results/models/{dataset}/{teacher}/{student}/{ablation}/seed{seed}",
        targets="results/targets/{dataset}/{teacher}/{ablation}/train.parquet",
    output:
        directory(
            "results/lens/{dataset}/{teacher}/{student}/{ablation}/seed{seed}/{lens}"
        ),
    log:
        "results/logs/lens/{dataset}/{teacher}/{student}/{ablation}/seed{seed}/{lens}.log",
    benchmark:
        "results/benchmarks/lens/{dataset}/{teacher}/{student}/{ablation}/seed{seed}/{lens}.tsv"
    conda:
        "../envs/cotdistill.yaml"
    threads: 2
    resources:
        gpu=1,
    params:
        lens=lens_params,
        limits=lens_sequence_limits,
        seed=config["seed"],
    script:
        "../workflow_scripts/train_lens.py"
