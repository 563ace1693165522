"""Rule `evaluate`: greedy evaluation of one fine-tuned model on the test split."""

from cotdistill import evaluation, logs

logs.setup(snakemake.log[0])
evaluation.evaluate(
    model_dir=snakemake.input.model,
    data=snakemake.input.data,
    ablation=snakemake.wildcards.ablation,
    spec=snakemake.params.ablation,
    label_format=snakemake.params.label_format,
    settings=snakemake.params.settings,
    out_json=snakemake.output.json,
    out_predictions=snakemake.output.predictions,
    out_speed=snakemake.output.speed,
    threads=snakemake.threads,
)
