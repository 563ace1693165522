"""Teacher backends and rationale elicitation with a per-example cache and a failure policy.

Backends are registered by name (config key ``teachers.<name>.backend``):

- ``vllm``: offline ``vllm.LLM`` with batched ``SamplingParams``; imported only when used (GPU extra).
- ``transformers``: batched ``generate`` on CPU or GPU.
- ``precomputed``: another system's released outputs, first of all the Distilling Step-by-Step PaLM-540B files.

Generated completions are cached per example under ``<cache_dir>/rationales/<teacher>/<key>/`` where the key
hashes the model, the prompt template and the decoding parameters; each batch is one Parquet shard written
atomically, so a rerun or a larger subset generates only missing rows and a killed job loses at most one batch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from . import io
from .datasets import eval_equation
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
    """Bad teacher configuration or released outputs that do not match the dataset."""


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- parsing


def parse_completion(text: str, answer_re: re.Pattern) -> tuple[str, str | None]:
    """(rationale, label) of a generated completion: the first paragraph, and the label it commits to."""
    rationale = re.split(r"\n\s*\n|\n(?:Question|Premise|Problem):", text.strip(), maxsplit=1)[0].strip()
    m = answer_re.search(rationale)
    return rationale, (m.group(1).strip() if m else None)


_DSS_SPLIT = re.compile(r"So the answer is|The answer is", re.I)


def parse_dss(text: str, task: str) -> tuple[str, str | None]:
    """(rationale, label) of a DSS PaLM completion, which runs on into invented ``Q: ...`` questions.

    CommonsenseQA: "... So the answer is (d) math problem." -> label "D"; SVAMP: "... The answer is (84 / 2)."
    -> label "(84 / 2)". The rationale is the text before the answer sentence.
    """
    head = re.split(r"\n\s*Q:", text, maxsplit=1)[0].strip()
    parts = _DSS_SPLIT.split(head, maxsplit=1)
    if len(parts) < 2:
        return head, None
    rationale, answer = parts[0].strip(), parts[1].strip()
    if task == "mcqa":
        m = re.match(r"\(?([a-jA-J])\)", answer)
        return rationale, (m.group(1).upper() if m else None)
    return rationale, (answer.rstrip(".").strip() or None)


def agrees(label: str | None, row: dict) -> bool:
    """Whether a parsed label matches gold: letters and relations by name, equations by value."""
    if label is None:
        return False
    if row["task"] == "math":
        try:
            return abs(eval_equation(label) - float(row["answer"])) < 1e-4
        except ValueError:
            return False
    return label.strip().lower() == str(row["answer_label"]).strip().lower()


# --------------------------------------------------------------------------- backends


class Backend:
    """A teacher: turns prompts (or example ids, for released outputs) into completions."""

    generates = True  # False for released outputs: nothing to cache, nothing to retry

    def __init__(self, name: str, spec: dict, dataset: str, split: str, threads: int = 1) -> None:
        self.name, self.spec, self.dataset, self.split, self.threads = name, spec, dataset, split, threads
        self.decoding = {**DEFAULT_DECODING, **spec.get("decoding", {})}

    def identity(self) -> dict:
        """Everything besides template and decoding that decides a completion (the cache key's model part)."""
        return {"backend": self.spec["backend"], "model": self.spec.get("model"), "chat": self.chat}

    @property
    def chat(self) -> bool:
        return bool(self.spec.get("chat", False))

    def prepare(self, prompts: list[str]) -> list[str]:
        return prompts

    def generate(self, prompts: list[str], rows: pd.DataFrame, decoding: dict) -> list[str]:
        raise NotImplementedError


BACKENDS: Registry[type[Backend]] = Registry("teacher backend")


def _apply_chat(tokenizer, prompts: list[str]) -> list[str]:
    if tokenizer.chat_template is None:
        raise TeacherError("teacher has chat: true but its tokenizer has no chat template")
    return [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                          add_generation_prompt=True) for p in prompts]


