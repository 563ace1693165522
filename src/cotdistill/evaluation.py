"""Greedy evaluation of a fine-tuned student: stop at the closing marker, parse the label, score it honestly.

Every accuracy comes with its Wilson 95% interval, the majority-class rate of the gold labels, the chance rate and
a `collapsed` flag for a model that gives one answer to most items; unparsed outputs count as wrong. Multiple-choice
answers are scored as choice letters (whatever the label format), NLI answers as relations, and SVAMP answers by the
value of their equation (a syntax-tree evaluator, never eval): ``( 84 / 2 )`` and ``( 84.0 / 2.0 )`` agree.
Throughput goes to a separate ``.speed.json`` so the eval JSON is byte-identical across reruns with one seed.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import ablations, calibration, io
from .datasets import COMMON_COLUMNS, eval_equation
from .defaults import EVALUATION
from .models import load_student
from .precision import use_bf16
from .stats import wilson
from .targets import candidate_labels, format_source, label_string

log = logging.getLogger(__name__)

COLLAPSE_SHARE = 0.8  # one predicted label for at least this share of items: the model has learned nothing
CLOSING = " " + ablations.MARK  # what follows a label in targets; calibration scores its first token
_LABEL_RE = re.compile(re.escape(ablations.MARK) + r"\s*(.*?)\s*" + re.escape(ablations.MARK), re.S | re.I)


def closing_ids(tokenizer) -> frozenset[int]:
    """Ids of the tokens that hold the marker's last character (as text or as a byte-fallback piece): only such a
    token can complete a marker."""
    last = ablations.MARK[-1]
    byte = f"<0X{ord(last):02X}>"
    tokens = tokenizer.convert_ids_to_tokens(range(len(tokenizer)))
    tokens = [t.decode("latin-1") if isinstance(t, bytes) else t for t in tokens]  # tiktoken-style vocabularies
    return frozenset(i for i, t in enumerate(tokens) if t is not None and (last in t or t.upper() == byte))


def closes_marker(tokenizer, generated: list[int], closing: frozenset[int], count: int = 2) -> bool:
    """Whether a row's generated text holds `count` markers (the closing one after the label). Decoded only when
    its newest token is in `closing` (`closing_ids`): the count can only reach `count` at such a token."""
    return generated[-1] in closing and tokenizer.decode(generated, skip_special_tokens=True).count(
        ablations.MARK) >= count


def normalise(label: str) -> str:
    return " ".join(label.strip().strip(".()").lower().split())


def extract_label(text: str) -> str | None:
    """The text between the first pair of markers, stripped; None if there is no pair."""
    m = _LABEL_RE.search(text)
    return m.group(1).strip() if m else None


def parse_label(text: str) -> str | None:
    """The label between the first pair of markers, tolerant of whitespace and case; None if absent."""
    label = extract_label(text)
    return None if label is None else normalise(label)


def equation_class(equation: str) -> str:
    """An equation's value as a class string (equal values, equal strings); ``<invalid>`` if it is no equation."""
    try:
        return f"{round(eval_equation(equation), 6) + 0.0:.12g}"  # + 0.0: -0.0 reads as 0
    except ValueError:
        return "<invalid>"


def same_label(predicted: str | None, gold: str, task: str) -> bool:
    """Whether an extracted label names the gold one: by value for equations, by normalised text otherwise."""
    if predicted is None:
        return False
    if task == "math":
        return equation_class(predicted) == equation_class(gold) != "<invalid>"
    return normalise(predicted) == normalise(gold)


def label_budget(tokenizer, labels: list[str], margin: int = 2) -> int:
    """New tokens a label-first target needs: the longest tokenized ``[FIN_LABEL] label [FIN_LABEL]``."""
    return max(len(tokenizer(" " + ablations.wrap_label(lab), add_special_tokens=False)["input_ids"])
               for lab in labels) + margin


def answer_budget(tokenizer, rows: list[dict], label_format: str) -> int:
    """New tokens a label-first model needs on `rows`: the longest candidate label between its markers."""
    return label_budget(tokenizer, sorted({lab for r in rows for lab in candidate_labels(r, label_format)}
                                          | {label_string(r, label_format) for r in rows}))


