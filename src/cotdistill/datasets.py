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
Bad input stops with the file and line (or hub split and row) and what was expected; splits that share items
(same id or same normalised input) are an error unless ``overlap`` says otherwise.
"""

from __future__ import annotations

import ast
import json
import logging
import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import combinations
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
SPLIT_ORDER = ("train", "validation", "test")
OVERLAP_MODES = ("error", "allow", "drop")


class DatasetError(ValueError):
    """Bad or unreachable dataset input; the message names the file or hub id and the row."""


@dataclass(frozen=True)
class Record:
    """One source row and where it came from (``file: line 12``, ``hub:id/split row 3``)."""

    where: str
    data: dict[str, Any]


@dataclass
class Loaded:
    """Rows from one source split, and where they came from (for error messages)."""

    rows: list[dict[str, Any]]
    source: str


Loader = Callable[[str, dict, str], Loaded]
LOADERS: Registry[Loader] = Registry("dataset loader")


# --------------------------------------------------------------------------- reading


def read_json_records(path: str | Path) -> list[Record]:
    """JSON lines (or one JSON list) with the line of every row, and errors that name file and line."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: file does not exist")
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise DatasetError(f"{path}: file is empty; expected JSON lines (one object per line) or a JSON list")
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as err:
            raise DatasetError(f"{path}: line {err.lineno}: not valid JSON ({err.msg})") from None
        records = [Record(f"{path}: item {i}", r) for i, r in enumerate(items)]
    else:
        records = []
        for n, line in enumerate(text.split("\n"), 1):  # not splitlines(): U+2028 may sit inside a JSON string
            line = line.removesuffix("\r")
            if not line.strip():
                continue
            try:
                records.append(Record(f"{path}: line {n}", json.loads(line)))
            except json.JSONDecodeError as err:
                raise DatasetError(f"{path}: line {n}: not valid JSON ({err.msg}); is the line truncated?") from None
    for rec in records:
        if not isinstance(rec.data, dict):
            raise DatasetError(f"{rec.where}: expected a JSON object, got {type(rec.data).__name__}")
    return records


def convert(records: Iterable[Record], fn: Callable[[int, dict], dict | None]) -> list[dict]:
    """Apply a row constructor, turning a missing or malformed field into an error naming the row."""
    rows = []
    for i, rec in enumerate(records):
        try:
            row = fn(i, rec.data)
        except KeyError as err:
            raise DatasetError(f"{rec.where}: missing field {err}; fields present: "
                               f"{', '.join(sorted(rec.data))}") from None
        except (TypeError, ValueError, AttributeError, IndexError) as err:
            raise DatasetError(f"{rec.where}: {err}") from None
        if row is not None:
            rows.append(row)
    return rows


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"field {field!r} is {value!r}; expected non-empty text")
    return value.strip()


def _id(value: Any, field: str = "id") -> str:
    if value is None or str(value).strip() == "":
        raise ValueError(f"field {field!r} is {value!r}; expected an id")
    return str(value)


def _source_split(spec: dict, split: str, default: dict[str, str]) -> str:
    mapping = {**default, **spec.get("split_map", {})}
    if split not in mapping:
        raise DatasetError(f"split {split!r} is not available for loader {spec['loader']!r}; "
                           f"available: {', '.join(mapping)} (config key split_map adds more)")
    return mapping[split]


def _hub_or_local(name: str, spec: dict, hub_id: str, config: str | None, source_split: str) -> tuple[list[Record],
                                                                                                    str]:
    """Records of a split from the hub, or from ``spec['path']`` holding files in the hub's schema."""
    path = spec.get("path")
    if path:
        p = Path(path)
        shard = r"(?:-\d{5}-of-\d{5}(?:-[0-9a-f]{16})?)?"  # hub shards, hashed by older `datasets` versions
        own = re.compile(rf"{re.escape(source_split)}{shard}\.(?:jsonl|json|parquet)")
        files = sorted(f for f in p.iterdir() if own.fullmatch(f.name)) if p.is_dir() else [p]
        if not files or not files[0].exists():  # only the split's own files: not train.jsonl.bak, not train_r2
            raise DatasetError(f"{path}: no file for split {source_split!r} (expected {source_split}.jsonl, "
                               f".json, .parquet or {source_split}-00000-of-00001.parquet shards inside the folder)")
        records: list[Record] = []
        for f in files:
            if f.suffix == ".parquet":
                import pyarrow.parquet as pq

                records += [Record(f"{f}: row {i}", r) for i, r in enumerate(pq.read_table(f).to_pylist())]
            else:
                records += read_json_records(f)
        return records, ", ".join(str(f) for f in files)
    import datasets

    hub_id = spec.get("hub_id", hub_id)
    try:
        ds = datasets.load_dataset(hub_id, config, split=source_split, revision=spec.get("revision"))
    except (ConnectionError, OSError) as err:
        raise DatasetError(
            f"could not load {hub_id!r} (split {source_split!r}) from the Hugging Face hub: {err}. "
            f"Without the hub, set config key datasets.{name}.path to a local copy in the hub's schema "
            f"(a .jsonl/.parquet file or a folder with one file per split)"
        ) from None
    source = f"hub:{hub_id}/{source_split}"
    return [Record(f"{source} row {i}", r) for i, r in enumerate(ds)], source


