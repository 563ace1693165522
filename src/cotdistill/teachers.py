"""Teacher backends and rationale elicitation with a per-example cache and a failure policy.

Backends are registered by name (config key ``teachers.<name>.backend``):

- ``vllm``: offline ``vllm.LLM`` with per-request ``SamplingParams``; imported only when used (GPU extra).
- ``transformers``: batched ``generate`` on CPU or GPU.
- ``precomputed``: another system's released outputs, first of all the Distilling Step-by-Step PaLM-540B files,
  read by a registered completion parser per release format (`PARSERS`).

Generated completions are cached per example under ``<cache_dir>/rationales/<teacher>/<key>/``. The key hashes
the teacher's whole effective spec minus the short list of settings that do not change a completion
(`defaults.TEACHER_NOT_IN_CACHE_KEY`: batch size, GPUs, splits, the policy), so a new option is keyed by default;
each entry is further keyed by example id, prompt hash and the decoding of its attempt. Each batch is one Parquet
shard written atomically, so a rerun or a larger subset generates only missing rows and a killed job loses at most
one batch. Sampled decoding is seeded per example, so a sample does not depend on its batch companions (greedy
batches differ from single prompts only by padding's floating-point noise).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from . import defaults, io
from .datasets import DatasetError, eval_equation, is_equation, normalise_text, read_json_records
from .prompts import Template
from .registry import Registry

log = logging.getLogger(__name__)

POLICIES = ("drop", "keep", "retry")
DEFAULT_DECODING = {"max_new_tokens": 128, "temperature": 0.0, "top_p": 1.0, "seed": 0,
                    "stop": ["\n\nQuestion:", "\n\nPremise:", "\n\nProblem:", "\n\n"]}
RETRY_DECODING = {"temperature": 0.7, "top_p": 0.95}
OUTPUT_COLUMNS = ["id", "prompt", "completion", "rationale", "label", "parsed", "agrees", "attempt", "teacher",
                  "backend", "decoding", "template_hash"]


class TeacherError(ValueError):
    """Bad teacher configuration, released outputs that do not match the dataset, or too few usable rationales."""


def _hash(obj: Any) -> str:
    return io.json_digest(obj)[:16]


def example_seed(seed: int, example_id: str) -> int:
    """A sampling seed for one example, independent of batch composition and order."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{example_id}".encode()).digest()[:4], "little") & 0x7FFFFFFF


# --------------------------------------------------------------------------- parsing


def parse_completion(text: str, answer_re: re.Pattern) -> tuple[str, str | None]:
    """(rationale, label) of a generated completion: the first paragraph, and the label it commits to."""
    rationale = re.split(r"\n\s*\n|\n(?:Question|Premise|Problem):", text.strip(), maxsplit=1)[0].strip()
    m = answer_re.search(rationale)
    return rationale, (m.group(1).strip() if m else None)


Parser = Callable[[str], tuple[str, "str | None"]]
PARSERS: Registry[Parser] = Registry("completion parser")


@PARSERS.register("dss_cqa")
def dss_cqa(text: str) -> tuple[str, str | None]:
    """DSS PaLM CommonsenseQA: "<rationale> So the answer is (d) math problem." then invented ``Q:`` questions;
    the label is the choice letter."""
    head = re.split(r"\n\s*Q:", text, maxsplit=1)[0].strip()
    rationale, sep, answer = head.partition("So the answer is")
    if not sep:
        return head, None
    m = re.match(r"\s*\(?([a-jA-J])\)", answer)
    return rationale.strip(), (m.group(1).upper() if m else None)


@PARSERS.register("dss_svamp")
def dss_svamp(text: str) -> tuple[str, str | None]:
    """DSS PaLM SVAMP: "<rationale> The answer is (84 / 2)." then invented ``Q:`` questions; the label is the
    parenthesised equation (none when the answer is a bare number: the policy then drops or retries the row)."""
    head = re.split(r"\n\s*Q:", text, maxsplit=1)[0].strip()
    rationale, sep, answer = head.partition("The answer is")
    if not sep:
        return head, None
    m = re.search(r"\(.*\)", answer)
    return rationale.strip(), (m.group(0) if m else None)


