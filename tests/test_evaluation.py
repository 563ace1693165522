import pytest

from cotdistill.datasets import load_split
from cotdistill.evaluation import (canonical, extract_label, generate, label_budget, parse_label,
                                   same_label, score)
from cotdistill.targets import format_source

from .conftest import ROOT, gpt2_tokenizer


def load_model(path):
    """(tokenizer, model in eval mode) from a local model folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path).eval()


def csqa_test(n: int):
    """The first `n` rows of the shipped CommonsenseQA test split."""
    return load_split("csqa", {"loader": "csqa_dss", "path": str(ROOT / "data/dss/cqa"), "subsample": {"test": n}},
                      "test")


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


def test_marker_closes_at_the_second_marker_and_only_decodes_at_closing_tokens():
    """Token by token, as the decoding loop asks: done exactly where the second marker closes; the closing set is
    every token whose text holds the marker's last character, and no other token triggers a decode."""
    from cotdistill.evaluation import closing_ids, closes_marker

    tok = gpt2_tokenizer()
    closing = closing_ids(tok)
    assert closing == {i for i in range(len(tok)) if "]" in tok.decode([i])}
    gen = tok(" so [FIN_LABEL] B [FIN_LABEL] then [FIN_LABEL]")["input_ids"]
    seen = [closes_marker(tok, gen[:n], closing) for n in range(1, len(gen) + 1)]
    first = next(n for n in range(1, len(gen) + 1) if tok.decode(gen[:n]).count("[FIN_LABEL]") == 2)
    assert seen[first - 1] and not any(seen[:first - 1])
    half = tok(" [FIN_LABEL] B and more")["input_ids"]
    assert not any(closes_marker(tok, half[:n], closing) for n in range(1, len(half) + 1))
    assert not closes_marker(tok, gen[:first], frozenset())  # nothing decoded without a closing token


def test_greedy_drops_finished_rows_and_matches_generate(tiny_gpt2):
    """Dropping finished rows (and their cache) changes no row: on prompts of different lengths (left padding, so
    position ids matter) each row equals `model.generate`'s greedy output up to where it finished, and a row that
    never finishes runs to the budget."""
    from cotdistill.evaluation import greedy

    tok, model = load_model(tiny_gpt2)
    tok.padding_side, tok.pad_token = "left", tok.eos_token
    enc = tok(["Q: a", "Q: a longer question with more words", "Q: mid length one"], return_tensors="pt",
              padding=True)
    ref = model.generate(**enc, max_new_tokens=12, do_sample=False, num_beams=1, pad_token_id=tok.eos_token_id,
                         eos_token_id=None)[:, enc["input_ids"].shape[1]:].tolist()
    assert len({tuple(r) for r in ref}) == 3  # distinct rows: a mix-up between rows would show
    stops = {0: 3, 2: 7}  # rows 0 and 2 finish after 3 and 7 tokens; row 1 never
    calls, rows = [], {}

    def finished(gen):  # the first step asks rows 0, 1, 2 in order; each row keeps its list
        calls.append(len(gen))
        row = rows.setdefault(id(gen), len(rows))
        return len(gen) >= stops.get(row, 99)

    out = greedy(model, enc["input_ids"], enc["attention_mask"], 12, finished)
    assert [len(g) for g in out] == [3, 12, 7]
    assert all(out[r] == ref[r][:len(out[r])] for r in range(3))
    assert len(calls) == 3 + 12 + 7  # a finished row is never asked again
    # a draft only row 0 would produce is taken by row 0 alone: the output is greedy's
    assert len({tuple(r[:4]) for r in ref}) > 1
    assert greedy(model, enc["input_ids"], enc["attention_mask"], 12, lambda g: False, ref[0][:4]) == ref


