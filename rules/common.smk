from cotdistill import config as cfg


wildcard_constraints:
    dataset=r"[A-Za-z0-9_.-]+",
    teacher=r"[A-Za-z0-9_.-]+",
    split=r"train|validation|test",
    student=r"[A-Za-z0-9_.-]+",
    ablation=r"[A-Za-z0-9_.-]+",
    experiment=r"[A-Za-z0-9_.-]+",
    seed=r"\d+",


def rationale_targets():
    return cfg.rationale_targets(config)


def loader_spec(wildcards):
    return cfg.loader_spec(config, wildcards.dataset)


def teacher_spec(wildcards):
    return cfg.teacher_spec(config, wildcards.teacher)


def template_path(wildcards):
    return cfg.template_path(config, wildcards.dataset)


def teacher_gpus(wildcards):
    return cfg.teacher_gpus(config, wildcards.teacher)


def default_targets():
    return cfg.default_targets(config)


def student_spec(wildcards):
    return cfg.student_spec(config, wildcards.student)


def ablation_spec(wildcards):
    return cfg.ablation_spec(config, wildcards.ablation)


def training_settings(wildcards):
    return cfg.training_settings(config, wildcards.student)


def converted_student(wildcards):
    return cfg.converted_student(config, wildcards.student)


def experiment_evals(wildcards):
    return cfg.eval_targets(config, wildcards.experiment)


def report_config(wildcards):
    return cfg.report_config(config, wildcards.experiment)
