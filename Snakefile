from pathlib import Path

from snakemake.utils import min_version, validate

from cotdistill.config import check

min_version("9.0")


configfile: "config.yaml"


check(config, Path(workflow.basedir) / "schemas/config.schema.yaml")
validate(config, "schemas/config.schema.yaml")


include: "rules/common.smk"
include: "rules/datasets.smk"
include: "rules/rationales.smk"
include: "rules/students.smk"
include: "rules/vectors.smk"
include: "rules/targets.smk"
include: "rules/finetune.smk"
include: "rules/attribution.smk"
include: "rules/evaluate.smk"
include: "rules/reports.smk"
include: "rules/lens.smk"
include: "rules/analysis.smk"
include: "rules/judge.smk"


rule reports:
    default_target: True
    input:
        default_targets(),


rule analyses:
    input:
        analysis_targets(),


rule rationales_all:
    input:
        rationale_targets(),
