"""Default settings, in a module light enough for the Snakefile to import (no torch, no transformers).

Each section also says which of its keys are *bookkeeping*: they change how a job runs (batching, logging,
checkpoint rotation, GPUs) but not what it computes, beyond the floating-point noise of another batch composition,
so they stay out of the rules' ``params`` and out of every cache or checkpoint key; changing one reruns nothing.
"""

from typing import Any

# Fine-tuning (config key `training`, and a student's own `training` block); the paper's values where it gives
# them: lr 3e-5, batch 4, 512 / 256 tokens, validation every 500 steps, patience 10, threshold 0.02.
TRAINING: dict[str, Any] = {
    "lr": 3e-5, "batch_size": 4, "epochs": 1, "max_steps": -1, "max_source_tokens": 512, "max_target_tokens": 256,
    "eval_every": 500, "patience": 10, "threshold": 0.02, "validation_size": 200, "eval_batch_size": 16,
    "precision": "auto", "warmup": 0, "weight_decay": 0.0, "grad_accum": 1, "group_by_length": True,
    "pad_to_max": False, "save_total_limit": 2, "logging_steps": 10, "overlong": "error",
}
TRAINING_BOOKKEEPING = ("eval_batch_size", "logging_steps", "save_total_limit")

# Evaluation (config key `evaluation`): max_new_tokens bounds CoT-before generations.
EVALUATION: dict[str, Any] = {"batch_size": 16, "max_new_tokens": 256, "precision": "auto"}
EVALUATION_BOOKKEEPING = ("batch_size",)

# Attribution (config key `attribution`): examples per batch and captum's internal_batch_size (interpolation steps
# per forward pass; null = all at once). All bookkeeping: the method and its steps are in the ablation.
ATTRIBUTION: dict[str, Any] = {"batch_size": 4, "internal_batch_size": None}

# Teachers (config key `teachers.<name>`). min_kept: the smallest share of examples whose rationale must survive
# the policy; below it (or at 0 rows) the rationales job fails instead of handing a near-empty file downstream.
TEACHER: dict[str, Any] = {"chat": False, "policy": "drop", "retries": 0, "batch_size": 8, "min_kept": 0.2}
# Cannot change a completion: kept out of the completion cache's key and of the rule's params. `policy` and
# `retries` decide which attempts run, not what an attempt generates, so they are out of the cache key only;
# `labels` (gold or the teacher's, for the students) decides targets only (`config.targets_params`).
TEACHER_BOOKKEEPING = ("batch_size", "gpus", "splits", "min_kept")
TEACHER_NOT_IN_CACHE_KEY = TEACHER_BOOKKEEPING + ("policy", "retries", "labels")

# Judges (config key `judges.<name>`, MI Tables 7-8): `teacher` (a generating teacher entry) grades `items` seeded
# test items `samples` times each at `temperature`, replies up to `max_new_tokens`, with the template `prompt`.
JUDGE: dict[str, Any] = {"items": 50, "samples": 3, "temperature": 0.7, "max_new_tokens": 4,
                         "prompt": "prompts/judge.yaml"}

# Dataset entries: `overlap` decides what happens when two splits share items (README, "Datasets").
DATASET: dict[str, Any] = {"splits": ["train", "test"], "overlap": "error"}

# Lenses (config key `lenses`): entries every config has; the logit lens needs no training and no settings.
LENSES: dict[str, dict] = {"logit": {"kind": "logit"}}
