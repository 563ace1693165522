"""Distilling Step-by-Step multi-task batches and loss on tiny random decoder-only and encoder-decoder students."""

import pandas as pd
import pytest
import torch

from cotdistill import training
from cotdistill.ablations import AUX_LOSS_NAMES
from cotdistill.io import write_parquet
from cotdistill.losses import AUX_LOSSES, mi
from cotdistill.multitask import PairCollator, multitask_loss
from cotdistill.targets import build_targets
from cotdistill.training import Collator


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


def test_multitask_ablation_trains_both_tasks_through_the_trainer(tiny_gpt2, tmp_path):
    assert set(AUX_LOSS_NAMES) == set(AUX_LOSSES.names())
    rows = [{"id": f"q{i}", "task": "mcqa", "question": f"Where is thing {i}?", "answer_label": "B",
             "answer_text": "fridge", "choices": [{"label": "A", "text": "oven"}, {"label": "B", "text": "fridge"}]}
            for i in range(10)]
    rationales = pd.DataFrame({"id": [r["id"] for r in rows], "rationale": [f"cold goes in {i}" for i in range(10)]})
    spec = {"kind": "multitask", "aux": "mi"}
    targets = tmp_path / "targets.parquet"
    write_parquet(build_targets(pd.DataFrame(rows), rationales, "dss_mi", spec, "letter", seed=0), targets)
    weights = {"predict_weight": 0.5, "explain_weight": 0.3, "aux_weight": 0.2}
    run = training.build_trainer({"source": "local", "path": str(tiny_gpt2)}, str(targets), tmp_path / "ckpt",
                                 {"validation_size": 2, "batch_size": 4, "eval_every": 1000,
                                  "multitask": {"aux": "mi", "reduction": "max", "predict_prefix": "predict: ",
                                                "explain_prefix": "explain: ", **weights}},
                                 seed=0, label_first=True)
    assert isinstance(run.trainer.data_collator, PairCollator) and run.trainer.data_collator.side == "left"
    result = run.trainer.train()
    terms = run.trainer.term_means()
    assert set(terms) == {"predict", "explain", "aux"} and all(v > 0 for v in terms.values())
    assert result.training_loss == pytest.approx(sum(weights[f"{k}_weight"] * v for k, v in terms.items()), rel=1e-4)
    # both tasks' real tokens are counted (the batch has no top-level input_ids)
    assert run.trainer.state.num_input_tokens_seen == sum(run.trainer.train_dataset["length"])
    logged = [h for h in run.trainer.state.log_history if "loss_aux" in h]
    assert logged or run.trainer.state.global_step < run.trainer.args.logging_steps
