import json
import re
import shutil

import pandas as pd
import pytest

from cotdistill.datasets import load_split
from cotdistill.prompts import load_template
from cotdistill.registry import UnknownNameError
from cotdistill.teachers import (PARSERS, CompletionCache, TeacherError, TransformersBackend, agrees, dss_cqa,
                                 dss_svamp, elicit, parse_completion)

from .conftest import FIXTURES, ROOT

CQA = {"loader": "csqa_dss", "path": str(ROOT / "data/dss/cqa")}
PALM = {"backend": "precomputed", "format": "dss", "paths": {"csqa": str(ROOT / "data/dss/cqa"),
                                                            "svamp": str(ROOT / "data/dss/svamp")}}
TEMPLATE = ROOT / "prompts/csqa.yaml"


def _palm_completion(split: str, i: int, name: str = "cqa") -> str:
    return json.loads((ROOT / f"data/dss/{name}/llm/{split}_CoT_0.json").read_text())[i]


def test_dss_parser_cuts_run_on_questions_from_real_completions():
    text = _palm_completion("train", 0)
    assert "\n\nQ:" in text  # the completion runs on into an invented question
    rationale, label = dss_cqa(text)
    assert rationale == ("The answer must be something that has to do with the above problem. Of the above "
                         "choices, only math problem has to do with the above problem.")
    assert label == "D"
    rationale, label = dss_svamp(_palm_completion("train", 0, "svamp"))
    assert label == "(84 / 2)" and rationale.endswith("84 / 2 = 42.")
    assert "Q:" not in rationale


def test_dss_parser_without_answer_sentence():
    assert dss_cqa("Some text that stops") == ("Some text that stops", None)
    assert dss_svamp("He has 3 + 4 = 7. The answer is 7.\n\nQ: more") == ("He has 3 + 4 = 7.", None)


def test_every_released_svamp_completion_parses():
    """All 500 PaLM SVAMP completions of the DSS release go through the parser (a bare-number answer gives no
    label instead of an error); most carry an equation."""
    import json

    texts = json.loads((ROOT / "data/dss/svamp/llm/train_CoT_0.json").read_text())
    labels = [dss_svamp(t)[1] for t in texts]
    assert len(labels) == 500 and sum(lab is not None for lab in labels) > 400


@pytest.mark.parametrize(("parser", "text", "expected"), [
    ("dss_esnli", "A grin means happy.\nAnswer: entailment\n\nPremise: a\nHypothesis: b\nAnswer: neutral",
     ("A grin means happy.", "entailment")),
    ("dss_esnli", "No answer line here.\n\nPremise: a", ("No answer line here.", None)),
    ("dss_esnli", "No answer line here.\n\nPremise: a\nHypothesis: b\nAnswer: neutral",  # invented example's label
     ("No answer line here.", None)),
    ("dss_anli", "A senator is a politician. So the answer is entailment.\n\nPremise: x", ("A senator is a "
                                                                                          "politician.", "entailment")),
    ("dss_anli", "The answer is neutral.\n\nPremise: x", ("The answer is neutral.", None)),
])
def test_nli_parsers(parser, text, expected):
    assert PARSERS.get(parser)(text) == expected


@pytest.mark.parametrize(("folder", "loader", "dataset"), [("esnli", "esnli_dss", "esnli"),
                                                           ("anli1", "anli_dss", "anli")])
def test_nli_release_rates_in_stats(folder, loader, dataset):
    """Fixtures in the DSS layout: 4 rows, 3 parse, 2 agree with gold (the other parses to a wrong label)."""
    root = FIXTURES / "dss" / folder
    df = load_split(dataset, {"loader": loader, "path": str(root)}, "train")
    out, stats = elicit(df, "palm", {"backend": "precomputed", "paths": {dataset: str(root)}, "policy": "drop"},
                        None, dataset, "train", "unused")
    assert stats["parser"] == f"dss_{dataset}"
    assert (stats["parse_rate"], stats["agree_rate"], stats["kept"]) == (0.75, 0.5, 2)
    assert set(out["label"]) <= {"entailment", "neutral"} and out["rationale"].str.len().gt(10).all()
    assert not out["rationale"].str.contains("Premise").any()


