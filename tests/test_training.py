"""Fast unit tests of the fine-tuning pieces: encoding, collation, the validation split, checkpoint identity."""

import json

import pandas as pd
import pytest
import torch

from cotdistill.ablations import wrap_label
from cotdistill import precision, training
from cotdistill.io import write_parquet
from cotdistill.training import (Collator, OverlongTargetError, checkpoint_dir, encode, last_complete_checkpoint,
                                 marker_ends, run_fingerprint, split_validation)

from .conftest import gpt2_tokenizer

SOURCE = "Question: Where do you keep milk?\nChoices: A: oven; B: fridge\nAnswer:"
RATIONALE = "Milk must stay cold, and a fridge is the cold place in a kitchen where food is kept fresh."


def _targets(*targets: str) -> pd.DataFrame:
    rows = []
    for i, t in enumerate(targets):
        start = t.rfind(wrap_label("B")) + len("[FIN_LABEL] ")
        rows.append({"id": f"q{i}", "source": SOURCE, "target": t, "label_end": start + 1})
    return pd.DataFrame(rows)


def test_encode_masks_the_source_and_appends_eos():
    tok = gpt2_tokenizer()
    df = _targets(f"{wrap_label('B')} {RATIONALE}")
    enc, dropped = encode(tok, list(df["source"]), list(df["target"]), marker_ends(df), 512, 256)
    ids, labels = enc["input_ids"][0], enc["labels"][0]
    assert not dropped and enc["length"] == [len(ids)] and len(labels) == len(ids)
    assert tok.decode(ids) == SOURCE + " " + df["target"][0] + tok.eos_token
    learned = [t for t in labels if t != -100]
    assert tok.decode(learned) == " " + df["target"][0] + tok.eos_token  # loss on the target only
    assert labels[: len(ids) - len(learned)] == [-100] * (len(ids) - len(learned))


def test_encode_keeps_the_end_of_a_long_source():
    tok = gpt2_tokenizer()
    enc, _ = encode(tok, ["filler " * 300 + SOURCE], [wrap_label("B")], [len(wrap_label("B"))], 16, 64)
    learned = sum(t != -100 for t in enc["labels"][0])
    assert tok.decode(enc["input_ids"][0][: len(enc["input_ids"][0]) - learned]).endswith("Answer:")
    assert len(enc["input_ids"][0]) - learned == 16


def test_a_cut_source_keeps_its_task_prefix():
    tok = gpt2_tokenizer()
    enc, _ = encode(tok, ["predict: " + "filler " * 300 + SOURCE], [wrap_label("B")], [len(wrap_label("B"))], 16,
                    64, keep_prefix="predict: ")
    source = tok.decode(enc["input_ids"][0][:16])
    assert source.startswith("predict:") and source.endswith("Answer:") and "filler" in source
    with pytest.raises(ValueError, match="does not start with the task prefix 'explain: '"):
        encode(tok, [SOURCE], [wrap_label("B")], [len(wrap_label("B"))], 16, 64, keep_prefix="explain: ")


def test_a_cut_source_keeps_the_bos_its_tokenizer_adds():
    """A student whose tokenizer starts every text with BOS (Gemma, Llama) sees one at evaluation, which does not
    truncate: a source cut for training keeps it, with or without a task prefix."""
    from tokenizers.processors import TemplateProcessing

    tok = gpt2_tokenizer()
    tok._tokenizer.post_processor = TemplateProcessing(single="<|endoftext|> $A",
                                                       special_tokens=[("<|endoftext|>", tok.eos_token_id)])
    for prefix in ("", "predict: "):
        enc, _ = encode(tok, [prefix + "filler " * 300 + SOURCE], [wrap_label("B")], [len(wrap_label("B"))], 16,
                        64, keep_prefix=prefix)
        source = enc["input_ids"][0][:16]
        assert source[0] == tok.eos_token_id and tok.decode(source[1:]).startswith(prefix or "?")
        assert tok.decode(source).endswith("Answer:") and source.count(tok.eos_token_id) == 1