@PARSERS.register("dss_esnli")
def dss_esnli(text: str) -> tuple[str, str | None]:
    """DSS PaLM e-SNLI: the rationale, then the label on an ``Answer: <label>`` line, then an invented
    ``Premise:``."""
    head = re.split(r"\n\s*Premise:", text, maxsplit=1)[0]  # the invented example may carry its own Answer:
    rationale, sep, rest = head.partition("Answer:")
    if not sep:
        return head.strip(), None
    label = rest.strip().split("\n")[0].strip().rstrip(".").strip()
    return rationale.strip(), (label or None)


@PARSERS.register("dss_anli")
def dss_anli(text: str) -> tuple[str, str | None]:
    """DSS PaLM ANLI: "<rationale> So the answer is <label>." then an invented ``Premise:``."""
    head = text.split("Premise:")[0].strip()
    rationale, sep, answer = head.partition("So the answer is")
    if not sep:
        return head, None
    return rationale.strip(), (answer.strip().rstrip(".").strip() or None)


def default_parser(prefix: str) -> str:
    """The parser of a DSS release folder, named by its data files (``cqa_train.json`` -> ``dss_cqa``)."""
    name = "dss_anli" if re.fullmatch(r"anli\d*", prefix) else f"dss_{prefix}"
    if name not in PARSERS:
        raise TeacherError(f"no completion parser for DSS files named {prefix}_<split>.json; registered parsers: "
                           f"{', '.join(PARSERS.names())} (config key teachers.<name>.parsers picks one)")
    return name


def agrees(label: str | None, row: dict) -> bool:
    """Whether a parsed label matches gold: letters and relations by name, equations by value."""
    if label is None:
        return False
    if row["task"] == "math":
        return is_equation(label) and abs(eval_equation(label) - float(row["answer"])) < 1e-4
    return label.strip().lower() == str(row["answer_label"]).strip().lower()


# --------------------------------------------------------------------------- backends


def cache_identity(spec: dict) -> dict:
    """Everything of a teacher's effective spec that can change a completion, except decoding (keyed per
    attempt): the whole spec minus `defaults.TEACHER_NOT_IN_CACHE_KEY`."""
    full = {**defaults.TEACHER, **spec}
    return {k: v for k, v in full.items()
            if k not in defaults.TEACHER_NOT_IN_CACHE_KEY and k not in ("decoding", "retry_decoding")}


class Backend:
    """A teacher: turns prompts (or example ids, for released outputs) into completions."""

    generates = True  # False for released outputs: nothing to cache, nothing to retry

    def __init__(self, name: str, spec: dict, dataset: str, split: str, threads: int = 1) -> None:
        self.name, self.spec, self.dataset, self.split, self.threads = name, spec, dataset, split, threads
        self.decoding = {**DEFAULT_DECODING, **spec.get("decoding", {})}

    @property
    def chat(self) -> bool:
        return bool(self.spec.get("chat", False))

    def prepare(self, prompts: list[str]) -> list[str]:
        return prompts

    def decoding_key(self, decoding: dict) -> dict:
        """What of an attempt's decoding keys its cached completions; a backend adds how it samples."""
        return decoding

    def parse(self, text: str, row: dict, answer_re: re.Pattern | None) -> tuple[str, str | None]:
        return parse_completion(text, answer_re)

    def generate(self, prompts: list[str], rows: pd.DataFrame, decoding: dict) -> list[str]:
        raise NotImplementedError


BACKENDS: Registry[type[Backend]] = Registry("teacher backend")


def _apply_chat(tokenizer, prompts: list[str]) -> list[str]:
    if tokenizer.chat_template is None:
        raise TeacherError("teacher has chat: true but its tokenizer has no chat template")
    return [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                          add_generation_prompt=True) for p in prompts]


