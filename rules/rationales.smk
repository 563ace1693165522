rule rationales:
    input:
        data="results/data/{dataset}/{split}.parquet",
        template=template_path,
        model=teacher_model,
    output:
        parquet="results/rationales/{teacher}/{dataset}/{split}.parquet",
        stats="results/rationales/{teacher}/{dataset}/{split}.stats.json",
    log:
        "results/logs/rationales/{teacher}/{dataset}/{split}.log",
    benchmark:
        "results/benchmarks/rationales/{teacher}/{dataset}/{split}.tsv"
    conda:
        "../envs/cotdistill.yaml"
    threads: 2
    resources:
        gpu=teacher_gpus,
    params:
        spec=teacher_params,
    script:
        "../workflow_scripts/elicit_rationales.py"
