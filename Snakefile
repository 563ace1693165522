from snakemake.utils import min_version, validate

from cotdistill.config import check

min_version("9.0")


configfile: "config.yaml"


check(config, "schemas/config.schema.yaml")
validate(config, "schemas/config.schema.yaml")


include: "rules/common.smk"
include: "rules/datasets.smk"
include: "rules/rationales.smk"


rule all:
    default_target: True
    input:
        rationale_targets(),
