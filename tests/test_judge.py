"""The rationale-quality judge: its prompt, score parsing, item draw and rationale extraction."""

import pytest

from cotdistill.ablations import text_after_label, text_before_label
from cotdistill.judge import load_prompt, select_items

from .conftest import ROOT

ROW = {"id": "q1", "task": "mcqa", "question": "Where is milk kept cold?",
       "choices": [{"label": "A", "text": "oven"}, {"label": "B", "text": "fridge"}], "answer_label": "B",
       "answer_text": "fridge"}


def test_prompt_shows_the_item_and_rationale_but_not_the_answer():
    prompt = load_prompt(ROOT / "prompts/judge.yaml")
    text = prompt.render(ROW, "cold   things go\nin the fridge")
    assert "Question: Where is milk kept cold?\nChoices: A: oven; B: fridge\nExplanation: cold things go in the " \
           "fridge" in text
    assert "Answer:" not in text and text.rstrip().endswith("Score:")
    assert "(none)" in prompt.render(ROW, "  ")


@pytest.mark.parametrize(("reply", "score"), [(" 4", 4), ("4/5", 4), (" Score: 2.", 2), (" five", None),
                                               (" 7 then 3", 3), ("", None), (" Rating (1-5): 4", 4),
                                               (" On a scale of 1 to 5, I give it 3", 3), (" 10", None),
                                               (" 3.5", None), ("\n\n2\n", 2), (" 1–5: 4", 4),
                                               (" x3", None), (" GPT4 says 3", 3), (" **4**", 4),
                                               (" between 1 and 5, I say 4", 4), (" (4)", 4)])
def test_the_first_digit_from_1_to_5_is_the_score(reply, score):
    assert load_prompt(ROOT / "prompts/judge.yaml").score(reply) == score


def test_a_prompt_without_its_fields_is_refused(tmp_path):
    bad = tmp_path / "judge.yaml"
    bad.write_text("template: 'Rate {rationale}'\nscore_pattern: '([1-5])'\n")
    with pytest.raises(ValueError, match=r"must contain \{input\}"):
        load_prompt(bad)
    bad.write_text("template: 'Rate {input}: {rationale}'\nscore_pattern: '[1-5]'\n")
    with pytest.raises(ValueError, match="exactly one group, the grade"):
        load_prompt(bad)
    bad.write_text("template: 'Rate {input}: {rationale}'\nscore_pattern: '(\\d+)'\n")
    assert [load_prompt(bad).score(r) for r in (" 7", " 0", " 5")] == [None, None, 5]  # a grade outside 1-5


def test_items_are_drawn_by_id_whatever_the_order_or_the_rest():
    ids = [f"q{i}" for i in range(40)]
    picked = select_items(ids, 5, seed=0)
    assert len(set(picked)) == 5
    assert select_items(list(reversed(ids)), 5, seed=0) == picked
    assert set(select_items(ids, 8, seed=0)) > set(picked)  # more items keep the fewer ones
    assert select_items(ids, 5, seed=1) != picked


def test_rationales_are_cut_around_the_label():
    assert text_before_label("milk spoils when warm [FIN_LABEL] fridge [FIN_LABEL]") == "milk spoils when warm"
    assert text_after_label(" [FIN_LABEL] fridge [FIN_LABEL] milk spoils when warm") == "milk spoils when warm"
    assert text_after_label(" [FIN_LABEL] fridge") == ""
