rule report:
    input:
        evals=report_evals,
        predictions=report_predictions,
        data=report_data,
        targets=report_targets_files,
        judge=report_judge,
        published=report_published,
    output:
        report(
            multiext("results/reports/{experiment}", *cfg.REPORT_EXTENSIONS),
            category="{experiment}",
            caption="../report/experiment.rst",
        ),
    log:
        "results/logs/reports/{experiment}.log",
    conda:
        "../envs/cotdistill.yaml"
    params:
        config=report_params,
        prefix="results/reports/{experiment}",
    script:
        "../workflow_scripts/report.py"
