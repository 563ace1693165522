import pytest

from cotdistill.prompts import format_choices, load_template

from .conftest import ROOT

ROW = {"question": "Where do you keep milk?", "answer_label": "B", "answer_text": "fridge",
       "choices": [{"label": "A", "text": "oven"}, {"label": "B", "text": "fridge"}]}


def test_csqa_prompt_renders_two_shots_then_target():
    t = load_template(ROOT / "prompts/csqa.yaml")
    text = t.render(ROW)
    assert text.startswith("Given the following two examples of question-answer-rationale triplets")
    assert text.count("Rationale: The answer is") == 2
    assert text.endswith("Question: Where do you keep milk?\nChoices: A: oven; B: fridge\n"
                         "Answer: B (fridge)\nRationale:")


def test_quarel_prompt_uses_inline_choices():
    t = load_template(ROOT / "prompts/quarel.yaml")
    assert t.render(ROW).endswith("Question: Where do you keep milk? (A) oven (B) fridge\nAnswer: B (fridge)\n"
                                  "Rationale:")


def test_every_shipped_template_loads_and_matches_its_examples():
    from cotdistill.judge import load_prompt

    load_prompt(ROOT / "prompts/judge.yaml")  # the judge's prompt, not a teacher's
    for path in sorted(p for p in (ROOT / "prompts").glob("*.yaml") if p.name != "judge.yaml"):
        t = load_template(path)
        for ex in t.examples:
            m = t.answer_regex().search(ex["rationale"])
            assert m and m.group(1).strip() == ex["answer_label"], path


def test_hash_follows_file_content(tmp_path):
    src = (ROOT / "prompts/csqa.yaml").read_text()
    (tmp_path / "a.yaml").write_text(src)
    (tmp_path / "b.yaml").write_text(src.replace("cupboard", "cabinet"))
    assert load_template(tmp_path / "a.yaml").hash == load_template(ROOT / "prompts/csqa.yaml").hash
    assert load_template(tmp_path / "a.yaml").hash != load_template(tmp_path / "b.yaml").hash


def test_template_errors_name_the_file(tmp_path):
    (tmp_path / "t.yaml").write_text("instruction: x\n")
    with pytest.raises(ValueError, match=r"t.yaml: prompt template lacks keys"):
        load_template(tmp_path / "t.yaml")
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_template(tmp_path / "nope.yaml")


def test_format_choices_styles():
    assert format_choices(ROW["choices"], "semicolon") == "A: oven; B: fridge"
    assert format_choices(ROW["choices"], "inline") == "(A) oven (B) fridge"
