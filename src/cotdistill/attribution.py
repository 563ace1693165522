"""Token attributions of the gold label on a CoT-before student (the Mysteries paper's integrated gradients).

For each training example the student fine-tuned with the rationale *before* the label reads
``<source> <rationale> [FIN_LABEL] <label>``; the attributed output is the log-probability of the gold label's
tokens, and every rationale token gets the sum over embedding dimensions of its attribution. Methods (captum):

- ``integrated_gradients`` (the paper's): integrated gradients on the input embeddings from a zero-embedding
  baseline with ``n_steps`` interpolation steps. captum's `LayerIntegratedGradients` takes its baseline as token
  ids, and no token id embeds to zero, so this runs captum's `IntegratedGradients` on the embedding output
  directly: the same integral that layer integrated gradients computes on the embedding layer with a zero
  baseline. Examples are batched, and captum batches their interpolation steps (``internal_batch_size``).
- ``input_x_gradient``: embedding times gradient, one backward pass per batch: the cheap variant for CPU runs.

Output: one Parquet row per (example, rationale token): ``id, position, token, score``, and a stats JSON with the
cost per example. ``token`` is the stretch of the rationale text the token covers, with the whitespace before it
(from the tokenizer's offsets), so an example's tokens joined give back its rationale exactly: a piece that
continues a word has no leading space, which `ablations.ig_topk` needs to write pieces back as words. (Decoding
each token alone loses that: SentencePiece tokenizers drop the space of a word's first piece, and byte-level
ones write half a character as U+FFFD.) `config.ATTRIBUTION_REVISION` counts changes of this content.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import io
from .ablations import IG_PARAMS, MARK, wrap_label
from .models import load_causal_student
from .targets import TARGET_COLUMNS
from .training import cut_source, leading_specials

log = logging.getLogger(__name__)

METHODS = IG_PARAMS["method"].choices
COLUMNS = ["id", "position", "token", "score"]


def split_cot_before(target: str, label: str, row_id: str) -> str:
    """The rationale of a CoT-before target ``<rationale> [FIN_LABEL] label [FIN_LABEL]``."""
    tail = wrap_label(label)
    if not target.endswith(tail) or not target[:-len(tail)].strip():
        raise ValueError(f"row id {row_id!r}: target {target[:80]!r}... is not '<rationale> {tail}': attribution "
                         f"needs the targets of a cot_before ablation")
    return target[:-len(tail)].strip()


def token_texts(tok, text: str) -> tuple[list[int], list[str]]:
    """(ids, texts) of `text`: each token's stretch of it, from the end of the token before (whitespace
    included); a token inside a character it shares with the token before gets ''. Joined, the texts give `text`
    up to its last token's end."""
    if not tok.is_fast:
        raise ValueError(f"attribution needs a fast tokenizer (character offsets); {type(tok).__name__} is not one")
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    texts, last = [], 0
    for _, end in enc["offset_mapping"]:
        texts.append(text[last:max(end, last)])
        last = max(end, last)
    return enc["input_ids"], texts


def _encode(tok, source: str, rationale: str, label: str, max_source: int,
            head: int) -> tuple[list[int], int, int, int, list[str]]:
    """(ids, rationale start, rationale end, label start, rationale token texts): the pieces tokenized apart, so
    spans are exact."""
    src = cut_source(tok(source, add_special_tokens=True)["input_ids"], max_source, head)
    rat, texts = token_texts(tok, " " + rationale)
    mark = tok(" " + MARK, add_special_tokens=False)["input_ids"]
    lab = tok(" " + label, add_special_tokens=False)["input_ids"]
    ids = src + rat + mark + lab
    return ids, len(src), len(src) + len(rat), len(src) + len(rat) + len(mark), texts


