"""The Mysteries paper's perturbations: exact targets on a fixed example, per-example seeding, sweeps, filler
tokens per tokenizer, attribution on a tiny model, word vectors from the GloVe package layout."""

import json

import numpy as np
import pandas as pd
import pytest

from cotdistill import ablations, evaluation
from cotdistill import config as cfg
from cotdistill.ablations import Resources, fill, student_filler
from cotdistill.annotations import overlap, read_human_words
from cotdistill.targets import build_targets
from cotdistill.training import encode
from cotdistill.wordvectors import LOADERS, build, load

from .conftest import FIXTURES, ROOT, gpt2_tokenizer

ROW = {"id": "q1", "task": "mcqa", "question": "Where do you keep milk?", "answer_label": "B",
       "answer_text": "the fridge", "choices": [{"label": "A", "text": "oven"}, {"label": "B", "text": "the fridge"}]}
RATIONALE = "Milk must stay cold, so it goes in the fridge."
RAT = pd.DataFrame({"id": ["q1"], "rationale": [RATIONALE]})
LABEL = "[FIN_LABEL] B [FIN_LABEL]"


def _target(spec: dict, res: Resources | None = None, rat: pd.DataFrame | None = RAT, row: dict = ROW) -> str:
    return build_targets(pd.DataFrame([row]), rat, "x", spec, "letter", 0, res).iloc[0]["target"]


def test_mask_by_word_and_by_token():
    assert _target({"kind": "mask", "p": 1.0}) == f"{LABEL} " + " ".join(["[MASK]"] * 10)
    assert _target({"kind": "mask", "p": 1.0, "unit": "token", "position": "before"}) == (
        "[MASK] [MASK] [MASK] [MASK][MASK] [MASK] [MASK] [MASK] [MASK] [MASK] [MASK][MASK] " + LABEL)
    assert _target({"kind": "mask", "p": 1.0, "token": "_"}) == f"{LABEL} " + " ".join(["_"] * 10)
    assert _target({"kind": "mask", "p": 0.0, "unit": "token"}) == f"{LABEL} {RATIONALE}"
    half = _target({"kind": "mask", "p": 0.5, "unit": "token"}).removeprefix(LABEL + " ")
    kept = [w for w in half.replace("[MASK]", " ").split() if w]
    assert 0 < half.count("[MASK]") < 12 and all(w.strip(",.") in RATIONALE for w in kept)


def test_filler_placeholder_and_each_students_token():
    target = _target({"kind": "filler", "k": 3}, rat=None)
    assert target == f"<unk><unk><unk> {LABEL}"
    assert _target({"kind": "filler", "k": 0}, rat=None) == LABEL
    gpt2 = gpt2_tokenizer()  # its unk is its EOS: the fallback, one token per filler
    assert student_filler(gpt2, ".") == (".", False)
    filled = fill(target, gpt2, ".")
    assert filled == f". . . {LABEL}"
    assert gpt2(" " + filled.split(" [FIN")[0])["input_ids"] == [gpt2.convert_tokens_to_ids("Ġ.")] * 3
    own = gpt2_tokenizer()
    own.add_special_tokens({"unk_token": "<unk>"})  # a distinct unk (as Gemma's): used back to back
    assert student_filler(own, ".") == ("<unk>", True)
    # as training reads them: exactly k filler tokens, then the label (no space token before a special filler)
    for tok, filler_id in ((own, own.unk_token_id), (gpt2, gpt2.convert_tokens_to_ids("Ġ."))):
        filled = fill(target, tok, ".")
        enc, _ = encode(tok, ["Q:"], [filled], [len(filled)], 64, 64)
        labels = [t for t in enc["labels"][0] if t != -100]
        assert labels[:3] == [filler_id] * 3 and tok.decode(labels[3:]).startswith(" [FIN_LABEL] B")
        # and calibration scores the candidates in the context training gave (not after a space token)
        assert evaluation.candidates_after_text(tok, ROW, "letter", labels) is not None


def test_filler_targets_in_training_keep_label_spans():
    from cotdistill.training import with_filler

    df = build_targets(pd.DataFrame([ROW]), None, "f", {"kind": "filler", "k": 4}, "text", 0)
    out, token = with_filler(df, gpt2_tokenizer(), "~")
    r = out.iloc[0]
    assert token == "~" and r["target"] == "~ ~ ~ ~ [FIN_LABEL] the fridge [FIN_LABEL]"
    assert r["target"][r["label_start"]:r["label_end"]] == "the fridge"


