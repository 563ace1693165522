"""The Mysteries studies through the snakemake CLI on tiny students: Table 3 (attribution, human words, word
vectors, random words), Figure 3 (filler sweep) and Figure 4 (mask sweep), their reports, the tuned-lens analysis,
the HTML report, and the attribution and lens edges of the DAG."""

import copy
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from .conftest import FIXTURES, build_tiny_gpt2, copy_workflow
from .test_pipeline import PARALLEL, planned, planned_outputs, write
from .test_workflow import smk

pytestmark = pytest.mark.slow


def studies_config(workdir: Path) -> dict:
    for name, seed in (("tiny-a", 0), ("tiny-b", 1)):
        build_tiny_gpt2(workdir / name, seed=seed)
    shutil.copytree(FIXTURES / "kumo", workdir / "glove-tiny")
    one = {"datasets": ["csqa"], "teacher": "palm540b", "students": ["tiny-b"], "seeds": [0]}
    return {
        "seed": 0,
        "datasets": {"csqa": {"loader": "csqa_dss", "path": "data/dss/cqa", "subsample": {"train": 48, "test": 16}}},
        "teachers": {"palm540b": {"backend": "precomputed", "format": "dss", "paths": {"csqa": "data/dss/cqa"},
                                  "policy": "keep", "splits": ["train"]}},
        "targets": {"label_format": "text"},
        "students": {"tiny-a": {"source": "local", "path": "tiny-a"}, "tiny-b": {"source": "local", "path": "tiny-b"}},
        "word_vectors": {"glove-tiny": {"source": "kumo", "path": "glove-tiny", "paper_name": "GloVe tiny"}},
        "ablations": {
            "none": {"kind": "none"}, "cot_before": {"kind": "cot_before"}, "cot_after": {"kind": "cot_after"},
            "ig_topk": {"kind": "ig_topk", "student": "tiny-a", "n_steps": 4, "k": 5},
            "ig_topk_shuffled": {"kind": "ig_topk_shuffled", "student": "tiny-a", "n_steps": 4, "k": 5},
            "human_words": {"kind": "human_words", "path": "data/cos-e"},
            "word_neighbours": {"kind": "word_neighbours", "vectors": "glove-tiny", "k": 5},
            "random_words": {"kind": "random_words"},
            "filler_{k}": {"kind": "filler", "k": [1, 3]},
            "mask_{position}_{p}": {"kind": "mask", "position": ["before", "after"], "p": [0.2, 0.8], "token": "_"}},
        "training": {"lr": 1e-3, "batch_size": 8, "epochs": 1, "eval_every": 3, "validation_size": 8,
                     "max_target_tokens": 64, "overlong": "drop"},
        "evaluation": {"batch_size": 16, "max_new_tokens": 16},
        "experiments": {
            "t3": {**one, "report": "table3", "ablations": ["none", "cot_after", "ig_topk", "ig_topk_shuffled",
                                                            "human_words", "word_neighbours", "random_words"]},
            "f3": {**one, "report": "figure3", "ablations": ["none", "cot_before", "filler_{k}"]},
            "f4": {**one, "report": "figure4", "ablations": ["none", "mask_{position}_{p}"]},
            "lensed": {**one, "ablations": ["none", "cot_before", "cot_after"], "lens": "tiny-lens"}},
        "lenses": {"tiny-lens": {"kind": "tuned", "steps": 2, "batch_size": 4, "heldout": 4}},
    }


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    workdir = copy_workflow(tmp_path_factory.mktemp("studies"))
    config = studies_config(workdir)
    write(workdir, config)
    smk(workdir, *PARALLEL, "attribution=1")
    return workdir, config


@pytest.fixture(scope="module")
def analysed(studies):
    """The `analyses` target: first as the tiny students leave it (no test item right for all three placements,
    which must fail loudly), then with five items made right for all three in their prediction files (as a
    trained student would have them; mtimes kept, so the other experiments' reports stay up to date)."""
    workdir, config = studies
    failed = smk(workdir, "analyses", check=False)
    assert failed.returncode != 0
    assert "no test item is predicted correctly by every placement" in failed.stdout + failed.stderr
    for ablation in ("none", "cot_before", "cot_after"):
        path = workdir / f"results/eval/csqa/palm540b/tiny-b/{ablation}/seed0.predictions.parquet"
        stat = path.stat()
        df = pd.read_parquet(path)
        df.loc[:4, "predicted_class"] = df.loc[:4, "gold_class"]
        reason = "a reason " if ablation == "cot_before" else ""
        df.loc[:4, "generated"] = [f" {reason}[FIN_LABEL] {g} [FIN_LABEL]" for g in df.loc[:4, "gold"]]
        df.to_parquet(path)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    smk(workdir, "analyses")
    return workdir, config


