"""The batched forward under a token budget, shared by every command that runs the reference
model: batch cutting, padding, the cache argument's name, a head on real positions only, and
an in-place log-softmax, and the context token every text is scored behind.
Device-agnostic: tensors go to the model's device."""

from __future__ import annotations

import torch


REFERENCE_VOCAB = 49152   # SmolLM2's: the default batch sizes were measured with it


def default_batch_tokens(device: str, vocab: int, rows: int = 1) -> int:
    """Padded tokens per batch, for every command that runs the reference model: 2048 on CPU,
    16384 on CUDA for a 49k vocabulary, fewer for a larger one, so that a batch's
    log-probabilities (tokens x vocab floats, kept for the metrics) stay the size they are for
    SmolLM2 (400 MB on CPU): Gemma 3's 262k vocabulary gets 384 on CPU, 3072 on CUDA.
    ``rows``: vocabulary-sized rows a command keeps per position (evaluate keeps two: the
    base's log-probabilities and probabilities), dividing the tokens to keep the same bytes."""
    base = (16384 if device == "cuda" else 2048) // rows
    return max(128, int(base * min(1.0, REFERENCE_VOCAB / vocab)) // 64 * 64)


def log_softmax_in_place(logits: torch.Tensor, rows: int = 256) -> torch.Tensor:
    """log_softmax over the last dimension, overwriting ``logits`` a block of rows at a
    time: with a 262k vocabulary a second [tokens, vocab] tensor is gigabytes."""
    for block in logits.split(rows):
        block -= torch.logsumexp(block, -1, keepdim=True)
    return logits


def pad_batch(inputs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Right-padded token ids, their attention mask, and each row's length."""
    lengths = [len(x) for x in inputs]
    ids = torch.zeros(len(inputs), max(lengths), dtype=torch.long)
    mask = torch.zeros(len(inputs), max(lengths), dtype=torch.long)
    for b, x in enumerate(inputs):
        ids[b, :len(x)] = torch.tensor(x)
        mask[b, :len(x)] = 1
    return ids, mask, lengths


def cache_kwarg(model) -> str:
    """transformers 5.24 renamed ``past_key_values`` to ``cache``; earlier 5.x take the old name."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _split_model(model):
    """(decoder, head) when logits are exactly head(decoder(x)) (Llama-like), so the head
    runs on real positions only; None otherwise (checked on a short input)."""
    try:
        decoder, head = model.get_decoder(), model.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        return None
    if decoder is None or head is None:
        return None
    x = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]], device=next(model.parameters()).device)
    try:
        with torch.inference_mode():
            want = model(input_ids=x).logits.float()
            got = head(decoder(input_ids=x).last_hidden_state).float()
    except Exception:  # any failure means: use the plain path
        return None
    return (decoder, head) if torch.allclose(want, got, atol=1e-4, rtol=1e-4) else None


def _kv_layers(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return [(k, v) for k, v in cache]


def _batches(items: list, cost, budget: int, max_rows: int, overhead: int = 0, past=None,
             past_budget: int = 0, past_weight=lambda longest: 0.0):
    """Consecutive items (sorted by cost) cut into batches with rows x longest <= budget (a
    longer item goes alone), choosing the cuts that minimise padded positions plus
    ``overhead`` per batch. With ``past`` (an item's cached positions, copied per row): also
    rows x longest past <= ``past_budget``, and a batch costs rows x (longest + longest past x
    ``past_weight(longest)``): its past positions' share of the work (copy and attention)."""
    n = len(items)
    if not n:
        return
    c = [cost(x) for x in items]
    q = [past(x) for x in items] if past else [0] * n
    best = [0.0] + [float("inf")] * n   # best[i]: cheapest way to batch items[:i]
    cut = [0] * (n + 1)
    for i in range(1, n + 1):
        longest = c[i - 1]
        share = past_weight(longest)
        j, far = i - 1, 0
        while j >= 0 and (i - j) <= max_rows:
            far = max(far, q[j])
            fits = (i - j) * longest <= budget and (past is None or (i - j) * far <= past_budget)
            if not fits and j < i - 1:
                break
            v = best[j] + (i - j) * (longest + far * share) + overhead
            if v < best[i]:
                best[i], cut[i] = v, j
            j -= 1
    bounds = []
    i = n
    while i > 0:
        bounds.append((cut[i], i))
        i = cut[i]
    for lo, hi in reversed(bounds):
        yield items[lo:hi]


def context_token(tokenizer) -> int:
    """The token every text is scored behind: what the model saw at the start of its
    training documents. A tokenizer that adds BOS itself (Gemma 3, Llama) says so: BOS.
    Otherwise the document boundary when the vocabulary has one (SmolLM2's
    ``<|endoftext|>``; its BOS is a chat marker), else BOS, else EOS."""
    bos = tokenizer.bos_token_id
    if bos is not None and adds_bos(tokenizer):
        return bos
    vocab = tokenizer.get_vocab()
    for name in ("<|endoftext|>", "</s>", "<eos>"):
        if name in vocab:
            return vocab[name]
    for tid in (bos, tokenizer.eos_token_id):
        if tid is not None:
            return tid
    return 0


def adds_bos(tokenizer) -> bool:
    """Whether encoding with special tokens puts BOS first (the tokenizer's own template)."""
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == tokenizer.bos_token_id