def generate(model, tokenizer, sources: list[str], max_new_tokens: int, batch_size: int = 16,
             stop_at_marker: bool = True, desc: str = "generate", draft: str | None = None,
             return_raw: bool = False, candidates: list[list[str]] | None = None,
             candidates_after: Callable[[int, list[int]], tuple[int, list[list[int]]] | None] | None = None,
             scores: dict[int, list[float]] | None = None) -> list[str] | tuple[list[str], list[str]]:
    """Greedy continuations of `sources`, batched with left padding, sorted by length to pad little; a row ends at
    EOS (the generation config's and the tokenizer's, which training appends to every target), at the closing
    marker (`stop_at_marker`) or after `max_new_tokens`. `draft`: text every continuation is expected to start
    with (the opening marker, for label-first models), verified in the prompt's forward pass (`greedy`).
    `candidates`: per source, the labels it admits; once a row has written the start of one of them between
    markers, the rest of it up to the closing marker is offered as a draft for the next pass, so a label-first
    model usually answers in two forward passes. Drafts are verified, so neither changes the text. A model with
    sliding-window attention (Gemma 3) takes no drafts: its window counts cache entries, rejected ones included.
    `return_raw` also returns each continuation decoded with its special tokens (a filler student's unk tokens).
    ``candidates_after(i, generated)`` may name, for source i once its row is done, how many generated ids form
    the context of its candidates and the candidates' token ids after it: the row's cache is kept as it leaves, they
    are scored over it once the batch is done (`score_in_cache`), and `scores` is filled with their
    log-probabilities by source index. Decoder-only students only: encoder-decoders and sliding-window models
    (whose cache drops columns) leave `scores` empty.
    An encoder-decoder student decodes after its encoder's pass over the source (`greedy_seq2seq`; no drafts)."""
    seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))
    tokenizer.padding_side = "right" if seq2seq else "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    out: list[str] = [""] * len(sources)
    raw: list[str] = [""] * len(sources)
    device = next(model.parameters()).device
    finished = stop_rule(model, tokenizer, stop_at_marker)
    if getattr(model.config, "sliding_window", None):
        draft, candidates = None, None  # rejected draft entries stay in the cache and would narrow the window
    if (candidates_after is None) != (scores is None):
        raise ValueError("generate: candidates_after and scores go together")
    score_done = candidates_after is not None and not seq2seq and not getattr(model.config, "sliding_window", None)
    pad = tokenizer.pad_token_id
    draft_ids = target_prefix_ids(tokenizer, draft) if draft else []
    marked = [[tokenizer(" " + ablations.wrap_label(c), add_special_tokens=False)["input_ids"] for c in cands]
              for cands in candidates] if candidates is not None and not seq2seq else None

    for start in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch"):
        idx = order[start:start + batch_size]
        enc = tokenizer([sources[i] for i in idx], return_tensors="pt", padding=True).to(device)

        def propose(row: int, gen: list[int], idx: list[int] = idx) -> list[int]:
            """The rest of the first candidate this row's text is a proper prefix of."""
            return next((c[len(gen):] for c in marked[idx[row]] if len(c) > len(gen) and c[:len(gen)] == gen), [])

        cached: dict[int, CachedRow] = {}

        def on_done(done: list[tuple[int, int, list[int]]], cache, mask: torch.Tensor, idx: list[int] = idx,
                    prompt: list[int] = enc["attention_mask"].sum(-1).tolist(), cached: dict = cached) -> None:
            """Keeps the cache of each row leaving the batch whose candidates `candidates_after` names."""
            for j, row, gen in done:
                found = candidates_after(idx[row], gen)
                if found is not None and 0 < found[0] <= len(gen):  # all generated ids but the last were fed
                    shared, seqs = found
                    cached[idx[row]] = CachedRow.take(cache, mask, j, prompt[row] + shared - 1, gen[shared - 1], seqs)

        rows = greedy_seq2seq(model, enc["input_ids"], enc["attention_mask"], max_new_tokens, finished) if seq2seq \
            else greedy(model, enc["input_ids"], enc["attention_mask"], max_new_tokens, finished, draft_ids,
                        propose if marked is not None else None, on_done if score_done else None)
        if cached:  # the batch's candidates, scored over the kept caches
            scores.update(zip(cached, score_in_cache(model, list(cached.values()), pad), strict=True))
        for i, text, full in zip(idx, tokenizer.batch_decode(rows, skip_special_tokens=True),
                                 tokenizer.batch_decode(rows, skip_special_tokens=False), strict=True):
            out[i], raw[i] = text, full
    return (out, raw) if return_raw else out


def stop_rule(model, tokenizer, stop_at_marker: bool = True) -> Callable[[list[int]], bool]:
    """Whether a row's generated ids are done: EOS (the generation config's and the tokenizer's, which training
    appends to every target) or, with `stop_at_marker`, the closing marker."""
    closing = closing_ids(tokenizer) if stop_at_marker else None
    eos = model.generation_config.eos_token_id
    eos = (set(eos if isinstance(eos, list) else [eos]) | {tokenizer.eos_token_id}) - {None}

    def finished(gen: list[int]) -> bool:
        return gen[-1] in eos or (closing is not None and closes_marker(tokenizer, gen, closing))

    return finished


def target_prefix_ids(tokenizer, text: str) -> list[int]:
    """The ids a target starting with `text` starts with, as training tokenizes targets
    (`ablations.target_text`): the tokens of `text` that stay the same whatever follows it."""
    alone = tokenizer(ablations.target_text(tokenizer, text), add_special_tokens=False)["input_ids"]
    followed = tokenizer(ablations.target_text(tokenizer, text) + " x", add_special_tokens=False)["input_ids"]
    pairs = enumerate(zip(alone, followed, strict=False))
    n = next((i for i, (a, b) in pairs if a != b), min(len(alone), len(followed)))
    return alone[:n]


@torch.inference_mode()
def greedy(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int,
           finished: Callable[[list[int]], bool], draft: list[int] | None = None,
           propose: Callable[[int, list[int]], list[int]] | None = None,
           on_done: Callable[[list[tuple[int, int, list[int]]], object, torch.Tensor], None] | None = None
           ) -> list[list[int]]:
    """Greedy decoding of a left-padded batch that drops each row from the batch (and its KV cache) once
    `finished(generated_ids)` says so. `model.generate` keeps finished rows in the batch until every row is done,
    so one rationale that never closes its marker made its whole batch decode all 256 steps.

    Drafts are verified, never assumed (speculative decoding with greedy acceptance, so the text is greedy
    decoding's): `draft` (token ids every row is expected to generate first) goes into the prompt's forward pass,
    and ``propose(row, generated)`` may offer a row more tokens after any pass, fed behind its last token in the
    next one. Each row keeps the longest prefix of its draft that matches the argmax at every position, plus the
    argmax after it; rejected positions stay in the cache but are masked out (as left padding is), so rows accept
    different lengths in one pass. A draft that greedy decoding would produce costs that one pass instead of a step
    per token. Plain argmax: the logits processors a `generation_config` may set (repetition penalty and the like)
    are not applied, as the students here set none.

    ``on_done(done, cache, mask)`` sees the rows that finished in a pass before they leave, as ``(j, row,
    generated)``: j their index in `cache` and `mask`, whose real columns hold, in order, the row's prompt and at
    least every generated token but the last (accepted draft tokens past a stop may follow), so a caller can still
    score after what they wrote (`CachedRow`).
    """
    from transformers import DynamicCache

    n, prompt_len = input_ids.shape
    if max_new_tokens <= 0:
        return [[] for _ in range(n)]
    draft = list(draft or [])[:max_new_tokens - 1]
    ids = torch.cat([input_ids, input_ids.new_tensor(draft).expand(n, -1)], -1) if draft else input_ids
    mask = torch.cat([attention_mask, attention_mask.new_ones(n, len(draft))], -1) if draft else attention_mask
    positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)  # as generate builds them
    cache = DynamicCache(config=model.config)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                   use_cache=True, logits_to_keep=len(draft) + 1).logits
    window = prompt_len - 1  # cache index of this pass's first verified token (the last prompt token)
    last_pos = positions[:, window]  # position of each row's newest accepted token in the cache
    fed = [draft] * n  # the draft tokens each row was given in this pass
    generated: list[list[int]] = [[] for _ in range(n)]
    alive = list(range(n))
    while True:
        guess = logits.argmax(-1).tolist()
        keep, taken = [], []
        for j, row in enumerate(alive):
            d = fed[j]
            take = next((k for k in range(len(d)) if guess[j][k] != d[k]), len(d))
            taken.append(take)
            for token in d[:take] + [guess[j][take]]:
                generated[row].append(token)
                if finished(generated[row]) or len(generated[row]) >= max_new_tokens:
                    break
            else:
                keep.append(j)
        for j, take in enumerate(taken):  # rejected draft positions leave attention
            mask[j, window + 1 + take:] = 0
        if on_done is not None and len(keep) < len(alive):
            staying = set(keep)
            on_done([(j, row, generated[row]) for j, row in enumerate(alive) if j not in staying], cache, mask)
        if not keep:
            return generated
        last_pos = last_pos + torch.tensor(taken, device=last_pos.device)
        if len(keep) < len(alive):
            sel = torch.tensor(keep, device=mask.device)
            cache.batch_select_indices(sel)
            alive, mask, last_pos = [alive[j] for j in keep], mask[sel], last_pos[sel]
        room = [max_new_tokens - len(generated[row]) - 1 for row in alive]
        fed = [(propose(row, generated[row]) if propose else [])[:r] for row, r in zip(alive, room, strict=True)]
        width = 1 + max(map(len, fed))
        step = torch.zeros((len(alive), width), dtype=torch.long)
        real = torch.zeros((len(alive), width), dtype=mask.dtype)
        for j, (row, d) in enumerate(zip(alive, fed, strict=True)):
            step[j, :1 + len(d)] = torch.tensor([generated[row][-1], *d])
            real[j, :1 + len(d)] = 1
        window = mask.shape[1]
        mask = torch.cat([mask, real.to(mask.device)], -1)
        pos = last_pos[:, None] + 1 + torch.arange(width, device=last_pos.device)
        logits = model(input_ids=step.to(input_ids.device), attention_mask=mask, position_ids=pos,
                       past_key_values=cache, use_cache=True, logits_to_keep=width).logits
        last_pos = last_pos + 1  # the token fed first was accepted when it was generated


