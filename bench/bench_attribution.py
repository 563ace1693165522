"""Cost of token attribution per example: integrated gradients (captum, zero-embedding baseline) at a few step
counts against input x gradient (one backward pass), same model and examples, in the same process; also how far
the cheap method's top-k tokens agree with integrated gradients' (the share of IG's top-k it recovers).

Run after a CoT-before model exists (configs/cpu_table3.yaml builds one):
    .venv/bin/python bench/bench_attribution.py [--run csqa-small/palm540b/smollm2-135m/cot_before] [--n 8]
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from cotdistill.attribution import attribute


def top_sets(scores: pd.DataFrame, k: int) -> dict[str, set[int]]:
    return {i: set(g.nlargest(k, "score")["position"]) for i, g in scores.groupby("id")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default="csqa-small/palm540b/smollm2-135m/cot_before")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--steps", type=int, nargs="+", default=[16, 50])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--k", type=int, default=15)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model_dir = f"results/models/{args.run}/seed0"
    dataset, teacher, _, ablation = args.run.split("/")
    rows = pd.read_parquet(f"results/targets/{dataset}/{teacher}/{ablation}/train.parquet").head(args.n)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    records = rows.to_dict("records")
    results = {}
    for name, method, steps in [("input_x_gradient", "input_x_gradient", 1)] + [
            (f"integrated_gradients n_steps={s}", "integrated_gradients", s) for s in args.steps]:
        start = time.perf_counter()
        scores = attribute(model, tok, records, method, steps, batch_size=4, internal_batch_size=min(steps, 16))
        results[name] = ((time.perf_counter() - start) / len(records), scores)
    base, base_scores = results["input_x_gradient"]
    ref = top_sets(results[f"integrated_gradients n_steps={args.steps[-1]}"][1], args.k)
    print(f"{len(records)} examples of {args.run}, {len(base_scores) / len(records):.1f} rationale tokens each, "
          f"{args.threads} threads, device {next(model.parameters()).device}")
    for name, (sec, scores) in results.items():
        agree = sum(len(top_sets(scores, args.k)[i] & ref[i]) for i in ref) / sum(len(v) for v in ref.values())
        print(f"{name:36s} {sec:7.2f} s/example  x{sec / base:6.1f} of input_x_gradient  "
              f"top-{args.k} overlap with IG({args.steps[-1]}): {agree:.2f}")


if __name__ == "__main__":
    main()
