"""Distilling Step-by-Step multi-task batches and loss on tiny random decoder-only and encoder-decoder students."""

import pandas as pd
import pytest
import torch

from cotdistill import training
from cotdistill.ablations import AUX_LOSS_NAMES
from cotdistill.io import write_parquet
from cotdistill.losses import AUX_LOSSES, mi
from cotdistill.multitask import PairCollator, multitask_loss, shared_length
from cotdistill.targets import build_targets
from cotdistill.training import Collator

from .test_lens import tiny


def _features(n: int = 3) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        src = torch.randint(10, 500, (4 + i,), generator=g).tolist()
        label, rationale = [600 + i, 601], torch.randint(10, 500, (6 + 2 * i,), generator=g).tolist()
        out.append({"pred_input_ids": [1, 2] + src + label, "pred_labels": [-100] * (2 + len(src)) + label,
                    "expl_input_ids": [3, 4] + src + rationale, "expl_labels": [-100] * (2 + len(src)) + rationale})
    return out


def test_both_tasks_of_an_example_share_its_batch_row():
    batch = PairCollator(pad_id=0)(_features())
    for i, f in enumerate(_features()):
        for task in ("pred", "expl"):
            row = batch[task]["input_ids"][i][batch[task]["attention_mask"][i].bool()].tolist()
            assert row == f[f"{task}_input_ids"]
    assert batch["pred"]["logits_to_keep"] == 3 and batch["expl"]["logits_to_keep"] == 11


def _tagged_after(n: int = 4) -> list[dict]:
    """Pairs whose task tags follow the input (the input first, then a tag of 2 or 1 tokens, then the target)."""
    g = torch.Generator().manual_seed(1)
    out = []
    for i in range(n):
        src = torch.randint(10, 400, (3 + 3 * i,), generator=g).tolist()
        label, rationale = [500 + i, 501], torch.randint(10, 400, (5 + 2 * i,), generator=g).tolist()
        out.append({"pred_input_ids": src + [7, 8] + label, "pred_labels": [-100] * (len(src) + 2) + label,
                    "expl_input_ids": src + [9] + rationale, "expl_labels": [-100] * (len(src) + 1) + rationale})
    return out


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gemma"])  # gemma: sliding-window layers, window 4
def test_inputs_both_tasks_begin_with_are_read_once_with_the_same_loss_and_gradients(arch):
    assert set(PairCollator(pad_id=0, share=True)(_features())) == {"pred", "expl"}  # the DSS prefixes open them
    features = _tagged_after()
    # the whole input, short of the token before the explain task's first target (its 1-token tag follows it)
    assert [shared_length(f) for f in features] == [3, 6, 9, 12]
    assert set(PairCollator(pad_id=0)(features)) == {"pred", "expl"}  # packing is asked for (training: by the tags)
    for wrong in ({"side": "right"}, {"start_id": 0}):  # right padding or an encoder-decoder cannot be packed
        with pytest.raises(ValueError, match="share"):
            PairCollator(pad_id=0, share=True, **wrong)
    packed = PairCollator(pad_id=0, share=True)(features)["packed"]
    # 12 shared columns, then predict (its tag's 2 tokens and the label's 2) and explain (its tag and rationale)
    assert packed["input_ids"].shape == (4, 12 + 4 + 12) and packed["pred_labels"].shape == (4, 4)
    assert packed["position_ids"][0, 12:16].tolist() == [3, 4, 5, 6]  # rows go on where their shared part ends
    assert packed["position_ids"][0, 16:19].tolist() == [3, 4, 5]  # and so does the explain task
    allowed = packed["allowed"][0, 0]
    assert allowed[16, 9:12].all() and not allowed[16, 12:16].any()  # explain sees the input, not the predict task
    assert not allowed[12, :9].any() and not allowed[12, 13:].any()  # row 0's input is 3 tokens: 9 left pads
    model = tiny(arch)  # eval mode: no dropout, so both layouts see the same function
    src = [11, 12, 13, 14, 15]  # one row whose inputs are the same up to the targets, one that shares nothing
    features = features + [{"pred_input_ids": src + [501], "pred_labels": [-100] * 5 + [501],
                            "expl_input_ids": src + [21, 22], "expl_labels": [-100] * 5 + [21, 22]},
                           {"pred_input_ids": [7] + src + [501], "pred_labels": [-100] * 6 + [501],
                            "expl_input_ids": [9] + src + [21], "expl_labels": [-100] * 6 + [21]}]
    assert [shared_length(f) for f in features[-2:]] == [4, 0]  # the last input token predicts each first target
    assert "packed" in PairCollator(pad_id=0, share=True)(features)
    for aux in ("none", "mi", "kl"):
        results = []
        for share in (False, True):
            model.zero_grad()
            loss, parts = multitask_loss(model, PairCollator(pad_id=0, share=share)(features), (0.5, 0.5, 0.1), aux)
            loss.backward()
            results.append((parts, torch.cat([p.grad.flatten() for p in model.parameters()])))
        (unshared, g0), (shared, g1) = results
        assert shared == pytest.approx(unshared, rel=1e-5, abs=1e-6), aux
        assert torch.allclose(g0, g1, atol=1e-6) and g0.abs().max() > 1e-3, aux


