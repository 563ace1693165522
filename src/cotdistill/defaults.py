"""Default settings, in a module light enough for the Snakefile to import (no torch, no transformers)."""

from typing import Any

# Fine-tuning (config key `training`, and a student's own `training` block); the paper's values where it gives
# them: lr 3e-5, batch 4, 512 / 256 tokens, validation every 500 steps, patience 10, threshold 0.02.
TRAINING: dict[str, Any] = {
    "lr": 3e-5, "batch_size": 4, "epochs": 1, "max_steps": -1, "max_source_tokens": 512, "max_target_tokens": 256,
    "eval_every": 500, "patience": 10, "threshold": 0.02, "validation_size": 200, "eval_batch_size": 16,
    "precision": "auto", "warmup": 0, "weight_decay": 0.0, "grad_accum": 1, "group_by_length": True,
    "pad_to_max": False, "save_total_limit": 2, "logging_steps": 10,
}

# Evaluation (config key `evaluation`): max_new_tokens bounds CoT-before generations.
EVALUATION: dict[str, Any] = {"batch_size": 16, "max_new_tokens": 256}
