"""Lenses on every student architecture, the tuned-lens trainer, and the layer-wise analysis."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from cotdistill import analysis, lens
from cotdistill.ablations import MARK
from cotdistill.io import read_parquet, write_parquet
from cotdistill.targets import build_targets, format_source

from .conftest import ROOT, build_tiny_gpt2, gpt2_tokenizer

VOCAB = 512


def tiny(arch: str):
    """A 3-layer random model of `arch` (tiny widths; the real classes, so the real module layout)."""
    import transformers as tr

    torch.manual_seed(0)
    common = {"vocab_size": VOCAB, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3,
              "num_attention_heads": 4, "num_key_value_heads": 2}
    if arch == "gpt2":
        return tr.GPT2LMHeadModel(tr.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=3, n_head=4)).eval()
    if arch == "llama":
        return tr.LlamaForCausalLM(tr.LlamaConfig(**common)).eval()
    if arch == "phi":
        return tr.PhiForCausalLM(tr.PhiConfig(**common)).eval()
    if arch == "gemma":
        return tr.Gemma3ForCausalLM(tr.Gemma3TextConfig(**common, head_dim=8, sliding_window=4)).eval()
    if arch == "gemma2":  # final logit soft-capping
        return tr.Gemma2ForCausalLM(tr.Gemma2Config(**common, head_dim=8, final_logit_softcapping=2.0)).eval()
    raise ValueError(arch)


ARCHS = ["gpt2", "llama", "phi", "gemma", "gemma2"]


@pytest.mark.parametrize("arch", ARCHS)
def test_lens_shapes_and_identity_at_the_last_layer(arch):
    model = tiny(arch)
    ids = torch.randint(0, VOCAB, (2, 7))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    states, logits = lens.residuals(model, ids, mask)
    assert len(states) == 4 and all(s.shape == (2, 7, 32) for s in states)
    # the hooks on the resolved layer stack see what transformers reports as hidden states (before the final norm)
    hidden = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    for ours, theirs in zip(states[:-1], hidden[:-1], strict=True):
        torch.testing.assert_close(ours, theirs)
    # the final norm and unembedding, resolved per architecture, turn the last block's output into the model's logits
    torch.testing.assert_close(lens.ResolvedUnembed(model)(states[-1]), logits, atol=1e-5, rtol=1e-4)
    tuned = lens.make_lens(model, "tuned")
    assert len(tuned) == 3 and tuned[0].weight.shape == (32, 32)
    # a fresh tuned lens is the logit lens (translators start at the identity)
    logit = lens.make_lens(model, "logit")
    torch.testing.assert_close(tuned(states[1], idx=1), logit(states[1], idx=1))
    assert tuned(states[0], idx=0).shape == (2, 7, VOCAB)


@pytest.mark.parametrize("arch", ["phi", "gemma"])
def test_tuned_lens_own_surgery_does_not_know_phi_or_gemma(arch):
    """Why `lens.ARCHITECTURES` exists: tuned-lens 0.2.0 cannot build its unembedding for these models."""
    from tuned_lens.nn import Unembed

    with pytest.raises(NotImplementedError):
        Unembed(tiny(arch))


def test_unknown_architecture_names_the_table():
    model = tiny("llama")
    model.config.model_type = "mystery"
    with pytest.raises(NotImplementedError, match="mystery.*ARCHITECTURES"):
        lens.resolve(model)


def _targets(n: int = 40) -> pd.DataFrame:
    from cotdistill.datasets import load_split

    data = load_split("csqa", {"loader": "csqa_dss", "path": str(ROOT / "data/dss/cqa"), "subsample": {"train": n}},
                      "train")
    rat = pd.DataFrame({"id": data["id"], "rationale": "people keep such things in a place where they can find it"})
    return build_targets(data, rat, "cot_before", {"kind": "cot_before"}, "text", 0)


PARAMS = {"steps": 15, "batch_size": 4, "lr": 1.0, "momentum": 0.9, "weight_decay": 1e-3, "heldout": 8,
          "positions_per_example": 0,
          "positions": "all"}


def test_trained_lens_lowers_heldout_kl():
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = gpt2_tokenizer()
    torch.manual_seed(0)  # larger initial weights than GPT-2's: layers that differ, so there is a gap to close
    config = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2, initializer_range=0.2)
    model = GPT2LMHeadModel(config)
    trained, log = lens.train_lens(model, tok, _targets(), PARAMS, seed=0)
    assert log["heldout_rows"] == 8 and log["train_rows"] == 32 and len(log["train_loss"]) == 15
    # the held-out KL is the mean over every held-out position, whatever the batches (of 4 rows, unequal lengths)
    rows = _targets().sample(frac=1.0, random_state=0).reset_index(drop=True)
    heldout = [(ids, keep) for _, ids, keep in lens.training_sequences(tok, rows, 512, 256, "all")[:8]]
    whole = lens.layer_kl(model, lens.make_lens(model, "tuned"), heldout, tok.eos_token_id, grad=False)
    assert log["heldout_kl_before"] == pytest.approx(whole.tolist(), rel=1e-4)
    assert log["heldout_kl_mean_after"] < 0.9 * log["heldout_kl_mean_before"]
    assert any(t.weight.abs().sum() > 0 for t in trained)


def test_lens_rule_saves_a_loadable_lens(tiny_gpt2, tmp_path):
    from transformers import AutoModelForCausalLM

    write_parquet(_targets(24), tmp_path / "targets.parquet")
    params = {"kind": "tuned", **PARAMS, "steps": 3}
    lens.lens_files(str(tiny_gpt2), str(tmp_path / "targets.parquet"), params, str(tmp_path / "lens"), seed=0)
    assert {p.name for p in (tmp_path / "lens").iterdir()} == {"params.pt", "config.json", "train.json"}
    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2)
    loaded = lens.load_lens(model, "tuned", str(tmp_path / "lens"))
    assert any(t.weight.abs().sum() > 0 for t in loaded)


def test_item_selection_keeps_only_items_every_placement_got_right():
    def preds(right: list[str]) -> pd.DataFrame:
        ids = ["a", "b", "c", "d"]
        return pd.DataFrame({"id": ids, "gold_class": "x", "predicted_class": ["x" if i in right else "y"
                                                                               for i in ids]})

    got = analysis.common_correct({"none": preds(["a", "b", "c"]), "cot_before": preds(["b", "c", "d"]),
                                   "cot_after": preds(["a", "b", "c", "d"])})
    assert got == ["b", "c"]


def test_first_confident_layer_needs_every_layer_above():
    rows = []
    for item in range(10):
        for layer, p in enumerate([0.1, 0.9, 0.2, 0.8, 0.95]):  # layer 1 is a false start, 3 is where it holds
            rows.append({"id": item, "layer": layer, "to_label": 0, "probability": p if item < 9 else 0.0})
            rows.append({"id": item, "layer": layer, "to_label": -1, "probability": 0.0})
    assert analysis.first_confident_layer(pd.DataFrame(rows)) == 3
    low = pd.DataFrame(rows).assign(probability=0.5)
    assert analysis.first_confident_layer(low) is None


def test_encode_item_ends_at_the_labels_first_token():
    from cotdistill.training import encode

    tok = gpt2_tokenizer()
    full = encode(tok, ["Question: where?\nAnswer:"], ["it is kept there [FIN_LABEL] front door [FIN_LABEL]"], [53],
                  512, 256)[0]["input_ids"][0]
    ids, start, label_pos = analysis.encode_item(tok, "Question: where?\nAnswer:", "it is kept there",
                                                 "front door", 512)
    assert len(ids) == label_pos + 1 and ids == full[:len(ids)]  # the fine-tune's own tokens, up to the label
    assert tok.decode(ids[label_pos]) == " front"
    assert tok.decode(ids[start:label_pos]) == " it is kept there [FIN_LABEL]"
    ids2, start2, label_pos2 = analysis.encode_item(tok, "Question: where?\nAnswer:", None, "front door", 512)
    assert tok.decode(ids2[start2:label_pos2]) == " [FIN_LABEL]"


def test_analysis_writes_parquet_heatmap_and_summary(tmp_path):
    """Three tiny models (one per placement) on items they 'predicted correctly'; the heatmap's data match the
    Parquet, and every position up to the label is there for every layer."""
    from cotdistill.datasets import load_split

    rows = load_split("csqa", {"loader": "csqa_dss", "path": str(ROOT / "data/dss/cqa"), "subsample": {"test": 6}},
                      "test")
    write_parquet(rows, tmp_path / "test.parquet")
    group = {"dataset": "d", "student": "s", "seed": 0, "data": str(tmp_path / "test.parquet"), "max_source": 512,
             "models": {}, "predictions": {}, "lenses": {}}
    for i, placement in enumerate(analysis.PLACEMENTS):
        model = build_tiny_gpt2(tmp_path / placement, seed=i)
        group["models"][placement] = str(model)
        gen = [f" a reason {MARK} {g} {MARK}" if placement == "cot_before" else f" {MARK} {g} {MARK}"
               for g in rows["answer_text"]]
        right = rows["answer_label"].tolist()
        if placement == "none":
            right[0] = "zz"  # item 0 wrong for one placement: it must not enter
        write_parquet(pd.DataFrame({"id": rows["id"], "generated": gen, "predicted_class": right,
                                    "gold_class": rows["answer_label"]}), tmp_path / f"{placement}.parquet")
        group["predictions"][placement] = str(tmp_path / f"{placement}.parquet")
    summary = analysis.analysis_files([group], {"kind": "logit"}, "logit", "text", "test", str(tmp_path / "an"))
    df = read_parquet(tmp_path / "an.parquet")
    assert set(df["id"]) == set(rows["id"][1:])
    assert set(summary["items"]) == {5} and set(summary["layers"]) == {2}
    assert df.groupby(["placement", "id"])["layer"].nunique().eq(3).all()
    assert (tmp_path / "an.png").stat().st_size > 0 and "| cot_after |" in (tmp_path / "an.md").read_text()
    before = df[df["placement"] == "cot_before"]
    assert before["to_label"].min() < df[df["placement"] == "none"]["to_label"].min()  # rationale positions first
    assert (df.groupby(["placement", "id"])["to_label"].max() == 0).all()
    # at the output layer, the probability is the model's own next-token probability of the label's first token
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(group["models"]["none"])
    item = rows.iloc[1].to_dict()
    ids, _, label_pos = analysis.encode_item(gpt2_tokenizer(), format_source(item), None, item["answer_text"], 512)
    with torch.no_grad():
        p = model(torch.tensor([ids])).logits[0, label_pos - 1].softmax(-1)[ids[label_pos]].item()
    none = df[(df["placement"] == "none") & (df["id"] == item["id"])]
    assert none.loc[(none["layer"] == 2) & (none["to_label"] == 0), "probability"].item() == pytest.approx(p, rel=1e-4)
    assert len(none) == 3 * (len(gpt2_tokenizer()(" [FIN_LABEL]")["input_ids"]) + 1)  # layers x positions
    grid = analysis.heatmap_grid(before)
    expected = before[(before["layer"] == 1) & (before["to_label"] == 0)]["probability"].mean()
    assert grid.loc[1, 0] == pytest.approx(expected)


def test_position_subsample_is_seeded_per_example_and_epoch():
    seq = ("id-1", list(range(30)), [t >= 10 for t in range(30)])
    a = lens.subsample(seq, 5, seed=0, epoch=1)
    assert a == lens.subsample(seq, 5, seed=0, epoch=1) and sum(a[1]) == 5
    assert all(t >= 10 for t, k in enumerate(a[1]) if k)
    assert a != lens.subsample(seq, 5, seed=0, epoch=2)
    assert a != lens.subsample(("id-2", *seq[1:]), 5, seed=0, epoch=1)
    assert lens.subsample(seq, 0, seed=0, epoch=1) == seq[1:] == lens.subsample(seq, 25, 0, 1)