def _extra(row: dict, used: Iterable[str]) -> str:
    used = set(used)
    return json.dumps({k: v for k, v in row.items() if k not in used}, sort_keys=True, default=str)


# --------------------------------------------------------------------------- row constructors


def _mcqa(i: int, rid: Any, question: Any, labels: list, texts: list, answer_label: Any, row: dict,
          used: Iterable[str]) -> dict:
    choices = [{"label": _id(lab, "choice label"), "text": _text(t, "choice text")}
               for lab, t in zip(labels, texts, strict=True)]
    answer_text = next((c["text"] for c in choices if c["label"] == answer_label), None)
    return {"id": _id(rid), "task": "mcqa", "question": _text(question, "question"), "choices": choices,
            "answer_label": answer_label, "answer_text": answer_text, "source_index": i,
            "source_fields": _extra(row, used)}


def _nli(i: int, rid: Any, r: dict, label: Any, used: Iterable[str]) -> dict:
    name = NLI_LABELS[label] if isinstance(label, int) and 0 <= label < 3 else (label or None)
    return {"id": _id(rid), "task": "nli", "premise": _text(r["premise"], "premise"),
            "hypothesis": _text(r["hypothesis"], "hypothesis"),
            "choices": [{"label": lab, "text": lab} for lab in NLI_LABELS], "answer_label": name,
            "answer_text": name, "source_index": i, "source_fields": _extra(r, used)}


def _math(i: int, rid: Any, body: Any, question: Any, equation: Any, answer: float | None, r: dict,
          used: Iterable[str]) -> dict:
    equation = _text(equation, "equation")
    eval_equation(equation)  # a gold answer that is no arithmetic equation could never be scored
    return {"id": _id(rid), "task": "math", "body": _text(body, "body"), "question": _text(question, "question"),
            "equation": equation, "answer": float(answer) if answer is not None else None,
            "answer_label": equation, "answer_text": None if answer is None else f"{float(answer):g}",
            "source_index": i, "source_fields": _extra(r, used)}


# --------------------------------------------------------------------------- loaders


@LOADERS.register("csqa_hub")
def csqa_hub(name: str, spec: dict, split: str) -> Loaded:
    """CommonsenseQA from the hub (`tau/commonsense_qa`); its test split has no answers."""
    src = _source_split(spec, split, {"train": "train", "validation": "validation", "test": "validation"})
    records, source = _hub_or_local(name, spec, "tau/commonsense_qa", None, src)
    return Loaded(convert(records, lambda i, r: _mcqa(
        i, r["id"], r["question"], r["choices"]["label"], r["choices"]["text"], r["answerKey"], r,
        ["id", "question", "choices", "answerKey"])), source)


@LOADERS.register("csqa_jsonl")
def csqa_jsonl(name: str, spec: dict, split: str) -> Loaded:
    """CommonsenseQA v1.11 release files; the labelled dev set serves as test, as in both papers."""
    files = {"train": "train_rand_split.jsonl", "test": "dev_rand_split.jsonl", **spec.get("files", {})}
    if split not in files:
        raise DatasetError(f"split {split!r} has no file for loader csqa_jsonl; config key files maps "
                           f"splits to files (have: {', '.join(files)})")
    path = Path(spec["path"]) / files[split]

    def row(i: int, r: dict) -> dict:
        q = r["question"]
        return _mcqa(i, r["id"], q["stem"], [c["label"] for c in q["choices"]], [c["text"] for c in q["choices"]],
                     r.get("answerKey"), {**r, "question_concept": q.get("question_concept")},
                     ["id", "question", "answerKey"])

    return Loaded(convert(read_json_records(path), row), str(path))


