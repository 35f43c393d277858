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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable, Iterable, Iterator

import torch
from rapidfuzz.distance import Levenshtein

from .recipe import PAIR_METRICS


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
class _SeedState:
    ids: list[int]
    logp: torch.Tensor                       # [n+1, V] rows 0..n
    kv: list[tuple[torch.Tensor, torch.Tensor]]  # per layer [kv_heads, n+1, head_dim]
    hidden: torch.Tensor | None              # [layers+1, n+1, H] by input position


@dataclass
class _Seq:
    """A scored text: rows up to ``p`` are its seed's, the rest its own."""
    seed: _SeedState
    ids: list[int]
    p: int
    logp: torch.Tensor | None = None         # rows p+1 .. p+len
    hidden: torch.Tensor | None = None       # [layers+1, len, H] for input positions p+1 ..

    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        return _pick(self.seed.logp, self.logp, self.p, idx, dim=0)

    def states(self, idx: torch.Tensor) -> torch.Tensor:
        return _pick(self.seed.hidden, self.hidden, self.p, idx, dim=1)


def _pick(shared: torch.Tensor, own: torch.Tensor | None, p: int, idx: torch.Tensor, dim: int) -> torch.Tensor:
    mine = idx > p
    if own is None or not bool(mine.any()):
        return shared.index_select(dim, idx)
    if bool(mine.all()):
        return own.index_select(dim, idx - p - 1)
    out = shared.index_select(dim, idx.clamp(max=shared.shape[dim] - 1))
    where = mine.nonzero().squeeze(1)
    picked = own.index_select(dim, idx[where] - p - 1)
    out.index_copy_(dim, where, picked)
    return out


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    k = 0
    while k < n and a[k] == b[k]:
        k += 1
    return k


def alignment(ref: list[int], ids: list[int]) -> tuple[int, list[int], list[int], list[int]]:
    """(f, new positions in ids, aligned ref positions, aligned ids positions) after f."""
    f = common_prefix(ref, ids)
    new: list[int] = []
    ri: list[int] = []
    ci: list[int] = []
    if f == len(ref) == len(ids):
        return f, new, ri, ci
    for op in Levenshtein.opcodes(ref[f:], ids[f:]):
        if op.tag == "equal":
            ri.extend(range(f + op.src_start, f + op.src_end))
            ci.extend(range(f + op.dest_start, f + op.dest_end))
        else:
            new.extend(range(f + op.dest_start, f + op.dest_end))
    return f, new, ri, ci


