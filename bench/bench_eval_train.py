"""Speed of the pipeline's hot paths, each against a bound or a baseline run in the same process.

(a) label-first evaluation (the CoT-after model), in the precision evaluation picks (`precision: auto`): the
    decoding path (label budget, the opening marker and then the rest of a started candidate label as verified
    drafts, stop at the closing marker) and evaluate's path (greedy read off the pass that scores the candidates
    for calibration, against decoding and then calibrating in a second prefill) against the prefill bound (one forward pass over the same prompts, same
    batches), against `model.generate` up to EOS or 256 new tokens, and against 256 new tokens forced (EOS ignored:
    what evaluating a fixed 256-token generation costs); identical labels checked. CoT-before evaluation: the pipeline's path (finished rows leave the batch)
    against `model.generate` with the same marker stop and for 256 tokens, both decoding every row until the whole
    batch is done; and with calibration, evaluate's path (candidates scored over the decoding cache as each row
    leaves) against decoding and then calibrating in a second prefill over prompt and rationale.
(b) fine-tuning: the project's Trainer path (its step includes gradient clipping and the LR scheduler) against a
    plain loop (forward + backward + the Trainer's AdamW step, nothing else) on the very batches the Trainer trained
    on, same model and precision; logits kept over targets only against logits over every position (the same
    batches right-padded, as fine-tuning ran before it kept target logits only), the Trainer run and the two plain
    loops alternating, best of 2 each (steps after the first; one run of each is too noisy on a shared 2-core
    machine: 0.79 and 0.87 in two runs of the same code); and dynamic padding with length-grouped batches against padding every batch to the maximum length. Reports
    real (non-pad) tokens/s, model FLOP utilisation (6 x parameters x tokens/s over the matmul peak in the
    training precision, measured in the same process), the pad fraction, and with --profile torch.profiler's top
    operators of one step. MFU counts the LM head on every token, so it overstates kept-logit paths by up to the
    head's share of the weights: compare those by tokens/s. Then the share of each of the main job's fine-tunes
    spent in validation (train_metrics.json).
(c) planning: wall time of a dry run of each paper config and of a rerun of the finished main job (jobs planned:
    0 expected).
(d) teacher generation: tokens/s of the transformers backend (and of vLLM with --teachers transformers,vllm on a
    GPU) on the same chat prompts.
(e) multi-task training (Distilling Step-by-Step) with the task tags after the input: the Trainer path reading
    each example's input once for both tasks (one packed pass, `multitask.PairCollator`) against the same batches
    with the input read once per task, alternating, best of 2 each; examples/s, real tokens read/s and the
    difference of the training losses.

Run after the main job (it uses its converted student, targets and fine-tuned models):
    .venv/bin/python bench/bench_eval_train.py
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
import yaml
from transformers import (AutoModelForCausalLM, AutoTokenizer, StoppingCriteria, StoppingCriteriaList, Trainer,
                          TrainerCallback)

from cotdistill.ablations import MARK
from cotdistill.calibration import candidates
from cotdistill.evaluation import (answer, answer_budget, candidate_log_probs, closes_marker, closing_ids,
                                   generate, parse_label)
from cotdistill.targets import format_source
from cotdistill.precision import matmul_peak, use_bf16
from cotdistill.training import Collator, build_trainer, target_loss

RUN = "csqa/palm540b/smollm2-135m/cot_after"


def prefill(model, tok, sources: list[str], batch_size: int) -> None:
    """One forward pass over each batch of prompts (last position's logits only), batched and sorted as `generate`
    does: no decoding can beat it."""
    tok.padding_side = "left"
    order = sorted(sources, key=len)
    with torch.inference_mode():
        for i in range(0, len(order), batch_size):
            model(**tok(order[i:i + batch_size], return_tensors="pt", padding=True), logits_to_keep=1)


class MarkerCriterion(StoppingCriteria):
    """The marker stop as `model.generate` takes it (the pipeline's path before rows left the batch)."""

    def __init__(self, tok, prompt_len: int, closing: frozenset[int]) -> None:
        self.tok, self.prompt_len, self.closing = tok, prompt_len, closing

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        return torch.tensor([closes_marker(self.tok, row[self.prompt_len:].tolist(), self.closing)
                             for row in input_ids])


def hf_generate(model, tok, sources: list[str], budget: int, batch_size: int, marker: bool,
                forced: bool = False) -> list[str]:
    """`model.generate`, greedy, every row decoded until the batch's last one is done (with `marker`, a row is done
    at its closing marker; HF still decodes it, as padding, until the whole batch is; `forced`: all `budget` tokens,
    EOS ignored)."""
    tok.padding_side = "left"
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    out = [""] * len(sources)
    closing = closing_ids(tok)
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        enc = tok([sources[j] for j in idx], return_tensors="pt", padding=True)
        stop = StoppingCriteriaList([MarkerCriterion(tok, enc["input_ids"].shape[1], closing)] if marker else [])
        with torch.inference_mode():
            ids = model.generate(**enc, max_new_tokens=budget, do_sample=False, num_beams=1,
                                 pad_token_id=tok.pad_token_id, stopping_criteria=stop,
                                 **({"min_new_tokens": budget} if forced else {}))
        for j, text in zip(idx, tok.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True),
                           strict=True):
            out[j] = text
    return out


def timed(fn, *args, repeats: int = 1) -> tuple[float, list]:
    """Best wall time of `repeats` calls (noise on a shared machine only ever slows a run down) and the output."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - start)
    return best, out


def bench_eval(model_dir: str, cot_before_dir: str, data: str, n: int, batch_size: int, threads: int,
               label_format: str) -> None:
    torch.set_num_threads(threads)
    rows = pd.read_parquet(data).head(n).to_dict("records")
    sources = [format_source(r) for r in rows]
    bf16 = use_bf16("auto", "evaluation.precision", reproducible=True)  # as evaluate loads its model
    dtype = torch.bfloat16 if bf16 else torch.float32
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).eval()
    budget = answer_budget(tok, rows, label_format)
    offered = [candidates(r, label_format) for r in rows]
    print(f"(a) evaluation on {n} test items, batch {batch_size}, {threads} threads, {str(dtype)[6:]}")
    t_prefill, _ = timed(prefill, model, tok, sources, batch_size, repeats=3)
    t_pipe, pipe = timed(lambda: generate(model, tok, sources, budget, batch_size, desc="label first", draft=MARK,
                                          candidates=offered), repeats=3)
    t_marker, marker = timed(lambda: generate(model, tok, sources, budget, batch_size, desc="marker draft only",
                                              draft=MARK), repeats=3)
    t_joint, (joint, _, _, speed) = timed(answer, model, tok, sources, rows, True, label_format, budget, batch_size,
                                          repeats=3)
    t_apart, _ = timed(lambda: candidate_log_probs(model, tok, sources, generate(
        model, tok, sources, budget, batch_size, draft=MARK, candidates=offered), rows, label_format, batch_size),
        repeats=3)
    t_full, full = timed(hf_generate, model, tok, sources, 256, batch_size, False)
    t_forced, forced = timed(hf_generate, model, tok, sources, 256, batch_size, False, True)
    labels = [parse_label(t) for t in pipe]
    differ = {name: sum(a != parse_label(b) for a, b in zip(labels, texts, strict=True))
              for name, texts in (("marker", marker), ("evaluate", joint), ("generate", full), ("forced", forced))}
    same = all(v == 0 for v in differ.values()) or f"no: items whose label differs from the drafts path's {differ}"
    print(f"    label first (CoT after), {budget}-token budget, marker + candidate drafts: {n / t_pipe:6.2f} examples/s")
    print(f"    label first, opening-marker draft only:                    {n / t_marker:6.2f} examples/s")
    print(f"    label first with calibration, from the scoring passes:     {n / t_joint:6.2f} examples/s "
          f"(evaluate's path; {speed['calibrated_in_decoding']}/{n} items answered there, the rest apart)")
    print(f"    label first, then calibration in a second prefill:         {n / t_apart:6.2f} examples/s "
          f"(ratio {t_apart / t_joint:.1f}x)")
    print(f"    prefill bound (one forward pass, same batches):            {n / t_prefill:6.2f} examples/s")
    print(f"    model.generate to EOS or 256 new tokens:                   {n / t_full:6.2f} examples/s")
    print(f"    model.generate, 256 new tokens forced (EOS ignored):       {n / t_forced:6.2f} examples/s")
    print(f"    (label first and prefill: best of 3 runs) ratio to the prefill bound: {t_prefill / t_pipe:.0%} "
          f"(marker draft only: {t_prefill / t_marker:.0%}); against generate to EOS: {t_full / t_pipe:.1f}x, "
          f"against 256 forced tokens: {t_forced / t_pipe:.1f}x; identical labels: {same}; with calibration, "
          f"ratio to the prefill bound: {t_prefill / t_joint:.0%}")
    tok = AutoTokenizer.from_pretrained(cot_before_dir)
    model = AutoModelForCausalLM.from_pretrained(cot_before_dir, dtype=dtype).eval()
    t_pipe, pipe = timed(generate, model, tok, sources, 256, batch_size, True, "CoT before")
    t_stop, stop = timed(hf_generate, model, tok, sources, 256, batch_size, True)
    t_hf, hf = timed(hf_generate, model, tok, sources, 256, batch_size, False)
    same = [parse_label(t) for t in pipe] == [parse_label(t) for t in stop] == [parse_label(t) for t in hf]
    prefix = sum(h.startswith(p) for p, h in zip(pipe, hf, strict=True))
    print(f"    CoT before, pipeline (a row leaves the batch when done):   {n / t_pipe:6.2f} examples/s")
    print(f"    CoT before, model.generate + marker stop (whole batch):    {n / t_stop:6.2f} examples/s")
    print(f"    CoT before, model.generate, 256 new tokens:                {n / t_hf:6.2f} examples/s")
    print(f"    ratios: {t_stop / t_pipe:.1f}x against generate + marker stop, {t_hf / t_pipe:.1f}x against 256 "
          f"tokens; identical labels: {same}; pipeline text a prefix of generate's: {prefix}/{n}")
    t_cal, (cal, _, lp_cal, speed) = timed(answer, model, tok, sources, rows, False, label_format, 256, batch_size)
    t_two, lp_two = timed(lambda: candidate_log_probs(model, tok, sources, generate(
        model, tok, sources, 256, batch_size, True, "CoT before", return_raw=True)[1], rows, label_format, batch_size))
    diff = max(abs(a - b) for x, y in zip(lp_cal, lp_two, strict=True) for a, b in zip(x, y, strict=True))
    print(f"    CoT before with calibration, over the decoding cache:      {n / t_cal:6.2f} examples/s (evaluate's "
          f"path; {speed['calibrated_in_decoding']}/{n} items scored there, the rest apart)")
    print(f"    CoT before, then calibration in a second prefill:          {n / t_two:6.2f} examples/s (ratio "
          f"{t_two / t_cal:.2f}x; same texts: {cal == pipe}; largest log-probability difference {diff:.1e})")


class StepTimer(TrainerCallback):
    """Seconds and real tokens of optimizer steps after the first (warm-up), so validation, saving and the first
    step's allocations do not blur the comparison."""

    def __init__(self) -> None:
        self.seconds, self._start, self._skipped, self.examples = 0.0, 0.0, 0, 0

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 1:
            self._skipped = state.num_input_tokens_seen
        else:
            self.seconds += time.perf_counter() - self._start
            self.examples += args.per_device_train_batch_size * args.gradient_accumulation_steps

    def rate(self, state, examples: bool = False) -> float:
        """Real tokens read per second (or training examples per second)."""
        return (self.examples if examples else state.num_input_tokens_seen - self._skipped) / self.seconds


def pad_fraction(trainer) -> float:
    real = total = 0
    for batch in trainer.get_train_dataloader():
        real += int(batch["attention_mask"].sum())
        total += batch["attention_mask"].numel()
    return 1 - real / total


def right_padded(batch: dict, pad: int) -> dict:
    """The same rows right-padded, logits over every position: fine-tuning before it kept logits over targets only."""
    rows = [{"input_ids": ids[m.bool()].tolist(), "labels": lab[m.bool()].tolist()}
            for ids, lab, m in zip(batch["input_ids"], batch["labels"], batch["attention_mask"], strict=True)]
    return Collator(pad, side="right")(rows)


def plain_loop(model_dir: str, batches: list[dict], bf16: bool, optimizer) -> float:
    """Real tokens/s of forward + backward + AdamW step over `batches`, nothing else (the baseline the Trainer
    path is held to); the first batch warms up and is not timed."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).train()
    cls, kwargs = optimizer
    opt = cls(model.parameters(), **kwargs)
    tokens, seconds = 0, 0.0
    for k, batch in enumerate(batches):
        start = time.perf_counter()
        inputs = {key: v for key, v in batch.items() if key != "labels"}
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = target_loss(model(**inputs), batch["labels"])
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
        seen.append({k: v.detach().clone() if isinstance(v, torch.Tensor) else v for k, v in inputs.items()})
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
    torch.set_num_threads(threads)
    dtype = torch.bfloat16 if use_bf16("auto") else torch.float32  # as the Trainer path decides it
    peak_before = matmul_peak(dtype, n=2048, reps=10, fresh=True)

    def trainer_run(settings: dict):
        """One Trainer run of `steps` steps: its timed rate and the batches it trained on."""
        ckpt = tempfile.mkdtemp()
        run = build_trainer({"source": "local", "path": model_dir}, targets, ckpt,
                            {"batch_size": 8, "max_steps": steps if not settings["pad_to_max"] else 3,
                             "eval_every": 10**6, "lr": 1e-4, "validation_size": 8, **settings},
                            seed=0, label_first=True, threads=threads)
        batches = record_batches(run.trainer)
        timer = StepTimer()
        run.trainer.add_callback(timer)
        run.trainer.train()
        shutil.rmtree(ckpt, ignore_errors=True)
        return run, timer, batches

    for name, settings in (("trainer (dynamic + grouped)", {"group_by_length": True, "pad_to_max": False}),
                           ("trainer (pad to max)", {"group_by_length": False, "pad_to_max": True})):
        # the Trainer path and the plain loops alternate, best of 2 each, so both see the same machine state
        for _ in range(1 if settings["pad_to_max"] else 2):
            run, timer, batches = trainer_run(settings)
            rates[name] = max(rates.get(name, 0.0), timer.rate(run.trainer.state))
            if not settings["pad_to_max"]:
                optimizer = Trainer.get_optimizer_cls_and_kwargs(run.trainer.args)
                full = [right_padded(b, run.tokenizer.pad_token_id) for b in batches]
                for key, work in (("plain loop", batches), ("plain loop, all-position logits", full)):
                    rates[key] = max(rates.get(key, 0.0), plain_loop(model_dir, work, run.bf16, optimizer))
        params = sum(p.numel() for p in run.trainer.model.parameters())
        # the MFU denominator: the better of the peak before the runs and after them (the machine may slow down)
        peak = max(peak_before, matmul_peak(dtype, n=2048, reps=10, fresh=True))
        mfu[name] = 6 * params * rates[name] / peak
        print(f"    {name:>40}: {rates[name]:7.1f} real tokens/s, {run.trainer.state.global_step} steps, "
              f"MFU {mfu[name]:.0%}, pad fraction {pad_fraction(run.trainer):.1%} "
              f"({'bf16' if run.bf16 else 'fp32'}; matmul peak {peak / 1e9:.0f} GFLOP/s, best of before and after)")
        if not settings["pad_to_max"]:
            for key in ("plain loop", "plain loop, all-position logits"):
                mfu[key] = 6 * params * rates[key] / peak
                print(f"    {key + ' (same batches)':>40}: {rates[key]:7.1f} real tokens/s, MFU {mfu[key]:.0%}")
            if profile:
                profile_step(run)
    print(f"    ratio trainer / plain loop (best of 2 each): "
          f"{rates['trainer (dynamic + grouped)'] / rates['plain loop']:.2f}; "
          f"target logits / all-position logits (plain loops): "
          f"{rates['plain loop'] / rates['plain loop, all-position logits']:.2f}x; "
          f"dynamic + grouped / pad to max: "
          f"{rates['trainer (dynamic + grouped)'] / rates['trainer (pad to max)']:.1f}x")


def bench_multitask(model_dir: str, data: str, rationales: str, steps: int, threads: int) -> None:
    """(e): DSS targets with the task tags after the input, trained with and without the shared input pass."""
    from dataclasses import replace

    from cotdistill.targets import build_targets

    spec = {"kind": "multitask", "predict_prefix": "", "explain_prefix": "",
            "predict_suffix": "\npredict:", "explain_suffix": "\nexplain:"}
    targets = build_targets(pd.read_parquet(data), pd.read_parquet(rationales), "dss_tagged", spec,
                            yaml.safe_load(Path("config.yaml").read_text())["targets"]["label_format"], 0)
    params = {k: v for k, v in spec.items() if k != "kind"}
    folder = tempfile.mkdtemp()
    path = f"{folder}/targets.parquet"
    targets.to_parquet(path)
    print(f"(e) multi-task (DSS) training {steps} steps, batch 8, {threads} threads, {len(targets)} examples, "
          f"task tags after the input")
    rates, losses = {}, {}
    for _ in range(2):
        for share in (True, False):
            run = build_trainer({"source": "local", "path": model_dir}, path, f"{folder}/ckpt",
                                {"batch_size": 8, "max_steps": steps, "eval_every": 10**6, "lr": 1e-4,
                                 "validation_size": 8, "multitask": {**params, "aux": "none", "reduction": "max",
                                                                     "predict_weight": 0.5, "explain_weight": 0.5,
                                                                     "aux_weight": 0.0}},
                                seed=0, label_first=True, threads=threads)
            run.trainer.data_collator = replace(run.trainer.data_collator, share=share)
            timer = StepTimer()
            run.trainer.add_callback(timer)
            run.trainer.train()
            shutil.rmtree(f"{folder}/ckpt", ignore_errors=True)
            key = "input read once" if share else "input read per task"
            examples = timer.rate(run.trainer.state, examples=True)
            if examples > rates.get(key, (0.0, 0.0))[0]:
                rates[key] = (examples, timer.rate(run.trainer.state))
            losses[key] = run.trainer.state.log_history[-1]["train_loss"]
    for key, (examples, tokens) in rates.items():
        print(f"    {key:>40}: {examples:7.2f} examples/s, {tokens:7.1f} real tokens read/s")
    diff = abs(losses["input read once"] - losses["input read per task"])
    print(f"    ratio read once / per task: {rates['input read once'][0] / rates['input read per task'][0]:.2f}x "
          f"examples/s (best of 2 each); training loss difference {diff:.1e}")
    shutil.rmtree(folder, ignore_errors=True)


def validation_shares(models: str) -> None:
    """Each finished fine-tune's validation seconds against its wall time (train_metrics.json)."""
    for path in sorted(Path(models).glob("*/seed*/train_metrics.json")):
        m = json.loads(path.read_text())
        if "validation_s" in m:
            print(f"    {path.parent.parent.name:>12}: validation {m['validation_s']:5.0f} s of "
                  f"{m['wall_time_s']:5.0f} s ({m['validation_share']:.0%}), {m['tokens_per_s']:.0f} tokens/s over "
                  f"the whole fine-tune")


def planned_jobs(configfile: str | None) -> tuple[float, int]:
    """Seconds and jobs of `snakemake -n` (the whole DAG built and checked against the files on disk)."""
    cmd = [str(Path(sys.executable).with_name("snakemake")), "-n", "--quiet", "rules", "--cores", "1"]
    start = time.perf_counter()
    out = subprocess.run(cmd + (["--configfile", configfile] if configfile else []), capture_output=True, text=True,
                         check=True, timeout=600)
    seconds = time.perf_counter() - start
    total = re.search(r"^total\s+(\d+)", out.stdout + out.stderr, re.M)
    return seconds, int(total.group(1)) if total else 0


def startup_seconds() -> float:
    """Wall time of importing Snakemake's CLI, which every run pays before planning: its executor registry imports
    the SLURM plugin, which asks `scontrol show config` (up to 10 s where SLURM's tools exist but no controller
    answers, as on a machine that ran the cluster tests)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import snakemake.cli"], check=True, timeout=120)
    return time.perf_counter() - start


def bench_planning(configs: list[str]) -> None:
    print(f"(c) planning (snakemake -n; start-up alone, importing snakemake.cli: {startup_seconds():.1f} s)")
    for configfile in configs:
        seconds, jobs = planned_jobs(configfile)
        print(f"    {configfile:>30}: {jobs:5d} jobs planned in {seconds:4.1f} s")
    seconds, jobs = planned_jobs(None)
    print(f"    {'rerun of the finished main job':>30}: {jobs:5d} jobs planned in {seconds:4.1f} s")


def bench_teachers(student_dir: str, data: str, n: int, threads: int, backends: list[str]) -> None:
    """Generated tokens/s of each teacher backend on the same chat prompts (CSQA template, 64 new tokens)."""
    from cotdistill.prompts import load_template
    from cotdistill.teachers import BACKENDS

    rows = pd.read_parquet(data).head(n)
    template = load_template("prompts/csqa.yaml")
    tok = AutoTokenizer.from_pretrained(student_dir)
    print(f"(d) teacher generation, {n} prompts, {student_dir} as the teacher")
    rates = {}
    for name in backends:
        spec = {"backend": name, "model": {"source": "local", "path": student_dir}, "chat": True,
                "decoding": {"max_new_tokens": 64, "temperature": 0.0}}
        backend = BACKENDS.get(name)("bench", spec, "csqa", "train", threads)
        prompts = backend.prepare([template.render(r) for r in rows.to_dict("records")])
        seconds, texts = timed(backend.generate, prompts, rows, backend.decoding)
        tokens = sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)
        rates[name] = tokens / seconds
        print(f"    {name:>12}: {rates[name]:7.1f} generated tokens/s ({tokens} tokens in {seconds:.1f} s)")
    if "vllm" in rates and "transformers" in rates:
        print(f"    ratio vllm / transformers: {rates['vllm'] / rates['transformers']:.1f}x")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=f"results/models/{RUN}/seed0")
    p.add_argument("--cot-before", default=f"results/models/{RUN.replace('cot_after', 'cot_before')}/seed0")
    p.add_argument("--configs", nargs="*", default=["configs/paper_table1.yaml", "configs/paper_mysteries.yaml"],
                   help="paper configs to dry-run")
    p.add_argument("--teachers", default="transformers", help="backends to time, comma-separated")
    p.add_argument("--train-data", default="results/data/csqa/train.parquet", help="the teachers' examples")
    p.add_argument("--parts", default="eval,train,planning,teachers,multitask", help="which sections to run")
    p.add_argument("--rationales", default="results/rationales/palm540b/csqa/train.parquet",
                   help="teacher rationales for the multi-task section")
    p.add_argument("--student", default="results/hf/smollm2-135m")
    p.add_argument("--data", default="results/data/csqa/test.parquet")
    p.add_argument("--targets", default="results/targets/csqa/palm540b/cot_after/train.parquet")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--profile", action="store_true", help="print torch.profiler's top operators of one step")
    args = p.parse_args()
    parts = args.parts.split(",")
    if "eval" in parts:
        label_format = yaml.safe_load(Path("config.yaml").read_text())["targets"]["label_format"]
        bench_eval(args.model, args.cot_before, args.data, args.n, args.batch_size, args.threads, label_format)
    if "train" in parts:
        bench_train(args.student, args.targets, args.steps, args.threads, args.profile)
        print("    validation share of the main job's fine-tunes:")
        validation_shares(str(Path(args.model).parent.parent))
    if "planning" in parts:
        bench_planning(args.configs)
    if "teachers" in parts:
        bench_teachers(args.student, args.train_data, 16, args.threads, args.teachers.split(","))
    if "multitask" in parts:
        bench_multitask(args.student, args.train_data, args.rationales, args.steps, args.threads)


if __name__ == "__main__":
    main()