@LOADERS.register("csqa_dss")
def csqa_dss(name: str, spec: dict, split: str) -> Loaded:
    """CommonsenseQA in the Distilling Step-by-Step layout (``cqa_{split}.json``, answer given as text)."""
    path = Path(spec["path"]) / f"cqa_{_source_split(spec, split, {'train': 'train', 'test': 'test'})}.json"

    def row(i: int, r: dict) -> dict:
        labels = list(LETTERS[: len(r["choices"])])
        answer = next((lab for lab, t in zip(labels, r["choices"]) if t == r.get("answer")), None)
        if answer is None and r.get("answer"):
            raise ValueError(f"row id {r.get('id')}: answer {r['answer']!r} is not among the choices {r['choices']}")
        return _mcqa(i, r["id"], r["question"], labels, r["choices"], answer, r, ["id", "question", "choices",
                                                                                 "answer"])

    return Loaded(convert(read_json_records(path), row), str(path))


@LOADERS.register("openbookqa_hub")
def openbookqa_hub(name: str, spec: dict, split: str) -> Loaded:
    """OpenBookQA, `main` configuration (question stem only, no fact)."""
    src = _source_split(spec, split, {"train": "train", "validation": "validation", "test": "test"})
    records, source = _hub_or_local(name, spec, "allenai/openbookqa", spec.get("hub_config", "main"), src)
    return Loaded(convert(records, lambda i, r: _mcqa(
        i, r["id"], r["question_stem"], r["choices"]["label"], r["choices"]["text"], r["answerKey"], r,
        ["id", "question_stem", "choices", "answerKey"])), source)


_QUAREL_CHOICES = re.compile(r"^(?P<stem>.*?)\s*\(A\)\s*(?P<a>.*?)\s*\(B\)\s*(?P<b>.*?)\s*$", re.S)


@LOADERS.register("quarel_hub")
def quarel_hub(name: str, spec: dict, split: str) -> Loaded:
    """QuaRel: the two options are inline in the question as ``(A) ... (B) ...``."""
    src = _source_split(spec, split, {"train": "train", "validation": "validation", "test": "test"})
    records, source = _hub_or_local(name, spec, "allenai/quarel", None, src)

    def row(i: int, r: dict) -> dict:
        m = _QUAREL_CHOICES.match(_text(r["question"], "question"))
        if not m:
            raise ValueError(f"row id {r.get('id')}: question has no '(A) ... (B) ...' options")
        if r["answer_index"] not in (0, 1):  # -1 would silently read as B
            raise ValueError(f"row id {r.get('id')}: answer_index {r['answer_index']!r}, expected 0 (A) or 1 (B)")
        return _mcqa(i, r["id"], m["stem"], ["A", "B"], [m["a"], m["b"]], "AB"[r["answer_index"]], r,
                     ["id", "question", "answer_index"])

    return Loaded(convert(records, row), source)


@LOADERS.register("esnli_hub")
def esnli_hub(name: str, spec: dict, split: str) -> Loaded:
    """e-SNLI; rows have no ids, so the id is the split and row number (as DSS aligns its PaLM files)."""
    src = _source_split(spec, split, {"train": "train", "validation": "validation", "test": "test"})
    records, source = _hub_or_local(name, spec, "esnli", None, src)
    return Loaded(convert(records, lambda i, r: _nli(i, f"{src}-{i}", r, r["label"], ["premise", "hypothesis",
                                                                                      "label"])
                          if r["label"] in (0, 1, 2) else None), source)


@LOADERS.register("esnli_dss")
def esnli_dss(name: str, spec: dict, split: str) -> Loaded:
    """e-SNLI in the DSS layout: ``esnli_{train,valid,test}.json`` (JSON lines: premise, hypothesis, integer label
    0/1/2 = entailment/neutral/contradiction, explanation_1..3); ids are split and row number."""
    src = _source_split(spec, split, {"train": "train", "validation": "valid", "test": "test"})
    path = Path(spec["path"]) / f"esnli_{src}.json"
    return Loaded(convert(read_json_records(path), lambda i, r: _nli(
        i, f"{src}-{i}", r, r["label"], ["premise", "hypothesis", "label"]) if r["label"] != -1 else None), str(path))