def test_parse_generated_completion_first_paragraph():
    answer = load_template(ROOT / "prompts/csqa.yaml").answer_regex()
    text = "The answer is C because plates go there.\n\nQuestion: another one\nAnswer: B"
    assert parse_completion(text, answer) == ("The answer is C because plates go there.", "C")
    assert parse_completion("no label here", answer) == ("no label here", None)
    # a bare letter counts in capitals only: the article "a" names no choice; "(d)" does in either case
    for text, label in (("The answer is a cupboard because", None), ("The answer is e.g. a shelf", None),
                        ("The answer is (d) because", "d"), ("The answer is (D).", "D"), ("The answer is E.", "E"),
                        ("The answer is Cupboard", None), ("The answer is (a cupboard).", None),
                        ("The answer is (e) garage", "e"), ("The answer is B) carpet", "B")):
        assert parse_completion(text, answer)[1] == label, text


def test_agreement_by_task():
    assert agrees("c", {"task": "mcqa", "answer_label": "C"})
    assert not agrees("B", {"task": "mcqa", "answer_label": "C"})
    assert agrees("(84 / 2)", {"task": "math", "answer": 42.0})
    assert not agrees("(84 / 3)", {"task": "math", "answer": 42.0})
    assert not agrees("42", {"task": "math", "answer": 42.0})  # the value without its equation, as dss_svamp drops
    assert not agrees("-( 42 )", {"task": "math", "answer": -42.0})
    assert not agrees(None, {"task": "mcqa", "answer_label": "C"})


def test_precomputed_palm_rates_on_full_train():
    df = load_split("csqa", CQA, "train")
    out, stats = elicit(df, "palm", {**PALM, "policy": "drop"}, None, "csqa", "train", "unused")
    assert stats["examples"] == 9741
    assert 0.74 < stats["agree_rate"] < 0.77  # DSS reports 75% agreement on train
    assert stats["parse_rate"] > 0.97
    assert len(out) == stats["kept"] == stats["agreeing"]
    assert out["agrees"].all() and out["parsed"].all()


def test_precomputed_aligns_subsample_by_id():
    df = load_split("csqa", {**CQA, "subsample": {"train": 20}}, "train", seed=1)
    out, _ = elicit(df, "palm", {**PALM, "policy": "keep"}, None, "csqa", "train", "unused")
    raw = [c for i in range(10) for c in json.loads((ROOT / f"data/dss/cqa/llm/train_CoT_{i}.json").read_text())]
    for row, got in zip(df.itertuples(), out.itertuples()):
        assert got.id == row.id and got.completion == raw[row.source_index]


def test_precomputed_aligns_another_loader_by_id():
    """The original CommonsenseQA files list rows in another order than the DSS release: ids align them."""
    df = load_split("csqa", {"loader": "csqa_jsonl", "path": str(FIXTURES / "csqa_jsonl")}, "train")
    out, _ = elicit(df, "palm", {**PALM, "policy": "keep"}, None, "csqa", "train", "unused")
    raw = [c for i in range(10) for c in json.loads((ROOT / f"data/dss/cqa/llm/train_CoT_{i}.json").read_text())]
    dss_row = {json.loads(line)["id"]: i for i, line in enumerate((ROOT / "data/dss/cqa/cqa_train.json").open())}
    assert [dss_row[i] for i in out["id"]] != list(df["source_index"])  # the orders differ ...
    assert list(out["completion"]) == [raw[dss_row[i]] for i in out["id"]]  # ... and each id gets its own


@pytest.fixture()
def shifted_cqa(tmp_path):
    """A copy of the DSS CommonsenseQA folder whose first train completion was removed (every later one shifts)."""
    root = tmp_path / "cqa"
    shutil.copytree(ROOT / "data/dss/cqa", root)
    first = root / "llm/train_CoT_0.json"
    first.write_text(json.dumps(json.loads(first.read_text())[1:]))
    return root


def test_shifted_completion_file_is_an_error(shifted_cqa):
    df = load_split("csqa", {**CQA, "subsample": {"train": 30}}, "train")
    with pytest.raises(TeacherError, match=r"9740 completions for split 'train', but .*cqa_train.json has 9741 "
                                           r"rows: files do not align"):
        elicit(df, "palm", {**PALM, "paths": {"csqa": str(shifted_cqa)}}, None, "csqa", "train", "unused")


