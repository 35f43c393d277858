"""Volatility scoring: how much a variant disturbs the reference model, against its parent
and against its seed, computed in batches that reuse each seed's KV cache.

Every text is scored behind one context token c (the model's document boundary), so the
model predicts each text token: row k of a sequence's log-probabilities is
log P(t_k | c, t_0..t_{k-1}). A variant equal to its seed in its first p tokens has the
seed's rows 0..p, so only its rows after p are computed, as a batch of right-padded
suffixes over the seeds' caches, each row masked to its own prefix, positions continuing
from it. Rows whose parents have children are retained until those children are scored;
everything else is dropped once measured, so memory follows the window, not the corpus.

Metrics of a child b against a reference a (its parent, or its seed), aligned by a diff of
token ids; f is the first position where they differ:
  surprisal, surprisal_max  -log P_b(b_j) over the new or changed tokens j (nats)
  ripple_kl, ripple_kl_max  KL(P_a(.|a_<i) || P_b(.|b_<j)) over unchanged tokens after f
  delta_nll                 mean of NLL_b(b_j) - NLL_a(a_i) over the same tokens
  top1                      share of the same tokens where both predict the same argmax
  drift, drift_layer        (--drift) relative change of each layer's hidden state at
                            those tokens, and the first layer where it passes a threshold


Over 400 lines: the prefix-shared batched forward and the metrics read off its buffers are
one algorithm; the scoring issue rewrites this module and can split it along its new seams."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass

import torch
from rapidfuzz.distance import Levenshtein

from ..dsl.recipe import PAIR_METRICS


@dataclass
class Item:
    """One text to score. ``parent`` is another item's key in the same group, or None
    for the group's root (the seed itself, scored against itself)."""
    key: Hashable
    ids: list[int]
    parent: Hashable | None = None


@dataclass
class Group:
    """A seed and its variants; items are in topological order (a parent before its children)."""
    key: Hashable
    seed_ids: list[int]
    items: list[Item]
    payload: object = None  # carried through untouched, for the caller


@dataclass
class _Rows:
    """Per-position results for a run of input positions of one text."""
    logp: torch.Tensor                   # [m, V] log P(next token)
    top: torch.Tensor                    # [m] argmax
    probs: torch.Tensor | None = None    # [m, V], only for texts others are compared against
    neg_entropy: torch.Tensor | None = None   # [m] sum p log p, likewise
    hidden: torch.Tensor | None = None   # [layers+1, m, H] with --drift
    kv: list | None = None               # per layer (k, v) [kv_heads, m, head_dim], for texts others extend

    @classmethod
    def make(cls, logp: torch.Tensor, hidden: torch.Tensor | None, reference: bool, kv=None) -> _Rows:
        rows = cls(logp, logp.argmax(-1), hidden=hidden, kv=kv)
        if reference:
            rows.probs = logp.exp()
            rows.neg_entropy = torch.einsum("ij,ij->i", rows.probs, logp)
        return rows


