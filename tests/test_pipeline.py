"""The whole DAG, data to report, on tiny random students through the snakemake CLI; reruns and resume."""

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

from .conftest import ROOT, build_tiny_gpt2
from .test_workflow import SNAKEMAKE, smk

pytestmark = pytest.mark.slow
PARALLEL = ["--set-threads", "finetune=1", "evaluate=1", "rationales=1"]  # two 1-thread jobs on 2 cores


def tiny_config(workdir: Path, **training) -> dict:
    for name, seed in (("tiny-a", 0), ("tiny-b", 1)):
        if not (workdir / name).exists():
            build_tiny_gpt2(workdir / name, seed=seed)
    return {
        "seed": 0,
        "datasets": {"csqa": {"loader": "csqa_dss", "path": "data/dss/cqa", "paper_name": "CSQA",
                              "subsample": {"train": 48, "test": 16}}},
        "teachers": {"palm540b": {"backend": "precomputed", "format": "dss", "paths": {"csqa": "data/dss/cqa"},
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


def planned(workdir: Path) -> dict[str, int]:
    """Jobs a dry run would start, per rule."""
    out = smk(workdir, "-n", "--quiet", "rules").stdout
    counts = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] not in ("total", "job"):
            counts[parts[0]] = int(parts[1])
    return counts


def test_whole_dag_report_and_targeted_reruns(workdir):
    config = tiny_config(workdir)
    write(workdir, config)
    smk(workdir, *PARALLEL)
    table = pd.read_csv(workdir / "results/reports/table1.csv")
    assert len(table) == 6  # 2 students x 3 ablations x 1 dataset
    assert table["accuracy"].notna().all() and table["ci_low"].notna().all() and table["majority_rate"].gt(0).all()
    md = (workdir / "results/reports/table1.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| tiny")]
    assert len(rows) == 6 and all("|  |" not in r and "| |" not in r for r in rows)
    assert "Claim (Mysteries paper)" in md and "Eval files used" in md
    assert (workdir / "results/reports/table1.png").stat().st_size > 1000
    evals = json.loads((workdir / "results/eval/csqa/palm540b/tiny-a/none/seed0.json").read_text())
    assert {"accuracy", "n", "unparsed", "predicted_distribution", "decoding", "ci95", "majority_rate"} <= set(evals)
    metrics = json.loads((workdir / "results/models/csqa/palm540b/tiny-a/none/seed0/train_metrics.json").read_text())
    assert metrics["steps"] > 0 and metrics["tokens_seen"] > 0 and metrics["resumed_from_step"] == 0

    assert planned(workdir) == {}  # after a full run nothing is scheduled

    config["ablations"]["mask_after"]["p"] = 0.3  # one ablation's parameter: only its subtree
    write(workdir, config)
    assert planned(workdir) == {"targets": 1, "finetune": 2, "evaluate": 2, "report": 1, "reports": 1}

    config["ablations"]["mask_after"]["p"] = 0.5
    config["students"]["tiny-b"]["training"]["lr"] = 3e-3  # one student's learning rate: only its subtree
    write(workdir, config)
    assert planned(workdir) == {"finetune": 3, "evaluate": 3, "report": 1, "reports": 1}


def test_same_seed_gives_the_same_eval_json(workdir):
    write(workdir, tiny_config(workdir))
    target = "results/eval/csqa/palm540b/tiny-a/cot_after/seed0.json"
    smk(workdir, target)
    first = (workdir / target).read_text()
    smk(workdir, target, "--forcerun", "finetune")
    assert (workdir / target).read_text() == first


def test_killed_finetune_resumes_from_checkpoint(workdir):
    write(workdir, tiny_config(workdir, epochs=30, eval_every=10, patience=100))  # no early stop
    model = "results/models/csqa/palm540b/tiny-a/none/seed0"
    ckpt = workdir / "results/checkpoints/csqa/palm540b/tiny-a/none/seed0"
    proc = subprocess.Popen([SNAKEMAKE, "--cores", "2", model], cwd=workdir, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    try:
        while not list(ckpt.glob("checkpoint-*/trainer_state.json")):
            assert proc.poll() is None, "snakemake ended before the first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.5)
        time.sleep(1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # like SLURM killing the job: no clean-up runs
        proc.wait(timeout=30)
    assert not (workdir / model).exists()
    smk(workdir, "--unlock")
    smk(workdir, model, "--rerun-incomplete")
    metrics = json.loads((workdir / model / "train_metrics.json").read_text())
    assert metrics["resumed_from_step"] >= 10
    assert metrics["steps"] == 150  # 30 epochs x 5 steps (40 train rows, batch 8): the run finished
    assert not ckpt.exists()  # checkpoints are removed once the final model is in place

    # an uninterrupted run with the same seed ends with the same weights
    shutil.move(workdir / model, workdir / "resumed")
    smk(workdir, model)
    resumed, straight = load_file(workdir / "resumed/model.safetensors"), load_file(workdir / model /
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
