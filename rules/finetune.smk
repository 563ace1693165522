rule finetune:
    input:
        targets="results/targets/{dataset}/{teacher}/{ablation}/train.parquet",
        model=converted_student,
    output:
        directory("results/models/{dataset}/{teacher}/{student}/{ablation}/seed{seed}"),
    log:
        "results/logs/finetune/{dataset}/{teacher}/{student}/{ablation}/seed{seed}.log",
    benchmark:
        "results/benchmarks/finetune/{dataset}/{teacher}/{student}/{ablation}/seed{seed}.tsv"
    conda:
        "../envs/cotdistill.yaml"
    threads: 2
    resources:
        gpu=1,
    params:
        student=student_params,
        settings=finetune_settings,
        label_first=label_first,
        data_seed=config["seed"],
    script:
        "../workflow_scripts/finetune.py"
