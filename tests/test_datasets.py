import json

import pandas as pd
import pytest

from cotdistill.datasets import COMMON_COLUMNS, DatasetError, eval_equation, load_split, subsample
from cotdistill.registry import UnknownNameError

from .conftest import FIXTURES, ROOT


def test_csqa_dss_real_release():
    df = load_split("csqa", {"loader": "csqa_dss", "path": str(ROOT / "data/dss/cqa")}, "test")
    assert len(df) == 1221
    row = df.iloc[0]
    assert row["task"] == "mcqa"
    assert [c["label"] for c in row["choices"]] == list("ABCDE")
    assert row["answer_text"] == next(c["text"] for c in row["choices"] if c["label"] == row["answer_label"])
    assert set(COMMON_COLUMNS) <= set(df.columns)
    assert "abstractive_explanation" in json.loads(row["source_fields"])


def test_csqa_jsonl_original_release():
    spec = {"loader": "csqa_jsonl", "path": str(FIXTURES / "csqa_jsonl")}
    test = load_split("csqa", spec, "test")
    assert test.iloc[0]["id"] == "1afa02df02c908a558b4036e80242fac"
    assert test.iloc[0]["answer_label"] == "A" and test.iloc[0]["answer_text"] == "bank"
    assert json.loads(test.iloc[0]["source_fields"])["question_concept"] == "revolving door"
    assert len(load_split("csqa", spec, "train")) == 6


@pytest.mark.parametrize(
    ("loader", "folder", "split", "expect"),
    [
        ("csqa_hub", "csqa_hub", "test", {"answer_label": "A", "answer_text": "bank"}),
        ("openbookqa_hub", "openbookqa", "train",
         {"answer_label": "D", "question": "The sun is responsible for"}),
        ("quarel_hub", "quarel", "train",
         {"answer_label": "B", "answer_text": "ice",
          "question": "Mike was snowboarding on the snow and hit a piece of ice. He went much faster on the ice "
                      "because _____ is smoother."}),
        ("esnli_hub", "esnli", "train", {"answer_label": "neutral", "id": "train-0"}),
        ("anli_hub", "anli", "train", {"answer_label": "entailment"}),
        ("svamp_hub", "svamp_hub", "train", {"equation": "( 290.0 / 2.0 )", "answer": 145.0}),
    ],
)
def test_hub_loaders_read_local_copies_in_hub_schema(loader, folder, split, expect):
    df = load_split("d", {"loader": loader, "path": str(FIXTURES / folder)}, split)
    first = df.iloc[0].to_dict()
    for key, value in expect.items():
        assert first[key] == value, key


def test_quarel_choices_split_from_question():
    df = load_split("q", {"loader": "quarel_hub", "path": str(FIXTURES / "quarel")}, "train")
    assert [c["text"] for c in df.iloc[1]["choices"]] == ["thread", "branch"]


def test_a_local_hub_folder_reads_only_its_splits_files_and_refuses_a_bad_answer(tmp_path):
    """A stray ``train.jsonl.bak`` beside ``train.jsonl`` is not read too (its rows would come in twice under new
    row ids); a QuaRel answer_index of -1 would have indexed "AB" from the end and read as B."""
    lines = (FIXTURES / "quarel/train.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "train.jsonl").write_text("".join(lines))
    (tmp_path / "train.jsonl.bak").write_text("".join(lines))
    assert len(load_split("q", {"loader": "quarel_hub", "path": str(tmp_path)}, "train")) == len(lines)
    shards = tmp_path / "shards"  # as the hub's files are named, older `datasets` versions adding a hash
    shards.mkdir()
    pd.read_json(tmp_path / "train.jsonl", lines=True).to_parquet(shards / "train-00000-of-00001-a09b74b3ef9c3b56"
                                                                           ".parquet")
    assert len(load_split("q", {"loader": "quarel_hub", "path": str(shards)}, "train")) == len(lines)
    bad = json.loads(lines[0]) | {"answer_index": -1}
    (tmp_path / "train.jsonl").write_text(json.dumps(bad) + "\n" + "".join(lines[1:]))
    with pytest.raises(DatasetError, match=r"QuaRel_V1_Fr_0223: answer_index -1, expected 0 \(A\) or 1 \(B\)"):
        load_split("q", {"loader": "quarel_hub", "path": str(tmp_path)}, "train")


def test_esnli_drops_unlabelled_pairs():
    df = load_split("e", {"loader": "esnli_hub", "path": str(FIXTURES / "esnli")}, "train")
    assert list(df["answer_label"]) == ["neutral", "contradiction", "entailment"]


def test_svamp_dss_splits_body_and_question():
    df = load_split("s", {"loader": "svamp_dss", "path": str(ROOT / "data/dss/svamp")}, "train")
    assert len(df) == 800
    row = df.iloc[0]
    assert row["question"] == "How many points did he score per round?"
    assert row["answer"] == 42.0 and row["answer_label"] == "( 84.0 / 2.0 )"


def test_hub_unreachable_names_local_option():
    with pytest.raises(DatasetError, match=r"datasets\.quarel\.path"):
        load_split("quarel", {"loader": "quarel_hub"}, "train")


def test_unknown_loader_lists_choices():
    with pytest.raises(UnknownNameError, match=r"datasets\.x\.loader.*csqa_dss"):
        load_split("x", {"loader": "nope"}, "train")


def test_unknown_split_is_reported():
    with pytest.raises(DatasetError, match="split 'validation'"):
        load_split("csqa", {"loader": "csqa_dss", "path": str(ROOT / "data/dss/cqa")}, "validation")


def _write(tmp_path, rows):
    with open(tmp_path / "train_rand_split.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return {"loader": "csqa_jsonl", "path": str(tmp_path)}


def _row(rid, answer="A"):
    return {"id": rid, "answerKey": answer, "question": {"stem": "q?", "choices": [
        {"label": "A", "text": "a"}, {"label": "B", "text": "b"}]}}


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([_row("r1"), _row("r1")], r"train_rand_split.jsonl: duplicate row id 'r1'"),
        ([_row("r1"), _row("r2", answer=None)], r"train_rand_split.jsonl: row id 'r2': missing answer"),
        ([_row("r1", answer="E")], r"train_rand_split.jsonl: row id 'r1': answer 'E' is not among"),
    ],
)
def test_bad_rows_name_file_and_row(tmp_path, rows, message):
    with pytest.raises(DatasetError, match=message):
        load_split("csqa", _write(tmp_path, rows), "train")


