rule report:
    input:
        experiment_evals,
    output:
        multiext("results/reports/{experiment}", ".md", ".csv", ".tex", ".png", ".pdf"),
    log:
        "results/logs/reports/{experiment}.log",
    conda:
        "../envs/cotdistill.yaml"
    params:
        config=report_config,
        prefix="results/reports/{experiment}",
    script:
        "../workflow_scripts/report.py"
