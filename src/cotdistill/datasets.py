"""Dataset loaders: every source is normalised into one schema per task and written as Parquet.

Schema (all tasks): ``id`` (str, unique), ``task`` ("mcqa", "nli" or "math"), ``answer_label`` (what the
student must emit between the ``[FIN_LABEL]`` markers), ``answer_text``, ``source_index`` (row number in the
source split, which aligns released teacher outputs such as the DSS files), ``source_fields`` (JSON of the
source's own fields that the schema does not name), plus per task:

- mcqa: ``question``, ``choices`` (list of ``{label, text}``); ``answer_label`` is the gold choice letter.
- nli: ``premise``, ``hypothesis``, ``choices`` (the three relations); ``answer_label`` is the relation.
- math (SVAMP): ``body``, ``question``, ``equation``, ``answer`` (float); ``answer_label`` is the equation.

Each loader is one registered function ``(name, spec, split) -> Loaded``; ``spec`` is the dataset's config entry.
Hub loaders also take ``path``: a local file or folder in the hub's own schema, for machines without the hub.
"""

from __future__ import annotations

import ast
import json
import logging
import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .registry import Registry

log = logging.getLogger(__name__)

TASK_COLUMNS = {
    "mcqa": ["question", "choices"],
    "nli": ["premise", "hypothesis", "choices"],
    "math": ["body", "question", "equation", "answer"],
}
COMMON_COLUMNS = ["id", "task", "answer_label", "answer_text", "source_index", "source_fields"]
NLI_LABELS = ["entailment", "neutral", "contradiction"]
LETTERS = "ABCDEFGHIJ"


class DatasetError(ValueError):
    """Bad or unreachable dataset input; the message names the file or hub id and the row."""


@dataclass
class Loaded:
    """Rows from one source split, and where they came from (for error messages)."""

    rows: list[dict[str, Any]]
    source: str


Loader = Callable[[str, dict, str], Loaded]
LOADERS: Registry[Loader] = Registry("dataset loader")


# --------------------------------------------------------------------------- sources


def _source_split(spec: dict, split: str, default: dict[str, str]) -> str:
    mapping = {**default, **spec.get("split_map", {})}
    if split not in mapping:
        raise DatasetError(f"split {split!r} is not available for loader {spec['loader']!r}; "
                           f"available: {', '.join(mapping)} (config key split_map adds more)")
    return mapping[split]


def _hub_or_local(name: str, spec: dict, hub_id: str, config: str | None, source_split: str):
    """Load a split from the hub, or from ``spec['path']`` holding files in the hub's schema."""
    import datasets

    path = spec.get("path")
    if path:
        p = Path(path)
        files = sorted(p.glob(f"{source_split}*")) if p.is_dir() else [p]
        if not files or not files[0].exists():
            raise DatasetError(f"{path}: no file for split {source_split!r} (expected {source_split}.jsonl, "
                               f".json or .parquet inside the folder)")
        kind = "parquet" if files[0].suffix == ".parquet" else "json"
        ds = datasets.load_dataset(kind, data_files=[str(f) for f in files], split="train")
        return ds, ", ".join(str(f) for f in files)
    hub_id = spec.get("hub_id", hub_id)
    try:
        ds = datasets.load_dataset(hub_id, config, split=source_split, revision=spec.get("revision"))
    except (ConnectionError, OSError) as err:
        raise DatasetError(
            f"could not load {hub_id!r} (split {source_split!r}) from the Hugging Face hub: {err}. "
            f"Without the hub, set config key datasets.{name}.path to a local copy in the hub's schema "
            f"(a .jsonl/.parquet file or a folder with one file per split)"
        ) from None
    return ds, f"hub:{hub_id}/{source_split}"


def _read_json_rows(path: Path) -> list[dict]:
    """Read JSON lines (or one JSON list) through `datasets`, keeping the file order."""
    import datasets

    if not path.exists():
        raise DatasetError(f"{path}: file does not exist")
    return list(datasets.load_dataset("json", data_files=str(path), split="train"))


def _extra(row: dict, used: Iterable[str]) -> str:
    used = set(used)
    return json.dumps({k: v for k, v in row.items() if k not in used}, sort_keys=True, default=str)


def _mcqa(i: int, rid: str, question: str, labels: list[str], texts: list[str], answer_label: str,
          row: dict, used: Iterable[str]) -> dict:
    choices = [{"label": str(lab), "text": str(t)} for lab, t in zip(labels, texts, strict=True)]
    answer_text = next((c["text"] for c in choices if c["label"] == answer_label), None)
    return {"id": str(rid), "task": "mcqa", "question": question.strip(), "choices": choices,
            "answer_label": answer_label, "answer_text": answer_text, "source_index": i,
            "source_fields": _extra(row, used)}


@LOADERS.register("csqa_hub")
def csqa_hub(name: str, spec: dict, split: str) -> Loaded:
    """CommonsenseQA from the hub (`tau/commonsense_qa`); its test split has no answers."""
    src = _source_split(spec, split, {"train": "train", "validation": "validation", "test": "validation"})
    ds, source = _hub_or_local(name, spec, "tau/commonsense_qa", None, src)
    rows = [_mcqa(i, r["id"], r["question"], r["choices"]["label"], r["choices"]["text"], r["answerKey"], r,
                  ["id", "question", "choices", "answerKey"]) for i, r in enumerate(ds)]
    return Loaded(rows, source)


