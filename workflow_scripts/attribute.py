"""Rule `attribution`: token attributions of the gold label on a CoT-before model's training targets."""

from cotdistill import attribution, config, logs

logs.setup(snakemake.log[0])
attribution.attribute_files(
    model_dir=snakemake.input.model,
    targets=snakemake.input.targets,
    method=snakemake.wildcards.method,
    n_steps=int(snakemake.wildcards.steps),
    out=snakemake.output.parquet,
    out_stats=snakemake.output.stats,
    max_source=snakemake.params.max_source,
    threads=snakemake.threads,
    **config.attribution_bookkeeping(snakemake.config),
)
