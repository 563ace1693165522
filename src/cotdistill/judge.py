"""Rationale quality (MI paper, Tables 7-8): a judge model grades rationales 1-5 on seeded test items.

One `judge` job per fine-tuned model writes its rationales on the judged items and their grades; one per teacher
grades the teacher's own test rationales (the reference). Rationales come from what each model was trained to
write: a multi-task student's explain task (its explain prefix and suffix around the input), a CoT-before model's text
before its label (from its evaluation's predictions), a CoT-after model's text after its label (generated past the
closing marker). The items are `items` test ids drawn with a seed keyed by id (the same for every model of a
dataset), among those the teacher has a test rationale for, so every source is graded on the same items.

The judge is any configured teacher (`teachers.BACKENDS`: vLLM on a cluster, the transformers backend on CPU),
sampled `samples` times per rationale at its temperature with a seed per (item, sample) for self-consistency; each
reply's first match of the template's ``score_pattern`` is its grade (none: unparsed, counted). The report gives
each source's mean grade with a bootstrap interval over items and the Pearson correlation between an item's mean
grade and whether the model's label was right (the teacher's: whether its label agrees with gold), with its p.
"""

from __future__ import annotations

import gc
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from . import io
from .ablations import keyed_rng, text_after_label, text_before_label
from .datasets import COMMON_COLUMNS
from .targets import format_source

log = logging.getLogger(__name__)

JUDGED_KINDS = ("multitask", "cot_before", "cot_after")  # ablation kinds whose models write a rationale
JUDGE_COLUMNS = ["id", "source", "rationale", "correct", "scores", "score", "unparsed"]


@dataclass(frozen=True)
class JudgePrompt:
    template: str
    score_pattern: re.Pattern

    def render(self, row: dict, rationale: str) -> str:
        return self.template.format(input=item_text(row), rationale=" ".join(rationale.split()) or "(none)")

    def score(self, reply: str) -> int | None:
        m = self.score_pattern.search(reply)
        group = m.group(1) if m else None  # None also where the group is optional and took no part
        grade = int(group) if group and group.isascii() and group.isdigit() else None
        return grade if grade is not None and 1 <= grade <= 5 else None


def load_prompt(path: str | Path) -> JudgePrompt:
    data = yaml.safe_load(Path(path).read_text()) or {}
    missing = [k for k in ("template", "score_pattern") if k not in data]
    if missing:
        raise ValueError(f"{path}: judge prompt lacks keys {missing}; required: template, score_pattern")
    for field in ("{input}", "{rationale}"):
        if field not in data["template"]:
            raise ValueError(f"{path}: the judge template must contain {field}")
    pattern = re.compile(data["score_pattern"])
    if pattern.groups != 1:
        raise ValueError(f"{path}: score_pattern must have exactly one group, the grade (1-5); it has "
                         f"{pattern.groups}")
    return JudgePrompt(data["template"], pattern)


def item_text(row: dict) -> str:
    """The item as the student reads it, without the trailing ``Answer:`` cue."""
    return format_source(row).removesuffix("Answer:").rstrip()


def select_items(ids: list[str], n: int, seed: int) -> list[str]:
    """`n` ids drawn by a key of (seed, id) alone: the same items whatever the order or the other ids."""
    return sorted(ids, key=lambda i: keyed_rng(seed, "judge", str(i)).random())[:n]


def model_rationales(model_dir: str, rows: list[dict], kind: str, predictions: pd.DataFrame, prefix: str,
                     max_new_tokens: int, batch_size: int, suffix: str = "") -> list[str]:
    """The rationale a fine-tuned model writes for each row (module docstring); `prefix` and `suffix` frame its
    inputs (a multi-task student's explain task)."""
    if kind == "cot_before":
        generated = predictions.set_index("id")["generated"]
        return [text_before_label(str(generated[r["id"]])) for r in rows]
    import torch
    from transformers import AutoTokenizer

    from .evaluation import generate
    from .models import load_student

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = load_student(model_dir).to("cuda" if torch.cuda.is_available() else "cpu").eval()
    sources = [format_source(r, prefix, suffix) for r in rows]
    texts = generate(model, tok, sources, max_new_tokens, batch_size, stop_at_marker=False, desc="rationales")
    return [t.strip() if kind == "multitask" else text_after_label(t) for t in texts]


