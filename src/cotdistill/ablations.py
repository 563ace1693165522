"""Ablations: how a training target is built from an example, its teacher rationale and the gold label.

Each ablation is one registered function ``(example, rationale, label, params, rng) -> target`` that declares its
parameters (type, default, valid values), so a misspelt or mistyped parameter is a config error, and a flag saying
whether the label comes first (then evaluation need only generate up to the closing marker). The config entry
``ablations.<name>: {kind: <registered>, ...params}`` names it; the kind and its resolved parameters (defaults
filled in) are its identity, never its name.

Randomness is per example: `example_rng` seeds a generator from (global seed, kind, parameters, example id), so an
example's perturbation does not depend on row order, on the other rows, on the subsample size or on the name.
"""

from __future__ import annotations

import hashlib
import json
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


POSITION = Param(str, "after", ("before", "after"), doc="rationale before or after the label")


@dataclass(frozen=True)
class Ablation:
    build: Callable[[dict, str | None, str, dict, np.random.Generator], str]
    label_first_default: bool  # label before any rationale: evaluation stops at the closing marker
    needs_rationale: bool
    params: dict[str, Param] = field(default_factory=dict)
    doc: str = ""

    def resolve(self, params: dict) -> dict:
        """Parameters checked against the declaration, defaults filled in; raises AblationParamError."""
        unknown = sorted(set(params) - set(self.params))
        if unknown:
            valid = ", ".join(sorted(self.params)) or "none"
            raise AblationParamError(unknown[0], f"is not a parameter of this kind; valid parameters: {valid}")
        out = {}
        for key, decl in self.params.items():
            if key in params:
                out[key] = decl.check(key, params[key])
            elif decl.default is REQUIRED:
                raise AblationParamError(key, f"is required ({decl.type.__name__}: {decl.doc})")
            else:
                out[key] = decl.default
        return out

    def label_first(self, params: dict) -> bool:
        """Whether the label comes first; a ``position`` parameter decides for placement-generic ablations."""
        return params["position"] == "after" if "position" in params else self.label_first_default


ABLATIONS: Registry[Ablation] = Registry("ablation")


def register(name: str, label_first: bool, needs_rationale: bool = True, params: dict[str, Param] | None = None):
    def decorate(fn):
        ABLATIONS.register(name)(Ablation(fn, label_first, needs_rationale, params or {},
                                          (fn.__doc__ or "").strip()))
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
    """A generator for one example's perturbation, from (global seed, kind and parameters, example id) alone."""
    key = json.dumps([seed, spec, str(example_id)], sort_keys=True)
    return np.random.default_rng(int.from_bytes(hashlib.sha256(key.encode()).digest()[:16], "little"))


def _place(rationale: str, label: str, position: str) -> str:
    return f"{rationale} {wrap_label(label)}" if position == "before" else f"{wrap_label(label)} {rationale}"


@register("none", label_first=True, needs_rationale=False)
def none(example: dict, rationale: str | None, label: str, params: dict, rng: np.random.Generator) -> str:
    """No CoT: ``[FIN_LABEL] B [FIN_LABEL]``."""
    return wrap_label(label)


@register("cot_before", label_first=False)
def cot_before(example: dict, rationale: str | None, label: str, params: dict, rng: np.random.Generator) -> str:
    """CoT before the label: ``<rationale> [FIN_LABEL] B [FIN_LABEL]``."""
    return _place(rationale, label, "before")


@register("cot_after", label_first=True)
def cot_after(example: dict, rationale: str | None, label: str, params: dict, rng: np.random.Generator) -> str:
    """CoT after the label: ``[FIN_LABEL] B [FIN_LABEL] <rationale>``; at test time only the label is generated."""
    return _place(rationale, label, "after")


@register("shuffle", label_first=True, params={"position": POSITION})
def shuffle(example: dict, rationale: str | None, label: str, params: dict, rng: np.random.Generator) -> str:
    """Rationale words shuffled per instance (Table 2), placed ``position: before|after`` the label."""
    words = rationale.split()
    return _place(" ".join(words[i] for i in rng.permutation(len(words))), label, params["position"])


@register("mask", label_first=True, params={
    "p": Param(float, minimum=0.0, maximum=1.0, doc="share of rationale words replaced by [MASK]"),
    "position": POSITION})
def mask(example: dict, rationale: str | None, label: str, params: dict, rng: np.random.Generator) -> str:
    """A random fraction ``p`` of rationale words replaced by ``[MASK]``, ``position: before|after`` the label."""
    words = rationale.split()
    hidden = rng.random(len(words)) < params["p"]
    return _place(" ".join("[MASK]" if h else w for w, h in zip(words, hidden, strict=True)), label,
                  params["position"])
