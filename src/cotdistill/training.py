"""Fine-tuning a student on target files with the transformers `Trainer`.

One path for decoder-only students (the target follows the source in one sequence) and encoder-decoder students
(T5: the encoder reads the source, the decoder writes the target), chosen by the model's config. Loss falls on
target tokens only (a decoder-only student computes logits only there, `Collator`); batches are padded dynamically and
grouped by length; validation accuracy is measured by greedy generation (the same code as the evaluate stage) every
``eval_every`` steps and drives early stopping (patience and threshold as in the Mysteries paper) and the choice of
the best checkpoint.

Checkpoints live outside the rule's output, in ``<ckpt_dir>/<fingerprint>/checkpoint-N``: the fingerprint hashes
everything that decides training (settings without bookkeeping keys, the student's identity and the checksum of
its weights, the targets file's checksum, seed, validation seed, placement and number of processes), so a killed
job resumes only the run it was, and a job whose settings or inputs changed starts from step 0. A checkpoint
without a complete ``trainer_state.json`` (a kill during a save; the Trainer writes that file last) is skipped with
a log line and removed. Checkpoints are deleted once the final model is in place.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from . import io
from .ablations import MARK, fill, student_filler, target_text, wrap_label
from .config import student_identity, training_identity
from .defaults import TRAINING as DEFAULTS
from .evaluation import extract_label, generate, label_budget, same_label
from .models import load_student, pretrained_args, student_spec
from .precision import use_bf16
from .targets import EXPLAIN_COLUMNS, TARGET_COLUMNS

log = logging.getLogger(__name__)


def resolved_precision(settings: dict) -> dict:
    """`settings` with ``precision`` fixed to bf16 or fp32 (``auto`` decided here, with the current thread count),
    so the run fingerprint holds the precision actually trained in: a job resumed where ``auto`` decides otherwise
    starts over instead of mixing precisions. Resolved values pass through unchanged."""
    return {**settings, "precision": "bf16" if use_bf16({**DEFAULTS, **settings}["precision"]) else "fp32"}


class OverlongTargetError(ValueError):
    """A target's label would be cut by ``max_target_tokens``."""


def encode(tokenizer, sources: list[str], targets: list[str], marker_ends: list[int], max_source: int,
           max_target: int, ids: list[str] | None = None, overlong: str = "error",
           keep_prefix: str = "", encoder_decoder: bool = False) -> tuple[dict, list[str]]:
    """input_ids = source + " " + target + eos (`ablations.target_text`), labels masked (-100) over the source;
    returns (encoded, dropped). With `encoder_decoder`, input_ids = the source and labels = " " + target + eos (the
    decoder's sequence).

    A source longer than `max_source` keeps its end (the part next to the answer), the special tokens the tokenizer
    puts first (a BOS, which the model sees at evaluation), and its start where every source begins with
    `keep_prefix` (a multi-task prefix: the tokens the prefix takes alone). A target is cut at
    `max_target` tokens only after its closing marker (`marker_ends`: character offsets just past it): a target
    whose label would be cut raises OverlongTargetError naming its id, or with ``overlong="drop"`` is left out
    and its id returned in `dropped`.
    """
    if overlong not in ("error", "drop"):
        raise ValueError(f"training.overlong is {overlong!r}; valid choices: error, drop")
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    ids = list(ids) if ids is not None else [str(i) for i in range(len(sources))]
    input_ids, labels, dropped = [], [], []
    head = leading_specials(tokenizer) + (len(tokenizer(keep_prefix, add_special_tokens=False)["input_ids"])
                                          if keep_prefix else 0)
    for rid, src, tgt, end in zip(ids, sources, targets, marker_ends, strict=True):
        if not src.startswith(keep_prefix):
            raise ValueError(f"source of row id {rid!r} does not start with the task prefix {keep_prefix!r}")
        s = cut_source(tokenizer(src, add_special_tokens=True)["input_ids"], max_source, head)
        t = tokenizer(target_text(tokenizer, tgt), add_special_tokens=False)["input_ids"] + eos
        if len(t) > max_target:
            need = len(tokenizer(target_text(tokenizer, tgt[:end]), add_special_tokens=False)["input_ids"])
            if need > max_target:
                if overlong == "error":
                    raise OverlongTargetError(
                        f"target of row id {rid!r} needs {need} tokens up to its closing {MARK}, more than "
                        f"training.max_target_tokens = {max_target}: its label would be cut. Raise "
                        f"max_target_tokens, or set training.overlong: drop to leave such rows out")
                dropped.append(rid)
                continue
            t = t[:max_target]
        input_ids.append(s if encoder_decoder else s + t)
        labels.append(t if encoder_decoder else [-100] * len(s) + t)
    return {"input_ids": input_ids, "labels": labels,
            "length": [len(x) + (len(y) if encoder_decoder else 0) for x, y in zip(input_ids, labels, strict=True)]
            }, dropped


