"""Rule `dataset`: one normalised split as Parquet, checked against the dataset's other splits for overlap."""

from cotdistill import config, datasets, io, logs

logs.setup(snakemake.log[0])
name, split = snakemake.wildcards.dataset, snakemake.wildcards.split
df = datasets.load_split(name, snakemake.params.spec, split, seed=snakemake.params.seed,
                         splits=config.dataset_splits(snakemake.config, name))
io.write_parquet(df, snakemake.output[0])
