rule attribution:
    input:
        model="results/models/{dataset}/{teacher}/{student}/{ablation}/seed{seed}",
        targets="results/targets/{dataset}/{teacher}/{ablation}/train.parquet",
    output:
        parquet="results/attribution/{dataset}/{teacher}/{student}/{ablation}/seed{seed}/{method}-{steps}.parquet",
        stats="results/attribution/{dataset}/{teacher}/{student}/{ablation}/seed{seed}/{method}-{steps}.stats.json",
    log:
        "results/logs/attribution/{dataset}/{teacher}/{student}/{ablation}/seed{seed}/{method}-{steps}.log",
    benchmark:
        "results/benchmarks/attribution/{dataset}/{teacher}/{student}/{ablation}/seed{seed}/{method}-{steps}.tsv"
    conda:
        "../envs/cotdistill.yaml"
    threads: 2
    resources:
        gpu=1,
    params:
        max_source=attribution_max_source,
        revision=cfg.ATTRIBUTION_REVISION,
    script:
        "../workflow_scripts/attribute.py"
