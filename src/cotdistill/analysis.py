"""Layer-wise confidence in the gold label (the Mysteries paper's Figure 2 and Appendix D).

For each (dataset, student, seed) of an experiment, the items entering are the test items that every placement
(the experiment's ``none``, ``cot_before`` and ``cot_after`` ablations) predicts correctly. Each model reads its
own correct output teacher-forced: the source, then for CoT-before its own generated rationale, then
``[FIN_LABEL]`` and the gold label, tokenized as its fine-tune tokenized targets. At every layer 0..L and every
position from the last source token (which predicts the first target token) up to the one that predicts the
label's first token, the lens gives the probability of that first label token. Layer L is the model's own output.

Positions are counted back from the label: ``to_label`` = 0 is the position that predicts the label's first token,
-1 the one before it (for CoT-before, rationale positions come first, and items differ in length; heatmaps average
over the items that have a position). The summary is the paper's: at ``to_label`` = 0, the lowest layer from
which (at it and every layer above) at least 80% of items exceed probability 0.6.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from . import io, lens as lenses
from .ablations import MARK, wrap_label
from .config import PLACEMENT_KINDS as PLACEMENTS
from .models import load_causal_student
from .reports import published, pyplot, save_figure
from .targets import format_source, label_string
from .training import encode

log = logging.getLogger(__name__)

COLUMNS = ["dataset", "student", "seed", "placement", "id", "layer", "position", "to_label", "probability"]
THRESHOLD, SHARE = 0.6, 0.8


def common_correct(predictions: dict[str, pd.DataFrame]) -> list[str]:
    """Ids of the items every placement's predictions got right, sorted."""
    sets = [set(df.loc[df["predicted_class"] == df["gold_class"], "id"].astype(str)) for df in predictions.values()]
    return sorted(set.intersection(*sets)) if sets else []


def rationale_of(generated: str, row_id: str) -> str:
    """A CoT-before model's own rationale: its generated text before the first marker."""
    head, sep, _ = str(generated).partition(MARK)
    if not sep or not head.strip():
        raise ValueError(f"item {row_id!r}: generation {generated[:80]!r} has no rationale before {MARK}")
    return head.strip()


def encode_item(tok, source: str, rationale: str | None, label: str, max_source: int) -> tuple[list[int], int, int]:
    """(ids up to and including the label's first token, first target position, label's first token position):
    the source and the whole target ``[<rationale>] [FIN_LABEL] <label> [FIN_LABEL]`` through `training.encode`,
    exactly as the fine-tune tokenized it, cut after the label's first token."""
    target = f"{rationale} {wrap_label(label)}" if rationale else wrap_label(label)
    before = f"{rationale} {MARK}" if rationale else MARK  # the target up to the label
    enc, _ = encode(tok, [source], [target], [len(target)], max_source, 10**9)
    ids, labels = enc["input_ids"][0], enc["labels"][0]
    start = labels.count(-100)  # the source's positions
    head = tok(" " + before, add_special_tokens=False)["input_ids"]
    label_pos = start + len(head)
    if ids[start:label_pos] != head or label_pos >= len(ids):
        raise ValueError(f"label {label!r} does not start at a token boundary after {MARK!r} with this tokenizer")
    return ids[:label_pos + 1], start, label_pos


@torch.no_grad()
def label_probabilities(model, lens, tok, items: list[dict], batch_size: int = 8) -> pd.DataFrame:
    """Per item (dict: id, ids, start, label_pos), layer and position in [start - 1, label_pos - 1]: the lens
    probability of the token at label_pos (the label's first token)."""
    model.eval()
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    n_layers = len(lenses.resolve(model).layers)
    device = next(model.parameters()).device
    out = []
    order = sorted(range(len(items)), key=lambda i: len(items[i]["ids"]))
    for b in tqdm(range(0, len(order), batch_size), desc="lens probabilities", unit="batch"):
        batch = [items[i] for i in order[b:b + batch_size]]
        ids, mask = lenses.pad_batch([it["ids"] for it in batch], pad)
        states, logits = lenses.residuals(model, ids.to(device), mask.to(device))
        for j, it in enumerate(batch):
            pos = torch.arange(it["start"] - 1, it["label_pos"])
            gold = it["ids"][it["label_pos"]]
            for layer in range(n_layers + 1):
                out_logits = logits[j, pos] if layer == n_layers else lens(states[layer][j, pos], idx=layer)
                p = out_logits.float().softmax(-1)[:, gold].cpu().numpy()
                out += [(it["id"], layer, k, k - (len(pos) - 1), float(p[k])) for k in range(len(pos))]
    return pd.DataFrame(out, columns=["id", "layer", "position", "to_label", "probability"])


