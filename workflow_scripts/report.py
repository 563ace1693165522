"""Rule `report`: an experiment's tables, paired tests, per-item drill-down and figure."""

from cotdistill import logs, reports

logs.setup(snakemake.log[0])
reports.report(
    evals=list(snakemake.input.evals),
    predictions=list(snakemake.input.predictions),
    data=list(snakemake.input.data),
    config=snakemake.params.config,
    experiment=snakemake.wildcards.experiment,
    out_prefix=snakemake.params.prefix,
    targets=list(snakemake.input.targets),
    judge=list(snakemake.input.judge),
)