@LOADERS.register("anli_hub")
def anli_hub(name: str, spec: dict, split: str) -> Loaded:
    """ANLI of one round (config key ``round``, default 1)."""
    rnd = spec.get("round", 1)
    default = {"train": f"train_r{rnd}", "validation": f"dev_r{rnd}", "test": f"test_r{rnd}"}
    records, source = _hub_or_local(name, spec, "facebook/anli", None, _source_split(spec, split, default))
    return Loaded(convert(records, lambda i, r: _nli(i, r["uid"], r, r["label"], ["uid", "premise", "hypothesis",
                                                                                  "label"])), source)


@LOADERS.register("anli_dss")
def anli_dss(name: str, spec: dict, split: str) -> Loaded:
    """ANLI in the DSS layout: ``anli<round>_{train,valid,test}.json`` (JSON lines: uid, premise, hypothesis,
    integer label, reason); ``round`` defaults to 1 (the MI paper's ANLI)."""
    src = _source_split(spec, split, {"train": "train", "validation": "valid", "test": "test"})
    path = Path(spec["path"]) / f"anli{spec.get('round', 1)}_{src}.json"
    return Loaded(convert(read_json_records(path), lambda i, r: _nli(
        i, r["uid"], r, r["label"], ["uid", "premise", "hypothesis", "label"])), str(path))


# The task of each loader's rows: models transfer only between datasets of one task (same answer format), e.g.
# e-SNLI and ANLI (MI Table 6 "Out"); a test checks that every registered loader is here.
LOADER_TASKS = {"csqa_hub": "mcqa", "csqa_jsonl": "mcqa", "csqa_dss": "mcqa", "openbookqa_hub": "mcqa",
                "quarel_hub": "mcqa", "esnli_hub": "nli", "esnli_dss": "nli", "anli_hub": "nli", "anli_dss": "nli",
                "svamp_hub": "math", "svamp_dss": "math"}


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def eval_equation(equation: str) -> float:
    """Value of an arithmetic equation such as ``( 84.0 / 2.0 )`` from its syntax tree, never with eval()."""

    def walk(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -walk(node.operand)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value,
                                                                                                     bool):
            return float(node.value)
        raise ValueError(f"not an arithmetic equation: {equation!r}")

    if len(equation) > 1000:
        raise ValueError(f"not an arithmetic equation: {equation[:40]!r}... is too long")
    try:
        return walk(ast.parse(equation.strip(), mode="eval"))
    except (SyntaxError, ZeroDivisionError, RecursionError, OverflowError) as err:  # Overflow: an int over 1e308
        raise ValueError(f"not an arithmetic equation: {equation!r} ({err})") from None


def is_equation(text: str) -> bool:
    """Whether `text` is an arithmetic equation with at least one operation: SVAMP's labels are equations, and a
    bare number ("7") states the answer without the equation a student is trained to write."""
    try:
        eval_equation(text)
    except ValueError:
        return False
    return any(isinstance(node, ast.BinOp) for node in ast.walk(ast.parse(text.strip(), mode="eval")))


@LOADERS.register("svamp_hub")
def svamp_hub(name: str, spec: dict, split: str) -> Loaded:
    """SVAMP (`ChilleD/SVAMP`, 700/300 split); ``path`` may also point at the original SVAMP.json."""
    src = _source_split(spec, split, {"train": "train", "test": "test"})
    records, source = _hub_or_local(name, spec, "ChilleD/SVAMP", None, src)
    return Loaded(convert(records, lambda i, r: _math(i, r["ID"], r["Body"], r["Question"], r["Equation"],
                                                      r["Answer"], r, ["ID", "Body", "Question", "Equation",
                                                                       "Answer"])), source)


@LOADERS.register("svamp_dss")
def svamp_dss(name: str, spec: dict, split: str) -> Loaded:
    """SVAMP in the DSS layout (``svamp_{split}.json``: input = body + newline + question, label = equation)."""
    src = _source_split(spec, split, {"train": "train", "test": "test"})
    path = Path(spec["path"]) / f"svamp_{src}.json"

    def row(i: int, r: dict) -> dict:
        body, _, question = _text(r["input"], "input").rpartition("\n")
        return _math(i, f"{src}-{i}", body, question, r["label"], eval_equation(_text(r["label"], "label")), r,
                     ["input", "label"])

    return Loaded(convert(read_json_records(path), row), str(path))


