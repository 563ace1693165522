"""Rule `finetune`: one student on one ablation's targets with one seed."""

from cotdistill import config, logs, training

logs.setup(snakemake.log[0])
w = snakemake.wildcards
settings = dict(snakemake.params.settings)
filler = settings.pop("filler", None)  # filler ablations only: the fallback token
training.finetune_files(
    student=snakemake.params.student,
    converted=snakemake.input.model or None,
    targets=snakemake.input.targets,
    out_dir=snakemake.output[0],
    ckpt_dir=f"results/checkpoints/{w.dataset}/{w.teacher}/{w.student}/{w.ablation}/seed{w.seed}",
    settings={**settings, **config.training_bookkeeping(snakemake.config, w.student)},
    seed=int(w.seed),
    label_first=snakemake.params.label_first,
    data_seed=snakemake.params.data_seed,
    threads=snakemake.threads,
    processes=int(getattr(snakemake.resources, "gpu", 0) or 0),
    filler=filler,
)