def test_decoder_only_loss_is_the_weighted_sum_of_its_parts(tiny_gpt2):
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2, dtype=torch.float32)
    batch = PairCollator(pad_id=0)(_features())
    loss, parts = multitask_loss(model, batch, (0.5, 0.5, 0.1), "mi")
    own = {}
    for task in ("pred", "expl"):
        right = Collator(0, side="right")(
            [{"input_ids": f[f"{task}_input_ids"], "labels": f[f"{task}_labels"]} for f in _features()])
        own[task] = model(**right)
        assert own[task].loss.item() == pytest.approx(parts["predict" if task == "pred" else "explain"], rel=1e-5)

    def target_logits(task):  # full logits restricted to the positions that predict target tokens
        right = Collator(0, side="right")(
            [{"input_ids": f[f"{task}_input_ids"], "labels": f[f"{task}_labels"]} for f in _features()])
        keep = right["labels"][:, 1:].ne(-100)
        logits = own[task].logits[:, :-1]
        width = int(keep.sum(1).max())
        out, mask = torch.zeros(len(keep), width, logits.shape[-1]), torch.zeros(len(keep), width, dtype=torch.bool)
        for i in range(len(keep)):
            n = int(keep[i].sum())
            out[i, :n], mask[i, :n] = logits[i][keep[i]], True
        return out, mask

    direct = mi(*target_logits("pred"), *target_logits("expl"))
    assert parts["aux"] == pytest.approx(direct.item(), rel=1e-4)
    assert loss.item() == pytest.approx(0.5 * parts["predict"] + 0.5 * parts["explain"] + 0.1 * parts["aux"],
                                        rel=1e-5)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_encoder_decoder_student_takes_the_same_path():
    from transformers import T5Config, T5ForConditionalGeneration
    torch.manual_seed(0)
    config = T5Config(vocab_size=700, d_model=16, d_ff=32, d_kv=8, num_layers=1, num_heads=2,
                      decoder_start_token_id=0, pad_token_id=0, dropout_rate=0.0)
    model = T5ForConditionalGeneration(config)
    features = [{"pred_input_ids": f["pred_input_ids"][:-2], "pred_labels": f["pred_input_ids"][-2:],
                 "expl_input_ids": f["expl_input_ids"], "expl_labels": f["expl_input_ids"][-6:]}
                for f in _features()]
    batch = PairCollator(pad_id=0, start_id=0)(features)
    assert batch["pred"]["labels"].shape == (3, 2) and batch["expl"]["labels"].shape == (3, 6)
    loss, parts = multitask_loss(model, batch, (0.5, 0.5, 0.1), "mi_paper")
    pred = batch["pred"]  # the model's own loss, decoder inputs shifted from the labels by the model itself
    own = model(input_ids=pred["input_ids"], attention_mask=pred["attention_mask"], labels=pred["labels"]).loss
    assert parts["predict"] == pytest.approx(own.item(), rel=1e-5)
    loss.backward()
    assert torch.isfinite(loss) and model.shared.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("tags", ["before", "after"])
