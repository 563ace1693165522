import pandas as pd
import pytest

from cotdistill.ablations import ABLATIONS, MARK, label_first
from cotdistill.datasets import load_split
from cotdistill.registry import UnknownNameError
from cotdistill.targets import build_targets, format_source, label_string

from .conftest import ROOT

ROW = {"id": "q1", "task": "mcqa", "question": "Where do you keep milk?", "answer_label": "B",
       "answer_text": "fridge", "choices": [{"label": "A", "text": "oven"}, {"label": "B", "text": "fridge"}]}
RAT = pd.DataFrame({"id": ["q1"], "rationale": ["Milk must stay cold."]})


def _target(kind: str, label_format: str = "letter") -> pd.Series:
    return build_targets(pd.DataFrame([ROW]), RAT, kind, {"kind": kind}, label_format, seed=0).iloc[0]


def test_paper_target_formats_exactly():
    assert _target("none")["target"] == "[FIN_LABEL] B [FIN_LABEL]"
    assert _target("cot_before")["target"] == "Milk must stay cold. [FIN_LABEL] B [FIN_LABEL]"
    assert _target("cot_after")["target"] == "[FIN_LABEL] B [FIN_LABEL] Milk must stay cold."
    assert _target("cot_after", "text")["target"] == "[FIN_LABEL] fridge [FIN_LABEL] Milk must stay cold."


@pytest.mark.parametrize("kind", ["none", "cot_before", "cot_after"])
def test_label_span_points_at_the_label(kind):
    for fmt in ("letter", "text"):
        t = _target(kind, fmt)
        assert t["target"][t["label_start"]:t["label_end"]] == t["label"] == label_string(ROW, fmt)


def test_source_prompt():
    assert format_source(ROW) == "Question: Where do you keep milk?\nChoices: A: oven; B: fridge\nAnswer:"


def test_every_ablation_uses_the_same_rows():
    data = load_split("csqa", {"loader": "csqa_dss", "path": str(ROOT / "data/dss/cqa"),
                               "subsample": {"train": 30}}, "train")
    rat = pd.DataFrame({"id": data["id"][:20], "rationale": ["r"] * 20})
    ids = [list(build_targets(data, rat, k, {"kind": k}, "letter", 0)["id"]) for k in ("none", "cot_after")]
    assert ids[0] == ids[1] and len(ids[0]) == 20


def test_examples_without_a_rationale_are_left_out_of_every_ablation():
    """A teacher's unparsed output kept by ``policy: keep`` has no rationale: no ablation trains on it (a 'nan' or
    blank rationale would be a silently wrong target), so all of them keep the same rows."""
    rows = pd.DataFrame([ROW, {**ROW, "id": "q2"}, {**ROW, "id": "q3"}])
    rat = pd.DataFrame({"id": ["q1", "q2", "q3"], "rationale": ["Milk must stay cold.", None, "  "]})
    for kind in ("none", "cot_after", "shuffle", "multitask", "random_words"):
        out = build_targets(rows, rat, kind, {"kind": kind}, "letter", 0)
        assert list(out["id"]) == ["q1"] and "nan" not in out["target"].iloc[0].split()
    words = out["target"].iloc[0].removeprefix("[FIN_LABEL] B [FIN_LABEL] ").split()  # random_words, the last kind
    assert len(words) == 4 and set(words) <= {"Milk", "must", "stay", "cold."}  # no blank row in the vocabulary


def test_repeated_ids_are_refused(tmp_path):
    from cotdistill import io
    from cotdistill.targets import build_target_file

    data = load_split("csqa", {"loader": "csqa_dss", "path": str(ROOT / "data/dss/cqa"), "subsample": {"train": 3}},
                      "train")
    io.write_parquet(data, tmp_path / "data.parquet")
    ids = list(data["id"])
    io.write_parquet(pd.DataFrame({"id": [ids[0], ids[0], ids[1]], "rationale": ["a", "b", "c"]}),
                     tmp_path / "rat.parquet")
    with pytest.raises(ValueError, match=r"rat.parquet: 1 ids repeat .*one row per example"):
        build_target_file(str(tmp_path / "data.parquet"), str(tmp_path / "rat.parquet"), "c", {"kind": "cot_after"},
                          "letter", 0, str(tmp_path / "out.parquet"))