def test_released_rows_must_hold_the_example(tmp_path):
    """SVAMP's release has no ids: rows align by index, and a row holding another problem stops the job."""
    root = tmp_path / "svamp"
    shutil.copytree(ROOT / "data/dss/svamp", root)
    lines = (root / "svamp_train.json").read_text().splitlines()
    (root / "svamp_train.json").write_text("\n".join([lines[1], lines[0], *lines[2:]]) + "\n")  # two rows swapped
    df = load_split("svamp", {"loader": "svamp_dss", "path": str(ROOT / "data/dss/svamp"),
                              "subsample": {"train": 800}}, "train")
    with pytest.raises(TeacherError, match=r"svamp_train.json: line 1 does not hold example 'train-0'.*do not align"):
        elicit(df, "palm", {**PALM, "paths": {"svamp": str(root)}, "policy": "keep"}, None, "svamp", "train",
               "unused")


def test_completion_file_that_is_not_json_names_the_file(tmp_path):
    root = tmp_path / "cqa"
    shutil.copytree(ROOT / "data/dss/cqa", root)
    (root / "llm/test_CoT_1.json").write_text('["a completion", "another')
    df = load_split("csqa", {**CQA, "subsample": {"test": 5}}, "test")
    with pytest.raises(TeacherError, match=r"llm/test_CoT_1.json: not valid JSON \(line 1"):
        elicit(df, "palm", {**PALM, "paths": {"csqa": str(root)}}, None, "csqa", "test", "unused")


def test_precomputed_rejects_unknown_dataset_and_retry():
    df = load_split("csqa", {**CQA, "subsample": {"train": 2}}, "train")
    with pytest.raises(TeacherError, match=r"teachers.palm.paths has: csqa, svamp"):
        elicit(df, "palm", PALM, None, "obqa", "train", "unused")
    with pytest.raises(TeacherError, match="policy retry needs a generating backend"):
        elicit(df, "palm", {**PALM, "policy": "retry", "retries": 1}, None, "csqa", "train", "unused")


def test_unknown_backend_lists_choices():
    with pytest.raises(UnknownNameError, match=r"teachers.t.backend.*precomputed, transformers, vllm"):
        elicit(pd.DataFrame(), "t", {"backend": "openai"}, None, "csqa", "train", "unused")


def _tiny_spec(model_dir, **extra):
    return {"backend": "transformers", "model": {"source": "local", "path": str(model_dir)}, "batch_size": 2,
            "decoding": {"max_new_tokens": 6, "stop": []}, "policy": "keep", **extra}


def test_transformers_cache_reuses_and_extends(tiny_gpt2, tmp_path):
    t = load_template(TEMPLATE)
    spec = _tiny_spec(tiny_gpt2)
    small = load_split("csqa", {**CQA, "subsample": {"train": 4}}, "train")
    first, s1 = elicit(small, "tiny", spec, t, "csqa", "train", tmp_path)
    assert s1["generated"] == 4 and s1["cached"] == 0 and len(first) == 4
    again, s2 = elicit(small, "tiny", spec, t, "csqa", "train", tmp_path)
    assert s2["generated"] == 0 and s2["cached"] == 4
    pd.testing.assert_frame_equal(first, again)
    large = load_split("csqa", {**CQA, "subsample": {"train": 7}}, "train")
    _, s3 = elicit(large, "tiny", spec, t, "csqa", "train", tmp_path)
    assert s3["generated"] == 3 and s3["cached"] == 4


@pytest.mark.parametrize(("change", "generated"), [
    ({"decoding": {"max_new_tokens": 5, "stop": []}}, 4),  # decoding
    ({"dtype": "bfloat16"}, 4),  # the weights' precision changes completions
    ({"engine": {"enforce_eager": True}}, 4),  # an option the cache knows nothing about is keyed by default
    ({"chat": False}, 0),  # the default, spelt out
    ({"batch_size": 3}, 0),  # bookkeeping: cannot change a completion
    ({"min_kept": 0.5, "splits": ["train"], "gpus": 0}, 0),
])
def test_cache_key_is_the_whole_spec_minus_bookkeeping(tiny_gpt2, tmp_path, change, generated):
    t = load_template(TEMPLATE)
    df = load_split("csqa", {**CQA, "subsample": {"train": 4}}, "train")
    elicit(df, "tiny", _tiny_spec(tiny_gpt2), t, "csqa", "train", tmp_path)
    _, stats = elicit(df, "tiny", {**_tiny_spec(tiny_gpt2), **change}, t, "csqa", "train", tmp_path)
    assert stats["generated"] == generated


