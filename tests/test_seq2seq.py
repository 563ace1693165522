"""Encoder-decoder (T5) students on the shared path: a model built from its config, its batches, loss, greedy decoding
and candidate scoring, each against what the model computes on its own."""

import pytest
import torch

from cotdistill.evaluation import greedy_seq2seq, seq2seq_log_probs
from cotdistill.models import build_from_config, load_student
from cotdistill.training import Seq2SeqCollator, target_loss

from .conftest import GPT2_TOKENIZER

SPEC = {"source": "scratch", "architecture": "t5", "seed": 3,
        "tokenizer": {"source": "local", "path": str(GPT2_TOKENIZER)},
        "config": {"d_model": 32, "d_ff": 64, "d_kv": 16, "num_layers": 1, "num_heads": 2, "dropout_rate": 0.0}}


@pytest.fixture(scope="module")
def t5():
    model, tok = build_from_config(SPEC)
    return model.eval(), tok


def test_a_scratch_model_takes_its_tokenizer_and_seed(t5, tmp_path):
    model, tok = t5
    assert model.config.is_encoder_decoder and model.config.vocab_size == len(tok)
    assert model.config.decoder_start_token_id == model.config.pad_token_id == tok.pad_token_id == tok.eos_token_id
    again, _ = build_from_config(SPEC)
    other, _ = build_from_config({**SPEC, "seed": 4})
    assert torch.equal(again.shared.weight, model.shared.weight)
    assert not torch.equal(other.shared.weight, model.shared.weight)
    model.save_pretrained(tmp_path)  # what convert_student writes; load_student picks the seq2seq class
    assert type(load_student(str(tmp_path))).__name__ == "T5ForConditionalGeneration"


def test_batches_shift_labels_as_t5_does_and_the_loss_is_the_models_own(t5):
    model, tok = t5
    features = [{"input_ids": tok(s)["input_ids"], "labels": tok(" " + t)["input_ids"] + [tok.eos_token_id]}
                for s, t in (("where is milk?", "fridge"), ("a much longer question here?", "in the cold fridge"))]
    batch = Seq2SeqCollator(tok.pad_token_id, model.config.decoder_start_token_id)(features)
    assert torch.equal(batch["decoder_input_ids"], model._shift_right(batch["labels"]))
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    own = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    ours = model(**inputs)
    assert target_loss(ours, batch["labels"]).item() == pytest.approx(own.loss.item(), rel=1e-5)
    # at padded decoder positions too, which `mi_paper` pools over: no decoder mask, as the authors' collator
    assert batch["labels"].eq(-100).any() and torch.allclose(ours.logits, own.logits, atol=1e-6)


def test_greedy_decoding_is_generates_cut_where_each_row_finished(t5):
    model, tok = t5
    enc = tok(["where is milk?", "a much longer question about milk here?"], return_tensors="pt", padding=True)
    ref = model.generate(**enc, max_new_tokens=8, do_sample=False, num_beams=1, min_new_tokens=8)[:, 1:].tolist()
    assert greedy_seq2seq(model, enc["input_ids"], enc["attention_mask"], 8, lambda gen: len(gen) >= 3) == [
        r[:3] for r in ref]
    rows = greedy_seq2seq(model, enc["input_ids"], enc["attention_mask"], 8, lambda gen: False)
    assert all(row == r[:len(row)] and row for row, r in zip(rows, ref, strict=True))


def test_candidate_scores_equal_the_decoders_own_log_probs(t5):
    model, tok = t5
    sources = ["where is milk?", "is ice cold?"]
    conts = [["[FIN_LABEL] fridge [FIN_LABEL]", "[FIN_LABEL] oven [FIN_LABEL]"], ["yes", "no", "maybe so"]]
    got = seq2seq_log_probs(model, tok, sources, conts, batch_size=1, max_tokens=4)
    for src, cs, scores in zip(sources, conts, got, strict=True):
        for c, value in zip(cs, scores, strict=True):
            labels = torch.tensor([tok(" " + c, add_special_tokens=False)["input_ids"]])
            with torch.no_grad():
                out = model(**tok([src], return_tensors="pt"), labels=labels)
            assert value == pytest.approx(-out.loss.item() * labels.shape[1], abs=1e-4)