def test_empty_file_is_named(tmp_path):
    (tmp_path / "cqa_train.json").write_text("")
    with pytest.raises(DatasetError, match=r"cqa_train.json: file is empty; expected JSON lines"):
        load_split("csqa", {"loader": "csqa_dss", "path": str(tmp_path)}, "train")


def test_truncated_line_names_file_and_line(tmp_path):
    lines = (ROOT / "data/dss/cqa/cqa_train.json").read_text().splitlines()[:5]
    lines[2] = lines[2][: len(lines[2]) // 2]  # a line cut off mid-way, as by an interrupted copy
    (tmp_path / "cqa_train.json").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"cqa_train.json: line 3: not valid JSON .*truncated"):
        load_split("csqa", {"loader": "csqa_dss", "path": str(tmp_path)}, "train")


@pytest.mark.parametrize(("field", "value", "message"), [
    ("question", None, r"line 2: field 'question' is None; expected non-empty text"),
    ("question", "  ", r"line 2: field 'question' is '  '; expected non-empty text"),
    ("id", None, r"line 2: field 'id' is None; expected an id"),
    ("choices", None, r"line 2: object of type 'NoneType' has no len\(\)"),
])
def test_malformed_field_names_file_and_line(tmp_path, field, value, message):
    rows = [json.loads(line) for line in (ROOT / "data/dss/cqa/cqa_train.json").read_text().splitlines()[:3]]
    rows[1][field] = value
    (tmp_path / "cqa_train.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DatasetError, match=message):
        load_split("csqa", {"loader": "csqa_dss", "path": str(tmp_path)}, "train")


def test_missing_field_lists_the_fields_present(tmp_path):
    rows = [{"id": "a", "question": {"stem": "q?", "choices": [{"label": "A", "text": "x"}]}}]
    (tmp_path / "train_rand_split.jsonl").write_text(json.dumps({**rows[0], "question": {"choices": []}}) + "\n")
    with pytest.raises(DatasetError, match=r"train_rand_split.jsonl: line 1: missing field 'stem'"):
        load_split("csqa", {"loader": "csqa_jsonl", "path": str(tmp_path)}, "train")


def test_one_local_file_for_every_split_is_caught_as_overlap():
    """A hub loader given a single file serves it for every split: train and test would be the same rows."""
    spec = {"loader": "csqa_hub", "path": str(FIXTURES / "csqa_hub/validation.jsonl")}
    with pytest.raises(DatasetError, match=r"datasets.csqa: splits train and test share \d+ of \d+ items .*"
                                           r"single file.*set datasets.csqa.overlap to drop"):
        load_split("csqa", spec, "test", splits=["train", "test"])


def _split_files(tmp_path, shared: int):
    """csqa_jsonl files whose test split repeats `shared` train questions under new ids."""
    train = [json.loads(line) for line in (FIXTURES / "csqa_jsonl/train_rand_split.jsonl").open()]
    test = [json.loads(line) for line in (FIXTURES / "csqa_jsonl/dev_rand_split.jsonl").open()]
    copies = [{**r, "id": f"copy-{i}", "question": {**r["question"], "stem": r["question"]["stem"].upper() + " "}}
              for i, r in enumerate(train[:shared])]  # same question up to case and spacing: the same item
    for name, rows in (("train_rand_split.jsonl", train), ("dev_rand_split.jsonl", test + copies)):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"loader": "csqa_jsonl", "path": str(tmp_path)}


