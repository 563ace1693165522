"""Lens kinds: how a hidden state at layer l is read as a next-token distribution (the Mysteries paper's analysis).

Light on imports (the Snakefile's config check reads the registry). A config entry ``lenses.<name>: {kind: ...,
...params}`` names a kind and its parameters; an experiment picks one with ``lens: <name>``. A kind that
``trains`` gets a `lens` rule per fine-tuned model; the others need no job of their own.

- ``tuned``: tuned-lens's `TunedLens`, one affine translator per layer (initialised to the identity), trained with
  the tuned-lens paper's recipe (KL from the model's own final distribution, SGD with Nesterov momentum, learning
  rate ``lr * (1 - momentum)`` decayed linearly, weight decay, gradients clipped at 1) for a bounded number of
  ``steps`` on the model's own training targets.
- ``logit``: the logit lens (final norm and unembedding applied to every layer), no training.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .ablations import Param, resolve_params
from .registry import Registry


@dataclass(frozen=True)
class LensKind:
    trains: bool
    params: dict[str, Param] = field(default_factory=dict)
    doc: str = ""

    def resolve(self, params: dict) -> dict:
        """Parameters checked against the declaration, defaults filled in; raises AblationParamError."""
        return resolve_params(self.params, params)


LENSES: Registry[LensKind] = Registry("lens kind")

LENSES.register("tuned")(LensKind(True, {
    "steps": Param(int, 40, minimum=1, doc="optimizer steps (the tuned-lens paper: 250 of 2^18 tokens)"),
    "batch_size": Param(int, 8, minimum=1, doc="training examples per step"),
    "lr": Param(float, 1.0, minimum=0.0, doc="learning-rate scale; SGD's rate is lr * (1 - momentum)"),
    "momentum": Param(float, 0.9, minimum=0.0, maximum=0.999, doc="Nesterov momentum"),
    "weight_decay": Param(float, 1e-3, minimum=0.0, doc="pulls each translator toward the identity"),
    "heldout": Param(int, 16, minimum=1, doc="training examples kept out of lens training to measure its KL"),
    "positions": Param(str, "target", ("target", "all"),
                       doc="train on the target's positions (those the analysis reads) or on every position"),
    "positions_per_example": Param(int, 8, minimum=0,
                                   doc="positions drawn (seeded per example and epoch) from each example per step; "
                                       "0 = all: each costs one vocabulary projection per layer"),
}, "tuned lens: one affine translator per layer, trained to match the final layer"))

LENSES.register("logit")(LensKind(False, {}, "logit lens: the final norm and unembedding at every layer"))


def resolve(spec: dict, name: str) -> dict:
    """``{kind, **parameters}`` with defaults filled in: what decides a lens, never its name."""
    kind = LENSES.get(spec["kind"], f"lenses.{name}.kind")
    return {"kind": spec["kind"], **kind.resolve({k: v for k, v in spec.items() if k != "kind"})}
