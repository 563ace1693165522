"""Rule `rationales`: teacher rationales for one dataset split, after the teacher's failure policy."""

from cotdistill import logs, teachers

if __name__ == "__main__":  # vLLM spawns worker processes that re-import the main module
    logs.setup(snakemake.log[0])
    w = snakemake.wildcards
    teachers.elicit_files(
        data=snakemake.input.data,
        template=snakemake.input.template,
        teacher=w.teacher,
        spec=snakemake.params.spec,
        dataset=w.dataset,
        split=w.split,
        cache_dir=snakemake.params.cache_dir,
        threads=snakemake.threads,
        out_parquet=snakemake.output.parquet,
        out_stats=snakemake.output.stats,
    )