def test_random_words_from_the_rationale_vocabulary_seeded_per_example():
    rows = pd.DataFrame([ROW, {**ROW, "id": "q2"}])
    rat = pd.DataFrame({"id": ["q1", "q2"], "rationale": [RATIONALE, "Ovens are hot places for baking bread"]})
    out = build_targets(rows, rat, "r", {"kind": "random_words"}, "letter", 0)
    vocab = {w for r in rat["rationale"] for w in r.split()}
    for target, r in zip(out["target"], rat["rationale"], strict=True):
        words = target.removeprefix(LABEL + " ").split()
        assert len(words) == len(r.split()) and set(words) <= vocab
    reordered = build_targets(rows[::-1], rat[::-1], "renamed", {"kind": "random_words"}, "letter", 0)
    assert dict(zip(out["id"], out["target"])) == dict(zip(reordered["id"], reordered["target"]))
    res = Resources()  # the vocabulary is the whole rationales file's: q1's words do not move without q2's row
    alone = build_targets(rows[:1], rat, "r", {"kind": "random_words"}, "letter", 0, res)
    assert alone["target"].iloc[0] == out["target"].iloc[0] and res.vocabulary is None  # nor is res filled in


def test_human_words_from_cose_and_plain_files(tmp_path):
    cose = read_human_words(str(ROOT / "data/cos-e"))
    assert len(cose) == 9741 + 1221
    assert cose["8ae24d3ff199077a59e0d970feb665b7"] == ["chauffeur"]
    plain = tmp_path / "words.jsonl"
    plain.write_text(json.dumps({"id": "q1", "words": ["milk", "cold", "fridge"]}) + "\n")
    spec = {"kind": "human_words", "path": str(plain), "max_words": 2}
    res = Resources(human_words=read_human_words(str(plain)))
    assert _target(spec, res, rat=None) == f"{LABEL} milk cold"
    with pytest.raises(ValueError, match="no human words for row id 'q2'"):
        _target(spec, res, rat=None, row={**ROW, "id": "q2"})
    (tmp_path / "bad.jsonl").write_text('{"id": "q1", "words": ["a"]}\n{"id": "q3"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl: line 2: expected 'words'"):
        read_human_words(str(tmp_path / "bad.jsonl"))


def test_overlap_counts_shared_word_types():
    o = overlap({"a": ["Milk", "cold", "box"], "b": ["x"]}, {"a": ["milk", "cold"], "c": ["y"]})
    assert o == {"examples": 1, "precision": 2 / 3, "recall": 1.0, "shared_words": 2}
    # an IG token that is only punctuation is no word; punctuation around a word does not keep it from matching
    o = overlap({"a": ["milk", "cold"]}, {"a": ["milk", ".", "cold,"]})
    assert (o["precision"], o["recall"]) == (1.0, 1.0)


def _vectors():
    from gensim.models import KeyedVectors

    kv = KeyedVectors(vector_size=2)
    kv.add_vectors(["fridge", "freezer", "cold", "oven", "car"],
                   np.array([[1, 0], [0.9, 0.1], [0.7, 0.3], [0, 1], [-1, 0]], dtype=np.float32))
    return kv


def test_word_neighbours_of_the_longest_answer_word():
    res = Resources(vectors=_vectors())
    assert _target({"kind": "word_neighbours", "vectors": "v", "k": 2}, res, rat=None) == f"{LABEL} freezer cold"
    assert ablations.neighbours(res.vectors, "Oven.", 1) == ["cold"]
    assert ablations.neighbours(res.vectors, "xyzzy", 3) == []


def test_glove_package_layout_loads_into_keyed_vectors(tmp_path):
    folder = FIXTURES / "kumo"
    kv = LOADERS.get("kumo")({"source": "kumo", "path": str(folder)})
    matrix = np.load(next(folder.glob("*.npy")))
    words = pd.read_parquet(next(folder.glob("*.parquet")))["index"].tolist()
    assert len(kv.index_to_key) == len(words) == matrix.shape[0] and kv.vector_size == 50
    assert np.array_equal(kv[words[7]], matrix[7])
    assert kv.most_similar("the", topn=1)[0][0] != "the"
    build({"source": "kumo", "path": str(folder)}, str(tmp_path / "saved"))
    assert load(str(tmp_path / "saved")).index_to_key == words
    (tmp_path / "broken").mkdir()
    np.save(tmp_path / "broken/m.npy", matrix[:3])
    pd.DataFrame({"index": words[:2]}).to_parquet(tmp_path / "broken/x_index.parquet")
    with pytest.raises(ValueError, match="2 words but .* has 3 rows: files do not align"):
        LOADERS.get("kumo")({"source": "kumo", "path": str(tmp_path / "broken")})


def test_word2vec_binary_files_load_gzipped_too(tmp_path):
    """word2vec-google-news-300 ships as GoogleNews-vectors-negative300.bin.gz."""
    for name in ("v.bin", "v.bin.gz"):
        _vectors().save_word2vec_format(str(tmp_path / name), binary=True)
        kv = LOADERS.get("word2vec")({"source": "word2vec", "path": str(tmp_path / name)})
        assert kv.index_to_key == _vectors().index_to_key


def test_ig_topk_keeps_the_top_tokens_in_order():
    scored = [(" Milk", 0.9), (" must", -0.5), (" stay", 0.1), (" cold", 2.0), (",", 0.0), (" fridge", 1.0)]
    res = Resources(attribution={"q1": scored})
    spec = {"kind": "ig_topk", "student": "s", "k": 3}
    assert _target(spec, res) == f"{LABEL} Milk cold fridge"
    shuffled = _target({**spec, "kind": "ig_topk_shuffled"}, res).removeprefix(LABEL + " ").split()
    assert sorted(shuffled) == ["Milk", "cold", "fridge"]
    with pytest.raises(ValueError, match="no attribution scores for row id 'q2'"):
        _target(spec, res, row={**ROW, "id": "q2"}, rat=RAT.assign(id="q2"))
    # pieces as `attribution.token_texts` writes them: kept neighbours join into their word, with punctuation
    pieces = Resources(attribution={"q1": [(" re", 3.0), ("friger", 2.5), ("ators", 0.1), (" keep", -1.0),
                                           (" food", 2.0), (".", 1.5), (" In", 0.0), ("side", 1.2)]})
    assert _target({**spec, "k": 5}, pieces) == f"{LABEL} refriger food. side"
    assert sorted(_target({**spec, "k": 5, "kind": "ig_topk_shuffled"}, pieces).removeprefix(LABEL + " ").split()
                  ) == ["food.", "refriger", "side"]


def test_sweep_expands_into_named_ablations_and_experiments():
    config = {"ablations": {"none": {"kind": "none"},
                            "mask_{position}_{p}": {"kind": "mask", "position": ["before", "after"], "p": [0.1, 0.9]}},
              "experiments": {"e": {"ablations": ["none", "mask_{position}_{p}"], "compare_to": ["none"]}}}
    cfg.expand(config)
    names = ["mask_before_0.1", "mask_before_0.9", "mask_after_0.1", "mask_after_0.9"]
    assert config["experiments"]["e"]["ablations"] == ["none", *names]
    assert config["ablations"]["mask_after_0.9"] == {"kind": "mask", "position": "after", "p": 0.9}
    assert cfg.expand(config) == config  # idempotent
    with pytest.raises(cfg.ConfigError, match=r"'ablations.filler_\{k\}': the name sweeps \{k\}, so 'k' must be a "
                                              r"non-empty list"):
        cfg.expand({"ablations": {"filler_{k}": {"kind": "filler", "k": 3}}, "experiments": {}})


COT_BEFORE_ROWS = [{"id": f"q{i}", "source": f"Question: where is item {i}?\nAnswer:",
                    "target": f"Because item {i} is kept cold in the piñata 🍬. [FIN_LABEL] B [FIN_LABEL]",
                    "label": "B"}
                   for i in range(3)]


@pytest.mark.parametrize("method", ["integrated_gradients", "input_x_gradient"])
def test_attribution_on_a_tiny_model(tiny_gpt2, method):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cotdistill.attribution import attribute

    tok = AutoTokenizer.from_pretrained(tiny_gpt2)
    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2)
    first = attribute(model, tok, COT_BEFORE_ROWS, method, n_steps=8, batch_size=2, internal_batch_size=4)
    again = attribute(model, tok, COT_BEFORE_ROWS[::-1], method, n_steps=8, batch_size=3)
    rationale = " Because item 0 is kept cold in the piñata 🍬."
    q0 = first[first.id == "q0"]
    # each token's own stretch of the text, whitespace before it included (the candy's 3 byte tokens: " 🍬", "", "")
    assert list(q0["position"]) == list(range(len(tok(rationale)["input_ids"])))
    assert "".join(q0["token"]) == rationale and {" pi", "ñ", "ata", " 🍬", ""} <= set(q0["token"])
    assert np.isfinite(first["score"]).all() and first["score"].abs().sum() > 0
    merged = first.merge(again, on=["id", "position"])
    assert len(merged) == len(first) and np.allclose(merged["score_x"], merged["score_y"], atol=1e-5)