def test_multitask_ablation_trains_both_tasks_through_the_trainer(tiny_gpt2, tmp_path, tags):
    assert set(AUX_LOSS_NAMES) == set(AUX_LOSSES.names())
    rows = [{"id": f"q{i}", "task": "mcqa", "question": f"Where is thing {i}?", "answer_label": "B",
             "answer_text": "fridge", "choices": [{"label": "A", "text": "oven"}, {"label": "B", "text": "fridge"}]}
            for i in range(10)]
    rationales = pd.DataFrame({"id": [r["id"] for r in rows], "rationale": [f"cold goes in {i}" for i in range(10)]})
    framing = {"predict_prefix": "predict: ", "explain_prefix": "explain: "} if tags == "before" else {
        "predict_prefix": "", "explain_prefix": "", "predict_suffix": "\npredict:", "explain_suffix": "\nexplain:"}
    spec = {"kind": "multitask", "aux": "mi", **framing}
    targets = tmp_path / "targets.parquet"
    built = build_targets(pd.DataFrame(rows), rationales, "dss_mi", spec, "letter", seed=0)
    assert built["source"][0].endswith("fridge\nAnswer:\npredict:") if tags == "after" else built["source"][
        0].startswith("predict: Question:")
    write_parquet(built, targets)
    weights = {"predict_weight": 0.5, "explain_weight": 0.3, "aux_weight": 0.2}
    run = training.build_trainer({"source": "local", "path": str(tiny_gpt2)}, str(targets), tmp_path / "ckpt",
                                 {"validation_size": 2, "batch_size": 4, "eval_every": 1000,
                                  "multitask": {"aux": "mi", "reduction": "max", **framing, **weights}},
                                 seed=0, label_first=True)
    assert isinstance(run.trainer.data_collator, PairCollator) and run.trainer.data_collator.side == "left"
    result = run.trainer.train()
    terms = run.trainer.term_means()
    assert set(terms) == {"predict", "explain", "aux"} and all(v > 0 for v in terms.values())
    assert result.training_loss == pytest.approx(sum(weights[f"{k}_weight"] * v for k, v in terms.items()), rel=1e-4)
    # both tasks' real tokens are counted (the batch has no top-level input_ids), an input both read once, as each
    # example's length says (length-grouped batches and the cost report count what it costs)
    data = run.trainer.train_dataset
    shared = sum(shared_length(f) for f in data)
    assert (shared > 0) == (tags == "after")
    assert data["length"] == [len(f["pred_input_ids"]) + len(f["expl_input_ids"]) - (shared_length(f) if shared else 0)
                              for f in data]
    assert run.trainer.state.num_input_tokens_seen == sum(data["length"])
    logged = [h for h in run.trainer.state.log_history if "loss_aux" in h]
    assert logged or run.trainer.state.global_step < run.trainer.args.logging_steps


def test_attention_bias_is_built_on_its_mask_device():
    """Training moves the packed mask to the GPU before the bias is built (`pair_outputs`); "meta" stands in."""
    from types import SimpleNamespace

    from cotdistill.evaluation import attention_bias
    allowed = torch.ones((1, 1, 3, 3), dtype=torch.bool, device="meta")
    position = torch.arange(3, device="meta")[None]
    bias = attention_bias(SimpleNamespace(), allowed, position, position, torch.float32, "meta")
    assert bias.device.type == "meta" and bias.shape == (1, 1, 3, 3)