@LOADERS.register("csqa_jsonl")
def csqa_jsonl(name: str, spec: dict, split: str) -> Loaded:
    """CommonsenseQA v1.11 release files; the labelled dev set serves as test, as in both papers."""
    files = {"train": "train_rand_split.jsonl", "test": "dev_rand_split.jsonl", **spec.get("files", {})}
    if split not in files:
        raise DatasetError(f"split {split!r} has no file for loader csqa_jsonl; config key files maps "
                           f"splits to files (have: {', '.join(files)})")
    path = Path(spec["path"]) / files[split]
    rows = []
    for i, r in enumerate(_read_json_rows(path)):
        q = r["question"]
        rows.append(_mcqa(i, r["id"], q["stem"], [c["label"] for c in q["choices"]],
                          [c["text"] for c in q["choices"]], r.get("answerKey"),
                          {**r, "question_concept": q.get("question_concept")}, ["id", "question", "answerKey"]))
    return Loaded(rows, str(path))


@LOADERS.register("csqa_dss")
def csqa_dss(name: str, spec: dict, split: str) -> Loaded:
    """CommonsenseQA in the Distilling Step-by-Step layout (``cqa_{split}.json``, answer given as text)."""
    path = Path(spec["path"]) / f"cqa_{_source_split(spec, split, {'train': 'train', 'test': 'test'})}.json"
    rows = []
    for i, r in enumerate(_read_json_rows(path)):
        labels = list(LETTERS[: len(r["choices"])])
        answer = next((lab for lab, t in zip(labels, r["choices"]) if t == r.get("answer")), None)
        if answer is None and r.get("answer"):
            raise DatasetError(f"{path}: row id {r['id']}: answer {r['answer']!r} is not among the choices "
                               f"{r['choices']}")
        rows.append(_mcqa(i, r["id"], r["question"], labels, r["choices"], answer, r,
                          ["id", "question", "choices", "answer"]))
    return Loaded(rows, str(path))


@LOADERS.register("openbookqa_hub")
def openbookqa_hub(name: str, spec: dict, split: str) -> Loaded:
    """OpenBookQA, `main` configuration (question stem only, no fact)."""
    src = _source_split(spec, split, {"train": "train", "validation": "validation", "test": "test"})
    ds, source = _hub_or_local(name, spec, "allenai/openbookqa", spec.get("hub_config", "main"), src)
    rows = [_mcqa(i, r["id"], r["question_stem"], r["choices"]["label"], r["choices"]["text"], r["answerKey"],
                  r, ["id", "question_stem", "choices", "answerKey"]) for i, r in enumerate(ds)]
    return Loaded(rows, source)


_QUAREL_CHOICES = re.compile(r"^(?P<stem>.*?)\s*\(A\)\s*(?P<a>.*?)\s*\(B\)\s*(?P<b>.*?)\s*$", re.S)


@LOADERS.register("quarel_hub")
def quarel_hub(name: str, spec: dict, split: str) -> Loaded:
    """QuaRel: the two options are inline in the question as ``(A) ... (B) ...``."""
    src = _source_split(spec, split, {"train": "train", "validation": "validation", "test": "test"})
    ds, source = _hub_or_local(name, spec, "allenai/quarel", None, src)
    rows = []
    for i, r in enumerate(ds):
        m = _QUAREL_CHOICES.match(r["question"])
        if not m:
            raise DatasetError(f"{source}: row id {r['id']}: question has no '(A) ... (B) ...' options")
        rows.append(_mcqa(i, r["id"], m["stem"], ["A", "B"], [m["a"], m["b"]], "AB"[r["answer_index"]], r,
                          ["id", "question", "answer_index"]))
    return Loaded(rows, source)


def _nli(i: int, rid: str, r: dict, label: Any, used: Iterable[str]) -> dict:
    name = NLI_LABELS[label] if isinstance(label, int) and 0 <= label < 3 else (label or None)
    return {"id": str(rid), "task": "nli", "premise": r["premise"], "hypothesis": r["hypothesis"],
            "choices": [{"label": lab, "text": lab} for lab in NLI_LABELS], "answer_label": name,
            "answer_text": name, "source_index": i, "source_fields": _extra(r, used)}


@LOADERS.register("esnli_hub")
def esnli_hub(name: str, spec: dict, split: str) -> Loaded:
    """e-SNLI; rows have no ids, so the id is the split and row number (as DSS aligns its PaLM files)."""
    src = _source_split(spec, split, {"train": "train", "validation": "validation", "test": "test"})
    ds, source = _hub_or_local(name, spec, "esnli", None, src)
    rows = [_nli(i, f"{src}-{i}", r, r["label"], ["premise", "hypothesis", "label"])
            for i, r in enumerate(ds) if r["label"] in (0, 1, 2)]
    return Loaded(rows, source)