def cut_source(ids: list[int], max_source: int, head: int) -> list[int]:
    """A source cut to `max_source` tokens: its first `head` (BOS, a task prefix) and its end, next to the answer."""
    return ids[:head] + ids[len(ids) - (max_source - head):] if len(ids) > max_source else ids


def leading_specials(tokenizer) -> int:
    """How many special tokens (BOS and the like) the tokenizer puts before a text."""
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return next((i for i, t in enumerate(ids) if t not in tokenizer.all_special_ids), len(ids))


def validation_budget(tokenizer, targets: pd.DataFrame, max_target: int, margin: int = 2) -> int:
    """New tokens validation generates for models that write something before the label: as many as the longest
    target needs up to its closing marker (plus a margin), at most `max_target`. A model that has not yet learned
    to close the label would otherwise generate `max_target` tokens for every example (filler targets need ~20)."""
    need = max(len(tokenizer(target_text(tokenizer, t[:e]), add_special_tokens=False)["input_ids"])
               for t, e in zip(targets["target"], marker_ends(targets), strict=True))
    return min(max_target, need + margin)


def marker_ends(targets: pd.DataFrame) -> list[int]:
    """Character offset just past each target's closing marker (its label span plus `` [FIN_LABEL]``)."""
    return [int(e) + 1 + len(MARK) for e in targets["label_end"]]


@dataclass
class Collator:
    """Pads a batch to its longest row (or to `max_length` when benchmarking against fixed padding).

    Training pads on the left, so every target ends at the last position and the model computes logits only over
    the last ``logits_to_keep`` positions, the span that holds targets: over the prompt they would be discarded, and
    the LM head is a fifth of SmolLM2-135M's weights and most of Gemma-3-270m's. Position ids count real tokens only,
    so a row is encoded as it would be alone. ``side="right"`` (the lens, which reads every position, and models
    whose forward takes no ``logits_to_keep``) returns ids, labels and mask only; `target_loss` takes either.
    """

    pad_id: int
    max_length: int | None = None
    side: str = "left"

    def __post_init__(self) -> None:
        if self.side not in ("left", "right"):
            raise ValueError(f"Collator side is {self.side!r}; valid choices: left, right")

    def __call__(self, features: list[dict]) -> dict:
        width = self.max_length or max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(features), width), -100, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            cols = slice(0, n) if self.side == "right" else slice(width - n, width)
            ids[i, cols] = torch.tensor(f["input_ids"])
            labels[i, cols] = torch.tensor(f["labels"])
            mask[i, cols] = 1
            labels[i, cols.start] = -100  # a row's first token is never predicted (nothing precedes it)
        batch = {"input_ids": ids, "labels": labels, "attention_mask": mask}
        if self.side == "right":
            return batch
        span = int((width - labels.ne(-100).int().argmax(1)).max())  # a row without labels keeps every position
        return {**batch, "position_ids": (mask.cumsum(1) - 1).clamp(min=0), "logits_to_keep": span + 1}