def test_retry_decoding_keys_only_the_retries(tiny_gpt2, tmp_path):
    t = load_template(TEMPLATE)
    df = load_split("csqa", {**CQA, "subsample": {"train": 3}}, "train")
    spec = _tiny_spec(tiny_gpt2, policy="retry", retries=1, min_kept=0)
    with pytest.raises(TeacherError):  # a random tiny model never commits to an answer: nothing kept
        elicit(df, "tiny", spec, t, "csqa", "train", tmp_path)
    with pytest.raises(TeacherError, match="kept 0 of 3"):
        elicit(df, "tiny", {**spec, "retry_decoding": {"temperature": 1.3}}, t, "csqa", "train", tmp_path)
    cache = CompletionCache(next((tmp_path / "rationales" / "tiny").iterdir()))
    assert len(cache.entries) == 9  # attempt 0 once (3), the retry under two retry decodings (3 + 3)


def test_sampling_is_seeded_per_example(tiny_gpt2, tmp_path):
    """A sampled completion depends on the example, not on which other examples share its batch."""
    t = load_template(TEMPLATE)
    df = load_split("csqa", {**CQA, "subsample": {"train": 4}}, "train")
    spec = _tiny_spec(tiny_gpt2, decoding={"max_new_tokens": 6, "stop": [], "temperature": 1.0})
    four, _ = elicit(df, "tiny", spec, t, "csqa", "train", tmp_path / "a")
    two, _ = elicit(df.iloc[[2, 0]], "tiny", {**spec, "batch_size": 1}, t, "csqa", "train", tmp_path / "b")
    assert dict(zip(two["id"], two["completion"])) == {i: c for i, c in zip(four["id"], four["completion"])
                                                       if i in set(two["id"])}
    assert four["completion"].nunique() > 1


def test_killed_generation_loses_at_most_one_batch(tiny_gpt2, tmp_path):
    t = load_template(TEMPLATE)
    spec = _tiny_spec(tiny_gpt2)
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


def test_too_few_kept_rationales_fail_with_rates_and_examples(tiny_gpt2, tmp_path):
    t = load_template(TEMPLATE)
    df = load_split("csqa", {**CQA, "subsample": {"train": 3}}, "train")
    # a random tiny model never writes "The answer is X": drop keeps nothing, which is an error, not an empty file
    with pytest.raises(TeacherError) as err:
        elicit(df, "tiny", _tiny_spec(tiny_gpt2, policy="drop"), t, "csqa", "train", tmp_path)
    msg = str(err.value)
    assert "kept 0 of 3 rationales (0.0%), below teachers.tiny.min_kept = 20%" in msg
    assert "parse rate 0.0%, agreement rate 0.0%" in msg and msg.count(" | ") == 2  # three failed completions
    with pytest.raises(TeacherError, match="kept 0 of 3"):  # no floor lets an empty file through
        elicit(df, "tiny", _tiny_spec(tiny_gpt2, policy="drop", min_kept=0.0), t, "csqa", "train", tmp_path)


def test_floor_applies_to_released_outputs():
    """The PaLM test split keeps 78%; a floor of 90% stops the job and names the rates."""
    df = load_split("csqa", {**CQA, "subsample": {"test": 100}}, "test")
    with pytest.raises(TeacherError, match=r"kept \d+ of 100 rationales .*\.min_kept = 90%: parse rate 9\d\.\d%, "
                                           r"agreement rate [78]\d\.\d%; "):
        elicit(df, "palm", {**PALM, "min_kept": 0.9}, None, "csqa", "test", "unused")


def test_vllm_backend_without_vllm_says_how_to_install(tiny_gpt2):
    try:
        import vllm  # noqa: F401
        pytest.skip("vllm is installed; tests/test_vllm.py covers it")
    except ImportError:
        pass
    t = load_template(TEMPLATE)
    df = load_split("csqa", {**CQA, "subsample": {"train": 1}}, "train")
    spec = {**_tiny_spec(tiny_gpt2), "backend": "vllm"}
    with pytest.raises(TeacherError, match="gpu extra"):
        elicit(df, "v", spec, t, "csqa", "train", "unused")


def test_sampled_completions_are_cached_under_their_sampler():
    """Completions sampled per example by `seeded_sampler` never meet cached ones from another sampler; greedy
    completions keep their key."""
    from cotdistill.teachers import Backend, TransformersBackend

    greedy = {"temperature": 0.0, "top_p": 1.0, "max_new_tokens": 8, "seed": 0}
    sampled = {**greedy, "temperature": 0.7}
    assert TransformersBackend.decoding_key(None, greedy) == greedy == Backend.decoding_key(None, greedy)
    assert TransformersBackend.decoding_key(None, sampled) != Backend.decoding_key(None, sampled) == sampled
