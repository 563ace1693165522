rule report:
    input:
        evals=report_evals,
        predictions=report_predictions,
        data=report_data,
    output:
        multiext("results/reports/{experiment}", *cfg.REPORT_EXTENSIONS),
    log:
        "results/logs/reports/{experiment}.log",
    conda:
        "../envs/cotdistill.yaml"
    params:
        config=report_params,
        prefix="results/reports/{experiment}",
    script:
        "../workflow_scripts/report.py"
