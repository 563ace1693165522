"""Rule `targets`: training targets of one ablation."""

from cotdistill import logs, targets

logs.setup(snakemake.log[0])
targets.build_target_file(
    data=snakemake.input.data,
    rationales=snakemake.input.rationales,
    ablation=snakemake.wildcards.ablation,
    spec=snakemake.params.targets["spec"],
    label_format=snakemake.params.targets["label_format"],
    seed=snakemake.params.targets["seed"],
    out=snakemake.output[0],
    attribution=snakemake.input.get("attribution"),
    human_words=snakemake.input.get("human_words"),
    vectors=snakemake.input.get("vectors"),
    labels=snakemake.params.targets.get("labels", "gold"),
)
