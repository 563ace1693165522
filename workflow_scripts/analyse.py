"""Rule `analysis`: layer-wise lens probability of the gold label for an experiment's three placements."""

from cotdistill import analysis, logs

logs.setup(snakemake.log[0])
analysis.analysis_files(
    groups=snakemake.params.groups,
    lens_spec=snakemake.params.lens["spec"],
    lens_name=snakemake.params.lens["name"],
    label_format=snakemake.params.label_format,
    title=f"Layer-wise confidence in the gold label: {snakemake.wildcards.experiment}",
    out_prefix=snakemake.params.prefix,
    threads=snakemake.threads,
)