class _Seq:
    """A scored text. Input position q < p+1 has the same context as in ``base`` (the seed,
    or the parent when it shares more), so its rows and cache are the base's; the rest are
    its own. A seed has no base (p = -1). ``avail``: input positions it has rows for."""

    def __init__(self, base: _Seq | None, ids: list[int], p: int, own: _Rows | None, avail: int) -> None:
        self.base, self.ids, self.p, self.own, self.avail = base, ids, p, own, avail
        n, k = len(ids), p + 1
        dev = (own.logp if own is not None else base.tok_logp).device
        tok = torch.tensor(ids, dtype=torch.long, device=dev)
        if base is None:
            self.tok_logp = own.logp[:n].gather(1, tok[:, None]).squeeze(1)
            self.top, self.neg_entropy = own.top[:avail], own.neg_entropy
            return
        parts = [base.tok_logp[:min(p, n)]]   # same context and same target
        if p < n:                             # same context, another target
            parts.append(base.block("logp", p, p + 1)[0, ids[p]].reshape(1))
        if n > k:
            parts.append(own.logp[:n - k].gather(1, tok[k:, None]).squeeze(1))
        self.tok_logp = torch.cat(parts)
        shared = min(k, avail)
        if own is None:
            self.top = base.top[:shared]
            self.neg_entropy = base.neg_entropy[:shared] if base.neg_entropy is not None else None
        else:
            self.top = torch.cat([base.top[:shared], own.top])
            self.neg_entropy = (torch.cat([base.neg_entropy[:shared], own.neg_entropy])
                                if base.neg_entropy is not None and own.neg_entropy is not None else None)

    def cuts(self, lo: int, hi: int) -> set[int]:
        """Positions in (lo, hi) where rows switch from one stored tensor to another."""
        if self.base is None or lo >= self.p + 1:
            return set()
        inner = self.base.cuts(lo, min(hi, self.p + 1))
        return inner | ({self.p + 1} if hi > self.p + 1 else set())

    def block(self, what: str, lo: int, hi: int) -> torch.Tensor:
        """Rows lo..hi-1 of ``what`` lying in one stored tensor (a view, no copy)."""
        if self.base is not None and hi <= self.p + 1:
            return self.base.block(what, lo, hi)
        return getattr(self.own, what)[lo - self.p - 1:hi - self.p - 1]

    def states(self, idx: torch.Tensor) -> torch.Tensor:
        if self.base is None:
            return self.own.hidden.index_select(1, idx)
        mine = idx > self.p
        if not bool(mine.any()):
            return self.base.states(idx)
        if bool(mine.all()):
            return self.own.hidden.index_select(1, idx - self.p - 1)
        out = self.own.hidden.new_empty(self.own.hidden.shape[0], len(idx), self.own.hidden.shape[2])
        out[:, ~mine] = self.base.states(idx[~mine])
        out[:, mine] = self.own.hidden.index_select(1, idx[mine] - self.p - 1)
        return out

    def fill_kv(self, layer: int, K: torch.Tensor, V: torch.Tensor, b: int, upto: int) -> None:
        """Copy this text's cache for input positions 0..upto-1 into row b."""
        lo = self.p + 1
        if self.base is not None and lo > 0:
            self.base.fill_kv(layer, K, V, b, min(upto, lo))
        if upto > lo:
            k, v = self.own.kv[layer]
            K[b, :, lo:upto] = k[:, :upto - lo]
            V[b, :, lo:upto] = v[:, :upto - lo]


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


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    k = 0
    while k < n and a[k] == b[k]:
        k += 1
    return k


def alignment(ref: list[int], ids: list[int]) -> tuple[int, list[int], list[tuple[int, int, int]]]:
    """(f, new positions in ids, equal blocks (ref start, ids start, length) after f)."""
    f = common_prefix(ref, ids)
    new: list[int] = []
    blocks: list[tuple[int, int, int]] = []
    if f == len(ref) == len(ids):
        return f, new, blocks
    for op in Levenshtein.opcodes(ref[f:], ids[f:]):
        if op.tag == "equal":
            blocks.append((f + op.src_start, f + op.dest_start, op.src_end - op.src_start))
        else:
            new.extend(range(f + op.dest_start, f + op.dest_end))
    return f, new, blocks


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