# --------------------------------------------------------------------------- checks and sampling


def normalise_text(text: str) -> str:
    """Lower case, punctuation as spaces, single spaces: the form in which two inputs count as the same item."""
    return " ".join(re.sub(r"[^\w\s]", " ", str(text).lower()).split())


def input_key(row: dict) -> str:
    """What the student sees of an example, normalised: equal keys in two splits are the same item."""
    if row["task"] == "mcqa":
        choices = sorted(normalise_text(c["text"]) for c in row["choices"])
        return normalise_text(row["question"]) + " || " + " | ".join(choices)
    if row["task"] == "nli":
        return normalise_text(row["premise"]) + " || " + normalise_text(row["hypothesis"])
    return normalise_text(f"{row['body']} {row['question']}")


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


def resolve_overlap(name: str, spec: dict, frames: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Check every pair of splits for shared ids and shared normalised inputs; error, allow or drop per
    ``spec['overlap']`` (drop removes the items from the earlier split: train, then validation; never test)."""
    mode = spec.get("overlap", "error")
    if mode not in OVERLAP_MODES:
        raise DatasetError(f"datasets.{name}.overlap is {mode!r}; valid choices: {', '.join(OVERLAP_MODES)}")
    frames = dict(frames)
    order = sorted(frames, key=lambda s: SPLIT_ORDER.index(s) if s in SPLIT_ORDER else len(SPLIT_ORDER))
    for a, b in combinations(order, 2):
        keys_a = pd.Series([input_key(r) for r in frames[a].to_dict("records")], index=frames[a].index)
        keys_b = {input_key(r) for r in frames[b].to_dict("records")}
        shared = frames[a]["id"].isin(set(frames[b]["id"])) | keys_a.isin(keys_b)
        if not shared.any():
            continue
        ids = list(frames[a]["id"][shared][:5])
        msg = (f"datasets.{name}: splits {a} and {b} share {int(shared.sum())} of {len(frames[a])} items "
               f"(same id or same normalised input), e.g. ids {ids}")
        if mode == "error":
            hint = (f"; datasets.{name}.path is a single file, which a hub loader serves for every split: point it "
                    f"at a folder with one file per split" if spec.get("path") and Path(spec["path"]).is_file()
                    else "")
            raise DatasetError(f"{msg}{hint}. If the splits legitimately share items, set datasets.{name}.overlap "
                               f"to drop (remove them from {a}) or allow")
        log.warning("%s; overlap: %s", msg, mode)
        if mode == "drop":
            frames[a] = frames[a][~shared].reset_index(drop=True)
    return frames


def subsample(df: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    """Seeded subset that keeps source order; a larger n gives a superset of a smaller one."""
    if n is None or n >= len(df):
        return df
    order = np.random.default_rng(seed).permutation(len(df))[:n]
    return df.iloc[np.sort(order)].reset_index(drop=True)


def load_full(name: str, spec: dict, split: str) -> pd.DataFrame:
    """One whole source split, normalised and checked."""
    loader = LOADERS.get(spec["loader"], f"datasets.{name}.loader")
    loaded = loader(name, spec, split)
    if not loaded.rows:
        raise DatasetError(f"{loaded.source}: no rows for split {split!r}")
    df = pd.DataFrame(loaded.rows)
    check_rows(df, loaded.source)
    log.info("%s/%s: %d rows from %s", name, split, len(df), loaded.source)
    return df


def load_split(name: str, spec: dict, split: str, seed: int = 0, splits: list[str] | None = None) -> pd.DataFrame:
    """Load, normalise, check and subsample one split of the dataset configured as `name`.

    Every split in `splits` is loaded whole and checked against the others for shared items before this split is
    subsampled, so train/test contamination is caught whatever the subsample sizes.
    """
    frames = {s: load_full(name, spec, s) for s in dict.fromkeys([*(splits or []), split])}
    df = resolve_overlap(name, spec, frames)[split]
    if df.empty:
        raise DatasetError(f"datasets.{name}: split {split!r} has no rows left after removing the items it shares "
                           f"with later splits (overlap: drop); do two splits read the same source split?")
    n = (spec.get("subsample") or {}).get(split)
    out = subsample(df, n, seed)
    log.info("%s/%s: kept %d of %d rows (seed %d)", name, split, len(out), len(df), seed)
    return out[COMMON_COLUMNS + TASK_COLUMNS[out["task"].iloc[0]]]