def grade(judge, prompt: JudgePrompt, rows: list[dict], rationales: list[str], samples: int,
          decoding: dict, batch_size: int) -> list[list[int | None]]:
    """`samples` grades per rationale from a teacher backend (`teachers.Backend`), each sample seeded by its
    (item id, sample index)."""
    from tqdm.auto import tqdm

    prompts = judge.prepare([prompt.render(r, t) for r, t in zip(rows, rationales, strict=True)])
    jobs = [(i, k) for i in range(len(rows)) for k in range(samples)]
    out: list[list[int | None]] = [[None] * samples for _ in rows]
    for start in tqdm(range(0, len(jobs), batch_size), desc="judge", unit="batch"):
        chunk = jobs[start:start + batch_size]
        replies = judge.generate([prompts[i] for i, _ in chunk],
                                 pd.DataFrame({"id": [f"{rows[i]['id']}#{k}" for i, k in chunk]}), decoding)
        for (i, k), reply in zip(chunk, replies, strict=True):
            out[i][k] = prompt.score(reply)
    return out


def judge_frame(ids: list[str], source: str, rationales: list[str], correct: list[bool],
                scores: list[list[int | None]]) -> pd.DataFrame:
    means = [float(np.mean([s for s in row if s is not None])) if any(s is not None for s in row) else np.nan
             for row in scores]
    return pd.DataFrame({"id": ids, "source": source, "rationale": rationales, "correct": correct,
                         "scores": [[np.nan if s is None else float(s) for s in row] for row in scores],
                         "score": means, "unparsed": [sum(s is None for s in row) for row in scores]},
                        columns=JUDGE_COLUMNS)


def judge_files(data: str, teacher_rationales: str, out: str, spec: dict, judge_spec: dict, judge_name: str,
                prompt_path: str, seed: int, batch_size: int, threads: int = 1, model_dir: str | None = None,
                predictions: str | None = None, kind: str | None = None, prefix: str = "",
                max_new_tokens: int = 256, suffix: str = "") -> pd.DataFrame:
    """The `judge` rule: grades the rationales of the model in `model_dir` (kind `kind`, its evaluation's
    `predictions`) or, without a model, the teacher's own test rationales; writes one row per item (`JUDGE_COLUMNS`).
    `spec`: the judge entry (items, samples, temperature, max_new_tokens); `judge_spec`: its teacher's spec."""
    import torch

    from .teachers import BACKENDS, DEFAULT_DECODING

    torch.set_num_threads(threads)
    prompt = load_prompt(prompt_path)
    test = io.read_parquet(data, required=COMMON_COLUMNS)
    teacher = io.read_parquet(teacher_rationales, required=["id", "rationale", "agrees"])
    known = set(teacher["id"])
    pool = [i for i in test["id"] if i in known]
    if not pool:
        raise ValueError(f"{teacher_rationales}: the teacher has no rationale for any test item of {data}; the judge "
                         f"grades every source on items the teacher has a rationale for")
    ids = select_items(pool, int(spec["items"]), seed)
    rows = test.set_index("id").loc[ids].reset_index().to_dict("records")
    if model_dir is None:
        by_id = teacher.set_index("id")
        rationales = [str(by_id.loc[i, "rationale"]) for i in ids]
        correct = [bool(by_id.loc[i, "agrees"]) for i in ids]
        source = "teacher"
    else:
        pred = io.read_parquet(predictions, required=["id", "generated", "predicted_class", "gold_class"])
        hit = pred.set_index("id")
        correct = [bool(hit.loc[i, "predicted_class"] == hit.loc[i, "gold_class"] != "<invalid>") for i in ids]
        rationales = model_rationales(model_dir, rows, kind, pred, prefix, max_new_tokens, batch_size, suffix)
        source = Path(model_dir).as_posix()
        gc.collect()  # the student is gone: give its (GPU) memory back before the judge loads
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    empty = sum(not t.strip() for t in rationales)
    if empty == len(rationales):
        raise ValueError(f"{source}: no rationale on any of the {len(ids)} judged items (kind {kind}); nothing to "
                         f"grade")
    backend = BACKENDS.get(judge_spec["backend"], f"teachers.{judge_name}.backend")
    judge = backend(judge_name, judge_spec, Path(data).parent.name, "test", threads)
    decoding = {**DEFAULT_DECODING, **judge_spec.get("decoding", {}), "temperature": float(spec["temperature"]),
                "max_new_tokens": int(spec["max_new_tokens"]), "stop": ["\n"], "seed": seed}
    scores = grade(judge, prompt, rows, rationales, int(spec["samples"]), decoding, batch_size)
    df = judge_frame(ids, source, rationales, correct, scores)
    unparsed = int(df["unparsed"].sum())
    if unparsed == len(ids) * int(spec["samples"]):
        raise ValueError(f"{source}: the judge {judge_name!r} gave no parseable score in any of its "
                         f"{unparsed} replies (score pattern {prompt.score_pattern.pattern!r})")
    log.info("%s: %d items, mean grade %.2f, %d of %d replies unparsed, %d empty rationales", source, len(ids),
             df["score"].mean(), unparsed, len(ids) * int(spec["samples"]), empty)
    io.write_parquet(df, out)
    return df
