"""Auxiliary losses of multi-task training on fixed logits: the paper-faithful MI term pinned, the corrected one
against a direct computation, gradients finite."""

import math

import pytest
import torch

from cotdistill.losses import AUX_LOSSES, mi, mi_paper, pooled_log_probs


def _logits(seed: int, batch: int = 3, length: int = 5, vocab: int = 11, scale: float = 3.0) -> torch.Tensor:
    return torch.randn(batch, length, vocab, generator=torch.Generator().manual_seed(seed)) * scale


MASK_P = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
MASK_E = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], dtype=torch.bool)


def test_mi_paper_is_the_authors_formula_padding_included_and_pinned():
    pred, expl = _logits(0), _logits(1)
    value = mi_paper(pred, MASK_P, expl, MASK_E, "max")
    pred_vec, expl_vec = pred.softmax(-1).max(1).values, expl.softmax(-1).max(1).values
    direct = -(pred_vec * expl_vec.log_softmax(-1)).sum(-1).mean()  # CrossEntropyLoss with probability targets
    assert value.item() == pytest.approx(direct.item(), rel=1e-6)
    assert value.item() == pytest.approx(9.44278, abs=1e-4)  # pinned on this fixed input
    assert mi_paper(pred, torch.ones_like(MASK_P), expl, torch.ones_like(MASK_E)).item() == value.item()
    halves = torch.zeros(1, 2, 2), torch.zeros(1, 3, 2)  # uniform over 2 tokens: log 2 exactly
    assert mi_paper(halves[0], torch.ones(1, 2), halves[1], torch.ones(1, 3)).item() == pytest.approx(math.log(2))


def test_mi_paper_is_nearly_constant_over_a_large_vocabulary():
    """Near log(V) x sum(pooled predict probabilities), whatever the explanation's logits."""
    vocab = 32_000
    pred = _logits(2, batch=2, length=4, vocab=vocab, scale=8.0)
    values = [mi_paper(pred, torch.ones(2, 4), _logits(s, batch=2, length=6, vocab=vocab, scale=8.0),
                       torch.ones(2, 6)).item() for s in (3, 4, 5)]
    expected = math.log(vocab) * pred.softmax(-1).max(1).values.sum(-1).mean().item()
    assert max(values) - min(values) < 0.01 * expected
    assert values[0] == pytest.approx(expected, rel=0.01)


@pytest.mark.parametrize("reduction", ["max", "mean"])
def test_mi_is_the_cross_entropy_of_renormalised_pooled_distributions(reduction):
    pred, expl = _logits(6), _logits(7)

    def pooled(logits, mask):
        rows = []
        for x, m in zip(logits.softmax(-1), mask, strict=True):
            p = x[m].max(0).values if reduction == "max" else x[m].mean(0)
            rows.append(p / p.sum())
        return torch.stack(rows)

    direct = -(pooled(pred, MASK_P) * pooled(expl, MASK_E).log()).sum(-1).mean()
    assert mi(pred, MASK_P, expl, MASK_E, reduction).item() == pytest.approx(direct.item(), rel=1e-5)
    assert torch.allclose(pooled_log_probs(pred, MASK_P, reduction).exp().sum(-1), torch.ones(3))
    padded = pred.clone()
    padded[~MASK_P] = 50.0  # padding cannot move the corrected term
    assert mi(padded, MASK_P, expl, MASK_E, reduction).item() == pytest.approx(direct.item(), rel=1e-5)


@pytest.mark.parametrize("name", ["none", "mi_paper", "mi", "kl"])
def test_gradients_are_finite_and_reach_only_the_trained_side(name):
    for scale in (1.0, 1e4):  # saturated softmaxes must not give inf or nan
        pred, expl = (_logits(8) * scale).requires_grad_(), (_logits(9) * scale).requires_grad_()
        loss = AUX_LOSSES.get(name)(pred, MASK_P, expl, MASK_E, "max")
        if name == "none":
            assert loss.item() == 0.0
            return
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(expl.grad).all()
    pred, expl = _logits(8).requires_grad_(), _logits(9).requires_grad_()
    AUX_LOSSES.get(name)(pred, MASK_P, expl, MASK_E, "max").backward()
    assert expl.grad.abs().sum() > 0
    assert (pred.grad is not None and pred.grad.abs().sum() > 0) == (name == "kl")  # MI terms detach the predict side


def test_kl_is_zero_for_equal_distributions_and_bad_reductions_are_refused():
    x = _logits(10)
    assert AUX_LOSSES.get("kl")(x, MASK_P, x, MASK_P, "mean").item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="reduction .a multitask ablation parameter. is .sum.; valid choices: max"):
        mi(x, MASK_P, x, MASK_E, "sum")
    with pytest.raises(ValueError, match="no target position"):
        mi(x, torch.zeros_like(MASK_P), x, MASK_E)