def test_a_leading_label_span_is_the_first_even_if_the_rationale_repeats_it():
    rat = pd.DataFrame({"id": ["q1"], "rationale": ["So the answer is [FIN_LABEL] B [FIN_LABEL] here."]})
    t = build_targets(pd.DataFrame([ROW]), rat, "c", {"kind": "cot_after"}, "letter", 0).iloc[0]
    assert t["label_start"] == len(MARK) + 1 and t["target"][t["label_start"]:t["label_end"]] == "B"


def test_unknown_ablation_kind():
    with pytest.raises(UnknownNameError, match=r"ablations.x.kind.*cot_after, cot_before, filler, human_words, "
                                               r"ig_topk, ig_topk_shuffled, mask, multitask, none, random_words, "
                                               r"shuffle, word_neighbours"):
        build_targets(pd.DataFrame([ROW]), RAT, "x", {"kind": "shuffle_everything"}, "letter", 0)


def test_registry_flags():
    assert label_first({"kind": "cot_after"}, "a") and not label_first({"kind": "cot_before"}, "b")
    assert not label_first({"kind": "mask", "p": 0.5, "position": "before"}, "m")
    assert ABLATIONS.get("shuffle").doc.startswith("Rationale words shuffled")
    assert MARK == "[FIN_LABEL]"


def test_shuffle_and_mask_are_seeded_perturbations():
    rat = pd.DataFrame({"id": ["q1"], "rationale": ["one two three four five six seven eight"]})
    data = pd.DataFrame([ROW])
    s = build_targets(data, rat, "shuf", {"kind": "shuffle", "position": "before"}, "letter", 0).iloc[0]
    words = s["target"].split(" [FIN_LABEL]")[0].split()
    assert sorted(words) == sorted(rat["rationale"][0].split()) and s["target"].endswith("[FIN_LABEL] B [FIN_LABEL]")
    again = build_targets(data, rat, "shuf", {"kind": "shuffle", "position": "before"}, "letter", 0).iloc[0]
    assert again["target"] == s["target"]
    m = build_targets(data, rat, "m", {"kind": "mask", "p": 1.0}, "letter", 0).iloc[0]
    assert m["target"] == "[FIN_LABEL] B [FIN_LABEL] " + " ".join(["[MASK]"] * 8)
    none_masked = build_targets(data, rat, "m", {"kind": "mask", "p": 0.0}, "letter", 0).iloc[0]
    assert none_masked["target"].endswith(rat["rationale"][0])


def _perturbed(spec: dict, data: pd.DataFrame, rat: pd.DataFrame, name: str = "p", seed: int = 0) -> dict:
    out = build_targets(data, rat, name, spec, "letter", seed)
    return dict(zip(out["id"], out["target"]))


@pytest.mark.parametrize("spec", [{"kind": "shuffle", "position": "before"}, {"kind": "mask", "p": 0.5}])
def test_perturbations_are_seeded_per_example(spec):
    """An example's perturbation depends on (seed, kind and parameters, id) only."""
    data = load_split("csqa", {"loader": "csqa_dss", "path": str(ROOT / "data/dss/cqa"),
                               "subsample": {"train": 40}}, "train")
    rat = pd.DataFrame({"id": data["id"], "rationale": [" ".join(f"w{j}x{i}" for j in range(12))
                                                        for i in range(len(data))]})
    full = _perturbed(spec, data, rat)
    assert _perturbed(spec, data.iloc[::-1], rat) == full  # rows reordered
    ids = list(data["id"][5:25])
    assert _perturbed(spec, data.iloc[5:25], rat) == {i: full[i] for i in ids}  # rows removed / smaller subsample
    assert _perturbed(spec, data, rat, name="renamed") == full  # the ablation renamed
    assert _perturbed(spec, data, rat, seed=1) != full  # another global seed
    originals = {i: r for i, r in zip(rat["id"], rat["rationale"])}
    changed = [i for i in full if originals[i] not in full[i]]
    assert len(changed) > 30  # the perturbation does something to almost every example


def test_targets_carry_the_task():
    assert _target("cot_after")["task"] == "mcqa"