def test_generate_without_marker_stop_equals_model_generate(marker_model):
    """The whole `generate` path (sorting, batching, EOS, decoding) gives `model.generate`'s greedy text."""
    tok, model = load_model(marker_model)
    sources = [format_source(r) for r in csqa_test(12).to_dict("records")]
    ours = generate(model, tok, sources, 30, batch_size=5, stop_at_marker=False)
    tok.padding_side = "left"
    ref = []
    for s in sources:  # one at a time: no padding at all in the reference
        enc = tok([s], return_tensors="pt")
        ids = model.generate(**enc, max_new_tokens=30, do_sample=False, num_beams=1, pad_token_id=tok.eos_token_id)
        ref.append(tok.decode(ids[0, enc["input_ids"].shape[1]:], skip_special_tokens=True))
    assert ours == ref
    assert any(len(r) > 0 for r in ref)


def test_generation_stops_at_marker_and_matches_full_length(marker_model):
    """On a model that emits the markers, stopping cuts what follows the label and nothing else."""
    tok, model = load_model(marker_model)
    sources = [format_source(r) for r in csqa_test(16).to_dict("records")]
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


def test_evaluation_loads_weights_in_the_precision_chosen(marker_model, tmp_path, monkeypatch):
    """`precision` reaches the model's dtype and the eval JSON; auto asks `use_bf16` with the evaluation key, for a
    reproducible choice."""
    from cotdistill import evaluation
    from cotdistill.io import write_parquet

    write_parquet(csqa_test(4), tmp_path / "test.parquet")
    asked = []
    monkeypatch.setattr(evaluation, "use_bf16", lambda precision, key, reproducible=False: asked.append((precision, key, reproducible)) or True)
    out = evaluation.evaluate(str(marker_model), str(tmp_path / "test.parquet"), "cot_after", True, "letter",
                              str(tmp_path / "e.json"), str(tmp_path / "p.parquet"), str(tmp_path / "s.json"),
                              precision="auto")
    assert asked == [("auto", "evaluation.precision", True)]
    assert out["decoding"]["precision"] == "bfloat16" and out["n"] == 4
    assert '"dtype": "bfloat16"' in (tmp_path / "s.json").read_text()