def seeded_sampler(seeds: list[int], temperature: float, top_p: float):
    """A `transformers` logits processor that samples each row's next token from that row's own generator
    (temperature, then nucleus filtering, then inverting the row's CDF at one uniform draw), and hands greedy
    decoding a one-hot choice: a batch samples as its rows would alone, so a completion depends on its example's
    seed, never on its batch companions (up to the float noise of padding)."""
    import torch
    from transformers import LogitsProcessor

    class SeededSampler(LogitsProcessor):
        def __init__(self) -> None:
            self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]

        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
            probs = (scores.float() / temperature).softmax(-1).cpu()
            if top_p < 1.0:
                ranked, order = probs.sort(-1, descending=True)
                drop = ranked.cumsum(-1) - ranked > top_p  # keep the smallest prefix reaching top_p (at least one)
                probs = probs.scatter(-1, order, ranked.masked_fill(drop, 0.0))
            cdf = probs.cumsum(-1)
            draws = torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in self.generators])
            chosen = torch.searchsorted(cdf.double(), (draws * cdf[:, -1].double())[:, None]).clamp(
                max=scores.shape[-1] - 1)
            return torch.full_like(scores, -math.inf).scatter(-1, chosen.to(scores.device), 0.0)

    return SeededSampler()


@BACKENDS.register("transformers")
class TransformersBackend(Backend):
    """Batched `generate` with left padding; greedy unless temperature > 0, then sampled in the same batches with
    one seeded generator per example (`seeded_sampler`)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        import torch

        from .models import load_causal_lm

        torch.set_num_threads(self.threads)
        dtype = getattr(torch, self.spec.get("dtype", "float32"))
        self.model, self.tok = load_causal_lm(self.spec["model"], dtype=dtype)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model.to(self.device)
        self.tok.padding_side = "left"
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token

    def prepare(self, prompts: list[str]) -> list[str]:
        return _apply_chat(self.tok, prompts) if self.chat else prompts

    def decoding_key(self, decoding: dict) -> dict:
        # sampled completions come from `seeded_sampler` (not from those of earlier versions, one example at a time)
        return {**decoding, "sampler": "seeded_sampler"} if decoding["temperature"] > 0 else decoding

    def generate(self, prompts: list[str], rows: pd.DataFrame, decoding: dict) -> list[str]:
        import torch
        from transformers import LogitsProcessorList

        enc = self.tok(prompts, return_tensors="pt", padding=True, add_special_tokens=not self.chat)
        enc = enc.to(self.device)
        sampler = [] if decoding["temperature"] <= 0 else [seeded_sampler(
            [example_seed(decoding["seed"], rid) for rid in rows["id"]], decoding["temperature"], decoding["top_p"])]
        with torch.inference_mode():
            out = self.model.generate(
                **enc, max_new_tokens=decoding["max_new_tokens"], do_sample=False, num_beams=1, top_k=None,
                top_p=None, temperature=None, logits_processor=LogitsProcessorList(sampler),
                stop_strings=decoding["stop"] or None, tokenizer=self.tok, pad_token_id=self.tok.pad_token_id)
        return self.tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)


@BACKENDS.register("vllm")
class VllmBackend(Backend):
    """Offline vLLM engine; engine options pass through ``teachers.<name>.engine``; one seeded
    ``SamplingParams`` per example."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        try:
            from vllm import LLM
        except ImportError as err:
            raise TeacherError(f"teacher {self.name!r} uses backend vllm, which is not installed ({err}); "
                               f"install the project's gpu extra, or use backend: transformers") from None
        from .models import pretrained_args

        model, kwargs = pretrained_args(self.spec["model"])
        engine = {"seed": self.decoding["seed"], **self.spec.get("engine", {})}
        if "dtype" in self.spec:
            engine.setdefault("dtype", self.spec["dtype"])
        if "gguf_file" in kwargs:
            engine.setdefault("tokenizer", model)
            model = str(Path(model) / kwargs.pop("gguf_file"))
        self.llm = LLM(model=model, revision=kwargs.get("revision"), **engine)

    def prepare(self, prompts: list[str]) -> list[str]:
        return _apply_chat(self.llm.get_tokenizer(), prompts) if self.chat else prompts

    def generate(self, prompts: list[str], rows: pd.DataFrame, decoding: dict) -> list[str]:
        from vllm import SamplingParams

        params = [SamplingParams(n=1, temperature=decoding["temperature"], top_p=decoding["top_p"],
                                 max_tokens=decoding["max_new_tokens"], seed=example_seed(decoding["seed"], rid),
                                 stop=decoding["stop"] or None) for rid in rows["id"]]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        return [o.outputs[0].text for o in outputs]


DSS_SPLITS = {"train": "train", "validation": "valid", "test": "test"}


