"""Rules `judge` and `judge_teacher`: grade one model's rationales (or the teacher's) on the judged test items."""

from cotdistill import config, judge, logs

logs.setup(snakemake.log[0])
w = snakemake.wildcards
p = snakemake.params.spec
judge.judge_files(
    data=snakemake.input.data,
    teacher_rationales=snakemake.input.rationales,
    out=snakemake.output[0],
    spec=p["judge"],
    judge_spec=p["teacher"],
    judge_name=p["judge"]["teacher"],
    prompt_path=snakemake.input.prompt,
    seed=p["seed"],
    batch_size=int(config.judge_bookkeeping(snakemake.config, w.judge).get("batch_size", 8)),
    threads=snakemake.threads,
    model_dir=snakemake.input.get("model"),
    predictions=snakemake.input.get("predictions"),
    kind=p.get("kind"),
    prefix=p.get("prefix", ""),
    suffix=p.get("suffix", ""),
    max_new_tokens=p.get("max_new_tokens") or 0,
)