class Scorer:
    """Scores groups (a seed and its variants) in batches under a token budget."""

    def __init__(self, model, context_id: int, *, batch_tokens: int = 2048, drift: bool = False,
                 drift_threshold: float = 0.1, window_tokens: int | None = None, max_rows: int = 256) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.ctx = context_id
        self.batch_tokens = batch_tokens
        self.drift = drift
        self.threshold = drift_threshold
        self.window_tokens = window_tokens or 4 * batch_tokens
        self.max_rows = max_rows
        self.computed_tokens = 0   # input positions actually run through the model (padding not counted)
        self.padded_tokens = 0     # ... and with the padding of each batch
        self.total_tokens = 0      # what a full forward of every text would have run
        self.attended = 0          # sum over computed positions of the keys each attends to
        self._split = _split_model(model)
        self._cache_arg = cache_kwarg(self._split[0] if self._split else model)

    # ------------------------------------------------------------ public

    def score(self, groups: Iterable[Group]) -> Iterator[tuple[Group, dict]]:
        """Yield (group, {key: metrics}) in input order, a window of groups at a time."""
        window: list[Group] = []
        size = 0
        for g in groups:
            window.append(g)
            size += len(g.seed_ids) + 1 + sum(len(i.ids) for i in g.items) // 4
            if size >= self.window_tokens:
                yield from self._score_window(window)
                window, size = [], 0
        if window:
            yield from self._score_window(window)

    # ------------------------------------------------------------ window

    @torch.inference_mode()
    def _score_window(self, window: list[Group]):
        seeds = self._seeds(window)
        results: list[dict] = [{} for _ in window]
        seqs: list[dict] = [{} for _ in window]        # texts that are someone's parent, until measured
        children: list[dict] = [{} for _ in window]
        depth: list[dict] = [{} for _ in window]
        for gi, g in enumerate(window):
            for it in g.items:
                depth[gi][it.key] = 0 if it.parent is None else depth[gi][it.parent] + 1
                if it.parent is not None:
                    children[gi][it.parent] = children[gi].get(it.parent, 0) + 1
        levels = max((d for dd in depth for d in dd.values()), default=0)
        for level in range(levels + 1):
            todo = [(gi, it) for gi, g in enumerate(window) for it in g.items if depth[gi][it.key] == level]
            self._run_level(seeds, todo, seqs, children, results)
            for gi, it in todo:  # a parent is dropped once all its children are measured
                if it.parent is not None:
                    children[gi][it.parent] -= 1
                    if children[gi][it.parent] == 0:
                        seqs[gi].pop(it.parent, None)
        for gi, g in enumerate(window):
            yield g, results[gi]

    def _seeds(self, window: list[Group]) -> list[_Seq | None]:
        """One plain forward per seed (batched): its rows, and its KV cache for the variants."""
        order = sorted((i for i, g in enumerate(window) if g.items), key=lambda i: len(window[i].seed_ids))
        seeds: list[_Seq | None] = [None] * len(window)
        for batch in _batches(order, lambda i: len(window[i].seed_ids) + 1, self.batch_tokens, self.max_rows):
            inputs = [[self.ctx] + window[i].seed_ids for i in batch]
            ids, mask, lengths = pad_batch(inputs)
            logps, hidden, layers = self._forward(ids, mask, None, None, lengths)
            for b, i in enumerate(batch):
                n = lengths[b]
                h = hidden[b, :, :n].float().clone() if hidden is not None else None
                kv = [(k[b, :, :n].clone(), v[b, :, :n].clone()) for k, v in layers]
                rows = _Rows.make(logps[b].clone(), h, reference=True, kv=kv)
                seeds[i] = _Seq(None, window[i].seed_ids, -1, rows, n)
            del logps, hidden, layers
        return seeds

    def _run_level(self, seeds, todo, seqs, children, results) -> None:
        jobs = []  # (gi, item, base, p, start, end): input positions start..end-1 to compute
        for gi, it in todo:
            last = len(it.ids) + (1 if self.drift else 0)  # rows 0..n-1 (and the last token's state)
            base = seeds[gi]
            p = min(common_prefix(base.ids, it.ids), base.avail - 1)
            parent = seqs[gi].get(it.parent)
            if parent is not None and parent is not base:
                q = min(common_prefix(parent.ids, it.ids), parent.avail - 1)
                if q > p:
                    base, p = parent, q
            self.total_tokens += last
            jobs.append((gi, it, base, p, p + 1, max(p + 1, last)))
        for gi, it, base, p, start, end in jobs:
            if end == start:  # every row is its base's (a cut, or the seed itself)
                avail = len(it.ids) + (1 if self.drift else 0)
                self._finish(seeds, seqs, children, results, gi, it, _Seq(base, it.ids, p, None, avail))
        work = sorted((j for j in jobs if j[5] > j[4]), key=lambda j: (j[5] - j[4], j[4]))
        overhead = max(16, self.batch_tokens // 16)
        for batch in _batches(work, lambda j: j[5] - j[4], self.batch_tokens, self.max_rows, overhead):
            keep = [bool(children[j[0]].get(j[1].key)) for j in batch]
            logps, hidden, layers = self._forward_suffixes(batch, keep)
            for b, (gi, it, base, p, start, end) in enumerate(batch):
                n = end - start
                h = hidden[b, :, :n].float().clone() if hidden is not None else None
                kv = layers[b] if keep[b] else None
                own = _Rows.make(logps[b].clone() if keep[b] else logps[b], h, keep[b], kv)
                self._finish(seeds, seqs, children, results, gi, it, _Seq(base, it.ids, p, own, end))
            del logps, hidden, layers

    def _forward_suffixes(self, batch, keep):
        """Right-padded suffixes over their bases' caches, each row masked to its own prefix."""
        from transformers import DynamicCache

        B = len(batch)
        S = max(j[5] - j[4] for j in batch)
        P = max(j[4] for j in batch)
        ids = torch.zeros(B, S, dtype=torch.long)
        pos = torch.zeros(B, S, dtype=torch.long)
        mask = torch.zeros(B, P + S, dtype=torch.long)
        for b, (_, it, _, _, start, end) in enumerate(batch):
            x = [self.ctx] + it.ids
            ids[b, :end - start] = torch.tensor(x[start:end])
            pos[b] = torch.arange(start, start + S)
            mask[b, :start] = 1
            mask[b, P:P + end - start] = 1
        cache = []
        kv0 = _stored_kv(batch[0][2])
        k0, v0 = kv0[0]
        for layer in range(len(kv0)):
            K = k0.new_zeros(B, k0.shape[0], P, k0.shape[2])
            V = v0.new_zeros(B, v0.shape[0], P, v0.shape[2])
            for b, j in enumerate(batch):
                j[2].fill_kv(layer, K, V, b, j[4])
            cache.append((K, V))
        lengths = [j[5] - j[4] for j in batch]
        logps, hidden, layers = self._forward(ids, mask, pos, DynamicCache(cache), lengths)
        own_kv = [[(k[b, :, P:P + lengths[b]].clone(), v[b, :, P:P + lengths[b]].clone()) for k, v in layers]
                  if keep[b] else None for b in range(B)]
        return logps, hidden, own_kv

    def _forward(self, ids, mask, pos, cache, lengths):
        """Run the model; log-probabilities only for the real (unpadded) positions of each row."""
        kwargs = {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device), "use_cache": True,
                  "output_hidden_states": self.drift}
        if pos is not None:
            kwargs["position_ids"] = pos.to(self.device)
        if cache is not None:
            kwargs[self._cache_arg] = cache
        self.computed_tokens += sum(lengths)
        self.padded_tokens += ids.numel()
        first = pos[:, 0].tolist() if pos is not None else [0] * len(lengths)
        self.attended += sum((s + n) * (s + n + 1) // 2 - s * (s + 1) // 2 for s, n in zip(first, lengths))
        real = torch.cat([torch.arange(n) + b * ids.shape[1] for b, n in enumerate(lengths)]).to(self.device)
        if self._split:
            decoder, head = self._split
            out = decoder(**kwargs)
            h = out.last_hidden_state.reshape(-1, out.last_hidden_state.shape[-1]).index_select(0, real)
            logits = head(h)
        else:
            out = self.model(**kwargs)
            logits = out.logits.reshape(-1, out.logits.shape[-1]).index_select(0, real)
        logp = log_softmax_in_place(logits.float())
        logps = list(torch.split(logp, lengths))
        hidden = torch.stack(out.hidden_states, 1) if self.drift else None  # [B, L+1, T, H]
        layers = _kv_layers(getattr(out, "cache", None) or out.past_key_values)
        return logps, hidden, layers

    # ------------------------------------------------------------ metrics

    def _finish(self, seeds, seqs, children, results, gi, it: Item, seq: _Seq) -> None:
        seed = seeds[gi]
        parent = seed if it.parent is None else seqs[gi][it.parent]
        m = self.compare(parent, seq)
        vs_seed = m if parent is seed else self.compare(seed, seq)
        for k in PAIR_METRICS:
            m[f"seed_{k}"] = vs_seed[k]
        if self.drift:
            m["seed_drift_layer"] = vs_seed["drift_layer"]
        m["nll"] = float(-seq.tok_logp.mean()) if seq.ids else 0.0
        results[gi][it.key] = m
        if children[gi].get(it.key):
            seqs[gi][it.key] = seq

    def compare(self, ref: _Seq, seq: _Seq) -> dict:
        f, new, blocks = alignment(ref.ids, seq.ids)
        dev = seq.tok_logp.device
        out: dict = {"new_tokens": len(new)}
        if new:
            s = -seq.tok_logp[torch.tensor(new, device=dev)]
            out["surprisal"], out["surprisal_max"] = float(s.mean()), float(s.max())
        else:
            out["surprisal"] = out["surprisal_max"] = 0.0
        ri = [i for i0, _, n in blocks for i in range(i0, i0 + n)]
        ci = [j for _, j0, n in blocks for j in range(j0, j0 + n)]
        out["aligned_tokens"] = len(ci)
        if ci:
            i, j = torch.tensor(ri, device=dev), torch.tensor(ci, device=dev)
            cross = []  # sum_v P_ref(v) log P_seq(v), over views of the stored rows
            for i0, j0, n in blocks:
                cuts = {0, n} | {c - i0 for c in ref.cuts(i0, i0 + n)} | {c - j0 for c in seq.cuts(j0, j0 + n)}
                cuts = sorted(cuts)
                for a, b in zip(cuts, cuts[1:]):
                    cross.append(torch.einsum("ij,ij->i", ref.block("probs", i0 + a, i0 + b),
                                              seq.block("logp", j0 + a, j0 + b)))
            kl = (ref.neg_entropy[i] - torch.cat(cross)).clamp_min(0)
            dn = ref.tok_logp[i] - seq.tok_logp[j]
            out["ripple_kl"], out["ripple_kl_max"] = float(kl.mean()), float(kl.max())
            out["delta_nll"] = float(dn.mean())
            out["top1"] = float((ref.top[i] == seq.top[j]).float().mean())
        else:
            out["ripple_kl"] = out["ripple_kl_max"] = out["delta_nll"] = 0.0
            out["top1"] = 1.0
        if self.drift:
            if ci:
                ha, hb = ref.states(i + 1), seq.states(j + 1)   # the aligned tokens themselves
                rel = (hb - ha).norm(dim=-1) / ha.norm(dim=-1).clamp_min(1e-6)
                curve = [float(x) for x in rel.mean(1)]
            else:
                curve = [0.0] * (self.model.config.num_hidden_layers + 1)
            out["drift"] = curve
            out["drift_layer"] = next((k for k, x in enumerate(curve) if k and x > self.threshold), None)
        return out


# ---------------------------------------------------------------- helpers


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


def _stored_kv(seq: _Seq):
    """The per-layer cache of the nearest text in the chain that stored one (shapes, dtype)."""
    while seq.own is None or not seq.own.kv:
        seq = seq.base
    return seq.own.kv


def _kv_layers(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return [(k, v) for k, v in cache]


def _batches(items: list, cost, budget: int, max_rows: int, overhead: int = 0):
    """Consecutive items (sorted by cost) cut into batches with rows x longest <= budget (a
    longer item goes alone), choosing the cuts that minimise padded positions plus
    ``overhead`` per batch."""
    n = len(items)
    if not n:
        return
    c = [cost(x) for x in items]
    best = [0.0] + [float("inf")] * n   # best[i]: cheapest way to batch items[:i]
    cut = [0] * (n + 1)
    for i in range(1, n + 1):
        longest = c[i - 1]
        j = i - 1
        while j >= 0 and (i - j) <= max_rows and ((i - j) * longest <= budget or j == i - 1):
            v = best[j] + (i - j) * longest + overhead
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
