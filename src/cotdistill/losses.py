"""Auxiliary losses of multi-task (Distilling Step-by-Step) training, registered by name (the ``aux`` parameter of
a ``multitask`` ablation).

Each takes the predict task's and the explain task's logits over their target positions, ``[batch, length, vocab]``,
with boolean masks of the real (non-pad) positions, and returns a scalar added as ``a3 * L_aux``. The MI paper
(Chen et al., 2024) pools each task's per-position distributions into one vector over the vocabulary (``max`` or
``mean`` over positions) and takes the cross-entropy between the two, the predict side as the (detached) target.
``mi_paper`` is the authors' code, quirks included; ``mi`` is what its description says, computed soundly.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .registry import Registry

AuxLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, str], torch.Tensor]

AUX_LOSSES: Registry[AuxLoss] = Registry("auxiliary loss")
REDUCTIONS = ("max", "mean")


def _check(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction (a multitask ablation parameter) is {reduction!r}; valid choices: "
                         f"{', '.join(REDUCTIONS)}")


@AUX_LOSSES.register("none")
def no_aux(pred_logits: torch.Tensor, pred_mask: torch.Tensor, expl_logits: torch.Tensor, expl_mask: torch.Tensor,
           reduction: str = "max") -> torch.Tensor:
    """Plain Distilling Step-by-Step: no third term."""
    _check(reduction)
    return expl_logits.new_zeros(())


@AUX_LOSSES.register("mi_paper")
def mi_paper(pred_logits: torch.Tensor, pred_mask: torch.Tensor, expl_logits: torch.Tensor,
             expl_mask: torch.Tensor, reduction: str = "max") -> torch.Tensor:
    """The MI authors' code as released: predict logits detached, both softmaxed, pooled over every position (padding
    included: the masks are ignored), then ``CrossEntropyLoss()(expl_vec, pred_vec)``, which log-softmaxes the
    probability vector again and takes the unnormalised pooled vector as soft target. Over a vocabulary of V the
    term sits near ``log(V) * sum(pred_vec)`` whatever the model does, and its gradient is tiny: kept to reproduce
    the paper's numbers, not as a measure of mutual information. On a decoder-only student the kept positions
    beyond a row's target are the end of its prompt (left padding), where the authors' T5 had decoder padding; in a
    packed batch (task tags after the input, `multitask.PairCollator`) they are its task tag and right padding."""
    _check(reduction)
    pred = pred_logits.detach().float().softmax(-1)
    expl = expl_logits.float().softmax(-1)
    pool = (lambda p: p.max(-2).values) if reduction == "max" else (lambda p: p.mean(-2))
    return F.cross_entropy(pool(expl), pool(pred))


def pooled_log_probs(logits: torch.Tensor, mask: torch.Tensor, reduction: str) -> torch.Tensor:
    """Log of each row's distribution pooled over its real positions (max or mean of the per-position
    probabilities), renormalised to sum to one; ``[batch, vocab]``, computed in log space."""
    _check(reduction)
    logp = logits.float().log_softmax(-1)
    keep = mask.bool().unsqueeze(-1)
    if not bool(mask.bool().any(-1).all()):
        raise ValueError("a row of the batch has no target position to pool over")
    if reduction == "max":
        pooled = logp.masked_fill(~keep, -math.inf).max(-2).values
    else:
        pooled = logp.masked_fill(~keep, -math.inf).logsumexp(-2) - mask.sum(-1, keepdim=True).float().log()
    return pooled - pooled.logsumexp(-1, keepdim=True)


@AUX_LOSSES.register("mi")
def mi(pred_logits: torch.Tensor, pred_mask: torch.Tensor, expl_logits: torch.Tensor, expl_mask: torch.Tensor,
       reduction: str = "max") -> torch.Tensor:
    """The MI paper's term as described: cross-entropy ``H(q_pred, q_expl)`` between the pooled distributions over
    real positions only, renormalised, in log space; the predict side detached as in the authors' code (it is the
    target the explanation is pulled toward). Mean over the batch."""
    target = pooled_log_probs(pred_logits.detach(), pred_mask, reduction).exp()
    return -(target * pooled_log_probs(expl_logits, expl_mask, reduction)).sum(-1).mean()


@AUX_LOSSES.register("kl")
def kl(pred_logits: torch.Tensor, pred_mask: torch.Tensor, expl_logits: torch.Tensor, expl_mask: torch.Tensor,
       reduction: str = "max") -> torch.Tensor:
    """``KL(q_pred || q_expl)`` over the same pooled distributions (MI Table 5's alternative), with gradients into
    both tasks: with the predict side detached it would differ from `mi` by a constant and train identically."""
    log_pred = pooled_log_probs(pred_logits, pred_mask, reduction)
    log_expl = pooled_log_probs(expl_logits, expl_mask, reduction)
    return (log_pred.exp() * (log_pred - log_expl)).sum(-1).mean()
