"""Ablations: how a training target is built from an example, its teacher rationale and the gold label.

Each ablation is one registered function ``(example, rationale, label, params, rng, resources) -> target`` that
declares its parameters (type, default, valid values), so a misspelt or mistyped parameter is a config error, the
resources it reads beyond the example (`Resources`: the rationale vocabulary, attribution scores, human words, word
vectors; the `targets` rule wires their files in), and a flag saying whether the label comes first (then evaluation
need only generate up to the closing marker). The config entry ``ablations.<name>: {kind: <registered>, ...params}``
names it; the kind and its resolved parameters (defaults filled in) are its identity, never its name. A list-valued
parameter named in ``{braces}`` in the entry's name is a sweep (`expand_sweeps`).

Randomness is per example: `example_rng` seeds a generator from (global seed, kind, the parameters the kind names
in ``seed_keys``, example id), so an example's perturbation does not depend on row order, on the other rows, on the
subsample size or on the name. Parameters left out of the seed make sweeps paired: the same uniform draws decide
every mask fraction (masks are nested across ``p``) and both placements hide the same words.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .registry import Registry

MARK = "[FIN_LABEL]"
REQUIRED = object()


def wrap_label(label: str) -> str:
    """`[FIN_LABEL] B [FIN_LABEL]`, exactly as in the Mysteries paper."""
    return f"{MARK} {label} {MARK}"


_MARK_RE = re.compile(re.escape(MARK), re.I)


def text_before_label(text: str) -> str:
    """What a model wrote before its opening marker (a CoT-before model's rationale)."""
    return _MARK_RE.split(text, maxsplit=1)[0].strip()


def text_after_label(text: str) -> str:
    """What a label-first model wrote after its closing marker; empty where it closed none."""
    parts = _MARK_RE.split(text, maxsplit=2)
    return parts[2].strip() if len(parts) == 3 else ""


class AblationParamError(ValueError):
    """An ablation's parameters do not match what its kind declares; `key` names the offending parameter."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class Param:
    """One declared ablation parameter."""

    type: type
    default: Any = REQUIRED
    choices: tuple = ()
    minimum: float | None = None
    maximum: float | None = None
    doc: str = ""

    def check(self, key: str, value: Any) -> Any:
        ok = isinstance(value, self.type) and not (self.type is not bool and isinstance(value, bool))
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            raise AblationParamError(key, f"is {value!r}; expected {self.type.__name__}")
        if self.choices and value not in self.choices:
            raise AblationParamError(key, f"is {value!r}; valid choices: {', '.join(map(str, self.choices))}")
        if self.minimum is not None and value < self.minimum or self.maximum is not None and value > self.maximum:
            raise AblationParamError(key, f"is {value!r}; expected a value in [{self.minimum}, {self.maximum}]")
        return value


def resolve_params(declared: dict[str, Param], params: dict) -> dict:
    """`params` checked against `declared`, defaults filled in; raises AblationParamError naming the key."""
    unknown = sorted(set(params) - set(declared))
    if unknown:
        valid = ", ".join(sorted(declared)) or "none"
        raise AblationParamError(unknown[0], f"is not a parameter of this kind; valid parameters: {valid}")
    out = {}
    for key, decl in declared.items():
        if key in params:
            out[key] = decl.check(key, params[key])
        elif decl.default is REQUIRED:
            raise AblationParamError(key, f"is required ({decl.type.__name__}: {decl.doc})")
        else:
            out[key] = decl.default
    return out


POSITION = Param(str, "after", ("before", "after"), doc="rationale before or after the label")
UNK = "<unk>"  # filler placeholder in target files; each student's fine-tune puts its own filler token there


@dataclass
class Resources:
    """What some ablations read beyond the example and its rationale; `targets.build_targets` fills what the kind
    declares in ``needs``."""

    vocabulary: list[str] | None = None  # every word of the file's rationales, sorted (random_words)
    attribution: dict[str, list[tuple[str, float]]] | None = None  # id -> rationale tokens and scores, in order
    human_words: dict[str, list[str]] | None = None  # id -> words people picked
    vectors: Any = None  # gensim KeyedVectors (word_neighbours)


@dataclass(frozen=True)
class Ablation:
    build: Callable[[dict, str | None, str, dict, np.random.Generator, Resources], str]
    label_first_default: bool  # label before any rationale: evaluation stops at the closing marker
    needs_rationale: bool
    params: dict[str, Param] = field(default_factory=dict)
    doc: str = ""
    needs: tuple[str, ...] = ()  # Resources fields the builder reads
    seed_keys: tuple[str, ...] | None = None  # parameters that enter the example seed (None: all)
    normalise: Callable[[dict], dict] | None = None  # drops settings that decide nothing for these values
    multitask: bool = False  # two tasks per example (`multitask`): targets also carry the explain task
    revision: int = 1  # raised when the kind builds other targets from the same parameters: its targets rebuild

    def seed_spec(self, kind: str, params: dict) -> dict:
        keys = self.params if self.seed_keys is None else self.seed_keys
        return {"kind": kind, **{k: params[k] for k in keys}}

    def resolve(self, params: dict) -> dict:
        """Parameters checked against the declaration, defaults filled in; raises AblationParamError."""
        out = resolve_params(self.params, params)
        return self.normalise(out) if self.normalise else out

    def label_first(self, params: dict) -> bool:
        """Whether the label comes first; a ``position`` parameter decides for placement-generic ablations."""
        return params["position"] == "after" if "position" in params else self.label_first_default


ABLATIONS: Registry[Ablation] = Registry("ablation")


def register(name: str, label_first: bool, needs_rationale: bool = True, params: dict[str, Param] | None = None,
             needs: tuple[str, ...] = (), seed_keys: tuple[str, ...] | None = None,
             normalise: Callable[[dict], dict] | None = None, multitask: bool = False, revision: int = 1):
    def decorate(fn):
        ABLATIONS.register(name)(Ablation(fn, label_first, needs_rationale, params or {},
                                          (fn.__doc__ or "").strip(), needs, seed_keys, normalise, multitask,
                                          revision))
        return fn

    return decorate


def get(spec: dict, name: str) -> Ablation:
    return ABLATIONS.get(spec["kind"], f"ablations.{name}.kind")


def resolve(spec: dict, name: str) -> dict:
    """``{kind, **parameters}`` with defaults filled in: the identity that enters params and seeds."""
    params = get(spec, name).resolve({k: v for k, v in spec.items() if k != "kind"})
    return {"kind": spec["kind"], **params}


def label_first(spec: dict, name: str) -> bool:
    resolved = resolve(spec, name)
    return get(spec, name).label_first({k: v for k, v in resolved.items() if k != "kind"})


def example_rng(seed: int, spec: dict, example_id: str) -> np.random.Generator:
    """A generator for one example's perturbation, from (global seed, the kind and its seeded parameters, example
    id) alone."""
    abl = ABLATIONS.get(spec["kind"])
    return keyed_rng(seed, abl.seed_spec(spec["kind"], spec), str(example_id))


def keyed_rng(*key: object) -> np.random.Generator:
    """A generator seeded from a JSON-able key alone (no stream state): the same key, the same draws."""
    text = json.dumps(list(key), sort_keys=True)
    return np.random.default_rng(int.from_bytes(hashlib.sha256(text.encode()).digest()[:16], "little"))


def _place(rationale: str, label: str, position: str) -> str:
    return f"{rationale} {wrap_label(label)}" if position == "before" else f"{wrap_label(label)} {rationale}"


def _after(label: str, words: list[str]) -> str:
    return " ".join([wrap_label(label), *words])


@register("none", label_first=True, needs_rationale=False)
def none(example: dict, rationale: str | None, label: str, params: dict, rng: np.random.Generator,
         res: Resources) -> str:
    """No CoT: ``[FIN_LABEL] B [FIN_LABEL]``."""
    return wrap_label(label)


@register("cot_before", label_first=False)
def cot_before(example: dict, rationale: str | None, label: str, params: dict, rng: np.random.Generator,
               res: Resources) -> str:
    """CoT before the label: ``<rationale> [FIN_LABEL] B [FIN_LABEL]``."""
    return _place(rationale, label, "before")


@register("cot_after", label_first=True)
def cot_after(example: dict, rationale: str | None, label: str, params: dict, rng: np.random.Generator,
              res: Resources) -> str:
    """CoT after the label: ``[FIN_LABEL] B [FIN_LABEL] <rationale>``; at test time only the label is generated."""
    return _place(rationale, label, "after")


@register("shuffle", label_first=True, params={"position": POSITION}, seed_keys=())
def shuffle(example: dict, rationale: str | None, label: str, params: dict, rng: np.random.Generator,
            res: Resources) -> str:
    """Rationale words shuffled per instance (Table 2), placed ``position: before|after`` the label."""
    words = rationale.split()
    return _place(" ".join(words[i] for i in rng.permutation(len(words))), label, params["position"])


_TOKEN = re.compile(r"\w+|[^\w\s]")


def _hidden(rng: np.random.Generator, n: int, p: float) -> np.ndarray:
    """Which of `n` units to hide: the ``p * n`` (rounded half up) with the smallest uniform draws. The product is
    rounded to 9 decimals first: 0.7 * 45 is 31.499999... in floating point, and 31.5 must give 32."""
    hidden = np.zeros(n, dtype=bool)
    hidden[np.argsort(rng.random(n), kind="stable")[:int(np.floor(round(p * n, 9) + 0.5))]] = True
    return hidden


@register("mask", label_first=True, params={
    "p": Param(float, minimum=0.0, maximum=1.0, doc="share of rationale units replaced by the mask string"),
    "position": POSITION,
    "unit": Param(str, "word", ("word", "token"),
                  doc="word: whitespace-separated words; token: words and punctuation marks separately"),
    "token": Param(str, "[MASK]", doc="the mask string")}, seed_keys=("unit",), revision=2)  # 2: exactly p hidden
def mask(example: dict, rationale: str | None, label: str, params: dict, rng: np.random.Generator,
         res: Resources) -> str:
    """A fraction ``p`` of the rationale's units, chosen at random, replaced by ``token`` (Figure 4), ``position:
    before|after`` the label. Units are tokenizer-independent (one targets file serves every student): ``word``
    splits at whitespace, ``token`` also splits punctuation from words (``cold.`` is two units) and keeps the
    spacing. Exactly ``p`` x units (rounded half up) are hidden, those with the smallest draws, so every example is
    masked at ``p`` itself, not only on average. The draws are seeded without ``p`` and ``position``: a sweep's
    masks are nested and both placements agree."""
    if params["unit"] == "word":
        words = rationale.split()
        hidden = _hidden(rng, len(words), params["p"])
        masked = " ".join(params["token"] if h else w for w, h in zip(words, hidden, strict=True))
    else:
        spans = [m.span() for m in _TOKEN.finditer(rationale)]
        hidden = _hidden(rng, len(spans), params["p"])
        masked, last = "", 0
        for (a, b), h in zip(spans, hidden, strict=True):
            masked += rationale[last:a] + (params["token"] if h else rationale[a:b])
            last = b
        masked += rationale[last:]
    return _place(masked, label, params["position"])


# revision 2: the targets rebuild, so their fine-tunes rerun with `ablations.target_text` (a special-token filler
# no longer preceded by a space token of its own)
@register("filler", label_first=False, needs_rationale=False, revision=2, params={
    "k": Param(int, minimum=0, doc="number of filler tokens before the label"),
    "fallback": Param(str, ".", doc="filler for a student whose tokenizer has no unk token distinct from EOS")})
def filler(example: dict, rationale: str | None, label: str, params: dict, rng: np.random.Generator,
           res: Resources) -> str:
    """``k`` filler tokens, then ``[FIN_LABEL] B [FIN_LABEL]``, no rationale (Figure 3). The targets file holds the
    placeholder ``<unk>``; each student's fine-tune replaces it by its tokenizer's unk token where that is a
    distinct token (Gemma ``<unk>``, SmolLM2 ``<|endoftext|>``), else by ``fallback`` (GPT-2, whose unk is its EOS
    ``<|endoftext|>``: an EOS filler would end generation before the label): `student_filler`."""
    return UNK * params["k"] + " " + wrap_label(label) if params["k"] else wrap_label(label)


def target_text(tokenizer: Any, target: str) -> str:
    """A target as it follows its source, in training and in every scoring: after a space, as words follow a
    prompt, except when it starts with a special token (a filler such as SmolLM2's ``<|endoftext|>``), before
    which the space would be a token of its own, one more content-free token than the filler count says."""
    specials = tuple(t for t in tokenizer.all_special_tokens if t)
    return target if specials and target.startswith(specials) else " " + target


def student_filler(tokenizer: Any, fallback: str, stop_ids: Any = None) -> tuple[str, bool]:
    """(the filler token text for this tokenizer, whether it is its own unk token). The unk token is used only if
    generation would not stop at it (`stop_ids`: the model's generation EOS ids, an int or a list); a fallback
    must be one token."""
    stops = {tokenizer.eos_token_id} | set(stop_ids if isinstance(stop_ids, list) else [stop_ids])
    unk = getattr(tokenizer, "unk_token", None)
    if unk and unk != tokenizer.eos_token and tokenizer.convert_tokens_to_ids(unk) not in stops:
        return unk, True
    if len(tokenizer(" " + fallback, add_special_tokens=False)["input_ids"]) != 1:
        raise ValueError(f"filler fallback {fallback!r} is not one token for this student's tokenizer (its unk "
                         f"token is missing or stops generation); choose one that is, e.g. '.'")
    return fallback, False


def fill(target: str, tokenizer: Any, fallback: str, stop_ids: Any = None) -> str:
    """A filler target with the `UNK` placeholders replaced for this student: special tokens back to back (one
    token each), a plain fallback separated by spaces (so each is one token, as `` .`` is for GPT-2)."""
    token, special = student_filler(tokenizer, fallback, stop_ids)

    def run(m: re.Match) -> str:
        n = len(m.group(0)) // len(UNK)
        return token * n if special else " ".join([token] * n)

    return re.sub(f"(?:{re.escape(UNK)})+", run, target)


@register("random_words", label_first=True, needs=("vocabulary",), revision=2)  # 2: the whole file's vocabulary
def random_words(example: dict, rationale: str | None, label: str, params: dict, rng: np.random.Generator,
                 res: Resources) -> str:
    """As many words as the rationale has, drawn (per example, uniformly over word types) from the vocabulary of
    the whole training rationales file, after the label: separates "more target tokens" from "useful content"
    (beyond the paper)."""
    n = len(rationale.split())
    return _after(label, [res.vocabulary[i] for i in rng.integers(0, len(res.vocabulary), n)])


def _ig_normalise(params: dict) -> dict:
    """Steps decide nothing for a method without steps: one value, so changing it reruns nothing."""
    return {**params, "n_steps": 1} if params["method"] != "integrated_gradients" else params


IG_PARAMS = {
    "k": Param(int, 15, minimum=1, doc="tokens kept (the paper's 15)"),
    "student": Param(str, doc="student whose CoT-before model is attributed (the paper: GPT-2)"),
    "source": Param(str, "cot_before", doc="the ablation (kind cot_before) that model was fine-tuned on"),
    "seed": Param(int, 0, minimum=0, doc="seed of that model"),
    "method": Param(str, "integrated_gradients", ("integrated_gradients", "input_x_gradient"),
                    doc="integrated_gradients (the paper's) or input_x_gradient (one backward pass, for CPU runs)"),
    "n_steps": Param(int, 50, minimum=1, doc="integration steps (integrated_gradients only)"),
}


def _top_tokens(example: dict, params: dict, res: Resources) -> list[str]:
    """The kept tokens as words: each token's text (`attribution.token_texts`) where kept, a word break where
    dropped, so kept pieces of one word join up again and a piece whose neighbours were dropped stands alone."""
    scored = res.attribution.get(str(example["id"]))
    if scored is None:
        raise ValueError(f"no attribution scores for row id {example['id']!r}: files do not align")
    ranked = [i for i, (text, _) in enumerate(scored) if text.strip()]  # whitespace tokens carry no word
    keep = {ranked[j] for j in np.argsort([-scored[i][1] for i in ranked], kind="stable")[:params["k"]]}
    return "".join(text if i in keep else " " if text else "" for i, (text, _) in enumerate(scored)).split()


@register("ig_topk", label_first=True, params=IG_PARAMS, needs=("attribution",), normalise=_ig_normalise,
          revision=2)  # 2: kept pieces of a word written as one word, not space-separated
def ig_topk(example: dict, rationale: str | None, label: str, params: dict, rng: np.random.Generator,
            res: Resources) -> str:
    """The ``k`` rationale tokens with the highest attribution to the gold label (on the CoT-before model), in
    their original order, after the label (Table 3). Highest by signed score: tokens that push the label's
    probability up, not those that push it down (the paper does not say; its word "important" reads as the
    former). Tokens are written as the rationale has them: adjacent kept pieces of a word (``refriger``,
    ``ators``) and a word with its punctuation as one word, a piece kept without its neighbours as a word of its
    own (a text target cannot hold a word's inner piece otherwise; re-tokenized it may become another token)."""
    return _after(label, _top_tokens(example, params, res))


@register("ig_topk_shuffled", label_first=True, params=IG_PARAMS, needs=("attribution",), normalise=_ig_normalise,
          revision=2)  # 2: as ig_topk's
def ig_topk_shuffled(example: dict, rationale: str | None, label: str, params: dict, rng: np.random.Generator,
                     res: Resources) -> str:
    """`ig_topk`'s words (pieces of one word stay together) shuffled per instance (Table 3)."""
    words = _top_tokens(example, params, res)
    return _after(label, [words[i] for i in rng.permutation(len(words))])


@register("human_words", label_first=True, needs_rationale=False, needs=("human_words",), params={
    "path": Param(str, doc="file or folder of JSON lines: {id, words: [...]} or CoS-E's {id, explanation: "
                           "{selected}}"),
    "max_words": Param(int, 15, minimum=1, doc="words kept per example (the paper's annotators: up to 15)")})
def human_words(example: dict, rationale: str | None, label: str, params: dict, rng: np.random.Generator,
                res: Resources) -> str:
    """Words people picked as the evidence, after the label (Table 3). The paper's QuaRel annotations are not
    public; for CommonsenseQA, CoS-E's highlighted spans (``explanation.selected``) are a real source."""
    words = res.human_words.get(str(example["id"]))
    if words is None:
        raise ValueError(f"{params['path']}: no human words for row id {example['id']!r}")
    return _after(label, words[:params["max_words"]])


@register("word_neighbours", label_first=True, needs_rationale=False, needs=("vectors",), params={
    "vectors": Param(str, doc="a `word_vectors` config entry"),
    "k": Param(int, 15, minimum=1, doc="neighbours kept (the paper's 15)")})
def word_neighbours(example: dict, rationale: str | None, label: str, params: dict, rng: np.random.Generator,
                    res: Resources) -> str:
    """The ``k`` nearest words to the answer in a word-vector space, after the label (the paper's "Word2Vec
    based", Table 3). The query is the answer text's longest word that the vectors know (not the choice letter;
    as written or lower-cased), so an unknown long word gives way to a shorter known one; an answer with no word
    in the vocabulary gets no neighbours (counted in the targets log)."""
    return _after(label, neighbours(res.vectors, answer_text(example), params["k"]))


def answer_text(example: dict) -> str:
    """The answer as words: the choice text for multiple choice, else the label itself."""
    return str(example.get("answer_text") or example["answer_label"])


def neighbours(vectors: Any, text: str, k: int) -> list[str]:
    """The `k` nearest words to the longest in-vocabulary word of `text` (ties: the first); [] if none is known."""
    from .annotations import words_of

    known = [v for w in words_of(text) for v in (w, w.lower()) if v in vectors.key_to_index]
    if not known:
        return []
    query = max(known, key=len)
    return [w for w, _ in vectors.most_similar(query, topn=k)]


AUX_LOSS_NAMES = ("none", "mi_paper", "mi", "kl")  # `losses.AUX_LOSSES`, named here without importing torch


def _multitask_normalise(params: dict) -> dict:
    """Without an auxiliary loss its weight and pooling decide nothing: one value each, so changing them reruns
    nothing. Empty task suffixes are left out, so configs written before they existed rerun nothing either."""
    out = {k: v for k, v in params.items() if not (k.endswith("_suffix") and v == "")}
    return {**out, "reduction": "max", "aux_weight": 0.0} if params["aux"] == "none" else out


@register("multitask", label_first=True, multitask=True, seed_keys=(), normalise=_multitask_normalise, params={
    "aux": Param(str, "none", AUX_LOSS_NAMES, doc="auxiliary loss (`losses.AUX_LOSSES`); none = plain DSS"),
    "reduction": Param(str, "max", ("max", "mean"), doc="pooling of each task's distributions over positions"),
    "predict_weight": Param(float, 0.5, minimum=0.0, doc="a1, weight of the predict task's loss"),
    "explain_weight": Param(float, 0.5, minimum=0.0, doc="a2, weight of the explain task's loss"),
    "aux_weight": Param(float, 0.1, minimum=0.0, doc="a3, weight of the auxiliary loss"),
    "predict_prefix": Param(str, "predict: ", doc="put before the input of the predict task (and at test time)"),
    "explain_prefix": Param(str, "explain: ", doc="put before the input of the explain task"),
    "predict_suffix": Param(str, "", doc="put after the input of the predict task (and at test time)"),
    "explain_suffix": Param(str, "", doc="put after the input of the explain task; task tags after the input "
                                         "(empty prefixes) let a decoder-only student read it once for both tasks"),
    "train_fraction": Param(float, 1.0, minimum=0.01, maximum=1.0,
                            doc="share of the training examples kept (MI Figures 2-3), nested across fractions")})
def multitask(example: dict, rationale: str | None, label: str, params: dict, rng: np.random.Generator,
              res: Resources) -> str:
    """Distilling Step-by-Step (and the MI paper's DSS+MI): each example is trained twice, ``predict:
    <input>`` -> ``[FIN_LABEL] B [FIN_LABEL]`` and ``explain: <input>`` -> the rationale, in the same batch, with
    loss ``a1 * L_predict + a2 * L_explain + a3 * L_aux`` (`multitask`). This is the predict task's target; the
    targets file also holds the explain task (`targets.build_targets`). At test time only the label is
    generated, from the predict prefix. ``train_fraction`` < 1 keeps a seeded share of the examples
    (`targets.build_targets`). With the task tags after the input instead (``predict_prefix: ""``,
    ``predict_suffix: "\\npredict:"``, likewise for explain) both tasks of a decoder-only student begin with the same
    tokens, which training reads once (`multitask.PairCollator`): the same loss for fewer FLOPs, except `mi_paper`,
    which pools over padding and so over the packed batch's own padding (`losses.mi_paper`)."""
    return wrap_label(label)


# --------------------------------------------------------------------------- sweeps


_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_sweeps(entries: dict[str, dict]) -> dict[str, list[str]]:
    """Expand sweep entries in place: ``mask_after_{p}: {kind: mask, position: after, p: [0.1, 0.5, 0.9]}`` becomes
    ``mask_after_0.1``, ``mask_after_0.5``, ``mask_after_0.9``; several fields sweep their product. Returns the
    names each sweep became, so experiments may list the sweep's own name for all of them."""
    expanded: dict[str, list[str]] = {}
    for name in [n for n in list(entries) if _FIELD.search(n)]:
        spec = entries.pop(name)
        if not isinstance(spec, dict):
            raise ValueError(f"config key 'ablations.{name}' is {spec!r}; expected a mapping {{kind: ..., ...}}")
        fields = list(dict.fromkeys(_FIELD.findall(name)))
        for f in fields:
            if not isinstance(spec.get(f), list) or not spec[f]:
                raise ValueError(f"config key 'ablations.{name}': the name sweeps {{{f}}}, so '{f}' must be a "
                                 f"non-empty list of values (got {spec.get(f)!r})")
        names = []
        for values in itertools.product(*(spec[f] for f in fields)):
            point = dict(zip(fields, values, strict=True))
            new = _FIELD.sub(lambda m, point=point: str(point[m.group(1)]), name)
            if new in entries:
                raise ValueError(f"config key 'ablations.{name}': sweep point {new!r} is already an ablation")
            entries[new] = {**spec, **point}
            names.append(new)
        expanded[name] = names
    return expanded