@dataclass
class Seq2SeqCollator:
    """An encoder-decoder batch: sources padded (attention mask), labels padded with -100, and the decoder's inputs
    (labels shifted right after `start_id`), built here because the Trainer takes the labels out of the batch
    before the forward pass when it computes the loss itself. No decoder attention mask, as in Distilling
    Step-by-Step's `DataCollatorForSeq2Seq`: the decoder is causal, so its real positions do not change, and
    `losses.mi_paper`, which pools over the padded positions too, sees what the authors' code saw."""

    pad_id: int
    start_id: int

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        from torch.nn.utils.rnn import pad_sequence

        def pad(key: str, value: int) -> torch.Tensor:
            return pad_sequence([torch.tensor(f[key]) for f in features], batch_first=True, padding_value=value)

        labels = pad("labels", -100)
        shifted = torch.cat([labels.new_full((len(features), 1), self.start_id), labels[:, :-1]], 1)
        mask = pad_sequence([torch.ones(len(f["input_ids"]), dtype=torch.long) for f in features], batch_first=True)
        return {"input_ids": pad("input_ids", self.pad_id), "attention_mask": mask,
                "decoder_input_ids": shifted.masked_fill(shifted == -100, self.pad_id), "labels": labels}


def target_positions(outputs, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits that predict a target token, the labels they predict). Decoder-only: the kept logits, last one
    dropped, aligned with the tail of `labels` (all positions but the first where logits cover every position).
    Encoder-decoder (logits as long as the labels, `Seq2SeqCollator`): position i predicts label i."""
    if outputs.logits.shape[1] == labels.shape[1] and getattr(outputs, "encoder_last_hidden_state", None) is not None:
        return outputs.logits, labels
    logits = outputs.logits[:, :-1]
    return logits, labels[:, labels.shape[1] - logits.shape[1]:]


def target_loss(outputs, labels: torch.Tensor, num_items_in_batch: torch.Tensor | int | None = None) -> torch.Tensor:
    """The Trainer's ``compute_loss_func``: summed cross-entropy of the target tokens over the kept logits (the last
    positions, `Collator`; every decoder position of an encoder-decoder student), over the target token count of the
    (accumulated) batch: the model's own loss without its logits over the prompt."""
    logits, tail = target_positions(outputs, labels)
    loss = F.cross_entropy(logits.float().flatten(0, 1), tail.flatten(), ignore_index=-100, reduction="sum")
    return loss / (num_items_in_batch if num_items_in_batch is not None else tail.ne(-100).sum())


