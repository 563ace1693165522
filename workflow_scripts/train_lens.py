"""Rule `lens`: a tuned lens for one fine-tuned model, trained on the model's own training targets."""

from cotdistill import lens, logs

logs.setup(snakemake.log[0])
lens.lens_files(
    model_dir=snakemake.input.model,
    targets=snakemake.input.targets,
    params=snakemake.params.lens,
    out_dir=snakemake.output[0],
    seed=snakemake.params.seed,
    threads=snakemake.threads,
    **snakemake.params.limits,
)
