"""Human-picked words per example id (the `human_words` ablation and its overlap with attribution tokens).

A source is a JSON-lines file, or a folder of them, with one record per id in either layout:
``{"id": ..., "words": ["milk", "cold"]}``, or CoS-E's ``{"id": ..., "explanation": {"selected": "<span>"}}``
(the span of the question a person highlighted as the evidence; CoS-E v1.11, BSD-3, shipped under
``data/cos-e``). Words are the whitespace-separated tokens of the span with surrounding punctuation removed.
"""

from __future__ import annotations

import string
from pathlib import Path

from .datasets import read_json_records


def words_of(text: str) -> list[str]:
    return [w for w in (t.strip(string.punctuation) for t in str(text).split()) if w]


def read_human_words(path: str | list[str]) -> dict[str, list[str]]:
    """id -> words, from a file, a list of files or every ``*.jsonl`` file of a folder; errors name the file and
    line, also for an id given two different word lists."""
    if isinstance(path, (list, tuple)):
        files = [Path(f) for f in path]
    else:
        p = Path(path)
        files = sorted(p.glob("*.jsonl")) if p.is_dir() else [p]
    if not files or not all(f.exists() for f in files):
        raise FileNotFoundError(f"{path}: no human-word file (JSON lines with id and words, or CoS-E's layout)")
    out: dict[str, list[str]] = {}
    for f in files:
        for rec in read_json_records(f):
            data = rec.data
            if isinstance(data.get("words"), list):
                words = [str(w) for w in data["words"]]
            elif isinstance(data.get("explanation"), dict) and "selected" in data["explanation"]:
                words = words_of(data["explanation"]["selected"])
            else:
                raise ValueError(f"{rec.where}: expected 'words' (a list) or CoS-E's 'explanation.selected'")
            if "id" not in data:
                raise ValueError(f"{rec.where}: record has no 'id'")
            key = str(data["id"])
            if key in out and out[key] != words:
                raise ValueError(f"{rec.where}: id {key!r} already has different words {out[key]} in an earlier "
                                 f"record")
            out[key] = words
    return out


def overlap(human: dict[str, list[str]], reference: dict[str, list[str]]) -> dict:
    """Precision and recall of human words against reference words (the paper: IG tokens), over the ids both
    have: micro-averaged over lower-cased word types per example, as counts so they can be pooled. Both sides go
    through `words_of`, so punctuation around a word does not keep it from matching and a token that is only
    punctuation (an IG ``.``) is no word; an IG piece kept without the rest of its word (`ablations.ig_topk`)
    stays a piece."""
    ids = sorted(set(human) & set(reference))
    hit = n_human = n_ref = 0
    for i in ids:
        h, r = ({w.lower() for w in words_of(" ".join(words))} for words in (human[i], reference[i]))
        hit, n_human, n_ref = hit + len(h & r), n_human + len(h), n_ref + len(r)
    return {"examples": len(ids), "precision": hit / n_human if n_human else None,
            "recall": hit / n_ref if n_ref else None, "shared_words": hit}
