import pytest
import torch

from cotdistill.datasets import load_split
from cotdistill.evaluation import (MarkerStop, canonical, extract_label, generate, label_budget, parse_label,
                                   same_label, score)
from cotdistill.targets import format_source

from .conftest import ROOT, gpt2_tokenizer


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


def test_marker_stop_decodes_only_at_closing_tokens():
    """Step by step, as generate calls it: it stops exactly where the second marker closes, and the closing set is
    every token whose text holds the marker's last character."""
    from cotdistill.evaluation import closing_ids

    tok = gpt2_tokenizer()
    closing = closing_ids(tok)
    assert closing == {i for i in range(len(tok)) if "]" in tok.decode([i])}
    prompt = tok(["Q"], return_tensors="pt")["input_ids"]
    gen = tok(" so [FIN_LABEL] B [FIN_LABEL] then [FIN_LABEL]", return_tensors="pt")["input_ids"][0]
    stop, seen = MarkerStop(tok, prompt.shape[1], closing=closing), []
    for n in range(1, len(gen) + 1):
        seen.append(bool(stop(torch.cat([prompt[0], gen[:n]])[None], None)[0]))
    first = next(n for n in range(1, len(gen) + 1) if tok.decode(gen[:n]).count("[FIN_LABEL]") == 2)
    assert seen == [n >= first for n in range(1, len(gen) + 1)]
    # reused for a new generation (another batch size, back at the first token): it starts over
    assert stop(torch.cat([prompt, prompt], 1)[:, :prompt.shape[1] + 1].repeat(2, 1), None).tolist() == [False, False]


def test_generation_stops_at_marker_and_matches_full_length(marker_model):
    """On a model that emits the markers, stopping cuts what follows the label and nothing else."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(marker_model)
    model = AutoModelForCausalLM.from_pretrained(marker_model).eval()
    data = load_split("csqa", {"loader": "csqa_dss", "path": str(ROOT / "data/dss/cqa"), "subsample": {"test": 16}},
                      "test")
    sources = [format_source(r) for r in data.to_dict("records")]
    short = generate(model, tok, sources, 40, batch_size=8, stop_at_marker=True)
    full = generate(model, tok, sources, 40, batch_size=8, stop_at_marker=False)
    assert sum(s.count("[FIN_LABEL]") == 2 for s in short) >= 14  # the model emits both markers
    assert sum(len(f) > len(s) + 10 for s, f in zip(short, full)) >= 14  # and stopping cut real text
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


MATH = {"task": "math", "answer_label": "( 84.0 / 2.0 )"}


def test_svamp_answers_are_scored_by_value():
    assert canonical("( 84 / 2 )", MATH, "text") == canonical("( 84.0 / 2.0 )", MATH, "text") == "42"
    assert canonical("84/2", MATH, "text") == "42" and canonical("( 84 / 3 )", MATH, "text") == "28"
    assert canonical("( 1.0 + 2.0 ) * ( 3.0 + 4.0 )", MATH, "text") == "21"  # inner parentheses survive
    assert canonical("( 10 / 3 )", MATH, "text") == canonical("( 20.0 / 6.0 )", MATH, "text")
    assert canonical("__import__('os').system('true')", MATH, "text") == "<invalid>"
    assert canonical(None, MATH, "text") is None
    label = extract_label(" [FIN_LABEL] ( 84 / 2 ) [FIN_LABEL] because half")
    assert label == "( 84 / 2 )" and same_label(label, "( 84.0 / 2.0 )", "math")
    assert not same_label("( 84 / 4 )", "( 84.0 / 2.0 )", "math") and not same_label("x", "x", "math")
    s = score([canonical(p, MATH, "text") for p in ["( 84 / 2 )", "( 42.0 )", "( 84 / 3 )", None]], ["42"] * 4)
    assert s["correct"] == 2 and s["unparsed"] == 1