@torch.inference_mode()
def greedy_seq2seq(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int,
                   finished: Callable[[list[int]], bool]) -> list[list[int]]:
    """`greedy` for an encoder-decoder student: `model.generate` (greedy, the encoder run once) with a per-row stop
    at `finished`; each row is cut where it finished, so it equals that row decoded alone."""
    from transformers import StoppingCriteria, StoppingCriteriaList

    start = 1  # generate's sequences begin with the decoder start token

    class Stop(StoppingCriteria):
        def __call__(self, ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
            return torch.tensor([finished(row[start:]) for row in ids.tolist()], device=ids.device)

    if max_new_tokens <= 0:
        return [[] for _ in range(len(input_ids))]
    out = model.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
                         do_sample=False, num_beams=1, stopping_criteria=StoppingCriteriaList([Stop()]))
    rows = []
    for row in out[:, start:].tolist():
        n = next((i + 1 for i in range(len(row)) if finished(row[:i + 1])), len(row))
        rows.append(row[:n])
    return rows


def token_batches(order: list[int], sizes: list[int], batch_size: int, max_tokens: int) -> list[list[int]]:
    """`order` cut into batches of at most `batch_size` items and `max_tokens` summed `sizes` (an item larger than
    `max_tokens` goes alone): the batching of candidate scoring."""
    batches: list[list[int]] = []
    current, tokens = [], 0
    for i in order:
        if current and (len(current) == batch_size or tokens + sizes[i] > max_tokens):
            batches.append(current)
            current, tokens = [], 0
        current.append(i)
        tokens += sizes[i]
    return batches + ([current] if current else [])


def continuation_ids(tokenizer, continuation: str, closing: str = "") -> list[int]:
    """Token ids of ``" " + continuation`` as training tokenizes targets (`ablations.target_text`: no space before
    a special-token filler), and with a `closing` string the first token of it written after the continuation (in
    context, so a token merging the two counts): the end of a label is then scored by the model's start of its
    closing marker, not by every token of that marker, which follows it almost surely and would cost as much again
    as the label."""
    text = ablations.target_text(tokenizer, continuation)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not closing:
        return ids
    whole = tokenizer(text + closing, add_special_tokens=False)["input_ids"]
    same = next((k for k, (a, b) in enumerate(zip(ids, whole)) if a != b), min(len(ids), len(whole)))
    return whole[:same + 1]


def shared_prefix(sequences: list[list[int]]) -> int:
    """How many leading tokens all `sequences` (each non-empty) share, leaving every one a token of its own: the
    context `trie_scores` encodes once per source, before their trie."""
    shared = 0
    while shared < min(map(len, sequences)) - 1 and all(c[shared] == sequences[0][shared] for c in sequences):
        shared += 1
    return shared


def token_trie(sequences: list[list[int]]) -> tuple[list[int], list[int], list[int], list[int]]:
    """The prefix tree of token `sequences` (each non-empty): per node its token, its parent (-1 under the root)
    and depth, parents before children; and the node each sequence ends at. Candidates that share a beginning
    (equations starting with the same number) then share its tokens in the scoring pass."""
    tokens: list[int] = []
    parents: list[int] = []
    depths: list[int] = []
    index: dict[tuple[int, int], int] = {}
    ends = []
    for seq in sequences:
        node = -1
        for t in seq:
            if (node, t) not in index:
                index[node, t] = len(tokens)
                tokens.append(t)
                depths.append(depths[node] + 1 if node >= 0 else 0)
                parents.append(node)
            node = index[node, t]
        ends.append(node)
    return tokens, parents, depths, ends


@torch.inference_mode()
def seq2seq_log_probs(model, tokenizer, sources: list[str], continuations: list[list[str]],
                      batch_size: int = 16, max_tokens: int = 2048, desc: str = "score",
                      closing: str = "") -> list[list[float]]:
    """`continuation_log_probs` for an encoder-decoder student: each source encoded once, each continuation scored
    as the decoder's sequence (``" " + continuation``, as training tokenizes targets) over that encoding, at most
    `batch_size` sources and about `max_tokens` decoder tokens per pass. Always the full sequence's log-probability
    (the decoder shares no cached prefix to leave out)."""
    device = next(model.parameters()).device
    out: list[list[float]] = [[] for _ in sources]
    encoded = [[continuation_ids(tokenizer, c, closing) for c in conts] for conts in continuations]
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    batches = token_batches(order, [sum(map(len, e)) for e in encoded], batch_size, max_tokens)
    for idx in tqdm(batches, desc=desc, unit="batch"):
        tokenizer.padding_side = "right"
        enc = tokenizer([sources[i] for i in idx], return_tensors="pt", padding=True).to(device)
        states = model.get_encoder()(**enc).last_hidden_state
        owners = [r for r, i in enumerate(idx) for _ in continuations[i]]
        labels = [ids for i in idx for ids in encoded[i]]
        width = max(map(len, labels))
        lab = torch.full((len(labels), width), -100, dtype=torch.long, device=device)
        for r, ids in enumerate(labels):
            lab[r, :len(ids)] = torch.tensor(ids)
        decoder = model.prepare_decoder_input_ids_from_labels(labels=lab)  # shifted right, -100 as pad
        sel = torch.tensor(owners, device=device)
        logits = model(encoder_outputs=(states[sel],), attention_mask=enc["attention_mask"][sel],
                       decoder_input_ids=decoder).logits.float().log_softmax(-1)
        lp = logits.gather(2, lab.clamp(min=0)[..., None]).squeeze(-1).masked_fill(lab == -100, 0.0).sum(1)
        for r, value in zip(owners, lp.tolist(), strict=True):
            out[idx[r]].append(value)
    return out