def _rows(md: str) -> list[str]:
    return [line for line in md.splitlines() if line.startswith("| tiny-b |")]


@pytest.mark.parametrize(("report", "n"), [("t3", 7), ("f3", 4), ("f4", 5)])
def test_every_report_cell_is_filled(studies, report, n):
    workdir, _ = studies
    md = (workdir / f"results/reports/{report}.md").read_text()
    rows = _rows(md)
    assert len(rows) == n and all("| |" not in r and "|  |" not in r and " [" in r for r in rows)
    assert "## The paper's claims, checked here" in md and "**" in md.split("checked here")[1]
    assert len(pd.read_csv(workdir / f"results/reports/{report}.tests.csv")) >= n - 1
    assert (workdir / f"results/reports/{report}.png").stat().st_size > 5000


def test_table3_overlap_and_attribution_files(studies):
    workdir, _ = studies
    md = (workdir / "results/reports/t3.md").read_text()
    assert "## Human words against IG tokens" in md and "- csqa: human_words vs ig_topk: precision 0." in md
    assert "Word vectors: word_neighbours: GloVe tiny (`word_vectors.glove-tiny`)" in md  # named, as the paper's are
    scores = pd.read_parquet(next((workdir / "results/attribution").rglob("integrated_gradients-4.parquet")))
    assert scores["score"].notna().all() and scores["id"].nunique() >= 40
    ig = pd.read_parquet(workdir / "results/targets/csqa/palm540b/ig_topk/train.parquet")
    assert all(len(t.split("[FIN_LABEL]")[-1].split()) <= 5 for t in ig["target"])


def test_filler_models_record_their_token(studies):
    workdir, _ = studies
    import json

    metrics = json.loads((workdir / "results/models/csqa/palm540b/tiny-b/filler_3/seed0/train_metrics.json")
                         .read_text())
    assert metrics["filler_token"] == "."  # GPT-2's unk is its EOS: the fallback


def test_html_report_holds_every_table_and_figure(studies):
    workdir, _ = studies
    smk(workdir, "--report", "report.html")
    html = (workdir / "report.html").read_text(errors="replace")
    for name in ("t3.md", "t3.png", "f3.png", "f4.png", "f4.csv"):
        assert name in html


def test_changing_the_cot_before_model_reruns_its_attribution_and_descendants_only(studies):
    workdir, config = studies
    changed = copy.deepcopy(config)
    changed["students"]["tiny-a"]["training"] = {"lr": 2e-3}
    write(workdir, changed)
    try:
        assert planned(workdir) == {"finetune": 3, "attribution": 1, "targets": 2, "evaluate": 2, "report": 1,
                                    "reports": 1}
        assert {Path(p).parts[4] for p in planned_outputs(workdir, "targets")} == {"ig_topk", "ig_topk_shuffled"}
    finally:
        write(workdir, config)
    assert planned(workdir) == {}


def test_lens_analysis_files_and_its_dag_edge(analysed):
    workdir, config = analysed
    df = pd.read_parquet(workdir / "results/analysis/lensed.parquet")
    summary = pd.read_csv(workdir / "results/analysis/lensed.csv")
    assert set(summary["placement"]) == {"none", "cot_before", "cot_after"} and set(summary["layers"]) == {2}
    assert (summary["items"] == 5).all() and df["id"].nunique() == 5 and df["probability"].between(0, 1).all()
    assert (workdir / "results/analysis/lensed.png").stat().st_size > 5000
    train = (workdir / "results/lens/csqa/palm540b/tiny-b/cot_before/seed0/tiny-lens/train.json").read_text()
    assert '"heldout_kl_mean_after"' in train
    changed = copy.deepcopy(config)
    changed["lenses"]["tiny-lens"]["steps"] = 3
    write(workdir, changed)
    try:  # a lens setting retrains the three lenses and redoes the analysis, nothing else
        assert planned(workdir, "analyses") == {"lens": 3, "analysis": 1, "analyses": 1}
    finally:
        write(workdir, config)
    assert planned(workdir, "reports", "analyses") == {}