def test_attribution_refuses_targets_that_are_not_cot_before(tiny_gpt2):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cotdistill.attribution import attribute

    rows = [{**COT_BEFORE_ROWS[0], "target": "[FIN_LABEL] B [FIN_LABEL] Because it is cold."}]
    with pytest.raises(ValueError, match="row id 'q0'.*needs the targets of a cot_before ablation"):
        attribute(AutoModelForCausalLM.from_pretrained(tiny_gpt2), AutoTokenizer.from_pretrained(tiny_gpt2), rows)


def test_mask_sweeps_are_nested_and_placements_agree():
    rat = pd.DataFrame({"id": ["q1"], "rationale": [" ".join(f"w{i}" for i in range(60))]})
    hidden = {}
    for pos in ("before", "after"):
        for p in (0.2, 0.5, 0.8):
            t = _target({"kind": "mask", "p": p, "position": pos}, rat=rat).replace(LABEL, "").split()
            hidden[pos, p] = {i for i, w in enumerate(t) if w == "[MASK]"}
    assert hidden["after", 0.2] < hidden["after", 0.5] < hidden["after", 0.8]
    assert [len(hidden["after", p]) for p in (0.2, 0.5, 0.8)] == [12, 30, 48]  # p of the 60 words, not about p
    eleven = pd.DataFrame({"id": ["q1"], "rationale": [" ".join(f"w{i}" for i in range(11))]})
    assert _target({"kind": "mask", "p": 0.5}, rat=eleven).count("[MASK]") == 6  # 5.5 rounds half up
    many = pd.DataFrame({"id": ["q1"], "rationale": [" ".join(f"w{i}" for i in range(45))]})
    assert _target({"kind": "mask", "p": 0.7}, rat=many).count("[MASK]") == 32  # 0.7 * 45 = 31.4999... in floats
    assert all(hidden["before", p] == hidden["after", p] for p in (0.2, 0.5, 0.8))
    other_unit = _target({"kind": "mask", "p": 0.5, "unit": "token"}, rat=rat).replace(LABEL, "").split()
    assert {i for i, w in enumerate(other_unit) if w == "[MASK]"} != hidden["after", 0.5]  # its own draws