def attention_bias(config, allowed: torch.Tensor, query_pos: torch.Tensor, key_pos: torch.Tensor, dtype: torch.dtype,
                   device) -> torch.Tensor | dict[str, torch.Tensor]:
    """A custom 4D attention mask (``[batch, 1, queries, keys]``, additive) from `allowed`, as transformers takes it
    in place of its own masks: a model with sliding-window attention also gets the window, by position (what it
    would see decoding the sequence alone), per layer type where its layers mix sliding and full attention."""
    def bias(ok: torch.Tensor) -> torch.Tensor:
        zeros = torch.zeros(ok.shape, dtype=dtype, device=ok.device)  # where the mask is (training: on the GPU)
        return zeros.masked_fill(~ok, torch.finfo(dtype).min).to(device)

    window = getattr(config, "sliding_window", None)
    if not window:
        return bias(allowed)
    near = allowed & ((query_pos[:, :, None] - key_pos[:, None, :]) < window)[:, None]
    if "sliding_attention" in set(getattr(config, "layer_types", None) or []):
        return {"full_attention": bias(allowed), "sliding_attention": bias(near)}
    return bias(near)


@dataclass
class TrieScore:
    """One source's scored continuations (`trie_scores`): the prefix every continuation shares (fed with the
    source), the trie of the rest, and the model's verdict at each position: `prefix_lp`, the log-probability of
    each prefix token (empty unless asked for); `prefix_next`, the argmax predicting each prefix token and then the
    first token after the prefix; `node_lp`, each trie node's path log-probability from the trie's root; and
    `node_next`, the argmax after each node (`prefix_lp` and all but the last `prefix_next` only with `full`); `tail`, where `trie_scores` was asked to go on after a node
    (`follow`): that node, the tokens fed after it and the argmax after each."""

    prefix: list[int]
    trie: tuple[list[int], list[int], list[int], list[int]]
    prefix_lp: list[float]
    prefix_next: list[int]
    node_lp: list[float]
    node_next: list[int]
    tail: tuple[int, list[int], list[int]] | None = None


def trie_pass(model, cache, context: torch.Tensor, context_pos: torch.Tensor, base: torch.Tensor,
              tries: list[tuple[list[int], list[int], list[int], list[int]]], first: torch.Tensor | None,
              pad: int) -> tuple[list[list[float]], list[list[int]], torch.Tensor, torch.Tensor]:
    """One forward pass of each row's token trie (`token_trie`) over `cache`, whose batch rows they are: a node
    attends to the cache columns `context` allows (bool ``[B, K]``, at positions `context_pos`) and to its own
    ancestors, at position ``base + 1 + depth``. A root's own log-probability is read from `first` (log-softmax
    after the context, ``[B, V]``), or is 0 where `first` is None: then each trie has one root, the token after
    the context fed again, whose logits score the rest. Returns each node's path log-probability from the root and the argmax
    after it (per row, padded past its trie), which trie tokens see which (``[B, L, L]``) and their positions."""
    if first is None and any(t[1].count(-1) != 1 for t in tries):
        raise ValueError("trie_pass without `first` scores tries with one root, the context's last token fed again")
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    # each row's trie, padded: its tokens, the node each token continues (-1: the context) and its depth
    length = max(len(t[0]) for t in tries)
    sids = torch.full((len(tries), length), pad, dtype=torch.long)
    parent = torch.full((len(tries), length), -1, dtype=torch.long)
    depth = torch.zeros((len(tries), length), dtype=torch.long)
    sees = torch.eye(length, dtype=torch.bool).repeat(len(tries), 1, 1)  # padding attends to itself only
    for r, (tokens, parents, depths, _) in enumerate(tries):
        sids[r, :len(tokens)], parent[r, :len(tokens)] = torch.tensor(tokens), torch.tensor(parents)
        depth[r, :len(tokens)] = torch.tensor(depths)
        for n, p in enumerate(parents):  # a node sees its parent's ancestors and itself
            if p >= 0:
                sees[r, n] |= sees[r, p]
    allowed = torch.cat([context.cpu()[:, None, :].expand(-1, length, -1), sees], -1)[:, None]
    query = base.cpu()[:, None] + 1 + depth
    logp = model(input_ids=sids.to(device), attention_mask=attention_bias(
                     model.config, allowed, query, torch.cat([context_pos.cpu(), query], -1), dtype, device),
                 position_ids=query.to(device), past_key_values=cache, use_cache=True).logits.float().log_softmax(-1)
    node_next = logp.argmax(-1).tolist()
    sids, parent = sids.to(device), parent.to(device)
    vocab = logp.shape[-1]
    after = logp.reshape(len(tries), -1).gather(1, parent.clamp(min=0) * vocab + sids)  # token n by its parent
    roots = first.gather(1, sids) if first is not None else torch.zeros_like(after)
    token_lp = torch.where(parent < 0, roots, after).tolist()
    paths = []
    for r, trie in enumerate(tries):
        path: list[float] = []  # log-probability of the path from the root to each node
        for n, q in enumerate(trie[1]):
            path.append(token_lp[r][n] + (path[q] if q >= 0 else 0.0))
        paths.append(path)
    return paths, node_next, sees, query


