"""Fine-tuning a causal student on target files with the transformers `Trainer`.

Loss falls on target tokens only; batches are padded dynamically and grouped by length; validation accuracy is
measured by greedy generation (the same code as the evaluate stage) every ``eval_every`` steps and drives early
stopping (patience and threshold as in the Mysteries paper) and the choice of the best checkpoint. Checkpoints
live outside the rule's output (``ckpt_dir``), so a killed job resumes from its last one when rerun; they are
deleted once the final model is in place.
"""

from __future__ import annotations

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

from . import io
from .defaults import TRAINING as DEFAULTS
from .evaluation import generate, label_budget, normalise, parse_label
from .models import pretrained_args
from .targets import TARGET_COLUMNS

log = logging.getLogger(__name__)



def cpu_has_bf16() -> bool:
    """AVX512-BF16 or AMX: CPU bf16 autocast is then faster than fp32 (2.2x for SmolLM2 on this kind of CPU)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def use_bf16(precision: str) -> bool:
    if precision == "fp32":
        return False
    available = (torch.cuda.is_available() and torch.cuda.is_bf16_supported()) or (
        not torch.cuda.is_available() and cpu_has_bf16())
    if precision == "bf16" and not available:
        raise ValueError("training.precision is bf16 but this machine has no bf16 support; use auto or fp32")
    return available


def encode(tokenizer, sources: list[str], targets: list[str], max_source: int, max_target: int) -> dict:
    """input_ids = source + " " + target + eos, labels masked (-100) over the source."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    ids, labels = [], []
    for src, tgt in zip(sources, targets, strict=True):
        s = tokenizer(src, add_special_tokens=True)["input_ids"][-max_source:]  # keep the end near the answer
        t = (tokenizer(" " + tgt, add_special_tokens=False)["input_ids"] + eos)[:max_target]
        ids.append(s + t)
        labels.append([-100] * len(s) + t)
    return {"input_ids": ids, "labels": labels, "length": [len(x) for x in ids]}


