from cotdistill import config as cfg


wildcard_constraints:
    dataset=r"[A-Za-z0-9_.-]+",
    teacher=r"[A-Za-z0-9_.-]+",
    split=r"train|validation|test",


def rationale_targets():
    return cfg.rationale_targets(config)


def dataset_spec(wildcards):
    return cfg.dataset_spec(config, wildcards.dataset)


def teacher_spec(wildcards):
    return cfg.teacher_spec(config, wildcards.teacher)


def template_path(wildcards):
    return cfg.template_path(config, wildcards.dataset)


def teacher_gpus(wildcards):
    return cfg.teacher_gpus(config, wildcards.teacher)