@dataclass
class CachedRow:
    """A row that left a decoding batch (`greedy`'s `on_done`), kept to score token sequences after what it wrote
    without a second prefill: the cache of its context (keys and values per layer, ``[heads, tokens, dim]``: its
    prompt and the first generated tokens, left padding and rejected drafts dropped), `root` (the token after that
    context, fed again: its logits start the scores) and `sequences` to score after the root, as one trie."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    root: int
    sequences: list[list[int]]

    @classmethod
    def take(cls, cache, mask: torch.Tensor, j: int, n: int, root: int, sequences: list[list[int]]) -> CachedRow:
        """Row j of a decoding batch: the first n real columns of its cache (a gather, so a copy that does not keep
        the batch's cache alive)."""
        cols = mask[j].nonzero().flatten()[:n]
        return cls([x.keys[j][:, cols] for x in cache.layers], [x.values[j][:, cols] for x in cache.layers], root,
                   sequences)


@torch.inference_mode()
def score_in_cache(model, rows: list[CachedRow], pad: int, max_tokens: int = 2048) -> list[list[float]]:
    """Log-probability of each row's sequences after its context, by one trie pass (`trie_pass`) over the rows'
    caches stacked into a batch (right-padded: padding is no row's context), at most `max_tokens` trie tokens per
    pass as `trie_scores` batches them, rows of like trie size together. Each row's cache is released once
    stacked."""
    from transformers import DynamicCache

    tries = [token_trie([[r.root, *q] for q in r.sequences]) for r in rows]
    out: list[list[float]] = [[] for _ in rows]
    by_size = sorted(range(len(rows)), key=lambda b: len(tries[b][0]))  # a pass pads every trie to its longest
    for group in token_batches(by_size, [len(t[0]) for t in tries], len(rows), max_tokens):
        sizes = torch.tensor([rows[b].keys[0].shape[1] for b in group])
        width = int(sizes.max())
        cache = DynamicCache(config=model.config)
        for layer_idx in range(len(rows[group[0]].keys)):
            parts = [(rows[b].keys[layer_idx], rows[b].values[layer_idx]) for b in group]
            keys = parts[0][0].new_zeros((len(group), parts[0][0].shape[0], width, parts[0][0].shape[-1]))
            values = keys.clone()
            for k, (key, value) in enumerate(parts):
                keys[k, :, :key.shape[1]], values[k, :, :value.shape[1]] = key, value
            cache.update(keys, values, layer_idx)
        for b in group:
            rows[b].keys, rows[b].values = [], []
        context = torch.arange(width)[None] < sizes[:, None]
        paths, *_ = trie_pass(model, cache, context, torch.arange(width).expand(len(group), -1), sizes - 1,
                              [tries[b] for b in group], None, pad)
        for b, path in zip(group, paths, strict=True):
            out[b] = [path[e] for e in tries[b][3]]
    return out


@torch.inference_mode()
def trie_scores(model, tokenizer, sources: list[str], sequences: list[list[list[int]]], batch_size: int = 16,
                max_tokens: int = 2048, desc: str = "score", full: bool = True,
                follow: Callable[[int, TrieScore], tuple[int, list[int]] | None] | None = None) -> list[TrieScore]:
    """Scores of token `sequences` (each non-empty) after each source, tokenized with special tokens. A source and
    the token prefix all its sequences share are encoded once, in one cached forward pass over a batch of sources
    (which also scores that prefix). All the sequences of a source then go through one more pass as one row over
    that cache, as their token trie (`token_trie`): each token attends to the source and to its own ancestors only
    (a 4D attention mask, positions restarting after the source), so scoring k candidate labels costs about one
    prefill, not k, a beginning several share is computed once, and the cache is never copied per candidate. At
    most `batch_size` sources and `max_tokens` trie tokens per pass. `full`: also score and verify the shared
    prefix (else logits are kept at one position per source); every sequence keeps a token of its own after it.
    ``follow(i, score)`` may name a node of source i's scored trie and tokens to feed after it: they go through a
    third pass over the same cache, attending to the source and that node's path (`TrieScore.tail`)."""
    from transformers import DynamicCache

    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    encoded = []
    for i, (src, ids) in enumerate(zip(sources, sequences, strict=True)):
        shared = shared_prefix(ids)
        encoded.append((tokenizer(src, add_special_tokens=True)["input_ids"], ids[0][:shared],
                        token_trie([c[shared:] for c in ids])))
    # a pass pads contexts and tries alike, and SVAMP's tries outweigh its prompts (README, "Calibration"): batched
    # by their summed lengths (a long prompt can then meet a long trie's short one; prompts of one dataset vary less)
    order = sorted(range(len(sources)),
                   key=lambda i: len(encoded[i][0]) + len(encoded[i][1]) + len(encoded[i][2][0]))
    batches = token_batches(order, [len(e[2][0]) for e in encoded], batch_size, max_tokens)
    out: list[TrieScore | None] = [None] * len(sources)
    for idx in tqdm(batches, desc=desc, unit="batch"):
        contexts = [encoded[i][0] + encoded[i][1] for i in idx]
        width = max(map(len, contexts))
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for r, c in enumerate(contexts):
            ids[r, width - len(c):], mask[r, width - len(c):] = torch.tensor(c), 1
        ids, mask = ids.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=model.config)
        prefixes = [encoded[i][1] if full else [] for i in idx]
        keep = max(map(len, prefixes)) + 1  # logits over each shared prefix and the first token after it
        head = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                     use_cache=True, logits_to_keep=keep).logits.float().log_softmax(-1)
        first = head[:, -1]
        head_next = head.argmax(-1).tolist()
        tries = [encoded[i][2] for i in idx]
        paths, node_next, sees, query = trie_pass(model, cache, mask.bool(), positions, positions[:, -1], tries, first,
                                                  pad)
        length = sees.shape[1]
        for r, (i, trie) in enumerate(zip(idx, tries, strict=True)):
            p = prefixes[r]
            out[i] = TrieScore(encoded[i][1], trie, [head[r, keep - len(p) + k - 1, t].item() for k, t in enumerate(p)],
                               head_next[r][keep - len(p) - 1:], paths[r], node_next[r][:len(trie[0])])
        tails = [follow(i, out[i]) if follow else None for i in idx]
        if any(t and t[1] for t in tails):
            width = max(len(t[1]) for t in tails if t)
            tids = torch.full((len(idx), width), pad, dtype=torch.long)
            tsees = torch.zeros((len(idx), width, length), dtype=torch.bool)
            tpos = torch.zeros((len(idx), width), dtype=torch.long)
            for r, t in enumerate(tails):
                if t and t[1]:
                    tids[r, :len(t[1])], tsees[r] = torch.tensor(t[1]), sees[r, t[0]]
                    tpos[r] = query[r, t[0]] + 1 + torch.arange(width)
            causal = torch.ones((width, width), dtype=torch.bool).tril().expand(len(idx), -1, -1)
            allowed = torch.cat([mask.bool().cpu()[:, None, :].expand(-1, width, -1), tsees, causal], -1)[:, None]
            tnext = model(input_ids=tids.to(device), attention_mask=attention_bias(
                              model.config, allowed, tpos, torch.cat([positions.cpu(), query, tpos], -1), dtype, device),
                          position_ids=tpos.to(device), past_key_values=cache, use_cache=True
                          ).logits.argmax(-1).tolist()
            for r, (i, t) in enumerate(zip(idx, tails, strict=True)):
                if t and t[1]:
                    out[i].tail = (t[0], list(t[1]), tnext[r][:len(t[1])])
    return out


