rule targets:
    input:
        unpack(targets_inputs),
    output:
        "results/targets/{dataset}/{teacher}/{ablation}/{split}.parquet",
    log:
        "results/logs/targets/{dataset}/{teacher}/{ablation}/{split}.log",
    conda:
        "../envs/cotdistill.yaml"
    params:
        targets=targets_params,
    script:
        "../workflow_scripts/build_targets.py"
