"""Rule `word_vectors`: load word vectors from their source once and save them in gensim's format."""

from cotdistill import logs, wordvectors

logs.setup(snakemake.log[0])
wordvectors.build(snakemake.params.spec, snakemake.output[0])