def continuation_log_probs(model, tokenizer, sources: list[str], continuations: list[list[str]],
                           batch_size: int = 16, max_tokens: int = 2048, desc: str = "score",
                           full: bool = True, closing: str = "") -> list[list[float]]:
    """Log-probability of each continuation of each source, tokenized as training tokenizes targets (source with
    special tokens, then ``" " + continuation``; with `closing`, see `continuation_ids`), scored as one trie per
    source over a cached prefill (`trie_scores`). ``full=False`` leaves out the shared prefix's log-probability,
    the same for every continuation of a source (normalising over them cancels it). Encoder-decoder students:
    `seq2seq_log_probs` (always the full sequence)."""
    if getattr(model.config, "is_encoder_decoder", False):
        return seq2seq_log_probs(model, tokenizer, sources, continuations, batch_size, max_tokens, desc, closing)
    sequences = [[continuation_ids(tokenizer, c, closing) for c in conts] for conts in continuations]
    scored = trie_scores(model, tokenizer, sources, sequences, batch_size, max_tokens, desc, full)
    return [[sum(t.prefix_lp) + t.node_lp[e] for e in t.trie[3]] for t in scored]


def trie_walk(score: TrieScore, finished: Callable[[list[int]], bool], max_new_tokens: int
              ) -> tuple[list[int], int, int, bool]:
    """Greedy decoding read off a scored trie (`trie_scores` with `full`) as far as it goes: every token taken is
    the model's argmax after the tokens before it. Returns the tokens, the node it stopped at (-1: the root), the
    argmax after them, and whether greedy decoding is done there (`finished` or the budget); not done and the
    argmax no child of the node: the walk left the trie (or reached a tail, `greedy_in_trie`)."""
    if len(score.prefix_next) != len(score.prefix) + 1:
        raise ValueError("a greedy walk needs the prefix's argmaxes: score the trie with `full`")
    children = {(q, t): n for n, (t, q) in enumerate(zip(*score.trie[:2], strict=True))}
    generated: list[int] = []
    if max_new_tokens <= 0:
        return generated, -1, score.prefix_next[0], True
    for token, best in zip(score.prefix, score.prefix_next, strict=False):
        if best != token:
            return generated, -1, best, False
        generated.append(token)
        if finished(generated) or len(generated) >= max_new_tokens:
            return generated, -1, best, True
    node, best = -1, score.prefix_next[-1]
    while (node, best) in children:
        generated.append(best)
        node = children[node, best]
        if finished(generated) or len(generated) >= max_new_tokens:
            return generated, node, best, True
        best = score.node_next[node]
    return generated, node, best, False


def greedy_in_trie(score: TrieScore, finished: Callable[[list[int]], bool], max_new_tokens: int) -> list[int] | None:
    """Greedy decoding's continuation read off a scored trie and its tail (`trie_walk`, then the tokens fed after
    the node the walk stopped at, each verified by the argmax before it), or None where it leaves them before it
    finishes."""
    generated, node, best, done = trie_walk(score, finished, max_new_tokens)
    if done:
        return generated
    if score.tail is None or score.tail[0] != node:
        return None
    for token, after in zip(*score.tail[1:], strict=True):
        if best != token:
            return None
        generated.append(token)
        if finished(generated) or len(generated) >= max_new_tokens:
            return generated
        best = after
    return None


def answer_and_calibrate(model, tokenizer, sources: list[str], rows: list[dict], label_format: str,
                         max_new_tokens: int, batch_size: int, desc: str = "") -> tuple[list[str], list[str],
                                                                                        list[list[float]], list[int]]:
    """Label-first decoding and calibration from the passes that score the candidates: each item's candidates,
    written ``[FIN_LABEL] c [FIN_LABEL]`` as targets are up to the closing marker's first token, go into
    `trie_scores`, whose log-probabilities are `calibrate`'s and whose argmaxes give greedy decoding's text wherever
    it writes one of them; the rest of the closing marker after the candidate greedy decoding wrote is verified in
    a third, narrow pass (`follow`; `greedy_in_trie`). Returns texts, raw texts (special tokens kept), each item's
    candidate log-probabilities, and the items greedy decoding took out of the trie: those the caller decodes and
    calibrates as before (`generate`, `calibrate`), as it does an item whose prediction changes its candidates
    (a SVAMP equation outside the set)."""
    finished = stop_rule(model, tokenizer)
    cands = [valid_candidates(r, label_format) for r in rows]
    conts = [marked("", cs) for cs in cands]
    scored_ids = [[continuation_ids(tokenizer, c, CLOSING) for c in cs] for cs in conts]
    rests = [[continuation_ids(tokenizer, c + CLOSING)[len(ids):]
              for c, ids in zip(cs, seqs, strict=True)] for cs, seqs in zip(conts, scored_ids, strict=True)]

    def rest_of_marker(i: int, score: TrieScore) -> tuple[int, list[int]] | None:
        """Where greedy decoding wrote a candidate up to its closing marker's first token: the marker's rest."""
        _, node, _, done = trie_walk(score, finished, max_new_tokens)
        ends = score.trie[3]
        return None if done or node not in ends else (node, rests[i][ends.index(node)])

    scored = trie_scores(model, tokenizer, sources, scored_ids, batch_size, desc=f"eval {desc}", follow=rest_of_marker)
    texts, raw, log_probs, missed = [""] * len(rows), [""] * len(rows), [[] for _ in rows], []
    for i, (score, row) in enumerate(zip(scored, rows, strict=True)):
        ids = greedy_in_trie(score, finished, max_new_tokens)
        if ids is None:
            missed.append(i)
            continue
        texts[i], raw[i] = tokenizer.decode(ids, skip_special_tokens=True), tokenizer.decode(ids)
        if valid_candidates(row, label_format, extract_label(raw[i])) != cands[i]:  # as `calibrate` reads it
            missed.append(i)
            continue
        log_probs[i] = [score.node_lp[end] for end in score.trie[3]]
    return texts, raw, log_probs, missed