def _dss_completions(root: Path, source_split: str) -> list[str]:
    files = sorted((root / "llm").glob(f"{source_split}_CoT_*.json"),
                   key=lambda p: int(re.search(r"_CoT_(\d+)\.json$", p.name).group(1)))
    if not files:
        raise TeacherError(f"{root / 'llm'}: no {source_split}_CoT_<i>.json files (DSS layout)")
    out: list[str] = []
    for f in files:
        try:
            items = json.loads(f.read_text())
        except json.JSONDecodeError as err:
            raise TeacherError(f"{f}: not valid JSON (line {err.lineno}: {err.msg}); expected a JSON list of "
                               f"completion strings") from None
        if not isinstance(items, list) or not all(isinstance(c, str) for c in items):
            raise TeacherError(f"{f}: expected a JSON list of completion strings")
        out.extend(items)
    return out


def _example_texts(row: dict) -> dict[str, str]:
    """The fields of an example that a released data row must contain for the two to be the same example."""
    if row["task"] == "mcqa":
        return {"question": row["question"]}
    if row["task"] == "nli":
        return {"premise": row["premise"], "hypothesis": row["hypothesis"]}
    return {"body": row["body"], "question": row["question"]}


@BACKENDS.register("precomputed")
class PrecomputedBackend(Backend):
    """Released teacher outputs; ``format: dss`` reads ``<path>/llm/<split>_CoT_<i>.json``.

    DSS completions are index-aligned with the rows of the release's data file ``<path>/<name>_<split>.json``.
    There must be exactly one completion per data row; each example is matched to its data row by id where the
    release has ids (CommonsenseQA, ANLI) and by ``source_index`` otherwise, and the row must contain the example's
    text: a shifted file, or a dataset loaded from another source in another order, stops the job.
    ``paths`` maps dataset names to DSS folders; ``parsers`` may name a registered parser per dataset.
    """

    generates = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        fmt = self.spec.get("format", "dss")
        if fmt != "dss":
            raise TeacherError(f"teacher {self.name!r}: unknown precomputed format {fmt!r}; valid choices: dss")
        paths = self.spec.get("paths", {})
        if self.dataset not in paths:
            raise TeacherError(f"teacher {self.name!r} has no released outputs for dataset {self.dataset!r} "
                               f"(config key teachers.{self.name}.paths has: {', '.join(paths) or 'nothing'})")
        self.root = Path(paths[self.dataset])
        split = {**DSS_SPLITS, **self.spec.get("split_map", {})}.get(self.split, self.split)
        data_files = sorted(self.root.glob(f"*_{split}.json"))
        if len(data_files) != 1:
            raise TeacherError(f"{self.root}: expected one data file <name>_{split}.json beside llm/, found "
                               f"{[f.name for f in data_files] or 'none'}")
        self.data_file = data_files[0]
        self.parser_name = (self.spec.get("parsers") or {}).get(self.dataset) or default_parser(
            self.data_file.name[: -len(f"_{split}.json")])
        self.parser = PARSERS.get(self.parser_name, f"teachers.{self.name}.parsers.{self.dataset}")
        self.completions = _dss_completions(self.root, split)
        try:
            self.records = read_json_records(self.data_file)
        except DatasetError as err:
            raise TeacherError(str(err)) from None
        if len(self.completions) != len(self.records):
            raise TeacherError(f"{self.root / 'llm'}: {len(self.completions)} completions for split {split!r}, but "
                               f"{self.data_file} has {len(self.records)} rows: files do not align (one completion "
                               f"per data row, in the same order)")
        ids = [r.data.get("id", r.data.get("uid")) for r in self.records]
        self.index_by_id = {str(i): n for n, i in enumerate(ids)} if all(i is not None for i in ids) else None

    def parse(self, text: str, row: dict, answer_re: re.Pattern | None) -> tuple[str, str | None]:
        return self.parser(text)

    def _index(self, row: dict) -> int:
        if self.index_by_id is not None:
            if str(row["id"]) not in self.index_by_id:
                raise TeacherError(f"{self.data_file}: no row with id {row['id']!r}: the dataset and the released "
                                   f"outputs do not align")
            i = self.index_by_id[str(row["id"])]
        else:
            i = int(row["source_index"])
            if i >= len(self.records):
                raise TeacherError(f"{self.data_file}: {len(self.records)} rows, but example {row['id']!r} is row "
                                   f"{i}: the dataset and the released outputs do not align")
        released = normalise_text(" ".join(str(v) for v in self.records[i].data.values()))
        for field, text in _example_texts(row).items():
            if normalise_text(text) not in released:
                raise TeacherError(f"{self.records[i].where} does not hold example {row['id']!r} ({field} "
                                   f"{text[:60]!r}): the dataset and the released outputs do not align")
        return i

    def generate(self, prompts: list[str], rows: pd.DataFrame, decoding: dict) -> list[str]:
        return [self.completions[self._index(r)] for r in rows.to_dict("records")]