def test_multitask_rows_carry_both_tasks_with_their_prefixes():
    spec = {"kind": "multitask", "aux": "mi", "predict_prefix": "predict: ", "explain_prefix": "explain: "}
    out = build_targets(pd.DataFrame([ROW]), RAT, "dss_mi", spec, "letter", seed=0)
    row = out.iloc[0]
    assert list(out.columns)[-2:] == ["explain_source", "explanation"]
    assert row["target"] == f"{MARK} B {MARK}" and row["target"][row["label_start"]:row["label_end"]] == "B"
    assert row["source"] == "predict: " + format_source(ROW)
    assert row["explain_source"] == "explain: " + format_source(ROW) and row["explanation"] == "Milk must stay cold."
    assert "explanation" not in _target("cot_after").index
    tagged = {"kind": "multitask", "predict_prefix": "", "explain_prefix": "", "predict_suffix": " P",
              "explain_suffix": " E"}
    row = build_targets(pd.DataFrame([ROW]), RAT, "dss", tagged, "letter", seed=0).iloc[0]
    assert (row["source"], row["explain_source"]) == (format_source(ROW) + " P", format_source(ROW) + " E")


def test_training_fractions_keep_nested_seeded_subsets():
    rows = [{**ROW, "id": f"q{i}"} for i in range(200)]
    rat = pd.DataFrame({"id": [r["id"] for r in rows], "rationale": "Milk must stay cold."})
    kept = {f: set(build_targets(pd.DataFrame(rows), rat, "d", {"kind": "multitask", "train_fraction": f}, "letter",
                                 seed=0)["id"]) for f in (0.25, 0.5, 1.0)}
    assert kept[0.25] < kept[0.5] < kept[1.0] and len(kept[1.0]) == 200
    assert 30 <= len(kept[0.25]) <= 70 and 70 <= len(kept[0.5]) <= 130
    reversed_rows = build_targets(pd.DataFrame(rows[::-1]), rat, "d", {"kind": "multitask", "train_fraction": 0.25},
                                  "letter", seed=0)
    assert set(reversed_rows["id"]) == kept[0.25]  # per example, not per stream


def test_teacher_labels_replace_gold_in_training_targets(tmp_path):
    from cotdistill.io import read_parquet, write_parquet
    from cotdistill.targets import build_target_file

    rows = [{**ROW, "id": f"q{i}", "source_index": i, "source_fields": "{}"} for i in range(3)]
    rat = pd.DataFrame({"id": ["q0", "q1", "q2"], "rationale": ["Cold.", "Hot.", "Odd."],
                        "label": ["B", "a", None]})  # agrees, disagrees, unparsed
    write_parquet(pd.DataFrame(rows), tmp_path / "d.parquet")
    write_parquet(rat, tmp_path / "r.parquet")
    for labels, fmt in (("teacher", "text"), ("gold", "text")):
        build_target_file(str(tmp_path / "d.parquet"), str(tmp_path / "r.parquet"), "cot_after",
                          {"kind": "cot_after"}, fmt, 0, str(tmp_path / f"{labels}.parquet"), labels=labels)
    teacher = read_parquet(str(tmp_path / "teacher.parquet")).set_index("id")
    gold = read_parquet(str(tmp_path / "gold.parquet")).set_index("id")
    assert list(teacher.index) == ["q0", "q1"] and list(gold.index) == ["q0", "q1", "q2"]
    assert teacher.loc["q0", "label"] == "fridge" and teacher.loc["q1", "label"] == "oven"
    assert teacher.loc["q1", "target"] == f"{MARK} oven {MARK} Hot." and gold.loc["q1", "label"] == "fridge"


def test_a_teachers_bare_number_is_no_svamp_label():
    """SVAMP labels are equations: a generating teacher's "The answer is 42" gives the value without the equation
    a student is trained to write, so it relabels nothing (dss_svamp drops such outputs alike)."""
    from cotdistill.targets import with_teacher_labels

    data = pd.DataFrame({"id": ["m0", "m1", "m2"], "task": "math", "answer_label": "( 84.0 / 2.0 )", "answer": 42.0})
    rat = pd.DataFrame({"id": ["m0", "m1", "m2"], "label": ["( 80 + 4 ) / 2", "42", None]})
    out = with_teacher_labels(data, rat)
    assert list(out["id"]) == ["m0"] and out["answer_label"][0] == "( 80 + 4 ) / 2"
