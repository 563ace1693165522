"""Rule `convert_student`: a GGUF student saved once as a plain Hugging Face folder."""

from cotdistill import logs, models

logs.setup(snakemake.log[0])
models.convert_to_folder(snakemake.params.spec, snakemake.output[0])
