"""Shared fixtures: paths, and a tiny random causal LM with the real GPT-2 tokenizer shipped in resources/."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
GPT2_TOKENIZER = ROOT / "tests" / "resources" / "gpt2-tokenizer"

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the hub is unreachable here; fail fast instead of retrying
# no controller answers outside the cluster tests: snakemake starts in ~2 s instead of waiting ~10 s for one
# (tests/slurm/no-controller.conf); it overrides any SLURM_CONF set, as these tests use no cluster;
# test_slurm.py drops it while its cluster runs
os.environ["SLURM_CONF"] = str(ROOT / "tests" / "slurm" / "no-controller.conf")


def gpt2_tokenizer():
    from transformers import GPT2TokenizerFast

    return GPT2TokenizerFast.from_pretrained(GPT2_TOKENIZER)


def build_tiny_gpt2(folder: Path, seed: int = 0, width: int = 32, heads: int = 2) -> Path:
    """A 2-layer GPT-2 with random weights and the real GPT-2 BPE tokenizer, saved as a local model folder."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = gpt2_tokenizer()
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(tok), n_positions=1024, n_embd=width, n_layer=2, n_head=heads,
                        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    GPT2LMHeadModel(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory) -> Path:
    return build_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))


def copy_workflow(folder: Path) -> Path:
    """A copy of the workflow (not results/) in `folder`, as a user's checkout would be."""
    for name in ["Snakefile", "rules", "workflow_scripts", "schemas", "prompts", "envs", "profiles", "report"]:
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, folder / name)
    (folder / "data").symlink_to(ROOT / "data")
    shutil.copy(ROOT / "config.yaml", folder / "config.yaml")
    return folder


@pytest.fixture()
def workdir(tmp_path) -> Path:
    return copy_workflow(tmp_path)


def train_marker_model(tmp: Path, placement: str) -> Path:
    """A tiny GPT-2 fine-tuned (100 steps, the project's Trainer path) on CommonsenseQA letters with one
    rationale, placed as `placement` (cot_after, cot_before) says. fp32: in bf16 (chosen by precision auto on
    CPUs with AMX) 100 steps left one of eight test rows without its label."""
    import pandas as pd

    from cotdistill.datasets import load_split
    from cotdistill.io import write_parquet
    from cotdistill.targets import build_targets
    from cotdistill.training import finetune

    base = build_tiny_gpt2(tmp / "base", width=64)
    data = load_split("csqa", {"loader": "csqa_dss", "path": str(ROOT / "data/dss/cqa"), "subsample": {"train": 64}},
                      "train")
    rat = pd.DataFrame({"id": data["id"], "rationale": "because it is the right answer for this question"})
    write_parquet(build_targets(data, rat, placement, {"kind": placement}, "letter", 0), tmp / "targets.parquet")
    finetune({"source": "local", "path": str(base)}, str(tmp / "targets.parquet"), str(tmp / "model"),
             str(tmp / "ckpt"), {"lr": 4e-3, "batch_size": 8, "max_steps": 100, "eval_every": 10**6,
                                 "validation_size": 8, "logging_steps": 50, "precision": "fp32"}, seed=0,
             label_first=placement != "cot_before", threads=2)
    return tmp / "model"


@pytest.fixture(scope="session")
def marker_model(tmp_path_factory) -> Path:
    """A model that answers `[FIN_LABEL] X [FIN_LABEL] because ...` (`train_marker_model`): one for which stopping
    at the marker actually cuts text."""
    return train_marker_model(tmp_path_factory.mktemp("marker-model"), "cot_after")


@pytest.fixture(scope="session")
def rationale_model(tmp_path_factory) -> Path:
    """A model that writes `because ... [FIN_LABEL] X [FIN_LABEL]` (`train_marker_model`): a rationale before its
    label, as CoT-before students do."""
    return train_marker_model(tmp_path_factory.mktemp("rationale-model"), "cot_before")