@BACKENDS.register("transformers")
class TransformersBackend(Backend):
    """Batched `generate` with left padding; greedy unless temperature > 0 (then seeded sampling)."""

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

    def generate(self, prompts: list[str], rows: pd.DataFrame, decoding: dict) -> list[str]:
        import torch

        enc = self.tok(prompts, return_tensors="pt", padding=True, add_special_tokens=not self.chat)
        enc = enc.to(self.device)
        sample = decoding["temperature"] > 0
        torch.manual_seed(decoding["seed"])
        with torch.inference_mode():
            out = self.model.generate(
                **enc, max_new_tokens=decoding["max_new_tokens"], do_sample=sample,
                temperature=decoding["temperature"] if sample else None,
                top_p=decoding["top_p"] if sample else None, top_k=None,
                stop_strings=decoding["stop"] or None, tokenizer=self.tok, pad_token_id=self.tok.pad_token_id)
        return self.tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)


@BACKENDS.register("vllm")
class VllmBackend(Backend):
    """Offline vLLM engine; engine options pass through ``teachers.<name>.engine``."""

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
        if "gguf_file" in kwargs:
            engine.setdefault("tokenizer", model)
            model = str(Path(model) / kwargs.pop("gguf_file"))
        self.llm = LLM(model=model, revision=kwargs.get("revision"), **engine)

    def prepare(self, prompts: list[str]) -> list[str]:
        return _apply_chat(self.llm.get_tokenizer(), prompts) if self.chat else prompts

    def generate(self, prompts: list[str], rows: pd.DataFrame, decoding: dict) -> list[str]:
        from vllm import SamplingParams

        params = SamplingParams(n=1, temperature=decoding["temperature"], top_p=decoding["top_p"],
                                max_tokens=decoding["max_new_tokens"], seed=decoding["seed"],
                                stop=decoding["stop"] or None)
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        return [o.outputs[0].text for o in outputs]


def _dss_completions(root: Path, source_split: str) -> list[str]:
    files = sorted((root / "llm").glob(f"{source_split}_CoT_*.json"),
                   key=lambda p: int(re.search(r"_CoT_(\d+)\.json$", p.name).group(1)))
    if not files:
        raise TeacherError(f"{root / 'llm'}: no {source_split}_CoT_<i>.json files (DSS layout)")
    out: list[str] = []
    for f in files:
        out.extend(json.loads(f.read_text()))
    return out


@BACKENDS.register("precomputed")
class PrecomputedBackend(Backend):
    """Released teacher outputs; ``format: dss`` reads ``<path>/llm/<split>_CoT_<i>.json``.

    DSS completions are index-aligned with the rows of the DSS data file, so they are matched through each
    example's ``source_index``; ``paths`` maps dataset names to DSS folders.
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
        split = self.spec.get("split_map", {}).get(self.split, self.split)
        self.completions = _dss_completions(self.root, split)

    def generate(self, prompts: list[str], rows: pd.DataFrame, decoding: dict) -> list[str]:
        idx = rows["source_index"].to_numpy()
        if len(idx) and idx.max() >= len(self.completions):
            raise TeacherError(f"{self.root / 'llm'}: {len(self.completions)} completions for split "
                               f"{self.split!r}, but the dataset has row index {idx.max()}: files do not align")
        return [self.completions[i] for i in idx]


# --------------------------------------------------------------------------- cache


class CompletionCache:
    """Completions on disk, one Parquet shard per generated batch, keyed by (id, prompt hash, attempt)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.entries: dict[tuple[str, str, int], str] = {}
        for shard in sorted(folder.glob("*.parquet")):
            for r in pd.read_parquet(shard).itertuples(index=False):
                self.entries[(r.id, r.prompt_hash, int(r.attempt))] = r.completion

    def get(self, key: tuple[str, str, int]) -> str | None:
        return self.entries.get(key)

    def add(self, keys: list[tuple[str, str, int]], completions: list[str]) -> None:
        df = pd.DataFrame({"id": [k[0] for k in keys], "prompt_hash": [k[1] for k in keys],
                           "attempt": [k[2] for k in keys], "completion": completions})
        io.write_parquet(df, self.folder / f"{time.time_ns()}-{uuid.uuid4().hex[:8]}.parquet")
        self.entries.update(zip(keys, completions, strict=True))