@dataclass
class Collator:
    """Right-pads a batch to its longest row (or to `max_length` when benchmarking against fixed padding)."""

    pad_id: int
    max_length: int | None = None

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        width = self.max_length or max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(features), width), -100, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            ids[i, :n] = torch.tensor(f["input_ids"])
            labels[i, :n] = torch.tensor(f["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def split_validation(targets: pd.DataFrame, size: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Carve a validation set from train by id, the same ids for every ablation and seed of a dataset."""
    ids = np.sort(targets["id"].to_numpy())
    size = min(size, len(ids) // 5)
    held = set(np.random.default_rng(seed).permutation(ids)[:size])
    is_val = targets["id"].isin(held)
    return targets[~is_val].reset_index(drop=True), targets[is_val].reset_index(drop=True)


@dataclass
class Run:
    """A configured Trainer and what `finetune` reports beside it."""

    trainer: Any
    tokenizer: Any
    train_examples: int
    validation_examples: int
    bf16: bool
    settings: dict


def build_trainer(model_spec: dict, targets_path: str, ckpt_dir: str, settings: dict, seed: int,
                  label_first: bool, data_seed: int = 0, threads: int = 1) -> Run:
    """The Trainer `finetune` runs (the benchmark drives the same one)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, EarlyStoppingCallback, Trainer, TrainingArguments

    s = {**DEFAULTS, **settings}
    torch.set_num_threads(threads)
    name, kwargs = pretrained_args(model_spec)
    tok = AutoTokenizer.from_pretrained(name, **kwargs)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32, **kwargs)
    targets = io.read_parquet(targets_path, required=TARGET_COLUMNS)
    train_df, val_df = split_validation(targets, int(s["validation_size"]), data_seed)
    train = Dataset.from_dict(encode(tok, list(train_df["source"]), list(train_df["target"]),
                                     int(s["max_source_tokens"]), int(s["max_target_tokens"])))
    val_budget = label_budget(tok, list(targets["label"].unique())) if label_first else int(s["max_target_tokens"])
    bf16 = use_bf16(s["precision"])
    collator = Collator(tok.pad_token_id, int(s["max_source_tokens"]) + int(s["max_target_tokens"])
                        if s["pad_to_max"] else None)
    args = TrainingArguments(
        output_dir=ckpt_dir, per_device_train_batch_size=int(s["batch_size"]), learning_rate=float(s["lr"]),
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

    class GenerationTrainer(Trainer):
        """Validation = greedy generation + label parsing, so early stopping follows real accuracy."""

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict:
            self.model.eval()
            texts = generate(self.model, tok, list(val_df["source"]), val_budget, int(s["eval_batch_size"]),
                             desc="validation")
            self.model.train()
            acc = float(np.mean([parse_label(t) == normalise(g) for t, g in zip(texts, val_df["label"])]))
            metrics = {f"{metric_key_prefix}_accuracy": acc}
            self.log(metrics)
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
            return metrics

    trainer = GenerationTrainer(  # eval_dataset only satisfies Trainer's check: `evaluate` uses val_df
        model=model, args=args, train_dataset=train, eval_dataset=train.select(range(1)), data_collator=collator,
        callbacks=[EarlyStoppingCallback(int(s["patience"]), float(s["threshold"]))])
    return Run(trainer, tok, len(train_df), len(val_df), bf16, s)


def finetune(model_spec: dict, targets_path: str, out_dir: str, ckpt_dir: str, settings: dict, seed: int,
             label_first: bool, data_seed: int = 0, threads: int = 1) -> dict:
    """Fine-tune a student (a `models` spec) on a targets file; write the best model and train_metrics.json."""
    from transformers.trainer_utils import get_last_checkpoint

    run = build_trainer(model_spec, targets_path, ckpt_dir, settings, seed, label_first, data_seed, threads)
    trainer = run.trainer
    last = get_last_checkpoint(ckpt_dir) if Path(ckpt_dir).is_dir() else None
    resumed = int(json.loads((Path(last) / "trainer_state.json").read_text())["global_step"]) if last else 0
    if last:
        log.info("resuming from %s (step %d)", last, resumed)
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=last)
    wall = time.perf_counter() - start
    # The Trainer evaluates at the last step and reloads the best checkpoint; its score is already recorded.
    final_acc = trainer.state.best_metric
    if final_acc is None:
        final_acc = trainer.evaluate()["eval_accuracy"]
    lengths = np.array(trainer.train_dataset["length"])
    metrics = {
        "steps": trainer.state.global_step, "resumed_from_step": resumed, "epochs": trainer.state.epoch,
        "world_size": trainer.args.world_size,
        "tokens_seen": int(trainer.state.num_input_tokens_seen), "wall_time_s": wall,
        "tokens_per_s": trainer.state.num_input_tokens_seen / wall if wall else None,
        "train_loss": result.training_loss, "train_examples": run.train_examples,
        "validation_examples": run.validation_examples,
        "validation_accuracy": final_acc, "best_step": _step_of(trainer.state.best_model_checkpoint),
        "validation_history": [{"step": h["step"], "accuracy": h["eval_accuracy"]}
                               for h in trainer.state.log_history if "eval_accuracy" in h],
        "bf16": run.bf16, "threads": threads, "mean_length": float(lengths.mean()), "seed": seed,
        "settings": run.settings,
    }
    if trainer.is_world_process_zero():
        _save_final(trainer, run.tokenizer, metrics, Path(out_dir))
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    log.info("trained %d steps in %.0f s (%.0f tokens/s), validation accuracy %.3f", metrics["steps"], wall,
             metrics["tokens_per_s"] or 0, final_acc)
    return metrics


def _step_of(checkpoint: str | None) -> int | None:
    return int(checkpoint.rsplit("-", 1)[1]) if checkpoint else None


def _save_final(trainer, tok, metrics: dict, out: Path) -> None:
    with io.atomic_dir(out) as tmp:
        trainer.model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        trainer.state.save_to_json(str(tmp / "trainer_state.json"))
        (tmp / "train_metrics.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n")


def finetune_files(student: dict, converted: str | None, targets: str, out_dir: str, ckpt_dir: str,
                   settings: dict, seed: int, ablation: str, ablation_spec: dict, data_seed: int,
                   threads: int, processes: int = 1) -> dict:
    """`finetune` as the `finetune` rule runs it: in-process, or with `processes` > 1 (the rule's GPUs) as
    distributed data-parallel training, one torchrun process per GPU (gloo on CPU)."""
    from . import ablations
    from .models import student_spec

    kwargs = {"model_spec": student_spec(student, converted), "targets_path": targets, "out_dir": out_dir,
              "ckpt_dir": ckpt_dir, "settings": settings, "seed": seed,
              "label_first": ablations.label_first(ablation_spec, ablation), "data_seed": data_seed,
              "threads": threads}
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