def test_overlap_by_normalised_input_error_drop_allow(tmp_path, caplog):
    spec = _split_files(tmp_path, shared=2)
    with pytest.raises(DatasetError, match=r"splits train and test share 2 of 6 items.*'075e483d21c29a511267ef62"):
        load_split("csqa", spec, "train", splits=["train", "test"])
    train = load_split("csqa", {**spec, "overlap": "drop"}, "train", splits=["train", "test"])
    test = load_split("csqa", {**spec, "overlap": "drop"}, "test", splits=["train", "test"])
    assert len(train) == 4 and len(test) == 8  # dropped from train; test (6 + 2 copies) is never changed
    assert not set(train["id"]) & {"075e483d21c29a511267ef62bedc0461", "61fe6e879ff18686d7552425a36344c8"}
    assert len(load_split("csqa", {**spec, "overlap": "allow"}, "train", splits=["train", "test"])) == 6
    assert "share 2 of 6 items" in caplog.text


def test_dss_esnli_and_anli_loaders():
    esnli = load_split("esnli", {"loader": "esnli_dss", "path": str(FIXTURES / "dss/esnli")}, "train")
    assert list(esnli["answer_label"]) == ["neutral", "contradiction", "entailment", "entailment"]
    assert list(esnli["id"][:2]) == ["train-0", "train-1"]
    assert json.loads(esnli.iloc[0]["source_fields"])["explanation_1"].startswith("the person is not")
    both = load_split("esnli", {"loader": "esnli_dss", "path": str(FIXTURES / "dss/esnli")}, "test",
                      splits=["train", "test"])
    assert list(both["id"]) == ["test-0", "test-1"]
    anli = load_split("anli", {"loader": "anli_dss", "path": str(FIXTURES / "dss/anli1")}, "train")
    assert anli.iloc[0]["id"] == "fe0eb8f3-c2ce-4f6e-9d2e-4e0a6a3b1f0a"
    assert list(anli["answer_label"]) == ["entailment", "neutral", "entailment", "contradiction"]
    assert set(anli.columns) >= {"premise", "hypothesis", "choices"}


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DatasetError, match=r"cqa_train.json: file does not exist"):
        load_split("csqa", {"loader": "csqa_dss", "path": str(tmp_path)}, "train")


def test_subsample_is_seeded_ordered_and_nested():
    df = pd.DataFrame({"id": [f"r{i}" for i in range(100)]})
    small, large = subsample(df, 10, seed=3), subsample(df, 30, seed=3)
    assert list(small["id"]) == list(subsample(df, 10, seed=3)["id"])
    assert list(small["id"]) != list(subsample(df, 10, seed=4)["id"])
    assert set(small["id"]) < set(large["id"])
    assert list(large["id"]) == sorted(large["id"], key=lambda s: int(s[1:]))


def test_eval_equation_rejects_code():
    assert eval_equation("( ( 17.0 + 15.0 ) + 2.0 )") == 34.0
    with pytest.raises(ValueError, match="not an arithmetic equation"):
        eval_equation("__import__('os')")
    with pytest.raises(ValueError, match="not an arithmetic equation"):  # a degenerate student's long number
        eval_equation("9" * 400)


def test_an_equation_worth_zero_is_the_class_zero():
    from cotdistill.evaluation import equation_class

    assert equation_class("0.3 - 0.1 - 0.2") == equation_class("0.1 + 0.2 - 0.3") == "0"  # not "-0"
    assert equation_class("9" * 400) == "<invalid>"


def test_line_separator_characters_inside_json_strings(tmp_path):
    rows = [json.loads(line) for line in (ROOT / "data/dss/cqa/cqa_train.json").read_text().splitlines()[:3]]
    rows[1]["question"] = "Where\u2028would you\x85 go?"
    (tmp_path / "cqa_train.json").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    df = load_split("csqa", {"loader": "csqa_dss", "path": str(tmp_path)}, "train")
    assert len(df) == 3 and "\u2028" in df.iloc[1]["question"]


def test_a_split_emptied_by_drop_is_an_error():
    """csqa_hub serves the hub's validation split as both validation and test."""
    spec = {"loader": "csqa_hub", "path": str(FIXTURES / "csqa_hub"), "overlap": "drop"}
    with pytest.raises(DatasetError, match=r"split 'validation' has no rows left .*overlap: drop"):
        load_split("csqa", spec, "validation", splits=["validation", "test"])
    assert len(load_split("csqa", spec, "test", splits=["validation", "test"])) > 0
