rule judge_teacher:
    input:
        data="results/data/{dataset}/test.parquet",
        rationales="results/rationales/{teacher}/{dataset}/test.parquet",
        prompt=judge_prompt,
        judge_model=judge_model,
    output:
        "results/judge/{judge}/{dataset}/{teacher}/teacher.parquet",
    log:
        "results/logs/judge/{judge}/{dataset}/{teacher}/teacher.log",
    benchmark:
        "results/benchmarks/judge/{judge}/{dataset}/{teacher}/teacher.tsv"
    conda:
        "../envs/cotdistill.yaml"
    threads: 2
    resources:
        gpu=judge_gpus,
    params:
        spec=judge_params,
    script:
        "../workflow_scripts/judge.py"


rule judge:
    input:
        data="results/data/{dataset}/test.parquet",
        rationales="results/rationales/{teacher}/{dataset}/test.parquet",
        prompt=judge_prompt,
        judge_model=judge_model,
        model="results/models/{dataset}/{teacher}/{student}/{ablation}/seed{seed}",
        predictions="results/eval/{dataset}/{teacher}/{student}/{ablation}/seed{seed}.predictions.parquet",
    output:
        "results/judge/{judge}/{dataset}/{teacher}/{student}/{ablation}/seed{seed}.parquet",
    log:
        "results/logs/judge/{judge}/{dataset}/{teacher}/{student}/{ablation}/seed{seed}.log",
    benchmark:
        "results/benchmarks/judge/{judge}/{dataset}/{teacher}/{student}/{ablation}/seed{seed}.tsv"
    conda:
        "../envs/cotdistill.yaml"
    threads: 2
    resources:
        gpu=judge_gpus,
    params:
        spec=judge_params,
    script:
        "../workflow_scripts/judge.py"
