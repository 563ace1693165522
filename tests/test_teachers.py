import json
import re

import pandas as pd
import pytest

from cotdistill.datasets import load_split
from cotdistill.prompts import load_template
from cotdistill.registry import UnknownNameError
from cotdistill.teachers import (CompletionCache, TeacherError, TransformersBackend, agrees, elicit, parse_completion,
                                 parse_dss)

from .conftest import ROOT

CQA = {"loader": "csqa_dss", "path": str(ROOT / "data/dss/cqa")}
PALM = {"backend": "precomputed", "format": "dss", "paths": {"csqa": str(ROOT / "data/dss/cqa"),
                                                            "svamp": str(ROOT / "data/dss/svamp")}}


def _palm_completion(split: str, i: int, name: str = "cqa") -> str:
    return json.loads((ROOT / f"data/dss/{name}/llm/{split}_CoT_0.json").read_text())[i]


def test_dss_parser_cuts_run_on_questions_from_real_completions():
    text = _palm_completion("train", 0)
    assert "\n\nQ:" in text  # the completion runs on into an invented question
    rationale, label = parse_dss(text, "mcqa")
    assert rationale == ("The answer must be something that has to do with the above problem. Of the above "
                         "choices, only math problem has to do with the above problem.")
    assert label == "D"
    rationale, label = parse_dss(_palm_completion("train", 0, "svamp"), "math")
    assert label == "(84 / 2)" and rationale.endswith("84 / 2 = 42.")
    assert "Q:" not in rationale


def test_dss_parser_without_answer_sentence():
    assert parse_dss("Some text that stops", "mcqa") == ("Some text that stops", None)


def test_parse_generated_completion_first_paragraph():
    answer = re.compile(r"The answer is \(?([A-E])\b")
    text = "The answer is C because plates go there.\n\nQuestion: another one\nAnswer: B"
    assert parse_completion(text, answer) == ("The answer is C because plates go there.", "C")
    assert parse_completion("no label here", answer) == ("no label here", None)


def test_agreement_by_task():
    assert agrees("c", {"task": "mcqa", "answer_label": "C"})
    assert not agrees("B", {"task": "mcqa", "answer_label": "C"})
    assert agrees("(84 / 2)", {"task": "math", "answer": 42.0})
    assert not agrees("(84 / 3)", {"task": "math", "answer": 42.0})
    assert not agrees(None, {"task": "mcqa", "answer_label": "C"})


def test_precomputed_palm_rates_on_full_train():
    df = load_split("csqa", CQA, "train")
    out, stats = elicit(df, "palm", {**PALM, "policy": "drop"}, load_template(ROOT / "prompts/csqa.yaml"),
                        "csqa", "train", "unused")
    assert stats["examples"] == 9741
    assert 0.74 < stats["agree_rate"] < 0.77  # DSS reports 75% agreement on train
    assert stats["parse_rate"] > 0.97
    assert len(out) == stats["kept"] == stats["agreeing"]
    assert out["agrees"].all() and out["parsed"].all()


def test_precomputed_aligns_subsample_by_source_index():
    df = load_split("csqa", {**CQA, "subsample": {"train": 20}}, "train", seed=1)
    out, _ = elicit(df, "palm", {**PALM, "policy": "keep"}, load_template(ROOT / "prompts/csqa.yaml"),
                    "csqa", "train", "unused")
    raw = [c for i in range(10) for c in json.loads((ROOT / f"data/dss/cqa/llm/train_CoT_{i}.json").read_text())]
    for row, got in zip(df.itertuples(), out.itertuples()):
        assert got.id == row.id and got.completion == raw[row.source_index]


def test_precomputed_rejects_unknown_dataset_and_retry():
    t = load_template(ROOT / "prompts/csqa.yaml")
    df = load_split("csqa", {**CQA, "subsample": {"train": 2}}, "train")
    with pytest.raises(TeacherError, match=r"teachers.palm.paths has: csqa, svamp"):
        elicit(df, "palm", PALM, t, "obqa", "train", "unused")
    with pytest.raises(TeacherError, match="policy retry needs a generating backend"):
        elicit(df, "palm", {**PALM, "policy": "retry", "retries": 1}, t, "csqa", "train", "unused")


