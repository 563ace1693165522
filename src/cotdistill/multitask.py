"""Distilling Step-by-Step multi-task training: each example seen as ``predict: <input>`` -> label and as
``explain: <input>`` -> rationale, both tasks of an example in the same batch, loss
``a1 * L_predict + a2 * L_explain + a3 * L_aux`` (`losses.AUX_LOSSES`).

One code path for decoder-only and encoder-decoder students, chosen by ``model.config.is_encoder_decoder``: a
decoder-only student reads the task's input and writes its target after it (loss on the target only, logits kept
over the target span, `training.Collator`); an encoder-decoder student encodes the input and decodes the target.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import pandas as pd
import torch

from .evaluation import attention_bias
from .losses import AUX_LOSSES
from .training import Collator, Seq2SeqCollator, encode, marker_ends, target_loss, target_positions

TASKS = ("pred", "expl")


def shared_length(features: dict) -> int:
    """How many tokens both tasks of an example begin with and can read in one pass: their common start, short of
    the token before either task's first target token (each task's own part keeps the position that predicts its
    first target). With the DSS prefixes at most a BOS token; the whole input where the task tags follow it
    (``predict_suffix``, ``explain_suffix``)."""
    a, b = features["pred_input_ids"], features["expl_input_ids"]
    limit = min(next((i for i, x in enumerate(features[f"{t}_labels"]) if x != -100), len(features[f"{t}_labels"]))
                for t in TASKS) - 1
    n = 0
    while n < limit and a[n] == b[n]:
        n += 1
    return n


@dataclass
class PairCollator:
    """``{"pred": batch, "expl": batch}`` from features holding both tasks of an example (``pred_input_ids``,
    ``pred_labels``, ``expl_input_ids``, ``expl_labels``): row i of each task batch is the same example.
    Encoder-decoder features (`start_id`: the decoder's start token) put the target in ``*_labels`` only and are
    batched by `training.Seq2SeqCollator`.

    With `share` (decoder-only, left side; training sets it where the task tags follow the input), a batch whose
    pairs begin alike (`shared_length`) is packed instead where that takes fewer positions than the two task
    batches, one row per example, ``{"packed": ...}``: the shared tokens (left-padded), the rest of the predict task
    and the rest of the explain task (each right-padded), positions counting on from the shared part, and
    ``allowed``, which key each query may attend to (causal, real tokens only, the explain task never seeing the
    predict task's), so one forward pass gives both tasks the loss and gradients of their unshared batches (every
    term but `mi_paper`, which pools over padding: the packed and unpacked batches pad different positions)."""

    pad_id: int
    side: str = "left"  # decoder-only: `training.Collator`'s side
    start_id: int | None = None  # encoder-decoder students only
    share: bool = False

    def __post_init__(self) -> None:
        if self.share and (self.side != "left" or self.start_id is not None):
            raise ValueError("PairCollator(share=True) packs decoder-only, left-padded batches only")

    def __call__(self, features: list[dict]) -> dict[str, dict]:
        if self.share:
            shared = [shared_length(f) for f in features]
            if sum(self._widths(features, shared)) < sum(self._widths(features, [0] * len(features))[1:]):
                return {"packed": self._packed(features, shared)}
        batch = Collator(self.pad_id, side=self.side) if self.start_id is None else Seq2SeqCollator(self.pad_id,
                                                                                                  self.start_id)
        return {task: batch([{"input_ids": f[f"{task}_input_ids"], "labels": f[f"{task}_labels"]} for f in features])
                for task in TASKS}

    @staticmethod
    def _widths(features: list[dict], shared: list[int]) -> list[int]:
        """Columns of a packed batch: shared part, rest of the predict task, rest of the explain task."""
        return [max(shared)] + [max(len(f[f"{t}_input_ids"]) - n for f, n in zip(features, shared, strict=True))
                                for t in TASKS]

    def _packed(self, features: list[dict], shared: list[int]) -> dict[str, torch.Tensor]:
        """The packed batch; its ``attention_mask`` (real tokens) is for the Trainer's token count only."""
        rows = len(features)
        widths = self._widths(features, shared)
        width = sum(widths)
        ids = torch.full((rows, width), self.pad_id, dtype=torch.long)
        position = torch.zeros((rows, width), dtype=torch.long)
        real = torch.zeros((rows, width), dtype=torch.bool)
        labels = {t: torch.full((rows, w), -100, dtype=torch.long) for t, w in zip(TASKS, widths[1:], strict=True)}
        for i, (f, n) in enumerate(zip(features, shared, strict=True)):
            cols = slice(widths[0] - n, widths[0])
            ids[i, cols], real[i, cols] = torch.tensor(f["pred_input_ids"][:n], dtype=torch.long), True
            position[i, cols] = torch.arange(n)
            start = widths[0]
            for t, w in zip(TASKS, widths[1:], strict=True):
                rest = f[f"{t}_input_ids"][n:]
                cols = slice(start, start + len(rest))
                ids[i, cols], real[i, cols] = torch.tensor(rest), True
                position[i, cols] = n + torch.arange(len(rest))
                labels[t][i, :len(rest)] = torch.tensor(f[f"{t}_labels"][n:])
                start += w
        part = torch.repeat_interleave(torch.arange(3), torch.tensor(widths))  # 0 shared, 1 predict, 2 explain
        col = torch.arange(width)
        allowed = real[:, None, :] & (col[None, :] <= col[:, None]) & ~((part[:, None] == 2) & (part[None, :] == 1))
        # padding queries see themselves: no fully masked row, which SDPA's memory-efficient CUDA kernel turns into
        # NaN (transformers' `_unmask_unattended` guards its own masks likewise, unmasking whole rows)
        allowed |= torch.eye(width, dtype=torch.bool)
        return {"input_ids": ids, "attention_mask": real.long(), "position_ids": position, "allowed": allowed[:, None],
                "pred_labels": labels["pred"], "expl_labels": labels["expl"]}


def encode_pairs(tokenizer, targets: pd.DataFrame, max_source: int, max_target: int, overlong: str = "error",
                 prefixes: tuple[str, str] = ("", ""), encoder_decoder: bool = False,
                 shared: bool = False) -> tuple[dict, list[str]]:
    """Both tasks of each row of a multi-task targets file, for `PairCollator`; returns (encoded, dropped ids).

    The predict task follows `training.encode` (a label cut by `max_target` is an error or drops the row); the
    explanation is cut at `max_target` tokens, as Distilling Step-by-Step truncates its targets. A source cut to
    `max_source` keeps its task prefix (`prefixes`: predict, explain), so the two tasks stay apart, and its end,
    so task tags after the input (``*_suffix``) stay too. An example's ``length`` is its two tasks' tokens, less
    the tokens they begin with when `shared` (packed training reads those once: length-grouped batches and the cost
    report then count what an example costs)."""
    pred, dropped = encode(tokenizer, list(targets["source"]), list(targets["target"]), marker_ends(targets),
                           max_source, max_target, list(targets["id"]), overlong, prefixes[0], encoder_decoder)
    kept = targets[~targets["id"].isin(dropped)]
    expl, _ = encode(tokenizer, list(kept["explain_source"]), list(kept["explanation"]), [0] * len(kept),
                     max_source, max_target, list(kept["id"]), keep_prefix=prefixes[1],
                     encoder_decoder=encoder_decoder)
    out = {"pred_input_ids": pred["input_ids"], "pred_labels": pred["labels"], "expl_input_ids": expl["input_ids"],
           "expl_labels": expl["labels"]}
    length = [a + b for a, b in zip(pred["length"], expl["length"], strict=True)]
    if shared:
        features = (dict(zip(out, values, strict=True)) for values in zip(*out.values(), strict=True))
        length = [n - shared_length(f) for n, f in zip(length, features, strict=True)]
    return {**out, "length": length}, dropped


def task_outputs(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean target-token loss, logits over target positions ``[B, L, V]``, mask of real target positions)."""
    labels = batch["labels"]
    return _scored(model(**{k: v for k, v in batch.items() if k != "labels"}), labels)


def _scored(outputs, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    logits, tail = target_positions(outputs, labels)
    return target_loss(outputs, labels), logits, tail.ne(-100)


def pair_outputs(model, inputs: dict[str, dict]) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """`task_outputs` of the predict and the explain task of a `PairCollator` batch. A packed batch takes one
    forward pass, its logits kept over the two tasks' parts, each part's logits predicting that part's next tokens."""
    if "packed" not in inputs:
        return [task_outputs(model, inputs[t]) for t in TASKS]
    batch = inputs["packed"]
    position, widths = batch["position_ids"], [batch[f"{t}_labels"].shape[1] for t in TASKS]
    inner = getattr(model, "module", model)  # DDP
    bias = attention_bias(inner.config, batch["allowed"], position, position, next(inner.parameters()).dtype,
                          position.device)
    logits = model(input_ids=batch["input_ids"], attention_mask=bias, position_ids=position,
                   logits_to_keep=sum(widths)).logits
    parts = logits.split(widths, dim=1)
    return [_scored(SimpleNamespace(logits=p), batch[f"{t}_labels"]) for p, t in zip(parts, TASKS, strict=True)]


def multitask_loss(model, inputs: dict[str, dict], weights: tuple[float, float, float], aux: str = "none",
                   reduction: str = "max") -> tuple[torch.Tensor, dict[str, float]]:
    """The weighted DSS loss of one paired batch and its parts (for logging the size of each term)."""
    a1, a2, a3 = weights
    (pred_loss, pred_logits, pred_mask), (expl_loss, expl_logits, expl_mask) = pair_outputs(model, inputs)
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

    def _track_num_input_tokens(self, inputs) -> None:  # every part's tokens: the batch has no top-level input_ids
        for part in inputs.values():
            super()._track_num_input_tokens(part)

    def floating_point_ops(self, inputs) -> int:  # the Trainer's total_flos, over every part
        flops = super().floating_point_ops
        return sum(flops(part) for part in inputs.values())

    def term_means(self) -> dict[str, float]:
        """Each term's mean over this process's training batches (unweighted)."""
        return {k: v / self._steps for k, v in self._totals.items()} if self._steps else {}