def split_validation(targets: pd.DataFrame, size: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Carve a validation set from train by id, the same ids for every ablation and seed of a dataset.

    At most a fifth of the rows is held out; which ids depends only on the set of ids and the seed.
    """
    ids = np.sort(targets["id"].to_numpy())
    size = min(size, len(ids) // 5)
    held = set(np.random.default_rng(seed).permutation(ids)[:size])
    is_val = targets["id"].isin(held)
    return targets[~is_val].reset_index(drop=True), targets[is_val].reset_index(drop=True)


def run_fingerprint(model_spec: dict, targets_path: str, settings: dict, seed: int, label_first: bool,
                    data_seed: int, world_size: int, filler: str | None = None) -> str:
    """A hash of everything that decides a fine-tune: the checkpoint folder's name."""
    model = student_identity(model_spec)
    if model_spec.get("source") == "local":
        model["digest"] = io.tree_digest(model_spec["path"])
    key = {"model": model, "targets": io.file_digest(targets_path), "settings": training_identity(settings),
           "seed": seed,
           "label_first": label_first, "data_seed": data_seed, "world_size": world_size}
    if filler is not None:  # only filler runs: other fingerprints stay as they were
        key["filler"] = filler
    return io.json_digest(key)[:16]


def _step(checkpoint: Path) -> int:
    return int(checkpoint.name.rsplit("-", 1)[1])


def last_complete_checkpoint(run_dir: Path, remove_broken: bool = True) -> Path | None:
    """The newest checkpoint whose ``trainer_state.json`` is complete; newer broken ones are logged and removed."""
    for ckpt in sorted(run_dir.glob("checkpoint-*"), key=_step, reverse=True):
        try:
            json.loads((ckpt / "trainer_state.json").read_text())["global_step"]
            return ckpt
        except (OSError, ValueError, KeyError):
            log.warning("skipping incomplete checkpoint %s (no complete trainer_state.json: killed while saving?)",
                        ckpt)
            if remove_broken:
                shutil.rmtree(ckpt, ignore_errors=True)
    return None


def checkpoint_dir(base: str | Path, fingerprint: str, clean: bool = True) -> Path:
    """``<base>/<fingerprint>``; checkpoints of other fingerprints (a changed config) are removed with a log line."""
    base = Path(base)
    if clean and base.is_dir():
        for other in base.iterdir():
            if other.name != fingerprint:
                log.info("removing checkpoints of a different run configuration: %s", other)
                shutil.rmtree(other, ignore_errors=True)
    return base / fingerprint


@dataclass
class Run:
    """A configured Trainer and what `finetune` reports beside it."""

    trainer: Any
    tokenizer: Any
    train_examples: int
    validation_examples: int
    dropped_overlong: int
    bf16: bool
    settings: dict
    filler: str | None = None


def with_filler(targets: pd.DataFrame, tokenizer, fallback: str, stop_ids=None) -> tuple[pd.DataFrame, str]:
    """Filler targets with this student's filler token in place of the placeholder (`ablations.fill`) and their
    label spans moved to match; returns the token used."""
    out = targets.assign(target=[fill(t, tokenizer, fallback, stop_ids) for t in targets["target"]])
    start = [t.rfind(wrap_label(lab)) + len(MARK) + 1 for t, lab in zip(out["target"], out["label"], strict=True)]
    return out.assign(label_start=start, label_end=[s + len(lab) for s, lab in zip(start, out["label"],
                                                                                   strict=True)]), \
        student_filler(tokenizer, fallback, stop_ids)[0]


def build_trainer(model_spec: dict, targets_path: str, ckpt_dir: str | Path, settings: dict, seed: int,
                  label_first: bool, data_seed: int = 0, threads: int = 1, filler: str | None = None) -> Run:
    """The Trainer `finetune` runs (the benchmark drives the same one); checkpoints go to `ckpt_dir` itself.

    ``batch_size`` is the global batch: with N data-parallel processes each takes batch_size / N, so the number of
    GPUs changes neither the number of steps nor the learning-rate schedule (only the data order, as a sampler
    does): it is bookkeeping, like the teacher's batch size. `filler` (a filler ablation's fallback token) puts
    this student's filler token into the targets.
    """
    from datasets import Dataset
    from transformers import AutoTokenizer, EarlyStoppingCallback, Trainer, TrainingArguments

    s = {**DEFAULTS, **settings}
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if int(s["batch_size"]) % world_size:
        raise ValueError(f"training.batch_size = {s['batch_size']} is the global batch and must be divisible by the "
                         f"{world_size} data-parallel processes (the rule's GPUs)")
    torch.set_num_threads(threads)
    name, kwargs = pretrained_args(model_spec)
    tok = AutoTokenizer.from_pretrained(name, **kwargs)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = load_student(name, **kwargs)
    seq2seq = bool(model.config.is_encoder_decoder)
    written = tok.decode(tok(" " + wrap_label("B"), add_special_tokens=False)["input_ids"])
    if MARK not in written:  # such a student could never write a parseable label
        raise ValueError(f"{name}: this tokenizer cannot write the label marker {MARK!r} (it reads "
                         f"{wrap_label('B')!r} back as {written!r}); choose a student whose vocabulary covers it")
    targets = io.read_parquet(targets_path, required=TARGET_COLUMNS)
    filler_token = None
    if filler is not None:
        targets, filler_token = with_filler(targets, tok, filler, model.generation_config.eos_token_id)
        log.info("filler token for this student: %r (%s)", filler_token, "its unk token" if filler_token !=
                 filler else "the fallback: its tokenizer has no unk token distinct from EOS")
    train_df, val_df = split_validation(targets, int(s["validation_size"]), data_seed)
    side = "left" if {"logits_to_keep", "position_ids"} <= set(inspect.signature(model.forward).parameters) else "right"
    multitask = s.get("multitask")  # a multi-task ablation's loss (`config.finetune_settings`)
    # task tags after the input: a decoder-only student reads it once for both tasks (`multitask.PairCollator`)
    share = bool(multitask and (multitask.get("predict_suffix") or multitask.get("explain_suffix"))
                 and not seq2seq and side == "left")
    if multitask:
        from .multitask import MultitaskTrainerMixin, PairCollator, encode_pairs

        missing = [c for c in EXPLAIN_COLUMNS if c not in targets.columns]
        if missing:
            raise ValueError(f"{targets_path}: multi-task training needs the explain task's columns {missing}; "
                             f"build the targets with a multi-task ablation")
        encoded, dropped = encode_pairs(tok, train_df, int(s["max_source_tokens"]), int(s["max_target_tokens"]),
                                        s["overlong"], (multitask["predict_prefix"], multitask["explain_prefix"]),
                                        seq2seq, shared=share)
    else:
        encoded, dropped = encode(tok, list(train_df["source"]), list(train_df["target"]), marker_ends(train_df),
                                  int(s["max_source_tokens"]), int(s["max_target_tokens"]), list(train_df["id"]),
                                  s["overlong"], encoder_decoder=seq2seq)
    if dropped:
        log.warning("left out %d of %d training targets whose label would be cut by max_target_tokens = %d "
                    "(training.overlong: drop), e.g. %s", len(dropped), len(train_df), s["max_target_tokens"],
                    dropped[:5])
    if not encoded["length"]:
        raise ValueError(f"{targets_path}: no training example left (all {len(train_df)} were too long)")
    train = Dataset.from_dict(encoded)
    val_budget = label_budget(tok, list(targets["label"].unique())) if label_first else validation_budget(
        tok, targets, int(s["max_target_tokens"]))
    bf16 = use_bf16(s["precision"])
    if s["pad_to_max"] and (multitask or seq2seq):
        raise ValueError("training.pad_to_max (a benchmark baseline) is for single-task decoder-only training only")
    if multitask:
        collator = PairCollator(tok.pad_token_id, side=side,
                                start_id=model.config.decoder_start_token_id if seq2seq else None, share=share)
    elif seq2seq:
        collator = Seq2SeqCollator(tok.pad_token_id, model.config.decoder_start_token_id)
    else:
        collator = Collator(tok.pad_token_id, int(s["max_source_tokens"]) + int(s["max_target_tokens"])
                            if s["pad_to_max"] else None, side)
    args = TrainingArguments(
        output_dir=str(ckpt_dir), per_device_train_batch_size=int(s["batch_size"]) // world_size,
        learning_rate=float(s["lr"]),
        num_train_epochs=float(s["epochs"]), max_steps=int(s["max_steps"]),
        gradient_accumulation_steps=int(s["grad_accum"]), warmup_steps=s["warmup"],
        weight_decay=float(s["weight_decay"]), eval_strategy="steps", eval_steps=int(s["eval_every"]),
        save_strategy="steps", save_steps=int(s["eval_every"]), save_total_limit=int(s["save_total_limit"]),
        load_best_model_at_end=True, metric_for_best_model="accuracy", greater_is_better=True, seed=seed,
        data_seed=seed, bf16=bf16, use_cpu=not torch.cuda.is_available(),
        train_sampling_strategy="group_by_length" if s["group_by_length"] else "random",
        length_column_name="length", logging_steps=int(s["logging_steps"]), report_to="none",
        include_num_input_tokens_seen="non_padding", dataloader_num_workers=0, remove_unused_columns=False,
        disable_tqdm=False)

    if args.n_gpu > 1:  # nn.DataParallel in one process: batch_size would no longer be the global batch
        raise ValueError(f"{args.n_gpu} GPUs are visible to one training process; run one process per GPU "
                         f"(the finetune rule's gpu resource, torchrun) or set CUDA_VISIBLE_DEVICES to one GPU")

    class GenerationTrainer(Trainer):
        """Validation = greedy generation + label parsing, so early stopping follows real accuracy."""

        validation_seconds = 0.0  # summed over validations, for train_metrics' validation share

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict:
            start = time.perf_counter()
            self.model.eval()
            texts = generate(self.model, tok, list(val_df["source"]), val_budget, int(s["eval_batch_size"]),
                             desc="validation", draft=MARK if label_first else None)
            self.model.train()
            acc = float(np.mean([same_label(extract_label(t), g, task)
                                 for t, g, task in zip(texts, val_df["label"], val_df["task"], strict=True)]))
            self.validation_seconds += time.perf_counter() - start
            metrics = {f"{metric_key_prefix}_accuracy": acc}
            self.log(metrics)
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
            return metrics

        def _track_num_input_tokens(self, inputs) -> None:
            """The Trainer counts the encoder's tokens (attention_mask); an encoder-decoder also reads its
            targets, most of a rationale-trained model's tokens: count them too (train_metrics, the cost report)."""
            super()._track_num_input_tokens(inputs)
            if "decoder_input_ids" in inputs and self.args.include_num_input_tokens_seen != "no":
                decoded = torch.as_tensor(inputs["labels"].ne(-100).sum(), device=self.args.device)
                self.state.num_input_tokens_seen += self.accelerator.gather(decoded).sum().item()

    common = {"model": model, "args": args, "train_dataset": train, "data_collator": collator,
              "eval_dataset": train.select(range(1)),  # only satisfies Trainer's check: `evaluate` uses val_df
              "callbacks": [EarlyStoppingCallback(int(s["patience"]), float(s["threshold"]))]}
    if multitask:
        trainer = type("MultitaskTrainer", (MultitaskTrainerMixin, GenerationTrainer), {})(
            multitask=multitask, **common)
    else:
        trainer = GenerationTrainer(compute_loss_func=target_loss, **common)
    return Run(trainer, tok, len(encoded["length"]), len(val_df), len(dropped), bf16, s, filler_token)


def finetune(model_spec: dict, targets_path: str, out_dir: str, ckpt_dir: str, settings: dict, seed: int,
             label_first: bool, data_seed: int = 0, threads: int = 1, filler: str | None = None) -> dict:
    """Fine-tune a student (a `models` spec) on a targets file; write the best model and train_metrics.json.

    Resumes from the newest complete checkpoint of the same run fingerprint under `ckpt_dir`, if any.
    """
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    rank0 = int(os.environ.get("RANK", 0)) == 0
    torch.set_num_threads(threads)
    settings = resolved_precision(settings)  # a no-op where finetune_files resolved it
    fingerprint = run_fingerprint(model_spec, targets_path, settings, seed, label_first, data_seed, world_size,
                                  filler)
    run_dir = checkpoint_dir(ckpt_dir, fingerprint, clean=rank0)
    last = last_complete_checkpoint(run_dir, remove_broken=rank0) if run_dir.is_dir() else None
    resumed = _step(last) if last else 0
    log.info("run %s: %s", fingerprint, f"resuming from {last} (step {resumed})" if last else "starting at step 0")
    run = build_trainer(model_spec, targets_path, run_dir, settings, seed, label_first, data_seed, threads, filler)
    trainer = run.trainer
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(last) if last else None)
    wall = time.perf_counter() - start
    val_s = trainer.validation_seconds  # validations inside `wall`
    # The Trainer evaluates at the last step and reloads the best checkpoint; its score is already recorded.
    final_acc = trainer.state.best_metric
    if final_acc is None:
        final_acc = trainer.evaluate()["eval_accuracy"]
    lengths = np.array(trainer.train_dataset["length"])
    metrics = {
        "steps": trainer.state.global_step, "resumed_from_step": resumed, "epochs": trainer.state.epoch,
        "world_size": trainer.args.world_size, "fingerprint": fingerprint,
        "tokens_seen": int(trainer.state.num_input_tokens_seen), "wall_time_s": wall,
        "tokens_per_s": trainer.state.num_input_tokens_seen / wall if wall else None,
        "validation_s": val_s, "validation_share": val_s / wall if wall else None,
        "train_loss": result.training_loss, "train_examples": run.train_examples,
        "dropped_overlong": run.dropped_overlong, "validation_examples": run.validation_examples,
        "validation_accuracy": final_acc, "best_step": _step(Path(trainer.state.best_model_checkpoint))
        if trainer.state.best_model_checkpoint else None,
        "validation_history": [{"step": h["step"], "accuracy": h["eval_accuracy"]}
                               for h in trainer.state.log_history if "eval_accuracy" in h],
        "bf16": run.bf16, "threads": threads, "mean_length": float(lengths.mean()), "seed": seed,
        "settings": run.settings, "filler_token": run.filler,
    }
    if hasattr(trainer, "term_means"):  # multi-task: the size of each loss term, unweighted
        metrics["loss_terms"] = trainer.term_means()
    if trainer.is_world_process_zero():
        _save_final(trainer, run.tokenizer, metrics, Path(out_dir))
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    log.info("trained %d steps in %.0f s (%.0f tokens/s; validation %.0f s, %.0f%% of it), validation accuracy %.3f",
             metrics["steps"], wall, metrics["tokens_per_s"] or 0, val_s,
             100 * (metrics["validation_share"] or 0), final_acc)
    return metrics