def test_ig_settings_without_effect_are_normalised_and_blank_tokens_skipped():
    spec = {"kind": "ig_topk", "student": "s", "method": "input_x_gradient", "n_steps": 32}
    assert ablations.resolve(spec, "ig")["n_steps"] == 1
    res = Resources(attribution={"q1": [("\n", 9.0), (" Milk", 0.5), (" ", 8.0), (" cold", 1.0), (" x", 0.1)]})
    assert _target({**spec, "k": 2}, res) == f"{LABEL} Milk cold"


def test_filler_fallback_must_be_one_token_and_unk_must_not_stop_generation():
    gpt2 = gpt2_tokenizer()
    with pytest.raises(ValueError, match="filler fallback 'a b c' is not one token"):
        student_filler(gpt2, "a b c")
    own = gpt2_tokenizer()
    own.add_special_tokens({"unk_token": "<unk>"})
    assert student_filler(own, ".", stop_ids=[own.unk_token_id, 5]) == (".", False)


def test_conflicting_human_words_for_one_id(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"id": "q1", "words": ["a"]}\n')
    (tmp_path / "b.jsonl").write_text('{"id": "q1", "words": ["b"]}\n')
    with pytest.raises(ValueError, match=r"b.jsonl: line 1: id 'q1' already has different words"):
        read_human_words(str(tmp_path))
