"""Speed of the two hot paths, each against its naive baseline in the same process.

(a) evaluation: greedy decoding that stops at the closing [FIN_LABEL] marker against generating all 256 new tokens,
    same model and inputs; reports examples/s, the ratio, and whether both give identical labels.
(b) fine-tuning: the project's Trainer path (its step includes gradient clipping and the LR scheduler) against a
    plain loop (forward + backward + the Trainer's AdamW step, nothing else) on the very batches the Trainer trained
    on, same model and precision; and dynamic padding with length-grouped batches
    against padding every batch to the maximum length. Reports real (non-pad) tokens/s, model FLOP utilisation
    (6 x parameters x tokens/s over the matmul peak in the training precision, measured in the same process), the
    pad fraction, and with --profile torch.profiler's top operators of one step.

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
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainerCallback

from cotdistill.evaluation import generate, parse_label
from cotdistill.targets import format_source
from cotdistill.precision import matmul_peak
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
    """Seconds and real tokens of optimizer steps after the first (warm-up), so validation, saving and the first
    step's allocations do not blur the comparison."""

    def __init__(self) -> None:
        self.seconds, self._start, self._skipped = 0.0, 0.0, 0

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 1:
            self._skipped = state.num_input_tokens_seen
        else:
            self.seconds += time.perf_counter() - self._start

    def rate(self, state) -> float:
        return (state.num_input_tokens_seen - self._skipped) / self.seconds


def pad_fraction(trainer) -> float:
    real = total = 0
    for batch in trainer.get_train_dataloader():
        real += int(batch["attention_mask"].sum())
        total += batch["attention_mask"].numel()
    return 1 - real / total


def plain_loop(model_dir: str, batches: list[dict], bf16: bool, optimizer) -> float:
    """Real tokens/s of forward + backward + AdamW step over `batches`, nothing else (the baseline the Trainer
    path is held to); the first batch warms up and is not timed."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).train()
    cls, kwargs = optimizer
    opt = cls(model.parameters(), **kwargs)
    tokens, seconds = 0, 0.0
    for k, batch in enumerate(batches):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        if k:
            seconds += time.perf_counter() - start
            tokens += int(batch["attention_mask"].sum())
    return tokens / seconds


def record_batches(trainer) -> list[dict]:
    """The batches the Trainer trains on, in its order, so the plain loop runs exactly the same work."""
    seen, compute_loss = [], trainer.compute_loss

    def recording(model, inputs, *args, **kwargs):
        seen.append({k: v.detach().clone() for k, v in inputs.items() if isinstance(v, torch.Tensor)})
        return compute_loss(model, inputs, *args, **kwargs)

    trainer.compute_loss = recording
    return seen


def profile_step(run) -> None:
    """torch.profiler's top operators (self CPU time) over one more Trainer step after training (optimizer state
    allocated): where a steady step's time goes."""
    from torch.profiler import ProfilerActivity, profile

    trainer = run.trainer
    batch = next(iter(trainer.get_train_dataloader()))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        trainer.training_step(trainer.model, batch)
        trainer.optimizer.step()
        trainer.optimizer.zero_grad()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


def bench_train(model_dir: str, targets: str, steps: int, threads: int, profile: bool) -> None:
    print(f"(b) fine-tuning {steps} steps, batch 8, {threads} threads, on {targets}")
    rates, mfu = {}, {}
    for name, settings in (("trainer (dynamic + grouped)", {"group_by_length": True, "pad_to_max": False}),
                           ("trainer (pad to max)", {"group_by_length": False, "pad_to_max": True})):
        ckpt = tempfile.mkdtemp()
        run = build_trainer({"source": "local", "path": model_dir}, targets, ckpt,
                            {"batch_size": 8, "max_steps": steps if not settings["pad_to_max"] else 3,
                             "eval_every": 10**6, "lr": 1e-4,
                             "validation_size": 8, **settings},
                            seed=0, label_first=True, threads=threads)
        params = sum(p.numel() for p in run.trainer.model.parameters())
        peak = matmul_peak(torch.bfloat16 if run.bf16 else torch.float32, n=2048, reps=10)
        pads = pad_fraction(run.trainer)
        batches = record_batches(run.trainer)
        timer = StepTimer()
        run.trainer.add_callback(timer)
        run.trainer.train()
        seconds = timer.seconds
        rates[name] = timer.rate(run.trainer.state)
        mfu[name] = 6 * params * rates[name] / peak
        per_step = seconds / (run.trainer.state.global_step - 1)
        print(f"    {name:>27}: {rates[name]:7.1f} real tokens/s, {run.trainer.state.global_step} steps, "
              f"MFU {mfu[name]:.0%}, pad fraction {pads:.1%}, "
              f"{per_step:.1f} s/step ({'bf16' if run.bf16 else 'fp32'}; matmul peak {peak / 1e9:.0f} GFLOP/s "
              f"measured)")
        if not settings["pad_to_max"]:
            rates["plain loop"] = plain_loop(model_dir, batches, run.bf16,
                                             Trainer.get_optimizer_cls_and_kwargs(run.trainer.args))
            mfu["plain loop"] = 6 * params * rates["plain loop"] / peak
            print(f"    {'plain loop (same batches)':>27}: {rates['plain loop']:7.1f} real tokens/s, "
                  f"MFU {mfu['plain loop']:.0%}")
            if profile:
                profile_step(run)
        shutil.rmtree(ckpt, ignore_errors=True)
    print(f"    ratio trainer / plain loop: {rates['trainer (dynamic + grouped)'] / rates['plain loop']:.2f}; "
          f"dynamic + grouped / pad to max: "
          f"{rates['trainer (dynamic + grouped)'] / rates['trainer (pad to max)']:.1f}x")


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
    p.add_argument("--profile", action="store_true", help="print torch.profiler's top operators of one step")
    args = p.parse_args()
    bench_eval(args.model, args.data, args.n, args.batch_size, args.threads)
    bench_train(args.student, args.targets, args.steps, args.threads, args.profile)


if __name__ == "__main__":
    main()
