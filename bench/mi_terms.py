"""Size of each term of the multi-task (DSS) loss and of its gradient, on real batches of a multi-task targets file.

The MI paper's auxiliary term, as its authors' code computes it (`losses.mi_paper`), is expected to be nearly
constant with a tiny gradient; the corrected form (`losses.mi`) and `kl` are not. For each of `--batches` paired
batches (the file's first rows, in order) this computes the predict and explain losses and every auxiliary loss
with max and mean pooling, each with the L2 norm of its gradient over all the model's parameters (one backward pass
per term), and prints mean, std and range over the batches, and each term's gradient norm over the explain loss's.

    .venv/bin/python bench/mi_terms.py --model results/hf/smollm2-135m \
        --targets results/targets/csqa-small/palm540b/dss/train.parquet
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch


def main() -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cotdistill import io
    from cotdistill.losses import AUX_LOSSES, REDUCTIONS
    from cotdistill.multitask import PairCollator, encode_pairs, pair_outputs
    from cotdistill.targets import EXPLAIN_COLUMNS, TARGET_COLUMNS

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a model folder (the converted student, or a fine-tuned one)")
    ap.add_argument("--targets", required=True, help="a multi-task targets file (an ablation of kind multitask)")
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tok = AutoTokenizer.from_pretrained(args.model)
    tok.pad_token = tok.pad_token or tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    df = io.read_parquet(args.targets, required=TARGET_COLUMNS + EXPLAIN_COLUMNS).head(args.batches * args.batch_size)
    enc, _ = encode_pairs(tok, df, 512, 256, "drop")
    features = [dict(zip(enc, values, strict=True)) for values in zip(*enc.values(), strict=True)]
    collate = PairCollator(tok.pad_token_id)
    names = ["predict", "explain"] + [f"{a}/{r}" for a in AUX_LOSSES.names() if a != "none" for r in REDUCTIONS]
    values: dict[str, list[float]] = {n: [] for n in names}
    grads: dict[str, list[float]] = {n: [] for n in names}
    start = time.perf_counter()
    for b in range(math.ceil(len(features) / args.batch_size)):
        batch = collate(features[b * args.batch_size:(b + 1) * args.batch_size])
        (pred_loss, pred_logits, pred_mask), (expl_loss, expl_logits, expl_mask) = pair_outputs(model, batch)
        terms = {"predict": pred_loss, "explain": expl_loss}
        for name in names[2:]:
            aux, reduction = name.split("/")
            terms[name] = AUX_LOSSES.get(aux)(pred_logits, pred_mask, expl_logits, expl_mask, reduction)
        for name, term in terms.items():
            g = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
            values[name].append(float(term.detach()))
            grads[name].append(float(torch.sqrt(sum((x.float() ** 2).sum() for x in g if x is not None))))
        print(f"batch {b + 1}: " + ", ".join(f"{n} {values[n][-1]:.4g}" for n in names), flush=True)
    explain_grad = np.mean(grads["explain"])
    print(f"\n{len(values['predict'])} batches of {args.batch_size} pairs from {args.targets}, model {args.model}, "
          f"vocabulary {model.config.vocab_size} (log V = {math.log(model.config.vocab_size):.2f}); "
          f"{time.perf_counter() - start:.0f} s\n")
    print("| term | value mean ± std [min, max] | std/mean | grad norm mean ± std | grad / explain grad |")
    print("|---|---|---|---|---|")
    for n in names:
        v, g = np.array(values[n]), np.array(grads[n])
        print(f"| {n} | {v.mean():.4g} ± {v.std():.2g} [{v.min():.4g}, {v.max():.4g}] | "
              f"{v.std() / abs(v.mean()) if v.mean() else float('nan'):.2g} | {g.mean():.3g} ± {g.std():.2g} | "
              f"{g.mean() / explain_grad:.2g} |")


if __name__ == "__main__":
    main()
