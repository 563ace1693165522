rule analysis:
    input:
        unpack(analysis_inputs),
    output:
        report(
            multiext("results/analysis/{experiment}", *cfg.ANALYSIS_EXTENSIONS),
            category="{experiment}",
            caption="../report/analysis.rst",
        ),
    log:
        "results/logs/analysis/{experiment}.log",
    benchmark:
        "results/benchmarks/analysis/{experiment}.tsv"
    conda:
        "../envs/cotdistill.yaml"
    threads: 2
    resources:
        gpu=1,
    params:
        groups=analysis_groups,
        lens=analysis_lens,
        label_format=config["targets"]["label_format"],
        prefix="results/analysis/{experiment}",
    script:
        "../workflow_scripts/analyse.py"