def attribute(model, tok, rows: list[dict], method: str = "integrated_gradients", n_steps: int = 50,
              batch_size: int = 4, internal_batch_size: int | None = None, max_source: int = 512) -> pd.DataFrame:
    """Attribution scores of every rationale token of `rows` (dicts with id, source, target, label)."""
    from captum.attr import InputXGradient, IntegratedGradients

    if method not in METHODS:
        raise ValueError(f"attribution method {method!r}; valid choices: {', '.join(METHODS)}")
    model.eval().requires_grad_(False)
    device = next(model.parameters()).device
    emb = model.get_input_embeddings()
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    head = leading_specials(tok)  # kept at the start of a cut source, as training keeps it
    encoded = [_encode(tok, r["source"], split_cot_before(r["target"], r["label"], r["id"]), r["label"], max_source,
                       head)
               for r in rows]

    def label_logprob(embeds, attention_mask, target_ids, target_mask):
        logits = model(inputs_embeds=embeds, attention_mask=attention_mask).logits[:, :-1].float()
        logp = logits.log_softmax(-1).gather(-1, target_ids[:, 1:, None]).squeeze(-1)
        return (logp * target_mask[:, 1:]).sum(-1)

    explainer = IntegratedGradients(label_logprob) if method == "integrated_gradients" else InputXGradient(
        label_logprob)
    out = []
    order = sorted(range(len(rows)), key=lambda i: len(encoded[i][0]))  # similar lengths pad little
    for start in tqdm(range(0, len(order), batch_size), desc=f"attribution ({method})", unit="batch"):
        idx = order[start:start + batch_size]
        width = max(len(encoded[i][0]) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        tmask = torch.zeros((len(idx), width))
        for j, i in enumerate(idx):
            seq, _, _, lab, _ = encoded[i]
            ids[j, :len(seq)], mask[j, :len(seq)], tmask[j, lab:len(seq)] = torch.tensor(seq), 1, 1.0
        ids, mask, tmask = ids.to(device), mask.to(device), tmask.to(device)
        embeds = emb(ids).detach().requires_grad_()
        extra = (mask, ids, tmask)
        if method == "integrated_gradients":
            attr = explainer.attribute(embeds, baselines=torch.zeros_like(embeds), additional_forward_args=extra,
                                       n_steps=n_steps, internal_batch_size=internal_batch_size)
        else:
            attr = explainer.attribute(embeds, additional_forward_args=extra)
        scores = attr.sum(-1).detach().float().cpu().numpy()
        if not np.isfinite(scores).all():
            raise FloatingPointError(f"non-finite attribution for row ids {[rows[i]['id'] for i in idx]}")
        for j, i in enumerate(idx):
            _, a, b, _, texts = encoded[i]
            out += [{"id": rows[i]["id"], "position": p, "token": texts[p], "score": float(scores[j, a + p])}
                    for p in range(b - a)]
    return pd.DataFrame(out, columns=COLUMNS)


def attribute_files(model_dir: str, targets: str, method: str, n_steps: int, out: str, out_stats: str,
                    max_source: int = 512, batch_size: int = 4, internal_batch_size: int | None = None,
                    threads: int = 1) -> dict:
    """`attribute` as the `attribution` rule runs it: the CoT-before model on its own training targets, with the
    source cut as its fine-tune cut it (`max_source`), on the GPU when there is one."""
    from transformers import AutoTokenizer

    torch.set_num_threads(threads)
    df = io.read_parquet(targets, required=TARGET_COLUMNS)
    if df.empty:
        raise ValueError(f"{targets}: no targets to attribute")
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = load_causal_student(model_dir, "attribution")
    model.to("cuda" if torch.cuda.is_available() else "cpu")
    start = time.perf_counter()
    scores = attribute(model, tok, df.to_dict("records"), method, n_steps, batch_size, internal_batch_size,
                       max_source)
    seconds = time.perf_counter() - start
    missing = set(df["id"]) - set(scores["id"])
    if missing:
        raise ValueError(f"{targets}: {len(missing)} examples got no rationale token scores (e.g. "
                         f"{sorted(missing)[:3]}): empty rationales?")
    io.write_parquet(scores, out)
    stats = {"examples": len(df), "tokens": len(scores), "method": method,
             "n_steps": n_steps if method == "integrated_gradients" else None, "seconds": seconds,
             "seconds_per_example": seconds / len(df), "mean_rationale_tokens": len(scores) / len(df),
             "threads": threads, "batch_size": batch_size, "internal_batch_size": internal_batch_size,
             "device": str(next(model.parameters()).device)}
    io.write_json(stats, out_stats)
    log.info("attributed %d examples (%d rationale tokens) with %s in %.0f s: %.2f s per example", len(df),
             len(scores), method, seconds, stats["seconds_per_example"])
    return stats


def read_scores(path: str) -> dict[str, list[tuple[str, float]]]:
    """id -> [(token, score)] in rationale order, as the ig_topk ablations read them."""
    df = io.read_parquet(path, required=COLUMNS).sort_values(["id", "position"], kind="stable")
    return {str(i): list(zip(g["token"], g["score"].astype(float), strict=True)) for i, g in df.groupby("id")}
