"""Several GPUs in one job run as distributed data-parallel training; on CPU the same path runs with gloo."""

import json

import pytest

from cotdistill.datasets import load_split
from cotdistill.io import write_parquet
from cotdistill.targets import build_targets
from cotdistill.training import finetune_files

from .conftest import ROOT

pytestmark = pytest.mark.slow


def test_two_process_ddp_on_cpu(tiny_gpt2, tmp_path):
    data = load_split("csqa", {"loader": "csqa_dss", "path": str(ROOT / "data/dss/cqa"),
                               "subsample": {"train": 40}}, "train")
    write_parquet(build_targets(data, None, "none", {"kind": "none"}, "letter", 0), tmp_path / "targets.parquet")
    settings = {"lr": 1e-3, "batch_size": 4, "epochs": 1, "eval_every": 100, "validation_size": 8}
    metrics = finetune_files({"source": "local", "path": str(tiny_gpt2)}, None, str(tmp_path / "targets.parquet"),
                             str(tmp_path / "model"), str(tmp_path / "ckpt"), settings, seed=0, label_first=True,
                             data_seed=0, threads=2, processes=2)
    assert metrics["world_size"] == 2
    # 32 training rows, a global batch of 4 (2 per process): 8 optimizer steps, as on one process
    assert metrics["steps"] == 8
    assert json.loads((tmp_path / "model" / "train_metrics.json").read_text())["world_size"] == 2
    assert (tmp_path / "model" / "model.safetensors").exists() and not (tmp_path / "ckpt").exists()
