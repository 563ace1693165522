"""Rule `rationales`: teacher rationales for one dataset split, after the teacher's failure policy."""

from cotdistill import config, logs, teachers

if __name__ == "__main__":  # vLLM spawns worker processes that re-import the main module
    logs.setup(snakemake.log[0])
    w = snakemake.wildcards
    teachers.elicit_files(
        data=snakemake.input.data,
        template=snakemake.input.template or None,
        teacher=w.teacher,
        spec={**snakemake.params.spec, **config.teacher_bookkeeping(snakemake.config, w.teacher)},
        dataset=w.dataset,
        split=w.split,
        cache_dir=snakemake.config["cache_dir"],
        threads=snakemake.threads,
        out_parquet=snakemake.output.parquet,
        out_stats=snakemake.output.stats,
    )