def canonical(pred: str | None, row: dict, label_format: str) -> str | None:
    """The class an extracted label names: the choice letter for multiple choice (whatever the label format),
    so majority rate and collapse are measured over answer positions; the relation for NLI; the value for an
    equation; ``<invalid>`` when it names no choice (or is no equation)."""
    if pred is None:
        return None
    if row["task"] == "math":
        return equation_class(pred)
    pred = normalise(pred)
    for c, lab in zip(row["choices"], candidate_labels(row, label_format), strict=True):
        if normalise(lab) == pred:
            return normalise(c["label"])
    return "<invalid>"


def score(predictions: list[str | None], gold: list[str], n_choices: int | None = None) -> dict:
    """Accuracy with its interval beside the majority-class and chance rates, and the collapse flag.

    `predictions` and `gold` are classes (`canonical`): for multiple choice the answer letters, so the majority
    rate is what always answering the most frequent position scores, in either label format.
    """
    n = len(gold)
    gold_n = [normalise(g) for g in gold]
    correct = sum(p is not None and p == g != "<invalid>" for p, g in zip(predictions, gold_n, strict=True))
    dist = Counter("<unparsed>" if p is None else p for p in predictions)
    top_label, top_count = dist.most_common(1)[0] if dist else ("", 0)
    majority_label, majority_count = Counter(gold_n).most_common(1)[0] if gold_n else ("", 0)
    lo, hi = wilson(correct, n)
    return {
        "n": n, "correct": correct, "accuracy": correct / n if n else 0.0, "ci95": [lo, hi],
        "unparsed": dist.get("<unparsed>", 0), "predicted_distribution": dict(sorted(dist.items())),
        "majority_label": majority_label, "majority_rate": majority_count / n if n else 0.0,
        "chance_rate": 1 / n_choices if n_choices else None,
        "top_prediction": top_label, "top_prediction_share": top_count / n if n else 0.0,
        "collapsed": bool(n and top_count / n >= COLLAPSE_SHARE),
        "above_majority": bool(lo > (majority_count / n if n else 0.0)),
    }


def evaluate(model_dir: str, data: str, ablation: str, label_first: bool, label_format: str, out_json: str,
             out_predictions: str, out_speed: str, max_new_tokens: int | None = None,
             batch_size: int = EVALUATION["batch_size"], threads: int = 1,
             precision: str = EVALUATION["precision"], prefix: str = "", suffix: str = "") -> dict:
    """Evaluate one fine-tuned model on one test split and write eval JSON, predictions and speed.

    Label-first models generate up to the closing marker within the longest label's budget, read off the passes
    that score their candidates for calibration (`answer_and_calibrate`; decoder-only students); the others
    generate their rationale first, up to `max_new_tokens`, and are calibrated in a second pass after it (`answer`).
    Weights load in bf16 where `precision` says so (auto: on GPUs with bf16; fp32 on CPUs, for reproducible eval
    JSON, `use_bf16`), fp32 otherwise. `prefix` and `suffix` go around every input (a multi-task model's predict
    task).
    """
    from transformers import AutoTokenizer

    torch.set_num_threads(threads)
    df = io.read_parquet(data, required=COMMON_COLUMNS)
    rows = df.to_dict("records")
    tok = AutoTokenizer.from_pretrained(model_dir)
    dtype = torch.bfloat16 if use_bf16(precision, "evaluation.precision", reproducible=True) else torch.float32
    model = load_student(model_dir, dtype=dtype)
    model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
    gold = [label_string(r, label_format) for r in rows]
    max_new = answer_budget(tok, rows, label_format) if label_first else int(max_new_tokens or
                                                                            EVALUATION["max_new_tokens"])
    sources = [format_source(r, prefix, suffix) for r in rows]
    texts, raw, log_probs, speed = answer(model, tok, sources, rows, label_first, label_format, max_new, batch_size,
                                          ablation)
    preds = [extract_label(t) for t in texts]
    classes = [canonical(p, r, label_format) for p, r in zip(preds, rows, strict=True)]
    gold_classes = [canonical(g, r, label_format) for g, r in zip(gold, rows, strict=True)]
    n_choices = len(rows[0]["choices"]) if rows and rows[0]["task"] != "math" else None
    confidence, calibrated = calibrate(log_probs, raw, rows, classes, gold_classes, label_format)
    result = {**score(classes, gold_classes, n_choices), "ablation": ablation, "label_format": label_format,
              "model": str(Path(model_dir)),
              "decoding": {"greedy": True, "max_new_tokens": max_new, "stop": "closing " + ablations.MARK,
                           "label_first": label_first, "precision": str(dtype).removeprefix("torch."),
                           **({"prefix": prefix} if prefix else {}), **({"suffix": suffix} if suffix else {})},
              "calibration": calibrated}
    io.write_parquet(pd.DataFrame({"id": [r["id"] for r in rows], "generated": texts, "parsed_label": preds,
                                   "predicted_class": classes, "gold": [normalise(g) for g in gold],
                                   "gold_class": gold_classes, "confidence": confidence}), out_predictions)
    io.write_json({**speed, "n": len(rows), "device": str(next(model.parameters()).device), "threads": threads,
                   "batch_size": batch_size, "dtype": str(dtype).removeprefix("torch.")}, out_speed)
    io.write_json(result, out_json)
    log.info("%s: accuracy %.4f (95%% CI %.3f-%.3f), majority %.4f, unparsed %d, %.1f examples/s; ECE %.3f, "
             "confidence %.3f (%d items calibrated in decoding, separate calibration %.0f s)", ablation, result["accuracy"], *result["ci95"],
             result["majority_rate"], result["unparsed"], speed["examples_per_s"], calibrated["ece"],
             calibrated["confidence"], speed["calibrated_in_decoding"], speed["calibration_seconds"])
    return result


