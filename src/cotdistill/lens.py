"""Tuned and logit lenses on every student architecture, and the small trainer of a tuned lens.

tuned-lens 0.2.0 finds a model's final norm and layer stack by class (GPT-2, Llama, GPT-NeoX, OPT, BLOOM) and
raises NotImplementedError for the rest (Phi, Gemma); its training CLI does not run on transformers 5. So this
module resolves the three parts a lens needs (final norm, unembedding, layer stack) per ``model_type`` in one
table, `ARCHITECTURES`, builds tuned-lens's own `TunedLens` / `LogitLens` on an `Unembed` made from them, and
trains the translators with the recipe of tuned-lens's ``train_loop.py`` (KL from the model's final distribution
to the lens's at every layer; SGD with Nesterov momentum at ``lr * (1 - momentum)``, linear decay, weight decay,
gradient norm clipped at 1).

Layer indices: residual ``0`` is the input of the first block (the embeddings, scaled as the model scales them),
residual ``l`` the stream after ``l`` blocks; residual ``L`` (after the last block) read through the final norm and
unembedding *is* the model's output, so a lens has translators for ``0 .. L-1`` only.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm
from tuned_lens.nn import LogitLens, TunedLens, TunedLensConfig, Unembed

from . import io, lenskinds
from .ablations import UNK, keyed_rng
from .models import load_causal_student
from .targets import TARGET_COLUMNS
from .training import Collator, encode, marker_ends

log = logging.getLogger(__name__)

# model_type -> (final norm, layer stack), as attribute paths from the *ForCausalLM model
ARCHITECTURES: dict[str, tuple[str, str]] = {
    "gpt2": ("transformer.ln_f", "transformer.h"),
    "llama": ("model.norm", "model.layers"),
    "mistral": ("model.norm", "model.layers"),
    "qwen2": ("model.norm", "model.layers"),
    "qwen3": ("model.norm", "model.layers"),
    "gemma": ("model.norm", "model.layers"),
    "gemma2": ("model.norm", "model.layers"),
    "gemma3_text": ("model.norm", "model.layers"),
    "phi": ("model.final_layernorm", "model.layers"),
    "phi3": ("model.norm", "model.layers"),
    "gpt_neox": ("gpt_neox.final_layer_norm", "gpt_neox.layers"),
}


@dataclass
class Parts:
    final_norm: torch.nn.Module
    unembedding: torch.nn.Linear
    layers: torch.nn.ModuleList
    softcap: float | None  # Gemma 2's final logit soft-capping: tanh(logits / cap) * cap


def resolve(model) -> Parts:
    """The final norm, unembedding and layer stack of a causal LM, from `ARCHITECTURES`."""
    kind = model.config.model_type
    if kind not in ARCHITECTURES:
        raise NotImplementedError(f"no lens support for model_type {kind!r} ({type(model).__name__}); add its final "
                                  f"norm and layer stack to cotdistill.lens.ARCHITECTURES (known: "
                                  f"{', '.join(sorted(ARCHITECTURES))})")
    norm_path, layers_path = ARCHITECTURES[kind]
    norm, layers = model.get_submodule(norm_path), model.get_submodule(layers_path)
    unembedding = model.get_output_embeddings()
    if not isinstance(unembedding, torch.nn.Linear) or not isinstance(layers, torch.nn.ModuleList):
        raise TypeError(f"{type(model).__name__}: expected a Linear unembedding and a ModuleList at {layers_path!r}")
    return Parts(norm, unembedding, layers, getattr(model.config, "final_logit_softcapping", None))


class ResolvedUnembed(Unembed):
    """tuned-lens's `Unembed` built from `resolve` (its own constructor knows only some classes). The model's
    modules are shared, not copied: the model is frozen wherever a lens runs."""

    def __init__(self, model) -> None:
        torch.nn.Module.__init__(self)
        parts = resolve(model)
        self.final_norm, self.unembedding, self.softcap = parts.final_norm, parts.unembedding, parts.softcap

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        logits = self.unembedding(self.final_norm(h))
        return torch.tanh(logits / self.softcap) * self.softcap if self.softcap else logits


def make_lens(model, kind: str) -> TunedLens | LogitLens:
    """A fresh lens of `kind` (``tuned``: identity translators; ``logit``) on `model`."""
    unembed = ResolvedUnembed(model)
    if kind == "logit":
        return LogitLens(unembed)
    cfg = TunedLensConfig(base_model_name_or_path=str(model.config.name_or_path), d_model=model.config.hidden_size,
                          num_hidden_layers=len(resolve(model).layers))
    return TunedLens(unembed, cfg)


def load_lens(model, kind: str, path: str | None) -> TunedLens | LogitLens:
    """A lens as the `lens` rule saved it (tuned), or the logit lens."""
    lens = make_lens(model, kind)
    if isinstance(lens, TunedLens):
        lens.layer_translators.load_state_dict(torch.load(f"{path}/params.pt", map_location="cpu"))
    return lens


def residuals(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """(residual stream at layers 0..L, the model's logits), read by hooks on the resolved layer stack: each
    block's input for layer 0, each block's output after it (pre final norm)."""
    layers = resolve(model).layers
    states: list[torch.Tensor] = []

    def grab_input(_module, args, kwargs):
        states.append(args[0] if args else kwargs["hidden_states"])

    def grab_output(_module, _args, output):
        states.append(output[0] if isinstance(output, tuple) else output)

    hooks = [layers[0].register_forward_pre_hook(grab_input, with_kwargs=True)]
    hooks += [layer.register_forward_hook(grab_output) for layer in layers]
    try:
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    finally:
        for h in hooks:
            h.remove()
    return states, logits


def pad_batch(seqs: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input ids, attention mask), right-padded (`training.Collator` with ``side="right"``)."""
    batch = Collator(pad, side="right")([{"input_ids": s, "labels": s} for s in seqs])
    return batch["input_ids"], batch["attention_mask"]


def layer_kl(model, lens, batch: list[tuple[list[int], list[bool]]], pad: int, grad: bool) -> torch.Tensor:
    """Mean KL(model's final distribution || lens at layer l) over the selected positions, one value per layer;
    with `grad`, each layer's KL is backpropagated into its translator as it is computed (one layer's vocabulary
    logits in memory at a time)."""
    ids, mask = pad_batch([s for s, _ in batch], pad)
    select = torch.zeros_like(mask, dtype=torch.bool)
    for i, (_, keep) in enumerate(batch):
        select[i, :len(keep)] = torch.tensor(keep)
    device = next(model.parameters()).device
    ids, mask, select = ids.to(device), mask.to(device), select.to(device)
    with torch.no_grad():
        states, logits = residuals(model, ids, mask)
        target = logits[select].float().log_softmax(-1)
    out = []
    for layer, h in enumerate(states[:-1]):
        with torch.set_grad_enabled(grad):
            logq = lens(h[select].detach(), idx=layer).float().log_softmax(-1)
            kl = torch.sum(target.exp() * (target - logq), dim=-1).mean()
            if grad:
                kl.backward()
        out.append(kl.detach())
    return torch.stack(out).cpu()


def training_sequences(tok, targets: pd.DataFrame, max_source: int, max_target: int,
                       positions: str) -> list[tuple[str, list[int], list[bool]]]:
    """(id, token ids, positions to train on) per target row, tokenized exactly as the fine-tune saw them."""
    ids = list(targets["id"].astype(str))
    enc, dropped = encode(tok, list(targets["source"]), list(targets["target"]), marker_ends(targets), max_source,
                          max_target, ids, overlong="drop")
    if dropped:
        log.info("%d target rows left out: their label lies beyond max_target_tokens = %d", len(dropped), max_target)
    gone = set(dropped)
    kept = [i for i in ids if i not in gone]
    out = []
    for rid, seq, labels in zip(kept, enc["input_ids"], enc["labels"], strict=True):
        # position t predicts token t+1: the target's positions start at the last source token
        keep = [positions == "all" or (t + 1 < len(labels) and labels[t + 1] != -100) for t in range(len(seq))]
        out.append((rid, seq, keep))
    return out


def subsample(seq: tuple[str, list[int], list[bool]], n: int, seed: int, epoch: int) -> tuple[list[int], list[bool]]:
    """(ids, positions) with at most `n` of the selected positions kept (all for n = 0), drawn from a generator
    keyed by (seed, example id, epoch): the same draw whatever the other rows or the batch composition."""
    rid, ids, keep = seq
    chosen = [t for t, k in enumerate(keep) if k]
    if not n or len(chosen) <= n:
        return ids, keep
    picked = set(keyed_rng(seed, "lens-positions", rid, epoch).choice(chosen, size=n, replace=False).tolist())
    return ids, [t in picked for t in range(len(keep))]


def train_lens(model, tok, targets: pd.DataFrame, params: dict, seed: int, max_source: int = 512,
               max_target: int = 256) -> tuple[TunedLens, dict]:
    """Train a tuned lens on `targets` (the model's own training targets); returns (lens, log) where the log has
    the per-step loss and the held-out KL per layer before and after training."""
    model.eval().requires_grad_(False)
    rows = targets.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    seqs = training_sequences(tok, rows, max_source, max_target, params["positions"])
    heldout_n = min(params["heldout"], len(seqs) // 2)
    if heldout_n < 1:
        raise ValueError(f"lens training needs at least 2 usable target rows, got {len(seqs)} of {len(rows)}")
    if heldout_n < params["heldout"]:
        log.warning("heldout %d cut to %d: half of the %d usable rows", params["heldout"], heldout_n, len(seqs))
    heldout = [(ids, keep) for _, ids, keep in seqs[:heldout_n]]
    train = seqs[heldout_n:]
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    lens = make_lens(model, "tuned").to(next(model.parameters()).device)
    translators = lens.layer_translators
    opt = torch.optim.SGD(translators.parameters(), lr=params["lr"] * (1 - params["momentum"]),
                          momentum=params["momentum"], nesterov=True, weight_decay=params["weight_decay"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: max(0.0, 1 - step / params["steps"]))

    def heldout_kl() -> list[float]:
        """Per layer, the mean KL over every held-out position (each batch's mean weighted by its positions)."""
        chunks = [heldout[i:i + params["batch_size"]] for i in range(0, len(heldout), params["batch_size"])]
        counts = [sum(sum(keep) for _, keep in chunk) for chunk in chunks]
        parts = [layer_kl(model, lens, chunk, pad, grad=False) * n for chunk, n in zip(chunks, counts, strict=True)]
        return (torch.stack(parts).sum(0) / sum(counts)).tolist()

    before = heldout_kl()
    rng = np.random.default_rng(seed)
    order: list[tuple[int, int]] = []  # (training row, epoch)
    epochs, losses, start = 0, [], time.perf_counter()
    for step in tqdm(range(params["steps"]), desc="tuned lens", unit="step"):
        while len(order) < params["batch_size"]:  # epochs of the training rows, reshuffled each time
            epochs += 1
            order += [(i, epochs) for i in rng.permutation(len(train)).tolist()]
        batch = [subsample(train[i], params["positions_per_example"], seed, epoch)
                 for i, epoch in order[:params["batch_size"]]]
        order = order[params["batch_size"]:]
        opt.zero_grad(set_to_none=False)
        kl = layer_kl(model, lens, batch, pad, grad=True)
        torch.nn.utils.clip_grad_norm_(translators.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(kl.mean()))
        if step % 10 == 0 or step == params["steps"] - 1:
            log.info("step %d: mean KL over layers %.4f nats", step, losses[-1])
    seconds = time.perf_counter() - start
    after = heldout_kl()
    summary = {"steps": params["steps"], "train_rows": len(train), "heldout_rows": len(heldout),
               "train_loss": losses, "heldout_kl_before": before, "heldout_kl_after": after,
               "heldout_kl_mean_before": float(np.mean(before)), "heldout_kl_mean_after": float(np.mean(after)),
               "seconds": seconds, "layers": len(translators)}
    if not all(math.isfinite(x) for x in losses + after):
        raise FloatingPointError(f"tuned lens training diverged (losses {losses[-3:]}); lower lenses.<name>.lr")
    return lens, summary


def lens_files(model_dir: str, targets: str, params: dict, out_dir: str, seed: int, threads: int = 1,
               max_source: int = 512, max_target: int = 256) -> dict:
    """The `lens` rule: train a tuned lens (`params`: resolved, as `config.lens_params` gives them) for the model
    in `model_dir` on its training targets and save it in tuned-lens's own format (``params.pt``,
    ``config.json``) plus ``train.json`` (the loss log)."""
    from transformers import AutoTokenizer

    torch.set_num_threads(threads)
    if not lenskinds.LENSES.get(params["kind"]).trains:
        raise ValueError(f"lens kind {params['kind']!r} needs no training")
    df = io.read_parquet(targets, required=TARGET_COLUMNS)
    if df["target"].str.contains(UNK, regex=False).any():
        raise ValueError(f"{targets}: targets hold the filler placeholder {UNK!r}; lenses are trained only for "
                         f"models whose targets are text as they saw it (no filler ablations)")
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = load_causal_student(model_dir, "the tuned lens")
    model.to("cuda" if torch.cuda.is_available() else "cpu")
    lens, summary = train_lens(model, tok, df, params, seed, max_source, max_target)
    with io.atomic_dir(out_dir) as tmp:
        lens.to("cpu").save(tmp)
        io.write_json({**summary, "params": params}, tmp / "train.json")
    log.info("tuned lens: %d steps in %.0f s; held-out KL (mean over %d layers) %.3f -> %.3f nats",
             summary["steps"], summary["seconds"], summary["layers"], summary["heldout_kl_mean_before"],
             summary["heldout_kl_mean_after"])
    return summary