def first_confident_layer(probs: pd.DataFrame, threshold: float = THRESHOLD, share: float = SHARE) -> int | None:
    """The lowest layer from which (there and at every layer above) at least `share` of items have the label's
    probability above `threshold` at the label position; None when even the last layer falls short."""
    at_label = probs[probs["to_label"] == 0]
    shares = at_label.assign(hit=at_label["probability"] > threshold).groupby("layer")["hit"].mean().sort_index()
    layer = None
    for lay, s in shares[::-1].items():
        if s < share:
            break
        layer = int(lay)
    return layer


def summarise(df: pd.DataFrame, model_types: dict[str, str], lens_kind: str = "tuned") -> pd.DataFrame:
    """One row per (dataset, student, seed, placement): items, layers, the 80%/0.6 layer, the paper's where the
    setting matches (a tuned lens on the same model type and layer count)."""
    pub = published("mysteries_lens")
    if lens_kind != "tuned":
        pub = pub.iloc[0:0]
    rows = []
    for (ds, st, seed, placement), g in df.groupby(["dataset", "student", "seed", "placement"], sort=False):
        layers = int(g["layer"].max())
        match = pub[(pub["ablation_kind"] == placement) & (pub["layers"] == layers)
                    & (pub["model_type"] == model_types.get(st))]
        final = g[(g["to_label"] == 0) & (g["layer"] == layers)]
        rows.append({"dataset": ds, "student": st, "seed": seed, "placement": placement,
                     "items": g["id"].nunique(), "layers": layers, "layer_80_06": first_confident_layer(g),
                     "final_share_06": float((final["probability"] > THRESHOLD).mean()),
                     "paper_layer": int(match["layer"].iloc[0]) if len(match) else None})
    return pd.DataFrame(rows).astype({"layer_80_06": "Int64", "paper_layer": "Int64"})


def write_heatmaps(df: pd.DataFrame, title: str, out_prefix: str, width: int = 40) -> None:
    """Layers x positions (up to the label's first token; the last `width` positions), mean probability of the
    gold label's first token, one panel per placement and one row per (dataset, student, seed)."""
    plt = pyplot()
    groups = list(df.groupby(["dataset", "student", "seed"], sort=False))
    fig, axes = plt.subplots(len(groups), len(PLACEMENTS), squeeze=False, layout="constrained",
                             figsize=(4.2 * len(PLACEMENTS), 3.4 * len(groups) + 0.6))
    image = None
    for r, ((ds, st, seed), g) in enumerate(groups):
        for c, placement in enumerate(PLACEMENTS):
            ax = axes[r][c]
            grid = heatmap_grid(g[g["placement"] == placement], width)
            if grid.empty:
                ax.set_axis_off()
                continue
            image = ax.imshow(grid.to_numpy(), origin="lower", aspect="auto", vmin=0, vmax=1, cmap="viridis",
                              extent=(grid.columns.min() - 0.5, grid.columns.max() + 0.5, -0.5, len(grid) - 0.5))
            ax.set_title(f"{placement} ({g.loc[g['placement'] == placement, 'id'].nunique()} items)\n"
                         f"{ds} / {st} / seed {seed}", fontsize=9)
            ax.set_xlabel("position (0 = predicts the label)")
            ax.set_ylabel("layer" if c == 0 else "")
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, label="P(gold label's first token)")
    fig.suptitle(title, fontsize=10)
    save_figure(fig, out_prefix)


def heatmap_grid(rows: pd.DataFrame, width: int = 40) -> pd.DataFrame:
    """Mean probability, layers (index) x to_label (columns), over the last `width` positions."""
    rows = rows[rows["to_label"] > -width]
    return rows.pivot_table(index="layer", columns="to_label", values="probability", aggfunc="mean").sort_index()


