"""Rule `dataset`: one normalised split as Parquet."""

from cotdistill import datasets, io, logs

logs.setup(snakemake.log[0])
df = datasets.load_split(snakemake.wildcards.dataset, snakemake.params.spec, snakemake.wildcards.split,
                         seed=snakemake.params.seed)
io.write_parquet(df, snakemake.output[0])
