"""Speed of the two hot paths, each against its naive baseline in the same process.

(a) evaluation: greedy decoding that stops at the closing [FIN_LABEL] marker against generating all 256 new tokens,
    same model and inputs; reports examples/s, the ratio, and whether both give identical labels.
(b) fine-tuning: dynamic padding with length-grouped batches against padding every batch to the maximum length
    (max_source_tokens + max_target_tokens) in random order; reports real (non-pad) tokens/s, the ratio and the
    pad fraction of each.

Run after the main job (it uses its converted student, targets and fine-tuned CoT-after model):
    .venv/bin/python bench/bench_eval_train.py
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time

import pandas as pd
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from cotdistill.evaluation import generate, parse_label
from cotdistill.targets import format_source
from cotdistill.training import build_trainer

RUN = "csqa/palm540b/smollm2-135m/cot_after"


def bench_eval(model_dir: str, data: str, n: int, batch_size: int, threads: int) -> None:
    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    sources = [format_source(r) for r in pd.read_parquet(data).head(n).to_dict("records")]
    timings, labels = {}, {}
    for name, stop, budget in (("marker stop", True, 256), ("256 new tokens", False, 256)):
        start = time.perf_counter()
        texts = generate(model, tok, sources, budget, batch_size, stop_at_marker=stop, desc=name)
        timings[name] = len(sources) / (time.perf_counter() - start)
        labels[name] = [parse_label(t) for t in texts]
    same = labels["marker stop"] == labels["256 new tokens"]
    print(f"(a) evaluation on {len(sources)} test items, batch {batch_size}, {threads} threads")
    for name, rate in timings.items():
        print(f"    {name:>15}: {rate:7.2f} examples/s")
    print(f"    ratio: {timings['marker stop'] / timings['256 new tokens']:.1f}x; identical labels: {same}")


class StepTimer(TrainerCallback):
    """Seconds spent in optimizer steps only, so validation and saving do not blur the comparison."""

    def __init__(self) -> None:
        self.seconds, self._start = 0.0, 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds += time.perf_counter() - self._start


def pad_fraction(trainer) -> float:
    real = total = 0
    for batch in trainer.get_train_dataloader():
        real += int(batch["attention_mask"].sum())
        total += batch["attention_mask"].numel()
    return 1 - real / total


def bench_train(model_dir: str, targets: str, steps: int, threads: int) -> None:
    print(f"(b) fine-tuning {steps} steps, batch 8, {threads} threads, on {targets}")
    rates = {}
    for name, settings in (("dynamic + grouped", {"group_by_length": True, "pad_to_max": False}),
                           ("pad to max", {"group_by_length": False, "pad_to_max": True})):
        ckpt = tempfile.mkdtemp()
        run = build_trainer({"source": "local", "path": model_dir}, targets, ckpt,
                            {"batch_size": 8, "max_steps": steps, "eval_every": 10**6, "lr": 1e-4,
                             "validation_size": 8, **settings},
                            seed=0, label_first=True, threads=threads)
        pads = pad_fraction(run.trainer)
        timer = StepTimer()
        run.trainer.add_callback(timer)
        run.trainer.train()
        seconds = timer.seconds
        rates[name] = run.trainer.state.num_input_tokens_seen / seconds
        print(f"    {name:>17}: {rates[name]:7.1f} real tokens/s, pad fraction {pads:.1%}, {seconds / steps:.1f} s/step")
        shutil.rmtree(ckpt, ignore_errors=True)
    print(f"    ratio: {rates['dynamic + grouped'] / rates['pad to max']:.1f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=f"results/models/{RUN}/seed0")
    p.add_argument("--student", default="results/hf/smollm2-135m")
    p.add_argument("--data", default="results/data/csqa/test.parquet")
    p.add_argument("--targets", default="results/targets/csqa/palm540b/cot_after/train.parquet")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    bench_eval(args.model, args.data, args.n, args.batch_size, args.threads)
    bench_train(args.student, args.targets, args.steps, args.threads)


if __name__ == "__main__":
    main()
