"""Rule `targets`: training targets of one ablation."""

from cotdistill import logs, targets

logs.setup(snakemake.log[0])
targets.build_target_file(
    data=snakemake.input.data,
    rationales=snakemake.input.rationales,
    ablation=snakemake.wildcards.ablation,
    spec=snakemake.params.spec,
    label_format=snakemake.params.label_format,
    seed=snakemake.params.seed,
    out=snakemake.output[0],
)
