"""The whole DAG, data to report, on tiny random students through the snakemake CLI; reruns and resume."""

import copy
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

from cotdistill.precision import use_bf16

from .conftest import ROOT, build_tiny_gpt2, copy_workflow
from .test_workflow import SNAKEMAKE, smk

pytestmark = pytest.mark.slow
PARALLEL = ["--set-threads", "finetune=1", "evaluate=1", "rationales=1"]  # two 1-thread jobs on 2 cores
# More rules go after it (`*PARALLEL, "judge=1"`): a second --set-threads replaces the first, not adds to it.
MODEL = "results/models/csqa/palm540b/tiny-a/none/seed0"


def tiny_config(workdir: Path, **training) -> dict:
    for name, seed in (("tiny-a", 0), ("tiny-b", 1)):
        if not (workdir / name).exists():
            build_tiny_gpt2(workdir / name, seed=seed)
    return {
        "seed": 0,
        "datasets": {"csqa": {"loader": "csqa_dss", "path": "data/dss/cqa", "paper_name": "CSQA",
                              "subsample": {"train": 48, "test": 16}}},
        "teachers": {"palm540b": {"backend": "precomputed", "format": "dss",
                                  "paths": {"csqa": "data/dss/cqa", "svamp": "data/dss/svamp"},
                                  "policy": "keep", "splits": ["train"]}},
        "targets": {"label_format": "letter"},
        "students": {"tiny-a": {"source": "local", "path": "tiny-a"},
                     "tiny-b": {"source": "local", "path": "tiny-b", "training": {"lr": 2e-3}}},
        "ablations": {"none": {"kind": "none"}, "cot_after": {"kind": "cot_after"},
                      "mask_after": {"kind": "mask", "p": 0.5, "position": "after"}},
        "training": {"lr": 1e-3, "batch_size": 8, "epochs": 1, "eval_every": 3, "validation_size": 8,
                     "max_target_tokens": 48, **training},
        "evaluation": {"batch_size": 16, "max_new_tokens": 24},
        "experiments": {"table1": {"datasets": ["csqa"], "teacher": "palm540b", "students": ["tiny-a", "tiny-b"],
                                   "ablations": ["none", "cot_after", "mask_after"], "seeds": [0]}},
    }


def write(workdir: Path, config: dict) -> None:
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))


def planned(workdir: Path, *targets: str) -> dict[str, int]:
    """Jobs a dry run would start, per rule (for the default target, or `targets`)."""
    out = smk(workdir, *targets, "-n", "--quiet", "rules").stdout
    counts = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] not in ("total", "job"):
            counts[parts[0]] = int(parts[1])
    return counts


def planned_outputs(workdir: Path, rule: str) -> set[str]:
    """Output paths of the jobs of `rule` a dry run would start."""
    out = smk(workdir, "-n").stdout.splitlines()
    found = set()
    for i, line in enumerate(out):
        if line.strip() == f"rule {rule}:" or line.strip() == f"localrule {rule}:":
            for follow in out[i + 1:i + 8]:
                if follow.strip().startswith("output:"):
                    found |= {p.strip() for p in follow.split(":", 1)[1].split(",")}
    return found


