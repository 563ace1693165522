"""Rule `finetune`: one student on one ablation's targets with one seed."""

from cotdistill import logs, training

logs.setup(snakemake.log[0])
training.finetune_files(
    student=snakemake.params.student,
    converted=snakemake.input.model or None,
    targets=snakemake.input.targets,
    out_dir=snakemake.output[0],
    ckpt_dir=snakemake.params.checkpoints,
    settings=snakemake.params.settings,
    seed=int(snakemake.wildcards.seed),
    ablation=snakemake.wildcards.ablation,
    ablation_spec=snakemake.params.ablation,
    data_seed=snakemake.params.data_seed,
    threads=snakemake.threads,
    processes=int(getattr(snakemake.resources, "gpu", 0) or 0),
)
