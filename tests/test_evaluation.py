import math

import pytest
import torch

from cotdistill.evaluation import MarkerStop, generate, label_budget, parse_label, score, wilson

from .conftest import gpt2_tokenizer


@pytest.mark.parametrize(
    ("text", "label"),
    [
        (" [FIN_LABEL] B [FIN_LABEL] because", "b"),
        ("[fin_label]  new Jersey\n[FIN_LABEL]", "new jersey"),
        ("rationale text [FIN_LABEL] (C). [FIN_LABEL]", "c"),
        ("[FIN_LABEL] B", None),
        ("no markers", None),
    ],
)
def test_parse_label_tolerates_space_and_case(text, label):
    assert parse_label(text) == label


def test_score_flags_collapse_and_counts_unparsed():
    gold = ["A", "B", "C", "D", "B", "B", "A", "C", "D", "E"]
    s = score(["b"] * 9 + [None], gold, n_choices=5)
    assert s["accuracy"] == 0.3 and s["unparsed"] == 1 and s["collapsed"]
    assert s["majority_label"] == "b" and s["majority_rate"] == 0.3 and s["chance_rate"] == 0.2
    assert not s["above_majority"]
    good = score([g.lower() for g in gold], gold)
    assert good["accuracy"] == 1.0 and not good["collapsed"] and good["above_majority"]


def test_wilson_interval():
    lo, hi = wilson(30, 100)
    assert math.isclose(lo, 0.2189, abs_tol=1e-3) and math.isclose(hi, 0.3958, abs_tol=1e-3)
    assert wilson(0, 10)[0] == 0.0


def test_label_budget_fits_longest_label():
    tok = gpt2_tokenizer()
    labels = ["A", "bookstore", "supermarket checkout counter"]
    need = len(tok(" [FIN_LABEL] supermarket checkout counter [FIN_LABEL]")["input_ids"])
    assert label_budget(tok, labels) == need + 2


def test_marker_stop_per_sequence():
    tok = gpt2_tokenizer()
    prompt = tok(["Q"], return_tensors="pt")["input_ids"]
    done = tok(" [FIN_LABEL] B [FIN_LABEL]", return_tensors="pt")["input_ids"]
    half = tok(" [FIN_LABEL] B and more", return_tensors="pt")["input_ids"]
    width = max(done.shape[1], half.shape[1])
    pad = lambda t: torch.cat([t, torch.full((1, width - t.shape[1]), tok.eos_token_id)], 1)  # noqa: E731
    ids = torch.cat([torch.cat([prompt, pad(done)], 1), torch.cat([prompt, pad(half)], 1)])
    assert MarkerStop(tok, prompt.shape[1])(ids, None).tolist() == [True, False]


def test_generation_stops_at_marker_and_matches_full_length(tiny_gpt2):
    """Marker stopping may only cut what comes after the label: parsed labels equal those of a full generation."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_gpt2)
    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2).eval()
    sources = ["Question: a?\nAnswer:", "Question: longer question here?\nAnswer:"]
    short = generate(model, tok, sources, 12, stop_at_marker=True)
    full = generate(model, tok, sources, 12, stop_at_marker=False)
    for s, f in zip(short, full):
        assert f.startswith(s)
        assert parse_label(s) == parse_label(f)


def test_canonical_maps_answer_text_to_choice_letter():
    from cotdistill.evaluation import canonical

    row = {"task": "mcqa", "answer_label": "B", "answer_text": "fridge",
           "choices": [{"label": "A", "text": "oven"}, {"label": "B", "text": "Fridge"}]}
    assert canonical("fridge", row, "text") == "b"
    assert canonical("b", row, "letter") == "b"
    assert canonical("freezer", row, "text") == "<invalid>"
    assert canonical(None, row, "text") is None