def answer(model, tokenizer, sources: list[str], rows: list[dict], label_first: bool, label_format: str,
           max_new_tokens: int, batch_size: int, desc: str = "") -> tuple[list[str], list[str], list[list[float]], dict]:
    """Every item's greedy text, raw text (special tokens kept) and candidate log-probabilities (calibration),
    and the time they took: decoder-only label-first models through `answer_and_calibrate`, the rest (and the
    items it hands back) by `generate`, which scores a CoT-before item's candidates over its decoding cache
    (`candidates_after_text`), and then `candidate_log_probs` for the items neither scored. The speed block:
    `seconds` and `examples_per_s` of decoding (the joint passes and the scoring over the cache included),
    `calibration_seconds` of the separate scoring pass, `calibrated_in_decoding` the items calibrated without it."""
    start = time.perf_counter()
    missed = list(range(len(rows)))
    if label_first and not getattr(model.config, "is_encoder_decoder", False):
        texts, raw, log_probs, missed = answer_and_calibrate(model, tokenizer, sources, rows, label_format,
                                                             max_new_tokens, batch_size, desc)
    else:
        texts, raw, log_probs = [""] * len(rows), [""] * len(rows), [[] for _ in rows]
    if missed:  # CoT-before models, encoder-decoders and the items greedy decoding took out of the trie
        offered = [calibration.candidates(rows[i], label_format) for i in missed] if label_first else None
        handed = missed

        def after(k: int, gen: list[int]) -> tuple[int, list[list[int]]] | None:
            return candidates_after_text(tokenizer, rows[handed[k]], label_format, gen)

        scored: dict[int, list[float]] = {}
        new_texts, new_raw = generate(model, tokenizer, [sources[i] for i in handed], max_new_tokens, batch_size,
                                      desc=f"eval {desc}", draft=ablations.MARK if label_first else None,
                                      return_raw=True, candidates=offered,
                                      candidates_after=None if label_first else after,
                                      scores=None if label_first else scored)
        for i, text, full in zip(handed, new_texts, new_raw, strict=True):
            texts[i], raw[i] = text, full
        for k, lp in scored.items():
            log_probs[handed[k]] = lp
        missed = [i for k, i in enumerate(handed) if k not in scored]
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    if missed:
        for i, lp in zip(missed, candidate_log_probs(model, tokenizer, [sources[i] for i in missed],
                                                     [raw[i] for i in missed], [rows[i] for i in missed],
                                                     label_format, batch_size, desc), strict=True):
            log_probs[i] = lp
    return texts, raw, log_probs, {"examples_per_s": len(rows) / seconds if seconds else None, "seconds": seconds,
                                   "calibration_seconds": time.perf_counter() - start,
                                   "calibrated_in_decoding": len(rows) - len(missed)}


def candidates_after_text(tokenizer, row: dict, label_format: str, generated: list[int]
                          ) -> tuple[int, list[list[int]]] | None:
    """For a model that writes before its label (CoT before), where its generated ids begin with the context
    `candidate_log_probs` scores the candidates after (its text before the label and the opening marker, as
    training tokenizes targets): how many generated ids that context takes and each candidate's ids after it, so
    `generate` scores them over its cache; None where the ids differ (a text tokenized otherwise, no label
    written), and the item is calibrated after its text as before."""
    text = tokenizer.decode(generated)  # special tokens kept, as `answer`'s raw text
    if ablations.MARK.lower() not in text.lower():  # no opening marker: no context to score after
        return None
    conts = scored_after(row, label_format, text)
    if not conts:
        return None
    seqs = [continuation_ids(tokenizer, c, CLOSING) for c in conts]
    shared = shared_prefix(seqs)
    return (shared, [q[shared:] for q in seqs]) if shared and generated[:shared] == seqs[0][:shared] else None


def valid_candidates(row: dict, label_format: str, predicted: str | None = None) -> list[str]:
    """The candidate labels an item's confidence is normalised over (`calibration.candidates`), less those that
    are no valid answer (an equation dividing by zero)."""
    return [c for c in calibration.candidates(row, label_format, predicted)
            if canonical(c, row, label_format) != "<invalid>"]


def marked(lead: str, cands: list[str]) -> list[str]:
    """Candidates as targets write them (`ablations.wrap_label`) after `lead` (a CoT-before model's rationale, else
    nothing), less the closing marker: ``{lead}[FIN_LABEL] c``; callers score the first token of `CLOSING` after
    each (`continuation_ids`)."""
    return [f"{lead}{ablations.MARK} {c}" for c in cands]


def candidate_log_probs(model, tokenizer, sources: list[str], texts: list[str], rows: list[dict], label_format: str,
                        batch_size: int, desc: str = "") -> list[list[float]]:
    """Each item's `valid_candidates` scored after what the model wrote before its label (its rationale, for
    CoT-before models; `texts` decoded with special tokens, so a filler student's unk tokens stay), in the target
    format, ``[FIN_LABEL] c [FIN_LABEL]``, up to the first token of the closing marker (`continuation_ids`); not
    sampled."""
    return continuation_log_probs(model, tokenizer, sources, [scored_after(r, label_format, t)
                                                              for r, t in zip(rows, texts, strict=True)],
                                  batch_size, desc=f"calibration {desc}", full=False, closing=CLOSING)


def scored_after(row: dict, label_format: str, text: str) -> list[str]:
    """An item's `valid_candidates` as calibration scores them after what the model wrote before its label
    (`marked`; `text` decoded with special tokens)."""
    lead = (ablations.text_before_label(text) + " ").lstrip()
    return marked(lead, valid_candidates(row, label_format, extract_label(text)))


def calibrate(log_probs: list[list[float]], texts: list[str], rows: list[dict], classes: list[str | None],
              gold_classes: list[str], label_format: str) -> tuple[list[float], dict]:
    """Each item's confidence and the model's calibration summary (`calibration`) from its candidates'
    log-probabilities (`candidate_log_probs`, or `answer_and_calibrate` for label-first models)."""
    items = [calibration.item(lp, [canonical(c, r, label_format) for c in valid_candidates(r, label_format,
                                                                                         extract_label(t))], pc, gc)
             for lp, t, r, pc, gc in zip(log_probs, texts, rows, classes, gold_classes, strict=True)]
    confidence, correct, dists, gold_index = (list(x) for x in zip(*items, strict=True))
    math = bool(rows) and rows[0]["task"] == "math"
    return confidence, {**calibration.summary(confidence, correct, dists, gold_index),
                        "candidates": "one-operation equations over the problem's numbers, gold and predicted"
                        if math else "the item's choices"}


def load_eval(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())