def test_auto_precision_for_reproducible_inference_is_fp32_on_a_cpu(monkeypatch):
    """On a CPU, auto picks fp32 for evaluation even where bf16 measures faster (bf16 inference there was not
    reproducible between processes); training keeps the measured choice; bf16 asked for is bf16."""
    from cotdistill import precision

    monkeypatch.setattr(precision.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    monkeypatch.setattr(precision, "matmul_peak", lambda dtype: 4.0 if dtype == precision.torch.bfloat16 else 1.0)
    assert precision.use_bf16("auto") is True
    assert precision.use_bf16("auto", "evaluation.precision", reproducible=True) is False
    assert precision.use_bf16("bf16", "evaluation.precision", reproducible=True) is True


def test_a_draft_changes_nothing_whether_taken_or_refused(marker_model):
    """The opening marker as a draft is verified, not assumed: each row takes the part greedy decoding would produce
    and the rest leaves attention; the text is the same either way."""
    from cotdistill.evaluation import greedy, target_prefix_ids

    tok, model = load_model(marker_model)
    sources = [format_source(r) for r in csqa_test(8).to_dict("records")]
    plain = generate(model, tok, sources, 30, batch_size=4)
    assert generate(model, tok, sources, 30, batch_size=4, draft="[FIN_LABEL]") == plain
    assert generate(model, tok, sources, 30, batch_size=4, draft="no such start") == plain
    marker = target_prefix_ids(tok, "[FIN_LABEL]")
    assert tok.decode(marker).strip() == "[FIN_LABEL]"
    enc = tok(sources[:4], return_tensors="pt", padding=True)
    calls, passes = [], []
    model.register_forward_pre_hook(lambda module, args: passes.append(1))
    out = greedy(model, enc["input_ids"], enc["attention_mask"], 30, lambda g: calls.append(len(g)) or False, marker)
    assert all(row[:len(marker)] == marker for row in out)
    assert len(passes) == 30 - len(marker)  # taken: the marker and the token after it came from the first pass
    assert calls.count(1) == 4 and all(len(row) == 30 for row in out)  # every token still passes `finished`
    # a draft every row follows but for its last token: the rows keep the marker and greedy's own next token
    wrong_end = out[0][:len(marker) + 1]
    wrong_end[-1] += 1
    passes.clear()
    assert greedy(model, enc["input_ids"], enc["attention_mask"], 30, lambda g: False, wrong_end) == out
    assert len(passes) == 30 - len(marker)
    # rows that finish inside a taken draft stop there
    passes.clear()
    short = greedy(model, enc["input_ids"], enc["attention_mask"], 30, lambda g: len(g) >= 3, marker)
    assert short == [marker[:3]] * 4 and len(passes) == 1


def test_candidate_drafts_answer_in_two_passes_with_the_same_text(marker_model):
    """Label-first decoding offered each item's candidate labels: a row that has started a candidate gets the rest
    of it verified in one pass. The text equals plain greedy decoding's, a wrong candidate costs nothing but its
    pass, and a batch whose rows all write a candidate is done in two forward passes."""
    from cotdistill.evaluation import greedy, target_prefix_ids

    tok, model = load_model(marker_model)
    rows = csqa_test(8).to_dict("records")
    sources = [format_source(r) for r in rows]
    letters = [[c["label"] for c in r["choices"]] for r in rows]
    plain = generate(model, tok, sources, 30, batch_size=4)
    assert all(t.count("[FIN_LABEL]") == 2 for t in plain)  # the model closes its label: drafts can be taken
    passes = []
    hook = model.register_forward_pre_hook(lambda module, args: passes.append(1))
    drafted = generate(model, tok, sources, 30, batch_size=4, draft="[FIN_LABEL]", candidates=letters)
    assert drafted == plain and len(passes) == 2 * 2  # two batches, two passes each
    # candidates that start as the model's labels but go on otherwise ("B extra"): offered, rejected after the
    # letter, text unchanged, and the rows decode on past the rejected tokens
    passes.clear()
    assert generate(model, tok, sources, 30, batch_size=4, draft="[FIN_LABEL]",
                    candidates=[[f"{x} extra words" for x in ls] for ls in letters]) == plain
    assert len(passes) > 2 * 2
    hook.remove()
    # a proposal whose middle is wrong: the row keeps the matching part and greedy's own next token
    marker = target_prefix_ids(tok, "[FIN_LABEL]")
    enc = tok(sources[:4], return_tensors="pt", padding=True)
    ref = greedy(model, enc["input_ids"], enc["attention_mask"], 30, lambda g: False, marker)

    def bent(row: int, gen: list[int]) -> list[int]:
        rest = ref[row][len(gen):len(gen) + 4]
        return rest[:2] + [(rest[2] + 1) % model.config.vocab_size] + rest[3:] if len(rest) == 4 else rest

    assert greedy(model, enc["input_ids"], enc["attention_mask"], 30, lambda g: False, marker, bent) == ref


def test_continuation_scores_equal_full_sequence_log_probs(tiny_gpt2):
    """Shared-prefix scoring (one cached pass over the sources, one over the candidates) gives each continuation
    the log-probability the model assigns it after its source, in batches that split candidate sets unevenly."""
    import torch

    from cotdistill.evaluation import continuation_log_probs

    tok, model = load_model(tiny_gpt2)
    tok.pad_token = tok.eos_token
    sources = ["Question: where is milk?\nAnswer:", "Q: hot?\nAnswer:", "Problem: 3 apples and 4 more. How many?"]
    conts = [["[FIN_LABEL] fridge [FIN_LABEL]", "[FIN_LABEL] oven [FIN_LABEL]", "[FIN_LABEL] a b c [FIN_LABEL]"],
             ["it is cold [FIN_LABEL] no [FIN_LABEL]", "it is cold [FIN_LABEL] yes [FIN_LABEL]"],
             ["[FIN_LABEL] ( 3.0 + 4.0 ) [FIN_LABEL]", "[FIN_LABEL] ( 3.0 * 4.0 ) [FIN_LABEL]",
              "[FIN_LABEL] ( 4.0 - 3.0 ) [FIN_LABEL]", "[FIN_LABEL] ( 3.0 / 4.0 ) [FIN_LABEL]"]]
    got = continuation_log_probs(model, tok, sources, conts, batch_size=2, max_tokens=12)
    for src, cs, scores in zip(sources, conts, got, strict=True):
        assert len(scores) == len(cs)
        for c, value in zip(cs, scores, strict=True):
            s = tok(src)["input_ids"]
            t = tok(" " + c, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logp = model(torch.tensor([s + t])).logits[0].float().log_softmax(-1)
            direct = sum(logp[len(s) + k - 1, t[k]].item() for k in range(len(t)))
            assert value == pytest.approx(direct, abs=1e-3)


def test_token_trie_shares_beginnings_and_marks_where_each_sequence_ends():
    from cotdistill.evaluation import token_trie

    assert token_trie([[1, 2, 3], [1, 2, 4], [1, 2], [5], [1, 2, 3]]) == (
        [1, 2, 3, 4, 5], [-1, 0, 1, 1, -1], [0, 1, 2, 2, 0], [2, 3, 1, 4, 2])


def test_closing_scores_the_first_token_of_the_marker_after_each_candidate(tiny_gpt2):
    """With `closing`, a candidate is scored as its tokens and the first token of the closing marker written
    after it: the direct log-probability of exactly those tokens, so candidates that are prefixes of one another
    (``( 3.0 + 4.0 )`` and ``( 3.0 + 4.0 ) * 2.0``) stay apart."""
    import torch

    from cotdistill.evaluation import continuation_ids, continuation_log_probs

    tok, model = load_model(tiny_gpt2)
    tok.pad_token = tok.eos_token
    source = "Problem: 3 apples and 4 more. How many?"
    conts = ["[FIN_LABEL] ( 3.0 + 4.0 )", "[FIN_LABEL] ( 3.0 + 4.0 ) * 2.0", "[FIN_LABEL] ( 3.0 * 4.0 )"]
    whole = tok(" " + conts[0] + " [FIN_LABEL]", add_special_tokens=False)["input_ids"]
    ids = continuation_ids(tok, conts[0], " [FIN_LABEL]")
    assert ids == whole[:len(tok(" " + conts[0], add_special_tokens=False)["input_ids"]) + 1] and len(ids) < len(whole)
    got = continuation_log_probs(model, tok, [source], [conts], closing=" [FIN_LABEL]")[0]
    s = tok(source)["input_ids"]
    for c, value in zip(conts, got, strict=True):
        t = continuation_ids(tok, c, " [FIN_LABEL]")
        with torch.no_grad():
            logp = model(torch.tensor([s + t])).logits[0].float().log_softmax(-1)
        assert value == pytest.approx(sum(logp[len(s) + k - 1, t[k]].item() for k in range(len(t))), abs=1e-3)
    assert got[0] != pytest.approx(got[1], abs=1e-3)


def trie_pass_sizes(monkeypatch) -> list[list[int]]:
    """The sizes of the tries in each scoring pass (sorted within a pass), recorded as `evaluation.trie_pass` runs."""
    from cotdistill import evaluation

    sizes, trie_pass = [], evaluation.trie_pass

    def spy(model, cache, context, context_pos, base, tries, *args):
        sizes.append(sorted(len(t[0]) for t in tries))
        return trie_pass(model, cache, context, context_pos, base, tries, *args)

    monkeypatch.setattr(evaluation, "trie_pass", spy)
    return sizes


def test_scoring_passes_put_tries_of_like_size_together(tiny_gpt2, monkeypatch):
    """A pass pads every trie to its longest (SVAMP: 48-294 tokens of candidate equations against prompts of about
    40): sources go into passes by context and trie size together, not by prompt length alone."""
    from cotdistill import evaluation

    tok, model = load_model(tiny_gpt2)
    tok.pad_token = tok.eos_token
    sizes = trie_pass_sizes(monkeypatch)
    small, big = [[5], [6]], [[k, k + 1, k + 2] for k in (10, 13, 16, 19)]
    # prompts of 2-5 tokens: by their length alone, each pass would hold a small and a big trie
    sources, sequences = ["a b", "a b c", "a b c d", "a b c d e"], [small, big, small, big]
    scores = evaluation.trie_scores(model, tok, sources, sequences, batch_size=2)
    assert sizes == [[2, 2], [12, 12]]
    for score, alone in zip(scores, evaluation.trie_scores(model, tok, sources, sequences, batch_size=1), strict=True):
        assert score.node_lp == pytest.approx(alone.node_lp, abs=1e-4)  # each source keeps its own scores


def test_evaluation_reports_calibration_over_the_choices(marker_model, tmp_path):
    import json

    import pandas as pd

    from cotdistill import evaluation
    from cotdistill.io import write_parquet

    write_parquet(csqa_test(6), tmp_path / "test.parquet")
    out = evaluation.evaluate(str(marker_model), str(tmp_path / "test.parquet"), "cot_after", True, "letter",
                              str(tmp_path / "e.json"), str(tmp_path / "p.parquet"), str(tmp_path / "s.json"))
    cal = out["calibration"]
    preds = pd.read_parquet(tmp_path / "p.parquet")
    assert 0 < preds["confidence"].min() and preds["confidence"].max() <= 1
    assert cal["confidence"] == pytest.approx(preds["confidence"].mean())
    assert cal["accuracy"] == pytest.approx(out["accuracy"]) and 0 <= cal["ece"] <= 1 and cal["bins"] == 10
    assert sum(b["count"] for b in cal["reliability"]) == 6 and cal["candidates"] == "the item's choices"
    assert json.loads((tmp_path / "e.json").read_text())["calibration"] == cal


@pytest.mark.parametrize("label_format", ["letter", "text"])
def test_label_first_answers_and_calibration_come_from_one_trie_pass(marker_model, label_format):
    """`answer_and_calibrate` reads greedy decoding's text off the pass that scores the candidates: the same
    texts as `generate`, the same candidate log-probabilities as scoring them after the text, in three forward
    passes per batch (prefill, candidates up to the closing marker's first token, the marker's rest); items greedy
    decoding takes out of the trie are handed back, not guessed."""
    from cotdistill.evaluation import answer_and_calibrate, candidate_log_probs

    tok, model = load_model(marker_model)
    rows = csqa_test(8).to_dict("records")
    sources = [format_source(r) for r in rows]
    plain = generate(model, tok, sources, 30, batch_size=4)
    passes = []
    hook = model.register_forward_pre_hook(lambda module, args: passes.append(1))
    texts, raw, log_probs, missed = answer_and_calibrate(model, tok, sources, rows, label_format, 30, batch_size=4)
    hook.remove()
    assert len(passes) == (3 if label_format == "letter" else 2) * 2  # text: no row reaches a marker's rest
    if label_format == "letter":  # the model was trained on letters: every item is answered in the trie
        assert missed == [] and texts == plain
    else:  # it writes letters where the candidates are answer texts: every item leaves the trie
        assert sorted(missed) == list(range(8))
    expected = candidate_log_probs(model, tok, sources, plain, rows, label_format, batch_size=4)
    for i in set(range(8)) - set(missed):
        assert log_probs[i] == pytest.approx(expected[i], abs=1e-4)
    # budgets that end inside the opening marker, inside the label and at the closing marker's first token:
    # greedy's text stops there too
    for budget in (3, 6, 8):
        short, _, _, missed = answer_and_calibrate(model, tok, sources, rows, "letter", budget, batch_size=4)
        assert missed == [] and short == generate(model, tok, sources, budget, batch_size=4)


def test_scored_candidates_are_the_targets_label_less_its_closing_marker():
    """Calibration scores each candidate as targets write its label, up to the closing marker."""
    from cotdistill.ablations import wrap_label
    from cotdistill.evaluation import CLOSING, marked

    assert [m + CLOSING for m in marked("", ["B", "new jersey"])] == [wrap_label("B"), wrap_label("new jersey")]
    assert marked("it rains. ", ["B"]) == ["it rains. [FIN_LABEL] B"]


def test_answer_merges_items_answered_in_the_trie_with_those_handed_back(marker_model):
    """In one call some items are answered in the scoring passes and the others (here: items whose greedy letter
    is no longer among their choices) are decoded and calibrated apart; each lands at its own index, with the text
    `generate` writes and the candidate scores that scoring after that text gives (this fixture model writes one
    letter everywhere, so the scores, not the texts, tell the indices apart)."""
    from cotdistill.evaluation import answer, candidate_log_probs

    tok, model = load_model(marker_model)
    rows = csqa_test(8).to_dict("records")
    sources = [format_source(r) for r in rows]
    plain, plain_raw = generate(model, tok, sources, 30, batch_size=4, return_raw=True)
    moved = []
    for i, (row, text) in enumerate(zip(rows, plain, strict=True)):
        letter = (parse_label(text) or "").upper()
        if i % 2 and letter and letter != row["answer_label"]:
            row["choices"] = [c for c in row["choices"] if c["label"] != letter]
            moved.append(i)
    assert len(moved) >= 2, "the fixture model should answer some odd items wrongly"
    texts, raw, log_probs, speed = answer(model, tok, sources, rows, True, "letter", 30, batch_size=4)
    assert texts == plain and raw == plain_raw and speed["calibrated_in_decoding"] == 8 - len(moved)
    expected = candidate_log_probs(model, tok, sources, raw, rows, "letter", batch_size=4)
    assert [len(lp) for lp in log_probs] == [len(r["choices"]) for r in rows]
    for got, want in zip(log_probs, expected, strict=True):
        assert got == pytest.approx(want, abs=1e-4)


def test_greedy_read_off_a_trie_follows_the_argmax_and_refuses_to_guess():
    """Prefix, trie and tail are taken token by token where the argmax before each agrees; anywhere it does not,
    or where the walk stops at another node than the tail's, there is no text; `finished` and the budget end it."""
    from cotdistill.evaluation import TrieScore, greedy_in_trie

    # prefix [1, 2]; trie 3 -> 4 (node 1, candidate A's end) and 3 -> 5 (node 2, candidate B's end); tail after node 1
    def scored(prefix_next, node_next, tail=(1, [8, 9], [9, 0])):
        return TrieScore([1, 2], ([3, 4, 5], [-1, 0, 0], [0, 1, 1], [1, 2]), [], prefix_next, [0.0] * 3, node_next,
                         tail)

    never = lambda g: False  # noqa: E731
    assert greedy_in_trie(scored([1, 2, 3], [4, 8, 8]), never, 10) is None  # ran out after the tail
    assert greedy_in_trie(scored([1, 2, 3], [4, 8, 8]), lambda g: g[-1] == 9, 10) == [1, 2, 3, 4, 8, 9]
    assert greedy_in_trie(scored([1, 2, 3], [4, 8, 8]), never, 4) == [1, 2, 3, 4]  # the budget
    assert greedy_in_trie(scored([1, 2, 3], [5, 8, 8]), lambda g: g[-1] == 9, 10) is None  # B: no tail there
    assert greedy_in_trie(scored([1, 2, 3], [4, 7, 8]), lambda g: g[-1] == 9, 10) is None  # the tail refused
    assert greedy_in_trie(scored([1, 7, 3], [4, 8, 8]), lambda g: g[-1] == 9, 10) is None  # the prefix refused
    assert greedy_in_trie(scored([1, 2, 6], [4, 8, 8]), lambda g: g[-1] == 9, 10) is None  # no candidate
    assert greedy_in_trie(scored([1, 2, 3], [4, 8, 8], (1, [8, 9], [7, 0])), lambda g: g[-1] == 9, 10) is None


@pytest.mark.parametrize("budget", [40, 4])
def test_items_written_before_their_label_are_calibrated_over_the_decoding_cache(rationale_model, budget):
    """A model that writes before its label (CoT before) has each item's candidates scored over the decoding cache
    as its row leaves the batch, after its rationale and opening marker: the same log-probabilities as a second
    prefill over prompt and text (`candidate_log_probs`) and the same texts as `generate`. An item whose text does
    not hold that context (a budget that ends inside the rationale) is calibrated after its text as before."""
    from cotdistill.evaluation import answer, candidate_log_probs

    tok, model = load_model(rationale_model)
    rows = csqa_test(8).to_dict("records")
    sources = [format_source(r) for r in rows]
    plain, plain_raw = generate(model, tok, sources, budget, batch_size=4, return_raw=True)
    texts, raw, log_probs, speed = answer(model, tok, sources, rows, False, "letter", budget, batch_size=4)
    assert texts == plain and raw == plain_raw
    if budget == 40:  # items that wrote a label and items that closed their rationale only: both in the cache
        assert all(t.startswith(" because") and "[FIN_LABEL]" in t for t in plain)
        assert sum(parse_label(t) is not None for t in plain) >= 2
    assert speed["calibrated_in_decoding"] == (8 if budget == 40 else 0)
    expected = candidate_log_probs(model, tok, sources, raw, rows, "letter", batch_size=4)
    assert [len(lp) for lp in log_probs] == [len(r["choices"]) for r in rows]
    for got, want in zip(log_probs, expected, strict=True):
        assert got == pytest.approx(want, abs=1e-4)


def test_scores_over_kept_caches_equal_a_fresh_forward_pass(tiny_gpt2, monkeypatch):
    """`greedy`'s `on_done`, `CachedRow` and `score_in_cache`: rows of different prompt lengths (left padding) that
    leave the batch in different passes (one in the first), each scored after all or all but one of its generated
    tokens, in groups cut by `max_tokens` that hold tries of one size, give log p(sequence | prompt + generated
    prefix) as one plain forward pass per sequence does."""
    import torch

    from cotdistill.evaluation import CachedRow, greedy, score_in_cache

    _, model = load_model(tiny_gpt2)
    prompts = [[5, 6, 7], [8, 9], [10, 11, 12, 13, 14], [15]]
    width = max(map(len, prompts))
    ids, mask = torch.zeros((4, width), dtype=torch.long), torch.zeros((4, width), dtype=torch.long)
    for r, p in enumerate(prompts):
        ids[r, width - len(p):], mask[r, width - len(p):] = torch.tensor(p), 1
    full = greedy(model, ids, mask.clone(), 6, lambda gen: False)
    ends = [full[r][:n] for r, n in enumerate([1, 3, 2, 5])]
    seqs = {0: [[24]], 1: [[20, 21], [20, 22, 23], [24]], 2: [[25]], 3: [[20, 21], [20, 22, 23], [24]]}
    kept, passes = {}, []

    def on_done(done, cache, m):
        passes.append([row for _, row, _ in done])
        for j, row, gen in done:
            shared = len(gen) if row % 2 == 0 else max(1, len(gen) - 1)
            kept[row] = (shared, CachedRow.take(cache, m, j, len(prompts[row]) + shared - 1, gen[shared - 1],
                                                seqs[row]))

    out = greedy(model, ids, mask.clone(), 6, lambda gen: gen in ends, on_done=on_done)
    assert out == ends and len(passes) >= 3 and passes[0] == [0]
    rows = [kept[r][1] for r in range(4)]
    sizes = trie_pass_sizes(monkeypatch)
    got = score_in_cache(model, rows, pad=0, max_tokens=8)  # tries of 2 and 6 tokens (the root fed again)
    assert sorted(sizes) == [[2, 2], [6], [6]]  # in the rows' order, each pass would pad a 2-token trie to 6
    for r in range(4):
        context = prompts[r] + out[r][:kept[r][0]]
        for seq, lp in zip(seqs[r], got[r], strict=True):
            logits = model(torch.tensor([context + seq])).logits[0].log_softmax(-1)
            want = sum(logits[len(context) - 1 + k, t].item() for k, t in enumerate(seq))
            assert lp == pytest.approx(want, abs=1e-4)
