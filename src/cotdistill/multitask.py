"""Distilling Step-by-Step multi-task training: each example seen as ``predict: <input>`` -> label and as
``explain: <input>`` -> rationale, both tasks of an example in the same batch, loss
``a1 * L_predict + a2 * L_explain + a3 * L_aux`` (`losses.AUX_LOSSES`).

One code path for decoder-only and encoder-decoder students, chosen by ``model.config.is_encoder_decoder``: a
decoder-only student reads the task's input and writes its target after it (loss on the target only, logits kept
over the target span, `training.Collator`); an encoder-decoder student encodes the input and decodes the target.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from .losses import AUX_LOSSES
from .training import Collator, Seq2SeqCollator, encode, marker_ends, target_loss, target_positions

TASKS = ("pred", "expl")


@dataclass
class PairCollator:
    """``{"pred": batch, "expl": batch}`` from features holding both tasks of an example (``pred_input_ids``,
    ``pred_labels``, ``expl_input_ids``, ``expl_labels``): row i of each task batch is the same example.
    Encoder-decoder features (`start_id`: the decoder's start token) put the target in ``*_labels`` only and are
    batched by `training.Seq2SeqCollator`."""

    pad_id: int
    side: str = "left"  # decoder-only: `training.Collator`'s side
    start_id: int | None = None  # encoder-decoder students only

    def __call__(self, features: list[dict]) -> dict[str, dict]:
        batch = Collator(self.pad_id, side=self.side) if self.start_id is None else Seq2SeqCollator(self.pad_id,
                                                                                                  self.start_id)
        return {task: batch([{"input_ids": f[f"{task}_input_ids"], "labels": f[f"{task}_labels"]} for f in features])
                for task in TASKS}


def encode_pairs(tokenizer, targets: pd.DataFrame, max_source: int, max_target: int, overlong: str = "error",
                 prefixes: tuple[str, str] = ("", ""), encoder_decoder: bool = False) -> tuple[dict, list[str]]:
    """Both tasks of each row of a multi-task targets file, for `PairCollator`; returns (encoded, dropped ids).

    The predict task follows `training.encode` (a label cut by `max_target` is an error or drops the row); the
    explanation is cut at `max_target` tokens, as Distilling Step-by-Step truncates its targets. A source cut to
    `max_source` keeps its task prefix (`prefixes`: predict, explain), so the two tasks stay apart."""
    pred, dropped = encode(tokenizer, list(targets["source"]), list(targets["target"]), marker_ends(targets),
                           max_source, max_target, list(targets["id"]), overlong, prefixes[0], encoder_decoder)
    kept = targets[~targets["id"].isin(dropped)]
    expl, _ = encode(tokenizer, list(kept["explain_source"]), list(kept["explanation"]), [0] * len(kept),
                     max_source, max_target, list(kept["id"]), keep_prefix=prefixes[1],
                     encoder_decoder=encoder_decoder)
    return {"pred_input_ids": pred["input_ids"], "pred_labels": pred["labels"], "expl_input_ids": expl["input_ids"],
            "expl_labels": expl["labels"],
            "length": [a + b for a, b in zip(pred["length"], expl["length"], strict=True)]}, dropped


def task_outputs(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean target-token loss, logits over target positions ``[B, L, V]``, mask of real target positions)."""
    labels = batch["labels"]
    out = model(**{k: v for k, v in batch.items() if k != "labels"})
    logits, tail = target_positions(out, labels)
    return target_loss(out, labels), logits, tail.ne(-100)


def multitask_loss(model, inputs: dict[str, dict], weights: tuple[float, float, float], aux: str = "none",
                   reduction: str = "max") -> tuple[torch.Tensor, dict[str, float]]:
    """The weighted DSS loss of one paired batch and its parts (for logging the size of each term)."""
    a1, a2, a3 = weights
    pred_loss, pred_logits, pred_mask = task_outputs(model, inputs["pred"])
    expl_loss, expl_logits, expl_mask = task_outputs(model, inputs["expl"])
    aux_fn = AUX_LOSSES.get(aux, "the multitask ablation parameter aux")
    aux_loss = aux_fn(pred_logits, pred_mask, expl_logits, expl_mask, reduction)
    loss = a1 * pred_loss + a2 * expl_loss + a3 * aux_loss
    return loss, {name: float(part.detach()) for name, part in (("predict", pred_loss), ("explain", expl_loss),
                                                               ("aux", aux_loss))}


class MultitaskTrainerMixin:
    """Put before a `transformers.Trainer` subclass: its loss becomes `multitask_loss` over `PairCollator`
    batches (``multitask``: the ablation's resolved parameters). Each logged step also reports the mean of each
    term since the last log (``loss_predict``, ``loss_explain``, ``loss_aux``, unweighted); `term_means` gives
    them over the batches this process trained (after a resume: since the resume)."""

    def __init__(self, *args, multitask: dict, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.multitask = multitask
        self._since_log: list[dict[str, float]] = []
        self._totals: dict[str, float] = {}
        self._steps = 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        m = self.multitask
        loss, parts = multitask_loss(model, inputs, (m["predict_weight"], m["explain_weight"], m["aux_weight"]),
                                     m["aux"], m["reduction"])
        if model.training:
            self._since_log.append(parts)
            self._steps += 1
            for k, v in parts.items():
                self._totals[k] = self._totals.get(k, 0.0) + v
        return (loss, None) if return_outputs else loss

    def log(self, logs: dict, *args, **kwargs) -> None:
        if "loss" in logs and self._since_log:
            for k in self._since_log[0]:
                logs[f"loss_{k}"] = sum(p[k] for p in self._since_log) / len(self._since_log)
            self._since_log = []
        super().log(logs, *args, **kwargs)

    def _track_num_input_tokens(self, inputs) -> None:  # both tasks' tokens: the batch has no top-level input_ids
        for task in TASKS:
            super()._track_num_input_tokens(inputs[task])

    def floating_point_ops(self, inputs) -> int:  # the Trainer's total_flos, over both tasks
        flops = super().floating_point_ops
        return sum(flops(inputs[task]) for task in TASKS)

    def term_means(self) -> dict[str, float]:
        """Each term's mean over this process's training batches (unweighted)."""
        return {k: v / self._steps for k, v in self._totals.items()} if self._steps else {}
