"""Rule `report`: an experiment's table (md, csv, tex) and figure (png, pdf)."""

from cotdistill import logs, reports

logs.setup(snakemake.log[0])
reports.report(list(snakemake.input), snakemake.params.config, snakemake.wildcards.experiment,
               snakemake.params.prefix)