@LOADERS.register("anli_hub")
def anli_hub(name: str, spec: dict, split: str) -> Loaded:
    """ANLI of one round (config key ``round``, default 1)."""
    rnd = spec.get("round", 1)
    default = {"train": f"train_r{rnd}", "validation": f"dev_r{rnd}", "test": f"test_r{rnd}"}
    ds, source = _hub_or_local(name, spec, "facebook/anli", None, _source_split(spec, split, default))
    rows = [_nli(i, r["uid"], r, r["label"], ["uid", "premise", "hypothesis", "label"]) for i, r in enumerate(ds)]
    return Loaded(rows, source)


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def eval_equation(equation: str) -> float:
    """Value of an arithmetic equation such as ``( 84.0 / 2.0 )`` without calling eval()."""

    def walk(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -walk(node.operand)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return float(node.value)
        raise ValueError(f"not an arithmetic equation: {equation!r}")

    try:
        return walk(ast.parse(equation.strip(), mode="eval"))
    except (SyntaxError, ZeroDivisionError) as err:
        raise ValueError(f"not an arithmetic equation: {equation!r} ({err})") from None


def _math(i: int, rid: str, body: str, question: str, equation: str, answer: float | None, r: dict,
          used: Iterable[str]) -> dict:
    return {"id": str(rid), "task": "math", "body": body.strip(), "question": question.strip(),
            "equation": equation.strip(), "answer": float(answer) if answer is not None else None,
            "answer_label": equation.strip(), "answer_text": None if answer is None else f"{float(answer):g}",
            "source_index": i, "source_fields": _extra(r, used)}


@LOADERS.register("svamp_hub")
def svamp_hub(name: str, spec: dict, split: str) -> Loaded:
    """SVAMP (`ChilleD/SVAMP`, 700/300 split); ``path`` may also point at the original SVAMP.json."""
    src = _source_split(spec, split, {"train": "train", "test": "test"})
    ds, source = _hub_or_local(name, spec, "ChilleD/SVAMP", None, src)
    rows = [_math(i, r["ID"], r["Body"], r["Question"], r["Equation"], r["Answer"], r,
                  ["ID", "Body", "Question", "Equation", "Answer"]) for i, r in enumerate(ds)]
    return Loaded(rows, source)


@LOADERS.register("svamp_dss")
def svamp_dss(name: str, spec: dict, split: str) -> Loaded:
    """SVAMP in the DSS layout (``svamp_{split}.json``: input = body + newline + question, label = equation)."""
    src = _source_split(spec, split, {"train": "train", "test": "test"})
    path = Path(spec["path"]) / f"svamp_{src}.json"
    rows = []
    for i, r in enumerate(_read_json_rows(path)):
        body, _, question = r["input"].rpartition("\n")
        try:
            value = eval_equation(r["label"])
        except ValueError as err:
            raise DatasetError(f"{path}: row {i}: {err}") from None
        rows.append(_math(i, f"{src}-{i}", body, question, r["label"], value, r, ["input", "label"]))
    return Loaded(rows, str(path))


# --------------------------------------------------------------------------- checks and sampling


def check_rows(df: pd.DataFrame, source: str) -> None:
    """Fail on the first duplicate id, missing answer, or answer outside the choices, naming the row."""
    dup = df["id"][df["id"].duplicated()]
    if len(dup):
        raise DatasetError(f"{source}: duplicate row id {dup.iloc[0]!r} ({len(dup)} duplicates)")
    for row in df.itertuples(index=False):
        if row.answer_label is None or (isinstance(row.answer_label, float) and np.isnan(row.answer_label)) \
                or str(row.answer_label).strip() == "":
            raise DatasetError(f"{source}: row id {row.id!r}: missing answer")
        if row.task in ("mcqa", "nli"):
            labels = [c["label"] for c in row.choices]
            if row.answer_label not in labels:
                raise DatasetError(f"{source}: row id {row.id!r}: answer {row.answer_label!r} is not among "
                                   f"the choices {labels}")


def subsample(df: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    """Seeded subset that keeps source order; a larger n gives a superset of a smaller one."""
    if n is None or n >= len(df):
        return df
    order = np.random.default_rng(seed).permutation(len(df))[:n]
    return df.iloc[np.sort(order)].reset_index(drop=True)


def load_split(name: str, spec: dict, split: str, seed: int = 0) -> pd.DataFrame:
    """Load, normalise, check and subsample one split of the dataset configured as `name`."""
    loader = LOADERS.get(spec["loader"], f"datasets.{name}.loader")
    loaded = loader(name, spec, split)
    if not loaded.rows:
        raise DatasetError(f"{loaded.source}: no rows for split {split!r}")
    df = pd.DataFrame(loaded.rows)
    check_rows(df, loaded.source)
    n = (spec.get("subsample") or {}).get(split)
    out = subsample(df, n, seed)
    task = out["task"].iloc[0]
    log.info("%s/%s: %d rows from %s, kept %d (seed %d)", name, split, len(df), loaded.source, len(out), seed)
    return out[COMMON_COLUMNS + TASK_COLUMNS[task]]
