"""Ablations: how a training target is built from an example, its teacher rationale and the gold label.

Each ablation is one registered function ``(example, rationale, label, params, rng) -> target`` with a flag
saying whether the label comes first (then evaluation need only generate up to the closing marker). The config
entry ``ablations.<name>: {kind: <registered>, ...params}`` names it; its parameters are part of its identity.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .registry import Registry

MARK = "[FIN_LABEL]"


def wrap_label(label: str) -> str:
    """`[FIN_LABEL] B [FIN_LABEL]`, exactly as in the Mysteries paper."""
    return f"{MARK} {label} {MARK}"


@dataclass(frozen=True)
class Ablation:
    build: Callable[[dict, str | None, str, dict, np.random.Generator], str]
    label_first_default: bool  # label before any rationale: evaluation stops at the closing marker
    needs_rationale: bool
    doc: str

    def label_first(self, params: dict) -> bool:
        """Whether the label comes first; a ``position`` parameter decides for placement-generic ablations."""
        return params["position"] == "after" if "position" in params else self.label_first_default


ABLATIONS: Registry[Ablation] = Registry("ablation")


def register(name: str, label_first: bool, needs_rationale: bool = True):
    def decorate(fn):
        ABLATIONS.register(name)(Ablation(fn, label_first, needs_rationale, (fn.__doc__ or "").strip()))
        return fn

    return decorate


@register("none", label_first=True, needs_rationale=False)
def none(example: dict, rationale: str | None, label: str, params: dict, rng: np.random.Generator) -> str:
    """No CoT: ``[FIN_LABEL] B [FIN_LABEL]``."""
    return wrap_label(label)


@register("cot_before", label_first=False)
def cot_before(example: dict, rationale: str | None, label: str, params: dict, rng: np.random.Generator) -> str:
    """CoT before the label: ``<rationale> [FIN_LABEL] B [FIN_LABEL]``."""
    return f"{rationale} {wrap_label(label)}"


@register("cot_after", label_first=True)
def cot_after(example: dict, rationale: str | None, label: str, params: dict, rng: np.random.Generator) -> str:
    """CoT after the label: ``[FIN_LABEL] B [FIN_LABEL] <rationale>``; at test time only the label is generated."""
    return f"{wrap_label(label)} {rationale}"


def get(spec: dict, name: str) -> Ablation:
    return ABLATIONS.get(spec["kind"], f"ablations.{name}.kind")


def label_first(spec: dict, name: str) -> bool:
    return get(spec, name).label_first({k: v for k, v in spec.items() if k != "kind"})


def _place(rationale: str, label: str, position: str) -> str:
    if position not in ("before", "after"):
        raise ValueError(f"ablation parameter position is {position!r}; valid choices: before, after")
    return f"{rationale} {wrap_label(label)}" if position == "before" else f"{wrap_label(label)} {rationale}"


@register("shuffle", label_first=True)
def shuffle(example: dict, rationale: str | None, label: str, params: dict, rng: np.random.Generator) -> str:
    """Rationale words shuffled per instance (Table 2), placed ``position: before|after`` the label."""
    words = rationale.split()
    return _place(" ".join(words[i] for i in rng.permutation(len(words))), label, params.get("position", "after"))


@register("mask", label_first=True)
def mask(example: dict, rationale: str | None, label: str, params: dict, rng: np.random.Generator) -> str:
    """A random fraction ``p`` of rationale words replaced by ``[MASK]``, ``position: before|after`` the label."""
    p = float(params["p"])
    words = [w if rng.random() >= p else "[MASK]" for w in rationale.split()]
    return _place(" ".join(words), label, params.get("position", "after"))