def rerun_config(workdir: Path) -> dict:
    """The tiny grid plus CoT before the label (whose 3 longest targets would lose their label at 48 tokens:
    dropped and counted) and a generating teacher that only writes rationales (for decoding and prompt edits)."""
    config = tiny_config(workdir, overlong="drop")
    config["ablations"]["cot_before"] = {"kind": "cot_before"}
    config["experiments"]["table1"]["ablations"].append("cot_before")
    config["teachers"]["tiny"] = {"backend": "transformers", "model": {"source": "local", "path": "tiny-a"},
                                  "policy": "keep", "splits": ["train"], "batch_size": 16,
                                  "decoding": {"max_new_tokens": 4}}
    config["experiments"]["teach"] = {"datasets": ["csqa"], "teacher": "tiny"}
    return config


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny run: every later edit is a dry run against it."""
    workdir = copy_workflow(tmp_path_factory.mktemp("finished"))
    config = rerun_config(workdir)
    write(workdir, config)
    smk(workdir, *PARALLEL)
    return workdir, config


def test_whole_dag_report_and_nothing_left_to_do(finished):
    workdir, _ = finished
    table = pd.read_csv(workdir / "results/reports/table1.csv")
    assert len(table) == 8  # 2 students x 4 ablations x 1 dataset
    assert table["accuracy"].notna().all() and table["ci_low"].notna().all() and table["majority_rate"].gt(0).all()
    md = (workdir / "results/reports/table1.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| tiny")]
    assert len(rows) == 8 and all("|  |" not in r and "| |" not in r for r in rows)
    assert "## Paired tests on the same test items" in md and "Eval files used" in md
    assert "## The paper's claims, checked here" in md
    assert md.count("on csqa: CoT after > CoT before > no CoT: **") == 2  # a verdict per student
    tests = pd.read_csv(workdir / "results/reports/table1.tests.csv")
    assert len(tests) == 2 * 5  # per student: 3 ablations vs none, mask_after and cot_before vs cot_after
    assert len(pd.read_parquet(workdir / "results/reports/table1.items.parquet")) == 16
    assert (workdir / "results/reports/table1.png").stat().st_size > 1000
    evals = json.loads((workdir / "results/eval/csqa/palm540b/tiny-a/none/seed0.json").read_text())
    assert {"accuracy", "n", "unparsed", "predicted_distribution", "decoding", "ci95", "majority_rate"} <= set(evals)
    metrics = json.loads((workdir / f"{MODEL}/train_metrics.json").read_text())
    assert metrics["steps"] > 0 and metrics["tokens_seen"] > 0 and metrics["resumed_from_step"] == 0
    assert 0 < metrics["validation_s"] < metrics["wall_time_s"] and 0 < metrics["validation_share"] < 1
    assert evals["decoding"]["precision"] == ("bfloat16" if use_bf16("auto", reproducible=True) else "float32")
    before = json.loads((workdir / MODEL.replace("/none/", "/cot_before/") / "train_metrics.json").read_text())
    assert before["dropped_overlong"] >= 1 and metrics["dropped_overlong"] == 0
    assert before["train_examples"] + before["dropped_overlong"] == metrics["train_examples"]
    assert (workdir / "results/rationales/tiny/csqa/train.parquet").exists()
    assert planned(workdir) == {}  # after a full run nothing is scheduled


def _set(path: str, value) -> Callable[[dict], None]:
    def edit(config: dict) -> None:
        *keys, last = path.split(".")
        node = config
        for key in keys:
            node = node.setdefault(key, {})
        node[last] = value

    return edit


def _add_ablation(config: dict) -> None:
    config["ablations"]["shuffle_after"] = {"kind": "shuffle", "position": "after"}
    config["experiments"]["table1"]["ablations"].append("shuffle_after")


def _add_experiment(config: dict) -> None:
    config["experiments"]["table1b"] = {"datasets": ["csqa"], "teacher": "palm540b", "students": ["tiny-a"],
                                        "ablations": ["none", "cot_after"], "seeds": [0]}


def _add_dataset(config: dict) -> None:
    config["datasets"]["svamp"] = {"loader": "svamp_dss", "path": "data/dss/svamp"}


DOWNSTREAM_ALL = {"targets": 4, "finetune": 8, "evaluate": 8, "report": 1, "reports": 1}
# (what changes, the edit, the exact jobs a dry run schedules): README, "What reruns when you change X"
RERUNS = [
    ("train subsample", _set("datasets.csqa.subsample.train", 40), {"dataset": 1, "rationales": 2, **DOWNSTREAM_ALL}),
    ("test subsample", _set("datasets.csqa.subsample.test", 20), {"dataset": 1, "evaluate": 8, "report": 1,
                                                                  "reports": 1}),
    ("another dataset's teacher path", _set("teachers.palm540b.paths.svamp", "elsewhere/svamp"), {}),
    ("a dataset not in any experiment", _add_dataset, {}),
    ("teacher decoding", _set("teachers.tiny.decoding.max_new_tokens", 5), {"rationales": 1, "reports": 1}),
    ("teacher batch size", _set("teachers.tiny.batch_size", 4), {}),
    ("teacher policy", _set("teachers.palm540b.policy", "drop"), {"rationales": 1, **DOWNSTREAM_ALL}),
    ("teacher floor (min_kept)", _set("teachers.palm540b.min_kept", 0.5), {}),
    ("label format", _set("targets.label_format", "text"), DOWNSTREAM_ALL),
    ("one ablation's parameter", _set("ablations.mask_after.p", 0.3),
     {"targets": 1, "finetune": 2, "evaluate": 2, "report": 1, "reports": 1}),
    ("an ablation's parameter left to its default", lambda c: c["ablations"]["mask_after"].pop("position"), {}),
    ("adding an ablation", _add_ablation, {"targets": 1, "finetune": 2, "evaluate": 2, "report": 1, "reports": 1}),
    ("one student's lr", _set("students.tiny-b.training.lr", 3e-3),
     {"finetune": 4, "evaluate": 4, "report": 1, "reports": 1}),
    ("the other student's lr (global)", _set("training.lr", 2e-3),
     {"finetune": 4, "evaluate": 4, "report": 1, "reports": 1}),
    ("a student's paper_name", _set("students.tiny-a.paper_name", "GPT-2"), {"report": 1, "reports": 1}),
    ("a dataset's paper_name", _set("datasets.csqa.paper_name", "CommonsenseQA"), {"report": 1, "reports": 1}),
    ("logging_steps", _set("training.logging_steps", 1), {}),
    ("eval_batch_size and save_total_limit", lambda c: c["training"].update(eval_batch_size=2, save_total_limit=5),
     {}),
    ("evaluation batch size", _set("evaluation.batch_size", 4), {}),
    ("CoT-before generation cap", _set("evaluation.max_new_tokens", 99), {"evaluate": 2, "report": 1, "reports": 1}),
    ("evaluation precision", _set("evaluation.precision", "fp32"), {"evaluate": 8, "report": 1, "reports": 1}),
    ("cache_dir", _set("cache_dir", "elsewhere/cache"), {}),
    ("seeds list", _set("experiments.table1.seeds", [0, 1]), {"finetune": 8, "evaluate": 8, "report": 1,
                                                             "reports": 1}),
    ("adding an experiment over trained models", _add_experiment, {"report": 1, "reports": 1}),
    ("the report's comparisons", _set("experiments.table1.compare_to", ["cot_after"]), {"report": 1, "reports": 1}),
]


@pytest.mark.parametrize(("what", "edit", "expected"), RERUNS, ids=[r[0] for r in RERUNS])
def test_exactly_the_stale_jobs_rerun(finished, what, edit, expected):
    workdir, config = finished
    changed = copy.deepcopy(config)
    edit(changed)
    write(workdir, changed)
    try:
        assert planned(workdir) == expected
        if what == "one student's lr":
            assert {Path(p).parts[4] for p in planned_outputs(workdir, "finetune")} == {"tiny-b"}
        if what == "the other student's lr (global)":  # tiny-b sets its own lr, so only tiny-a reruns
            assert {Path(p).parts[4] for p in planned_outputs(workdir, "finetune")} == {"tiny-a"}
        if what == "CoT-before generation cap":  # label-first models never reach the cap
            assert {Path(p).parts[5] for p in planned_outputs(workdir, "evaluate")} == {"cot_before"}
    finally:
        write(workdir, config)


def test_prompt_template_text_reruns_only_generating_teachers(finished):
    workdir, _ = finished
    template = workdir / "prompts/csqa.yaml"
    original, stat = template.read_text(), template.stat()
    try:
        template.write_text(original.replace("Given the following two examples", "Given these two examples"))
        assert planned(workdir) == {"rationales": 1, "reports": 1}  # the tiny teacher; released outputs use none
    finally:
        template.write_text(original)
        os.utime(template, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert planned(workdir) == {}


def test_same_seed_gives_the_same_eval_json(workdir):
    write(workdir, tiny_config(workdir))
    target = "results/eval/csqa/palm540b/tiny-a/cot_after/seed0.json"
    smk(workdir, target)
    first = (workdir / target).read_text()
    smk(workdir, target, "--forcerun", "finetune")
    assert (workdir / target).read_text() == first


def _kill_after_checkpoints(workdir: Path, count: int) -> Path:
    """Start the fine-tune, SIGKILL its process group once `count` checkpoints are complete; the run folder."""
    ckpt = workdir / "results/checkpoints/csqa/palm540b/tiny-a/none/seed0"
    proc = subprocess.Popen([SNAKEMAKE, "--cores", "2", MODEL], cwd=workdir, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    try:
        while len(list(ckpt.glob("*/checkpoint-*/trainer_state.json"))) < count:
            assert proc.poll() is None, "snakemake ended before the checkpoints"
            assert time.monotonic() < deadline, f"no {count} checkpoints within 300 s"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # like SLURM killing the job: no clean-up runs
        proc.wait(timeout=30)
    assert not (workdir / MODEL).exists()
    smk(workdir, "--unlock")
    (run,) = ckpt.iterdir()
    return run


def _metrics(workdir: Path) -> dict:
    return json.loads((workdir / MODEL / "train_metrics.json").read_text())


def test_killed_finetune_resumes_only_its_own_run(workdir):
    """A resume continues the same run (even past a checkpoint cut short by the kill) and nothing else."""
    config = tiny_config(workdir, epochs=20, eval_every=10, patience=100, save_total_limit=3)  # no early stop
    write(workdir, config)
    run = _kill_after_checkpoints(workdir, 2)
    saved = workdir / "saved-run"
    shutil.copytree(run, saved)
    steps = sorted(int(p.name.split("-")[1]) for p in run.glob("checkpoint-*"))

    # 1. the learning rate changed after the kill: a different run, so training starts at step 0
    changed = copy.deepcopy(config)
    changed["training"]["lr"] = 2e-3
    write(workdir, changed)
    smk(workdir, MODEL, "--rerun-incomplete")
    assert _metrics(workdir)["resumed_from_step"] == 0 and _metrics(workdir)["fingerprint"] != run.name
    log = (workdir / "results/logs/finetune/csqa/palm540b/tiny-a/none/seed0.log").read_text()
    assert "removing checkpoints of a different run configuration" in log

    # 2. the original settings, and the kill had cut the newest checkpoint short: resume from the one before
    write(workdir, config)
    shutil.copytree(saved, run)
    newest = max(run.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    (newest / "trainer_state.json").unlink()
    smk(workdir, MODEL)
    metrics = _metrics(workdir)
    complete = [s for s in steps if s != int(newest.name.split("-")[1])]
    assert metrics["resumed_from_step"] == max(complete) >= 10 and metrics["steps"] == 100
    assert "skipping incomplete checkpoint" in (workdir / "results/logs/finetune/csqa/palm540b/tiny-a/none/"
                                                          "seed0.log").read_text()
    assert not (workdir / "results/checkpoints/csqa/palm540b/tiny-a/none/seed0").exists()

    # 3. and it ends with the same weights as an uninterrupted run
    shutil.move(workdir / MODEL, workdir / "resumed")
    smk(workdir, MODEL)
    resumed, straight = load_file(workdir / "resumed/model.safetensors"), load_file(workdir / MODEL /
                                                                                   "model.safetensors")
    assert resumed.keys() == straight.keys()
    for name in straight:
        assert torch.allclose(resumed[name], straight[name], atol=1e-6), name


def test_paper_grid_dry_run_plans_every_job(workdir):
    (workdir / "configs").mkdir()
    (workdir / "configs/paper_table1.yaml").write_text((ROOT / "configs/paper_table1.yaml").read_text())
    proc = smk(workdir, "-n", "--quiet", "rules", "--configfile", "configs/paper_table1.yaml")
    counts = {p[0]: int(p[1]) for p in (line.split() for line in proc.stdout.splitlines())
              if len(p) == 2 and p[1].isdigit()}
    # 3 students x 3 datasets x 3 placements x 3 seeds; train rationales for each dataset; train + test data
    assert counts["finetune"] == counts["evaluate"] == 81
    assert counts["targets"] == 9 and counts["rationales"] == 3 and counts["dataset"] == 6
    assert counts["report"] == 1 and "convert_student" not in counts  # hub students need no conversion


def test_cost_report_reads_the_finished_run_and_extrapolates_the_paper_grid(finished):
    from cotdistill import cost

    workdir, _ = finished
    config = cost.load_config([], base=str(workdir / "config.yaml"))
    table = cost.measured(config, workdir / "results").set_index(["experiment", "rule"])
    assert table.loc[("table1", "finetune"), "jobs"] == table.loc[("table1", "evaluate"), "jobs"] == "8/8"
    assert table.loc[("teach", "rationales"), "jobs"] == "1/1"
    # a precomputed teacher's rationales job can use under the benchmark's CPU-time resolution on a fast CPU
    assert (table["wall_min"] > 0).all() and (table["cpu_min"] >= 0).all()
    assert (table.loc[[("table1", "finetune"), ("table1", "evaluate")], "cpu_min"] > 0).all()
    metrics = [json.loads(p.read_text()) for p in (workdir / "results/models").glob("*/*/*/*/seed0/train_metrics.json")]
    assert table.loc[("table1", "finetune"), "tokens"] == sum(m["tokens_seen"] for m in metrics)

    lengths = cost.mean_lengths(config, workdir / "results")
    paper = cost.load_config([str(ROOT / "configs/paper_table1.yaml")], base=str(workdir / "config.yaml"))
    est = cost.extrapolate(paper, lengths, tflops=100.0, mfu=0.5).set_index("experiment")
    sizes = cost.sizes().set_index(["kind", "name", "split"], drop=True)["value"]
    params = sum(sizes[("model", m, "")] for m in ("openai-community/gpt2-xl", "microsoft/phi-1_5",
                                                   "google/gemma-2b"))
    train = sum(n - min(500, n // 5) for n in (sizes[("dataset", d, "train")] for d in ("CSQA", "OBQA", "QuaRel")))
    length = lengths.groupby("key")["length"].mean()  # the run has CSQA alone; the paper's OBQA and QuaRel pool it
    assert set(lengths["dataset"]) == {"CSQA"} and {"none", "cot_before", "cot_after"} <= set(length.index)
    tokens_per_item = 3 * 3 * length[["none", "cot_before", "cot_after"]].sum()  # 3 seeds x 3 epochs
    expected = 6 * params * train * tokens_per_item / (100e12 * 0.5) / 3600
    assert est.loc["paper_table1", "fine-tunes"] == 81
    assert est.loc["paper_table1", "finetune_gpu_h"] == pytest.approx(expected)
    assert est.loc["paper_table1", "example lengths"] == "27 same dataset, 54 pooled"  # other students' tokenizers
    # a cell of a measured dataset takes that dataset's length, not the mean over every dataset measured
    other = pd.concat([lengths, lengths.assign(dataset="QuaRel", length=lengths["length"] * 10)])
    assert cost.example_length(other, paper, "commonsenseqa", "gpt2-xl", "cot_after") == (
        pytest.approx(float(length["cot_after"])), "same dataset")
    assert cost.example_length(other, paper, "openbookqa", "gpt2-xl", "cot_after")[1] == "pooled"
    with pytest.raises(ValueError, match="'cot_before'.*no finished fine-tune"):
        cost.extrapolate(paper, lengths[lengths["key"] != "cot_before"])