def test_rationale_after_the_label_may_be_cut_but_the_label_never():
    tok = gpt2_tokenizer()
    df = _targets(f"{wrap_label('B')} {RATIONALE}", f"{RATIONALE} {wrap_label('B')}")
    (after_end, before_end), budget = marker_ends(df), 16
    enc, dropped = encode(tok, [SOURCE], [df["target"][0]], [after_end], 512, budget)
    assert not dropped and tok.decode(enc["labels"][0][-budget:]).startswith(" [FIN_LABEL] B [FIN_LABEL]")
    with pytest.raises(OverlongTargetError, match=r"row id 'q1' needs \d+ tokens up to its closing \[FIN_LABEL\], "
                                                  r"more than training.max_target_tokens = 16"):
        encode(tok, [SOURCE], [df["target"][1]], [before_end], 512, budget, ids=["q1"])
    enc, dropped = encode(tok, [SOURCE] * 2, list(df["target"]), marker_ends(df), 512, budget, ids=["q0", "q1"],
                          overlong="drop")
    assert dropped == ["q1"] and len(enc["input_ids"]) == 1


def test_collator_pads_left_and_keeps_logits_over_the_target_span_only():
    rows = [{"input_ids": [5, 6, 7, 9], "labels": [-100, -100, 7, 9]}, {"input_ids": [8, 4], "labels": [-100, 4]}]
    batch = Collator(pad_id=0)(rows)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 9], [0, 0, 8, 4]]
    assert batch["labels"].tolist() == [[-100, -100, 7, 9], [-100, -100, -100, 4]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [0, 0, 1, 1]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3], [0, 0, 0, 1]]
    assert batch["logits_to_keep"] == 3  # the longest target (2 tokens) and the position that predicts its first
    right = Collator(pad_id=0, side="right")(rows)
    assert right["input_ids"].tolist() == [[5, 6, 7, 9], [8, 4, 0, 0]] and set(right) == {"input_ids", "labels",
                                                                                         "attention_mask"}
    first_token = Collator(pad_id=0)([{"input_ids": [3, 4], "labels": [3, 4]}])
    assert first_token["labels"].tolist() == [[-100, 4]]  # nothing precedes a row's first token
    fixed = Collator(pad_id=0, max_length=5)([{"input_ids": [1], "labels": [1]}])
    assert fixed["input_ids"].shape == torch.Size([1, 5])


def test_target_loss_on_kept_logits_equals_the_models_own_loss(tiny_gpt2):
    """GPT-2's learned absolute positions make this fail unless position ids skip the left padding."""
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2, dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    rows = []
    for n, t in [(9, 3), (14, 6), (6, 2), (11, 1)]:
        ids = torch.randint(0, 1000, (n,), generator=g).tolist()
        rows.append({"input_ids": ids, "labels": [-100] * (n - t) + ids[n - t:]})
    grads = []
    for batch, loss_of in ((Collator(0, side="right")(rows), lambda b: model(**b).loss),
                           (Collator(0)(rows), lambda b: training.target_loss(
                               model(**{k: v for k, v in b.items() if k != "labels"}), b["labels"]))):
        loss = loss_of(batch)
        loss.backward()
        grads.append((loss.detach(), model.transformer.h[0].mlp.c_fc.weight.grad.clone()))
        model.zero_grad()
    (full, g_full), (kept, g_kept) = grads
    assert torch.allclose(full, kept, atol=1e-5) and torch.allclose(g_full, g_kept, atol=1e-5)
    assert model(**{k: v for k, v in Collator(0)(rows).items() if k != "labels"}).logits.shape[1] == 7


def test_trainer_keeps_logits_for_models_that_take_positions(tiny_gpt2, tmp_path):
    targets = tmp_path / "targets.parquet"
    write_parquet(_targets(*[f"{RATIONALE} {wrap_label('B')}"] * 10).assign(
        label="B", label_start=0, task="mc"), targets)
    run = training.build_trainer({"source": "local", "path": str(tiny_gpt2)}, str(targets), tmp_path / "ckpt",
                                 {"validation_size": 2}, seed=0, label_first=False)
    assert run.trainer.data_collator.side == "left" and run.trainer.compute_loss_func is training.target_loss


def test_split_validation_same_ids_for_every_ablation_and_order():
    df = pd.DataFrame({"id": [f"r{i}" for i in range(50)], "target": range(50)})
    train, val = split_validation(df, 8, seed=0)
    assert len(val) == 8 and len(train) == 42 and not set(train["id"]) & set(val["id"])
    _, val_shuffled = split_validation(df.sample(frac=1, random_state=1), 8, seed=0)
    assert set(val_shuffled["id"]) == set(val["id"])  # row order does not matter
    assert split_validation(df, 100, seed=0)[1].shape[0] == 10  # at most a fifth is held out
    assert set(split_validation(df, 8, seed=1)[1]["id"]) != set(val["id"])