# --------------------------------------------------------------------------- elicitation


def elicit(
    examples: pd.DataFrame,
    teacher: str,
    spec: dict,
    template: Template,
    dataset: str,
    split: str,
    cache_dir: str | Path,
    threads: int = 1,
    backend_factory: Callable[..., Backend] | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Rationales for `examples` from one teacher, after the policy; returns (rows kept, stats)."""
    policy = spec.get("policy", "drop")
    retries = int(spec.get("retries", 0)) if policy == "retry" else 0
    factory = backend_factory or BACKENDS.get(spec["backend"], f"teachers.{teacher}.backend")
    backend = factory(teacher, spec, dataset, split, threads)
    if policy == "retry" and not backend.generates:
        raise TeacherError(f"teacher {teacher!r}: policy retry needs a generating backend, not "
                           f"{spec['backend']!r}; use drop or keep")
    answer_re = template.answer_regex()
    rows = examples.to_dict("records")
    prompts = backend.prepare([template.render(r) for r in rows]) if backend.generates else [""] * len(rows)
    prompt_hashes = [_hash(p) for p in prompts]
    key = _hash({"model": backend.identity(), "template": template.hash, "decoding": backend.decoding})
    cache = CompletionCache(Path(cache_dir) / "rationales" / teacher / key) if backend.generates else None
    batch_size = int(spec.get("batch_size", 8))
    stats = {"examples": len(rows), "generated": 0, "cached": 0}

    def run(attempt: int, todo: list[int]) -> dict[int, str]:
        decoding = backend.decoding if attempt == 0 else {
            **backend.decoding, **RETRY_DECODING, **spec.get("retry_decoding", {}),
            "seed": backend.decoding["seed"] + attempt}
        done: dict[int, str] = {}
        missing = []
        for i in todo:
            hit = cache.get((rows[i]["id"], prompt_hashes[i], attempt)) if cache else None
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
                cache.add([(rows[i]["id"], prompt_hashes[i], attempt) for i in idx], texts)
                stats["generated"] += len(idx)
            done.update(zip(idx, texts, strict=True))
        return done

    results: dict[int, dict] = {}
    todo = list(range(len(rows)))
    for attempt in range(retries + 1):
        for i, text in run(attempt, todo).items():
            if backend.generates:
                rationale, label = parse_completion(text, answer_re)
            else:
                rationale, label = parse_dss(text, rows[i]["task"])
            ok = agrees(label, rows[i])
            if i not in results or ok:
                results[i] = {"completion": text, "rationale": rationale, "label": label,
                              "parsed": bool(label) and bool(rationale), "agrees": ok, "attempt": attempt}
        todo = [i for i in todo if not (results[i]["parsed"] and results[i]["agrees"])]
        if not todo:
            break

    out = pd.DataFrame([{"id": rows[i]["id"], "prompt": prompts[i], **results[i]} for i in range(len(rows))])
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
    return out.loc[keep, OUTPUT_COLUMNS].reset_index(drop=True), stats


def elicit_files(data: str, template: str, teacher: str, spec: dict, dataset: str, split: str,
                 cache_dir: str, threads: int, out_parquet: str, out_stats: str) -> dict:
    """`elicit` from and to files, as the `rationales` rule runs it; returns the stats."""
    from .datasets import COMMON_COLUMNS
    from .prompts import load_template

    examples = io.read_parquet(data, required=COMMON_COLUMNS)
    out, stats = elicit(examples, teacher, spec, load_template(template), dataset, split, cache_dir, threads)
    io.write_json(stats, out_stats)
    io.write_parquet(out, out_parquet)
    return stats