def _save_final(trainer, tok, metrics: dict, out: Path) -> None:
    with io.atomic_dir(out) as tmp:
        trainer.model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        trainer.state.save_to_json(str(tmp / "trainer_state.json"))
        (tmp / "train_metrics.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n")


def finetune_files(student: dict, converted: str | None, targets: str, out_dir: str, ckpt_dir: str,
                   settings: dict, seed: int, label_first: bool, data_seed: int, threads: int,
                   processes: int = 1, filler: str | None = None) -> dict:
    """`finetune` as the `finetune` rule runs it: in-process, or with `processes` > 1 (the rule's GPUs) as
    distributed data-parallel training, one torchrun process per GPU (gloo on CPU)."""
    torch.set_num_threads(threads)  # before the precision is timed: with the threads training will use
    kwargs = {"model_spec": student_spec(student, converted), "targets_path": targets, "out_dir": out_dir,
              "ckpt_dir": ckpt_dir, "settings": resolved_precision(settings),  # decided once for every process
              "seed": seed, "label_first": label_first, "data_seed": data_seed, "threads": threads, "filler": filler}
    if processes <= 1:
        return finetune(**kwargs)
    return launch_distributed(kwargs, processes)


def launch_distributed(kwargs: dict, processes: int, timeout: float | None = None) -> dict:
    """Run `finetune(**kwargs)` in `processes` torchrun workers; the Trainer then trains with DDP."""
    import subprocess
    import sys
    import tempfile

    kwargs = {**kwargs, "threads": max(1, int(kwargs["threads"]) // processes)}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(kwargs, f)
    log.info("launching %d data-parallel processes", processes)
    try:
        subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        f"--nproc_per_node={processes}", "-m", "cotdistill.training", f.name],
                       check=True, timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": str(kwargs["threads"])})
    finally:
        os.unlink(f.name)
    return json.loads((Path(kwargs["out_dir"]) / "train_metrics.json").read_text())


if __name__ == "__main__":  # a torchrun worker: python -m cotdistill.training KWARGS.json
    import sys

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    finetune(**json.loads(Path(sys.argv[1]).read_text()))