def _checkpoint(folder, step, state=True, text=None):
    ck = folder / f"checkpoint-{step}"
    ck.mkdir(parents=True)
    (ck / "model.safetensors").write_bytes(b"weights")
    if state:
        (ck / "trainer_state.json").write_text(text if text is not None else json.dumps({"global_step": step}))
    return ck


def test_incomplete_checkpoints_are_skipped_and_removed(tmp_path, caplog):
    good = _checkpoint(tmp_path, 10)
    _checkpoint(tmp_path, 20, state=False)  # killed before trainer_state.json was written
    _checkpoint(tmp_path, 30, text='{"global_step": 3')  # killed while writing it
    assert last_complete_checkpoint(tmp_path) == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-10"]
    assert caplog.text.count("skipping incomplete checkpoint") == 2
    assert last_complete_checkpoint(tmp_path / "nothing-here") is None


def test_checkpoint_dir_removes_other_configurations(tmp_path):
    _checkpoint(tmp_path / "aaaa", 10)
    _checkpoint(tmp_path / "bbbb", 10)
    assert checkpoint_dir(tmp_path, "bbbb") == tmp_path / "bbbb"
    assert [p.name for p in tmp_path.iterdir()] == ["bbbb"]


def test_run_fingerprint_follows_what_decides_training(tiny_gpt2, tmp_path):
    targets = tmp_path / "t.parquet"
    write_parquet(_targets(wrap_label("B")), targets)
    spec = {"source": "local", "path": str(tiny_gpt2)}
    settings = {"lr": 1e-3, "batch_size": 8}
    base = run_fingerprint(spec, str(targets), settings, 0, True, 0, 1)
    same = [run_fingerprint(spec, str(targets), {**settings, **change}, 0, True, 0, 1)
            for change in ({"logging_steps": 1}, {"eval_batch_size": 2}, {"save_total_limit": 9})]
    assert same == [base] * 3
    other = [run_fingerprint(spec, str(targets), {**settings, "lr": 2e-3}, 0, True, 0, 1),
             run_fingerprint(spec, str(targets), settings, 1, True, 0, 1),
             run_fingerprint(spec, str(targets), settings, 0, False, 0, 1),
             run_fingerprint(spec, str(targets), settings, 0, True, 0, 2)]
    assert base not in other and len(set(other)) == 4
    write_parquet(_targets(f"{wrap_label('B')} {RATIONALE}"), targets)  # new targets, same path
    assert run_fingerprint(spec, str(targets), settings, 0, True, 0, 1) != base


def test_validation_budget_is_the_longest_target_up_to_its_marker():
    import pandas as pd

    from cotdistill.targets import build_targets
    from cotdistill.training import validation_budget

    from .conftest import gpt2_tokenizer

    row = {"id": "q1", "task": "mcqa", "question": "q?", "answer_label": "B", "answer_text": "fridge",
           "choices": [{"label": "A", "text": "oven"}, {"label": "B", "text": "fridge"}]}
    tok = gpt2_tokenizer()
    filler = build_targets(pd.DataFrame([row]), None, "f", {"kind": "filler", "k": 3}, "letter", 0)
    need = len(tok(" " + filler["target"][0])["input_ids"])  # everything up to and including the closing marker
    assert validation_budget(tok, filler, 256) == need + 2
    assert validation_budget(tok, filler, 5) == 5


def test_auto_precision_follows_the_measured_matmul_rate(monkeypatch):
    """auto takes CPU bf16 only where it measures faster: native bf16 instructions alone do not make it so."""
    monkeypatch.setattr(precision.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    rates = {torch.float32: 300e9, torch.bfloat16: 160e9}
    monkeypatch.setattr(precision, "matmul_peak", lambda dtype: rates[dtype])
    assert not precision.use_bf16("auto") and precision.use_bf16("bf16") and not precision.use_bf16("fp32")
    assert training.resolved_precision({}) == {"precision": "fp32"}  # the fingerprint sees what is trained in
    assert training.resolved_precision({"precision": "bf16", "lr": 1}) == {"precision": "bf16", "lr": 1}
    rates[torch.bfloat16] = 600e9
    assert precision.use_bf16("auto")
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    assert not precision.use_bf16("auto")
    with pytest.raises(ValueError, match="evaluation.precision is bf16 but this machine has no bf16 support"):
        precision.use_bf16("bf16", key="evaluation.precision")


def test_matmul_peak_is_a_plausible_rate():
    assert 1e8 < precision.matmul_peak(torch.float32, n=256, reps=2) < 1e14