# --------------------------------------------------------------------------- cache


class CompletionCache:
    """Completions on disk, one Parquet shard per generated batch, keyed by (id, prompt hash, decoding hash)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.entries: dict[tuple[str, str, str], str] = {}
        for shard in sorted(folder.glob("*.parquet")):
            for r in pd.read_parquet(shard).itertuples(index=False):
                self.entries[(r.id, r.prompt_hash, r.decoding_hash)] = r.completion

    def get(self, key: tuple[str, str, str]) -> str | None:
        return self.entries.get(key)

    def add(self, keys: list[tuple[str, str, str]], completions: list[str]) -> None:
        df = pd.DataFrame({"id": [k[0] for k in keys], "prompt_hash": [k[1] for k in keys],
                           "decoding_hash": [k[2] for k in keys], "completion": completions})
        io.write_parquet(df, self.folder / f"{time.time_ns()}-{uuid.uuid4().hex[:8]}.parquet")
        self.entries.update(zip(keys, completions, strict=True))


# --------------------------------------------------------------------------- elicitation


def attempt_decoding(spec: dict, decoding: dict, attempt: int) -> dict:
    """Attempt 0 decodes as configured; retries sample (`RETRY_DECODING` under ``retry_decoding``), each with
    its own seed."""
    if attempt == 0:
        return decoding
    return {**decoding, **RETRY_DECODING, **spec.get("retry_decoding", {}), "seed": decoding["seed"] + attempt}


def _too_few(teacher: str, dataset: str, split: str, out: pd.DataFrame, good: pd.Series, keep: pd.Series,
             min_kept: float) -> str:
    n, kept = len(out), int(keep.sum())
    unparsed = out.loc[~out["parsed"], "completion"] if n else pd.Series(dtype=str)
    if len(unparsed):
        shown = "five completions that failed to parse: " + " | ".join(repr(c[:160]) for c in unparsed.head(5))
    else:
        bad = out.loc[~good].head(5)
        shown = "all parsed; five that disagree with gold: " + " | ".join(
            f"{r.id}: label {r.label!r}" for r in bad.itertuples())
    return (f"teacher {teacher!r} on {dataset}/{split} kept {kept} of {n} rationales "
            f"({kept / n if n else 0:.1%}), below teachers.{teacher}.min_kept = {min_kept:.0%}: parse rate "
            f"{out['parsed'].mean() if n else 0:.1%}, agreement rate {good.mean() if n else 0:.1%}; {shown}")


def elicit(
    examples: pd.DataFrame,
    teacher: str,
    spec: dict,
    template: Template | None,
    dataset: str,
    split: str,
    cache_dir: str | Path,
    threads: int = 1,
    backend_factory: Callable[..., Backend] | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Rationales for `examples` from one teacher, after the policy; returns (rows kept, stats).

    Raises TeacherError when fewer than ``min_kept`` of the examples (and always when none) survive the policy.
    """
    spec = {**defaults.TEACHER, **spec}
    policy = spec["policy"]
    retries = int(spec["retries"]) if policy == "retry" else 0
    factory = backend_factory or BACKENDS.get(spec["backend"], f"teachers.{teacher}.backend")
    backend = factory(teacher, spec, dataset, split, threads)
    if policy == "retry" and not backend.generates:
        raise TeacherError(f"teacher {teacher!r}: policy retry needs a generating backend, not "
                           f"{spec['backend']!r}; use drop or keep")
    if backend.generates and template is None:
        raise TeacherError(f"teacher {teacher!r} generates, so it needs a prompt template")
    answer_re = template.answer_regex() if backend.generates else None
    rows = examples.to_dict("records")
    prompts = backend.prepare([template.render(r) for r in rows]) if backend.generates else [""] * len(rows)
    prompt_hashes = [_hash(p) for p in prompts]
    cache = (CompletionCache(Path(cache_dir) / "rationales" / teacher / _hash(cache_identity(spec)))
             if backend.generates else None)
    batch_size = int(spec["batch_size"])
    stats: dict[str, Any] = {"examples": len(rows), "generated": 0, "cached": 0}
    if not backend.generates:
        stats["parser"] = backend.parser_name

    def run(attempt: int, todo: list[int]) -> dict[int, str]:
        decoding = attempt_decoding(spec, backend.decoding, attempt)
        dkey = _hash(backend.decoding_key(decoding))
        done: dict[int, str] = {}
        missing = []
        for i in todo:
            hit = cache.get((rows[i]["id"], prompt_hashes[i], dkey)) if cache else None
            if hit is None:
                missing.append(i)
            else:
                done[i] = hit
        stats["cached"] += len(done)
        step = batch_size if backend.generates else max(len(missing), 1)
        for start in tqdm(range(0, len(missing), step), desc=f"{teacher} attempt {attempt}", unit="batch",
                          disable=not missing):
            idx = missing[start:start + step]
            texts = backend.generate([prompts[i] for i in idx], examples.iloc[idx], decoding)
            if cache is not None:
                cache.add([(rows[i]["id"], prompt_hashes[i], dkey) for i in idx], texts)
                stats["generated"] += len(idx)
            done.update(zip(idx, texts, strict=True))
        return done

    results: dict[int, dict] = {}
    todo = list(range(len(rows)))
    for attempt in range(retries + 1):
        for i, text in run(attempt, todo).items():
            rationale, label = backend.parse(text, rows[i], answer_re)
            ok = agrees(label, rows[i])
            if i not in results or ok:
                results[i] = {"completion": text, "rationale": rationale, "label": label,
                              "parsed": bool(label) and bool(rationale), "agrees": ok, "attempt": attempt}
        todo = [i for i in todo if not (results[i]["parsed"] and results[i]["agrees"])]
        if not todo:
            break

    out = pd.DataFrame([{"id": rows[i]["id"], "prompt": prompts[i], **results[i]} for i in range(len(rows))],
                       columns=OUTPUT_COLUMNS[:8])
    out["teacher"], out["backend"] = teacher, spec["backend"]
    out["decoding"] = json.dumps(backend.decoding, sort_keys=True) if backend.generates else "{}"
    out["template_hash"] = template.hash if backend.generates else ""
    good = out["parsed"] & out["agrees"]
    keep = pd.Series(True, index=out.index) if policy == "keep" else good
    stats.update({
        "policy": policy, "retries": retries, "parsed": int(out["parsed"].sum()), "agreeing": int(good.sum()),
        "kept": int(keep.sum()), "dropped": int((~keep).sum()),
        "parse_rate": round(float(out["parsed"].mean()), 4) if len(out) else 0.0,
        "agree_rate": round(float(good.mean()), 4) if len(out) else 0.0,
        "by_attempt": {int(k): int(v) for k, v in out.loc[good, "attempt"].value_counts().items()},
    })
    log.info("%s on %s/%s: %s", teacher, dataset, split, stats)
    min_kept = float(spec["min_kept"])
    if not keep.any() or keep.mean() < min_kept:
        raise TeacherError(_too_few(teacher, dataset, split, out, good, keep, min_kept))
    return out.loc[keep, OUTPUT_COLUMNS].reset_index(drop=True), stats


def elicit_files(data: str, template: str | None, teacher: str, spec: dict, dataset: str, split: str,
                 cache_dir: str, threads: int, out_parquet: str, out_stats: str) -> dict:
    """`elicit` from and to files, as the `rationales` rule runs it; returns the stats."""
    from .datasets import COMMON_COLUMNS
    from .prompts import load_template

    examples = io.read_parquet(data, required=COMMON_COLUMNS)
    out, stats = elicit(examples, teacher, spec, load_template(template) if template else None, dataset, split,
                        cache_dir, threads)
    io.write_json(stats, out_stats)
    io.write_parquet(out, out_parquet)
    return stats
