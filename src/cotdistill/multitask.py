"""Distilling Step-by-Step multi-task training: each example seen as ``predict: <input>`` -> label and as
``explain: <input>`` -> rationale, both tasks of an example in the same batch, loss
``a1 * L_predict + a2 * L_explain + a3 * L_aux`` (`losses.AUX_LOSSES`).

One code path for decoder-only and encoder-decoder students, chosen by ``model.config.is_encoder_decoder``: a
decoder-only student reads the task's input and writes its target after it (loss on the target only, logits kept
over the target span, `training.Collator`); an encoder-decoder student encodes the input and decodes the target.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn.utils.rnn import pad_sequence

from .losses import AUX_LOSSES
from .training import Collator, target_loss, target_positions

TASKS = ("pred", "expl")


@dataclass
class PairCollator:
    """``{"pred": batch, "expl": batch}`` from features holding both tasks of an example (``pred_input_ids``,
    ``pred_labels``, ``expl_input_ids``, ``expl_labels``): row i of each task batch is the same example.
    Encoder-decoder features put the target in ``*_labels`` only; their batches pad labels with -100."""

    pad_id: int
    encoder_decoder: bool = False

    def __call__(self, features: list[dict]) -> dict[str, dict]:
        out = {}
        for task in TASKS:
            rows = [{"input_ids": f[f"{task}_input_ids"], "labels": f[f"{task}_labels"]} for f in features]
            out[task] = self._seq2seq(rows) if self.encoder_decoder else Collator(self.pad_id)(rows)
        return out

    def _seq2seq(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        def pad(key: str, value: int) -> torch.Tensor:
            return pad_sequence([torch.tensor(r[key]) for r in rows], batch_first=True, padding_value=value)

        ids = pad("input_ids", self.pad_id)
        mask = pad_sequence([torch.ones(len(r["input_ids"]), dtype=torch.long) for r in rows], batch_first=True)
        return {"input_ids": ids, "attention_mask": mask, "labels": pad("labels", -100)}


def task_outputs(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean target-token loss, logits over target positions ``[B, L, V]``, mask of real target positions)."""
    labels = batch["labels"]
    if model.config.is_encoder_decoder:
        out = model(**batch)
        return out.loss, out.logits, labels.ne(-100)
    out = model(**{k: v for k, v in batch.items() if k != "labels"})
    logits, tail = target_positions(out, labels)
    return target_loss(out, labels), logits, tail.ne(-100)


def multitask_loss(model, inputs: dict[str, dict], weights: tuple[float, float, float], aux: str = "none",
                   reduction: str = "max") -> tuple[torch.Tensor, dict[str, float]]:
    """The weighted DSS loss of one paired batch and its parts (for logging the size of each term)."""
    a1, a2, a3 = weights
    pred_loss, pred_logits, pred_mask = task_outputs(model, inputs["pred"])
    expl_loss, expl_logits, expl_mask = task_outputs(model, inputs["expl"])
    aux_loss = AUX_LOSSES.get(aux, "training.aux_loss")(pred_logits, pred_mask, expl_logits, expl_mask, reduction)
    loss = a1 * pred_loss + a2 * expl_loss + a3 * aux_loss
    return loss, {name: float(part.detach()) for name, part in (("predict", pred_loss), ("explain", expl_loss),
                                                               ("aux", aux_loss))}