def test_unknown_backend_lists_choices():
    with pytest.raises(UnknownNameError, match=r"teachers.t.backend.*precomputed, transformers, vllm"):
        elicit(pd.DataFrame(), "t", {"backend": "openai"}, None, "csqa", "train", "unused")


def _tiny_spec(model_dir, **extra):
    return {"backend": "transformers", "model": {"source": "local", "path": str(model_dir)}, "batch_size": 2,
            "decoding": {"max_new_tokens": 6, "stop": []}, **extra}


def test_transformers_cache_reuses_and_extends(tiny_gpt2, tmp_path):
    t = load_template(ROOT / "prompts/csqa.yaml")
    spec = _tiny_spec(tiny_gpt2, policy="keep")
    small = load_split("csqa", {**CQA, "subsample": {"train": 4}}, "train")
    first, s1 = elicit(small, "tiny", spec, t, "csqa", "train", tmp_path)
    assert s1["generated"] == 4 and s1["cached"] == 0 and len(first) == 4
    again, s2 = elicit(small, "tiny", spec, t, "csqa", "train", tmp_path)
    assert s2["generated"] == 0 and s2["cached"] == 4
    pd.testing.assert_frame_equal(first, again)
    large = load_split("csqa", {**CQA, "subsample": {"train": 7}}, "train")
    _, s3 = elicit(large, "tiny", spec, t, "csqa", "train", tmp_path)
    assert s3["generated"] == 3 and s3["cached"] == 4
    # a different decoding parameter is a different cache key
    _, s4 = elicit(small, "tiny", {**spec, "decoding": {"max_new_tokens": 5, "stop": []}}, t, "csqa", "train",
                   tmp_path)
    assert s4["generated"] == 4


def test_killed_generation_loses_at_most_one_batch(tiny_gpt2, tmp_path):
    t = load_template(ROOT / "prompts/csqa.yaml")
    spec = _tiny_spec(tiny_gpt2, policy="keep")
    df = load_split("csqa", {**CQA, "subsample": {"train": 6}}, "train")

    class Killed(TransformersBackend):
        calls = 0

        def generate(self, *args):
            Killed.calls += 1
            if Killed.calls == 3:
                raise KeyboardInterrupt  # the job dies while generating its third batch
            return super().generate(*args)

    with pytest.raises(KeyboardInterrupt):
        elicit(df, "tiny", spec, t, "csqa", "train", tmp_path, backend_factory=Killed)
    shards = list((tmp_path / "rationales" / "tiny").glob("*/*.parquet"))
    assert len(shards) == 2 and not list((tmp_path / "rationales" / "tiny").glob("*/.*tmp"))
    _, stats = elicit(df, "tiny", spec, t, "csqa", "train", tmp_path)
    assert stats["cached"] == 4 and stats["generated"] == 2


def test_drop_and_retry_policies(tiny_gpt2, tmp_path):
    t = load_template(ROOT / "prompts/csqa.yaml")
    df = load_split("csqa", {**CQA, "subsample": {"train": 3}}, "train")
    # a random tiny model never writes "The answer is X": drop keeps nothing, retry samples twice more, then drops
    out, stats = elicit(df, "tiny", _tiny_spec(tiny_gpt2, policy="drop"), t, "csqa", "train", tmp_path)
    assert len(out) == 0 and stats["dropped"] == 3
    out, stats = elicit(df, "tiny", _tiny_spec(tiny_gpt2, policy="retry", retries=2), t, "csqa", "train", tmp_path)
    assert stats["generated"] == 6 and stats["cached"] == 3  # attempt 0 came from the cache
    assert len(out) == 0 and stats["retries"] == 2
    cache = CompletionCache(next((tmp_path / "rationales" / "tiny").iterdir()))
    assert sorted({k[2] for k in cache.entries}) == [0, 1, 2]


def test_vllm_backend_without_vllm_says_how_to_install(tiny_gpt2):
    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401
        pytest.skip("vllm is installed; tests/test_vllm.py covers it")
    except ImportError:
        pass
    t = load_template(ROOT / "prompts/csqa.yaml")
    df = load_split("csqa", {**CQA, "subsample": {"train": 1}}, "train")
    spec = {**_tiny_spec(tiny_gpt2), "backend": "vllm"}
    with pytest.raises(TeacherError, match="gpu extra"):
        elicit(df, "v", spec, t, "csqa", "train", "unused")
