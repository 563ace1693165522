from cotdistill import config as cfg


wildcard_constraints:
    dataset=cfg.NAME_PATTERN,
    testset=cfg.NAME_PATTERN,
    teacher=cfg.NAME_PATTERN,
    split=r"train|validation|test",
    student=cfg.NAME_PATTERN,
    ablation=cfg.NAME_PATTERN,
    experiment=cfg.NAME_PATTERN,
    seed=r"\d+",
    method="|".join(cfg.ATTRIBUTION_METHODS),
    steps=r"\d+",
    vectors=cfg.NAME_PATTERN,
    lens=cfg.NAME_PATTERN,
    judge=cfg.NAME_PATTERN,


def rationale_targets():
    return cfg.rationale_targets(config)


def default_targets():
    return cfg.default_targets(config)


def analysis_targets():
    return cfg.analysis_targets(config)


def dataset_params(wildcards):
    return cfg.dataset_params(config, wildcards.dataset, wildcards.split)


def teacher_params(wildcards):
    return cfg.teacher_params(config, wildcards.teacher, wildcards.dataset)


def template_path(wildcards):
    return cfg.template_path(config, wildcards.dataset, wildcards.teacher)


def teacher_model(wildcards):
    return cfg.teacher_model_input(config, wildcards.teacher)


def judge_model(wildcards):
    return cfg.judge_model_input(config, wildcards.judge)


def teacher_gpus(wildcards):
    return cfg.teacher_gpus(config, wildcards.teacher)


def student_params(wildcards):
    return cfg.student_params(config, wildcards.student)


def targets_params(wildcards):
    return cfg.targets_params(config, wildcards.ablation, wildcards.teacher)


def targets_inputs(wildcards):
    return cfg.targets_inputs(
        config,
        wildcards.dataset,
        wildcards.teacher,
        wildcards.ablation,
        wildcards.split,
    )


def finetune_settings(wildcards):
    return cfg.finetune_settings(config, wildcards.student, wildcards.ablation)


def attribution_max_source(wildcards):
    return cfg.attribution_max_source(config, wildcards.student)


def word_vectors_input(wildcards):
    return cfg.word_vectors_input(config, wildcards.vectors)


def word_vectors_params(wildcards):
    return cfg.word_vectors_params(config, wildcards.vectors)


def label_first(wildcards):
    return cfg.label_first(config, wildcards.ablation)


def evaluation_params(wildcards):
    return cfg.evaluation_params(config, wildcards.ablation)


def converted_student(wildcards):
    return cfg.converted_student(config, wildcards.student)


def report_evals(wildcards):
    return cfg.report_inputs(config, wildcards.experiment)["evals"]


def report_predictions(wildcards):
    return cfg.report_inputs(config, wildcards.experiment)["predictions"]


def report_data(wildcards):
    return cfg.report_inputs(config, wildcards.experiment)["data"]


def report_targets_files(wildcards):
    return cfg.report_inputs(config, wildcards.experiment)["targets"]


def report_params(wildcards):
    return cfg.report_params(config, wildcards.experiment)


def lens_params(wildcards):
    return cfg.lens_params(config, wildcards.lens)


def lens_sequence_limits(wildcards):
    return cfg.lens_sequence_limits(config, wildcards.student)


def analysis_inputs(wildcards):
    return cfg.analysis_inputs(config, wildcards.experiment)


def analysis_groups(wildcards):
    return cfg.analysis_groups(config, wildcards.experiment)


def analysis_lens(wildcards):
    return cfg.analysis_lens(config, wildcards.experiment)


def judge_params(wildcards):
    return cfg.judge_params(
        config, wildcards.judge, wildcards.dataset, wildcards.get("ablation")
    )


def judge_prompt(wildcards):
    return cfg.judge_prompt(config, wildcards.judge)


def judge_gpus(wildcards):
    return cfg.teacher_gpus(config, cfg.judge_spec(config, wildcards.judge)["teacher"])


def report_judge(wildcards):
    return cfg.report_inputs(config, wildcards.experiment)["judge"]


def report_published(wildcards):
    return cfg.report_inputs(config, wildcards.experiment)["published"]
