"""Rules `evaluate` and `evaluate_transfer`: greedy evaluation of one fine-tuned model on a test split (its own
dataset's, or another dataset's of the same task for out-of-domain evaluation)."""

from cotdistill import config, evaluation, logs

logs.setup(snakemake.log[0])
evaluation.evaluate(
    model_dir=snakemake.input.model,
    data=snakemake.input.data,
    ablation=snakemake.wildcards.ablation,
    label_first=snakemake.params.evaluation["label_first"],
    label_format=snakemake.params.label_format,
    max_new_tokens=snakemake.params.evaluation["max_new_tokens"],
    precision=snakemake.params.evaluation["precision"],
    prefix=snakemake.params.evaluation.get("prefix", ""),
    suffix=snakemake.params.evaluation.get("suffix", ""),
    batch_size=int(config.evaluation_bookkeeping(snakemake.config)["batch_size"]),
    out_json=snakemake.output.json,
    out_predictions=snakemake.output.predictions,
    out_speed=snakemake.output.speed,
    threads=snakemake.threads,
)