def summary_markdown(summary: pd.DataFrame, title: str, lens_name: str) -> str:
    lines = [f"# {title}", "",
             f"Lens: {lens_name}. Items: test items every placement predicts correctly. Layer: the lowest layer "
             f"from which at least {SHARE:.0%} of items give the gold label's first token probability above "
             f"{THRESHOLD} at the position that predicts it (layer L is the model's output; 'never' when even L "
             f"falls short). Paper: GPT-2 XL, 48 layers, shown only where the architecture matches.", "",
             "| dataset | student | seed | placement | items | layer (of L) | share > 0.6 at L | paper |",
             "|---|---|---|---|---|---|---|---|"]
    for r in summary.itertuples():
        layer = "never" if pd.isna(r.layer_80_06) else int(r.layer_80_06)
        paper = "" if pd.isna(r.paper_layer) else f"{int(r.paper_layer)} of 48"
        lines.append(f"| {r.dataset} | {r.student} | {r.seed} | {r.placement} | {r.items} | {layer} of {r.layers} "
                     f"| {r.final_share_06:.0%} | {paper} |")
    return "\n".join(lines) + "\n"


def analysis_files(groups: list[dict], lens_spec: dict, lens_name: str, label_format: str, title: str,
                   out_prefix: str, threads: int = 1, batch_size: int = 8) -> pd.DataFrame:
    """The `analysis` rule. Each group: dataset, student, seed, data (test Parquet), max_source, and per placement
    (kind) ``models``, ``predictions`` and ``lenses`` (a trained lens folder, or None for the logit lens).
    Writes ``<out_prefix>.parquet`` (item, model, layer, position, probability), ``.png``/``.pdf`` heatmaps,
    ``.md`` and ``.csv`` summaries."""
    from transformers import AutoTokenizer

    torch.set_num_threads(threads)
    frames, model_types = [], {}
    for g in groups:
        data = io.read_parquet(g["data"], required=["id"]).astype({"id": str}).set_index("id")
        preds = {p: io.read_parquet(g["predictions"][p], required=["id", "generated", "predicted_class",
                                                                     "gold_class"]).astype({"id": str})
                 for p in PLACEMENTS}
        ids = common_correct(preds)
        where = f"{g['dataset']} / {g['student']} / seed {g['seed']}"
        unknown = sorted(set(ids) - set(data.index))
        if unknown:
            raise ValueError(f"{where}: predicted ids {unknown[:3]} are not in {g['data']}: predictions and test "
                             f"data do not align")
        if not ids:
            raise ValueError(f"{where}: no test item is predicted correctly by every placement "
                             f"({', '.join(PLACEMENTS)}); nothing to analyse (collapsed models?)")
        log.info("%s: %d items predicted correctly by every placement", where, len(ids))
        for p in PLACEMENTS:
            tok = AutoTokenizer.from_pretrained(g["models"][p])
            model = load_causal_student(g["models"][p], "the layer-wise analysis")
            model.to("cuda" if torch.cuda.is_available() else "cpu")
            model_types[g["student"]] = model.config.model_type
            lens = lenses.load_lens(model, lens_spec["kind"], g["lenses"].get(p)).to(model.device).eval()
            generated = preds[p].set_index("id")["generated"]
            items = []
            for i in ids:
                row = data.loc[i].to_dict() | {"id": i}
                rationale = rationale_of(generated[i], i) if p == "cot_before" else None
                seq, start, label_pos = encode_item(tok, format_source(row), rationale,
                                                    label_string(row, label_format), g["max_source"])
                items.append({"id": i, "ids": seq, "start": start, "label_pos": label_pos})
            probs = label_probabilities(model, lens, tok, items, batch_size)
            frames.append(probs.assign(dataset=g["dataset"], student=g["student"], seed=int(g["seed"]),
                                       placement=p))
    df = pd.concat(frames, ignore_index=True)[COLUMNS]
    if not np.isfinite(df["probability"]).all():
        raise FloatingPointError("non-finite lens probabilities")
    summary = summarise(df, model_types, lens_spec["kind"])
    io.write_parquet(df, f"{out_prefix}.parquet")
    with io.atomic_path(f"{out_prefix}.csv") as tmp:
        summary.to_csv(tmp, index=False)
    with io.atomic_path(f"{out_prefix}.md") as tmp:
        tmp.write_text(summary_markdown(summary, title, lens_name))
    write_heatmaps(df, title, out_prefix)
    for r in summary.itertuples():
        log.info("%s / %s / seed %s, %s: %d items, 80%%/0.6 layer %s of %d", r.dataset, r.student, r.seed,
                 r.placement, r.items, r.layer_80_06, r.layers)
    return summary