def context_token(tokenizer) -> int:
    """The token every text is scored behind: the document boundary when the vocabulary has
    one, else BOS, else EOS."""
    vocab = tokenizer.get_vocab()
    for name in ("<|endoftext|>", "</s>", "<eos>"):
        if name in vocab:
            return vocab[name]
    for tid in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return tid
    return 0


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
        import inspect

        # transformers 5.24 renamed past_key_values to cache
        self._cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        self.computed_tokens = 0   # input positions actually run through the model
        self.total_tokens = 0      # what a full forward of every text would have run

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
        seeds = self._seed_states(window)
        results: list[dict] = [{} for _ in window]
        seqs: list[dict] = [{} for _ in window]
        children: list[dict] = [{} for _ in window]
        depth: list[dict] = [{} for _ in window]
        for gi, g in enumerate(window):
            for it in g.items:
                d = 0 if it.parent is None else depth[gi][it.parent] + 1
                depth[gi][it.key] = d
                if it.parent is not None:
                    children[gi][it.parent] = children[gi].get(it.parent, 0) + 1
        levels = max((d for dd in depth for d in dd.values()), default=0)
        for level in range(levels + 1):
            todo = [(gi, it) for gi, g in enumerate(window) for it in g.items if depth[gi][it.key] == level]
            self._run_level(window, seeds, todo, seqs, children, results)
            for gi, it in todo:  # parents whose children are all measured are dropped
                if it.parent is not None:
                    children[gi][it.parent] -= 1
                    if children[gi][it.parent] == 0:
                        seqs[gi].pop(it.parent, None)
        for gi, g in enumerate(window):
            yield g, results[gi]

    def _seed_states(self, window: list[Group]) -> list[_SeedState]:
        order = sorted(range(len(window)), key=lambda i: len(window[i].seed_ids))
        states: list[_SeedState | None] = [None] * len(window)
        for batch in _batches(order, lambda i: len(window[i].seed_ids) + 1, self.batch_tokens, self.max_rows):
            inputs = [[self.ctx] + window[i].seed_ids for i in batch]
            T = max(len(x) for x in inputs)
            ids = torch.zeros(len(batch), T, dtype=torch.long)
            mask = torch.zeros(len(batch), T, dtype=torch.long)
            for b, x in enumerate(inputs):
                ids[b, :len(x)] = torch.tensor(x)
                mask[b, :len(x)] = 1
            out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device), use_cache=True,
                             output_hidden_states=self.drift)
            self.computed_tokens += sum(len(x) for x in inputs)
            logp = _log_softmax(out.logits)
            layers = _kv_layers(getattr(out, "cache", None) or out.past_key_values)
            hidden = torch.stack(out.hidden_states, 1) if self.drift else None  # [B, L+1, T, H]
            for b, i in enumerate(batch):
                n = len(inputs[b])
                states[i] = _SeedState(window[i].seed_ids, logp[b, :n].clone(),
                                       [(k[b, :, :n].clone(), v[b, :, :n].clone()) for k, v in layers],
                                       hidden[b, :, :n].float().clone() if hidden is not None else None)
            del out, logp, layers, hidden
        return states

    def _run_level(self, window, seeds, todo, seqs, children, results) -> None:
        jobs = []  # (gi, item, seed, p, start, end)
        for gi, it in todo:
            seed = seeds[gi]
            p = common_prefix(seed.ids, it.ids)
            last = len(it.ids) + (1 if self.drift else 0)   # input positions 0..last-1
            start = p + 1
            self.total_tokens += last
            jobs.append((gi, it, seed, p, start, max(start, last)))
        ready = [j for j in jobs if j[5] == j[4]]
        work = sorted((j for j in jobs if j[5] > j[4]), key=lambda j: (j[5] - j[4], j[4]))
        for gi, it, seed, p, _, _ in ready:
            self._finish(window, seqs, children, results, gi, it, _Seq(seed, it.ids, p))
        for batch in _batches(work, lambda j: j[5] - j[4], self.batch_tokens, self.max_rows):
            for j, (logp, hidden) in zip(batch, self._forward_suffixes(batch)):
                gi, it, seed, p = j[:4]
                self._finish(window, seqs, children, results, gi, it, _Seq(seed, it.ids, p, logp, hidden))

    def _forward_suffixes(self, batch):
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
        self.computed_tokens += sum(j[5] - j[4] for j in batch)
        cache = []
        n_layers = len(batch[0][2].kv)
        for layer in range(n_layers):
            k0, v0 = batch[0][2].kv[layer]
            K = k0.new_zeros(B, k0.shape[0], P, k0.shape[2])
            V = v0.new_zeros(B, v0.shape[0], P, v0.shape[2])
            for b, j in enumerate(batch):
                k, v = j[2].kv[layer]
                K[b, :, :j[4]] = k[:, :j[4]]
                V[b, :, :j[4]] = v[:, :j[4]]
            cache.append((K, V))
        from transformers import DynamicCache

        out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                         position_ids=pos.to(self.device), use_cache=True, output_hidden_states=self.drift,
                         **{self._cache_arg: DynamicCache(cache)})
        logp = _log_softmax(out.logits)
        hidden = torch.stack(out.hidden_states, 1) if self.drift else None
        res = []
        for b, j in enumerate(batch):
            n = j[5] - j[4]
            res.append((logp[b, :n].clone(), hidden[b, :, :n].float().clone() if hidden is not None else None))
        return res

    # ------------------------------------------------------------ metrics

    def _finish(self, window, seqs, children, results, gi, it: Item, seq: _Seq) -> None:
        g = window[gi]
        seed_seq = _Seq(seq.seed, seq.seed.ids, len(seq.seed.ids))
        parent = seed_seq if it.parent is None else seqs[gi][it.parent]
        m = {k: v for k, v in self.compare(parent, seq).items()}
        vs_seed = m if it.parent is None or parent.ids == seed_seq.ids else self.compare(seed_seq, seq)
        for k in PAIR_METRICS:
            m[f"seed_{k}"] = vs_seed[k]
        if self.drift:
            m["seed_drift_layer"] = vs_seed["drift_layer"]
        n = len(seq.ids)
        if n:
            idx = torch.arange(n, device=seq.seed.logp.device)
            tok = torch.tensor(seq.ids, device=idx.device)
            m["nll"] = float(-seq.rows(idx).gather(1, tok[:, None]).mean())
        else:
            m["nll"] = 0.0
        results[gi][it.key] = m
        if children[gi].get(it.key):
            seqs[gi][it.key] = seq

    def compare(self, ref: _Seq, seq: _Seq) -> dict:
        f, new, ri, ci = alignment(ref.ids, seq.ids)
        dev = seq.seed.logp.device
        out = {"new_tokens": len(new)}
        if new:
            j = torch.tensor(new, device=dev)
            s = -seq.rows(j).gather(1, torch.tensor([seq.ids[k] for k in new], device=dev)[:, None]).squeeze(1)
            out["surprisal"], out["surprisal_max"] = float(s.mean()), float(s.max())
        else:
            out["surprisal"] = out["surprisal_max"] = 0.0
        if ci:
            i, j = torch.tensor(ri, device=dev), torch.tensor(ci, device=dev)
            a, b = ref.rows(i), seq.rows(j)
            kl = (a.exp() * (a - b)).sum(1).clamp_min(0)
            tok = torch.tensor([seq.ids[k] for k in ci], device=dev)[:, None]
            dn = -b.gather(1, tok).squeeze(1) + a.gather(1, tok).squeeze(1)
            out["ripple_kl"], out["ripple_kl_max"] = float(kl.mean()), float(kl.max())
            out["delta_nll"] = float(dn.mean())
            out["top1"] = float((a.argmax(1) == b.argmax(1)).float().mean())
        else:
            out["ripple_kl"] = out["ripple_kl_max"] = out["delta_nll"] = 0.0
            out["top1"] = 1.0
        out["aligned_tokens"] = len(ci)
        if self.drift:
            if ci:
                ha, hb = ref.states(i + 1), seq.states(j + 1)   # the aligned tokens themselves
                rel = (hb - ha).norm(dim=-1) / ha.norm(dim=-1).clamp_min(1e-6)
                curve = [float(x) for x in rel.mean(1)]
            else:
                curve = [0.0] * ref.seed.hidden.shape[0]
            out["drift"] = curve
            out["drift_layer"] = next((k for k, x in enumerate(curve) if k and x > self.threshold), None)
        return out


# ---------------------------------------------------------------- helpers


def _log_softmax(logits: torch.Tensor) -> torch.Tensor:
    logits = logits.float()
    return logits.sub_(logits.logsumexp(-1, keepdim=True))


def _kv_layers(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return [(k, v) for k, v in cache]


def _batches(items: list, cost, budget: int, max_rows: int):
    """Consecutive items (already sorted by cost) in batches whose padded size
    rows x longest stays under ``budget`` (a single longer item goes alone)."""
    batch: list = []
    longest = 0
    for x in items:
        c = cost(x)
        if batch and (max(longest, c) * (len(batch) + 1) > budget or len(batch) >= max_rows):
            yield batch
            batch, longest = [], 0
        batch.append(x)
        longest = max(longest, c)
    if batch:
        yield batch
