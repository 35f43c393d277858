"""The reference model's response to a text, position by position: the *token probability
field* (probability and rank of every actual token) and, for a variant against its parent,
the ripple of the edit along the unchanged tokens: per-position KL, top-1 agreement, change
of NLL, and the per-layer hidden-state drift.

The scorer (``score.py``) keeps aggregates only; this keeps positions, for ``microvar probe``
and ``microvar report``. Conventions are the scorer's, so the means here equal its metrics:
every text is scored behind ``score.context_token`` (row k of a text's log-probabilities
predicts token k), parent and variant are aligned by ``score.alignment``, the hidden state of
token k is the model's output at input position k+1, and drift at layer l (0 = embeddings) is
the mean of ||h_variant - h_parent|| / ||h_parent|| over the aligned tokens.

Distance of an aligned variant position j from the edit: ``j - start + 1``, where ``start`` is
the first unchanged position after the first changed run (1 = the first token after the edit;
an edit that changes several places, like wrap or reorder, is measured from its first one).

Computation: plain right-padded batched forwards under a token budget (the LM head on real
positions only). ``compare`` takes parents with their children, running ahead over the next
parents while the results fit half of ``cache_bytes``; the most recent full results are kept
up to ``cache_bytes`` (a parent was usually just computed as a child), so memory follows that
budget, not the corpus. Token fields are cached by text."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from .score import (
    _batches,
    _split_model,
    alignment,
    context_token,
    default_batch_tokens,
    log_softmax_in_place,
    pad_batch,
)

BUCKETS = ("1", "2", "3", "4-7", "8-15", "16+")


def bucket(d: int) -> str:
    """The distance bucket of a position ``d`` tokens after the edit (d >= 1)."""
    if d <= 3:
        return str(max(d, 1))
    if d <= 7:
        return "4-7"
    if d <= 15:
        return "8-15"
    return "16+"


@dataclass
class TokenField:
    """Every token of a text with the model's probability for it, in its context."""
    ids: list[int]
    logp: list[float]     # log P(token k | context token, tokens < k)
    rank: list[int]       # 1: the model's most probable token at that position
    top: list[int]        # the model's most probable token there


@dataclass
class Ripple:
    """A variant against its parent, per position (see the module's doc)."""
    f: int                        # first position where the two differ
    start: int | None             # first unchanged variant position after the first changed run
    new: list[int]                # new or changed positions in the variant
    surprisal: list[float]        # -log P of those tokens
    positions: list[int]          # aligned unchanged variant positions after f
    kl: list[float]               # KL(P_parent || P_variant) at each of them
    agree: list[bool]             # same argmax at each of them
    dnll: list[float]             # NLL_variant - NLL_parent at each of them
    drift: list[float] | None     # per layer (0 = embeddings), mean over the positions; None without any
    drift_layer: int | None       # first layer >= 1 over the threshold

    @property
    def distances(self) -> list[int]:
        return [j - self.start + 1 for j in self.positions] if self.start is not None else []

    def metrics(self) -> dict:
        """The scorer's per-variant metrics, from the positions."""
        n_new, n = len(self.surprisal), len(self.kl)
        return {"surprisal": sum(self.surprisal) / n_new if n_new else 0.0,
                "surprisal_max": max(self.surprisal) if n_new else 0.0,
                "ripple_kl": sum(self.kl) / n if n else 0.0, "ripple_kl_max": max(self.kl) if n else 0.0,
                "delta_nll": sum(self.dnll) / n if n else 0.0, "top1": sum(self.agree) / n if n else 1.0,
                "new_tokens": n_new, "aligned_tokens": n, "drift_layer": self.drift_layer}


@dataclass
class _Full:
    ids: list[int]
    logp: torch.Tensor            # [n, V]
    hidden: torch.Tensor | None   # [layers+1, n+1, H]; position 0 is the context token


class FieldModel:
    """Token fields and ripples with one reference model (a ``model.LoadedModel``)."""

    def __init__(self, lm, tk, *, batch_tokens: int | None = None, hidden: bool = True, drift_threshold: float = 0.1,
                 max_rows: int = 64, cache_bytes: int = 256 << 20) -> None:
        self.model = lm.model
        self.device = next(lm.model.parameters()).device
        self.tk = tk
        self.ctx = context_token(tk.hf)
        self.batch_tokens = batch_tokens or default_batch_tokens(self.device.type, tk.vocab_size)
        self.hidden = hidden
        self.threshold = drift_threshold
        self.max_rows = max_rows
        self.layers = int(lm.model.config.num_hidden_layers)
        self._fields: dict[str, TokenField] = {}
        self._full: OrderedDict[str, _Full] = OrderedDict()   # recent full results, up to cache_bytes
        self._full_bytes = 0
        self._lengths: dict[str, int] = {}
        self.cache_bytes = cache_bytes
        self._split = _split_model(lm.model)   # the LM head on real positions only, when it is separable
        self.positions = 0    # input positions run through the model

    def clear(self) -> None:
        self._fields.clear()
        self._full.clear()
        self._full_bytes = 0
        self._lengths.clear()

    # ------------------------------------------------------------ public

    def fields(self, texts: list[str]) -> list[TokenField]:
        """The token field of each text (cached by text)."""
        todo = list(dict.fromkeys(t for t in texts if t not in self._fields))
        for text, full in zip(todo, self._forward(todo)):
            self._fields[text] = _field(full)
        return [self._fields[t] for t in texts]

    def compare(self, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Ripple]:
        """(parent text, variant text) -> the variant's ripple against its parent. Parents and
        children are computed in batches that run ahead over the next parents' children while
        they fit half the cache, so a chain of one child per parent (grow) batches too."""
        by_parent: dict[str, list[str]] = {}
        for parent, child in pairs:
            kids = by_parent.setdefault(parent, [])
            if child not in kids:
                kids.append(child)
        half = self.cache_bytes // 2
        units: list[tuple[str, list[str]]] = []   # a parent and children that fit half the cache
        for parent, kids in by_parent.items():
            chunk, size = [], self._bytes(parent)
            for k in kids:
                if chunk and size + self._bytes(k) > half:
                    units.append((parent, chunk))
                    chunk, size = [], self._bytes(parent)
                chunk.append(k)
                size += self._bytes(k)
            units.append((parent, chunk))
        out: dict[tuple[str, str], Ripple] = {}
        for u, (parent, chunk) in enumerate(units):
            texts = [parent, *chunk]
            more: list[str] = []
            if any(t not in self._full for t in texts):
                size, have = sum(self._bytes(t) for t in texts), set(texts)
                for p2, c2 in units[u + 1:]:
                    extra = [t for t in dict.fromkeys((p2, *c2)) if t not in self._full and t not in have]
                    add = sum(self._bytes(t) for t in extra)
                    if size + add > half:
                        break
                    more.extend(extra)
                    have.update(extra)
                    size += add
            fulls = self._forward(texts + more)[:len(texts)]
            ref = fulls[0]
            self._fields.setdefault(parent, _field(ref))
            for child, full in zip(chunk, fulls[1:]):
                self._fields.setdefault(child, _field(full))
                out[(parent, child)] = self._ripple(ref, full)
            del fulls, ref
        return out

    # ------------------------------------------------------------ internals

    def _bytes(self, text: str) -> int:
        """What a text's full result takes: distributions, and hidden states when kept."""
        if text not in self._lengths:
            self._lengths[text] = len(self.tk.encode([text])[0])
        n = self._lengths[text]
        cfg = self.model.config
        hidden = (self.layers + 1) * (n + 1) * int(cfg.hidden_size) if self.hidden else 0
        return 4 * (n * int(cfg.vocab_size) + hidden)

    def _forward(self, texts: list[str]) -> list[_Full]:
        """The full result of each text: from the recent ones kept, or computed."""
        todo = list(dict.fromkeys(t for t in texts if t not in self._full))
        fresh = dict(zip(todo, self._compute(todo)))
        out = []
        for t in texts:
            if t in fresh:
                out.append(fresh[t])
            else:
                self._full.move_to_end(t)
                out.append(self._full[t])
        for t, full in fresh.items():
            size = full.logp.numel() * 4 + (full.hidden.numel() * 4 if full.hidden is not None else 0)
            self._full[t] = full
            self._full_bytes += size
        while self._full_bytes > self.cache_bytes and len(self._full) > 1:
            _, old = self._full.popitem(last=False)
            self._full_bytes -= old.logp.numel() * 4 + (old.hidden.numel() * 4 if old.hidden is not None else 0)
        return out

    @torch.inference_mode()
    def _compute(self, texts: list[str]) -> list[_Full]:
        """One plain forward per text, batched (right padding) under the token budget."""
        if not texts:
            return []
        all_ids = self.tk.encode(texts)
        order = sorted(range(len(texts)), key=lambda i: len(all_ids[i]))
        result: list[_Full | None] = [None] * len(texts)
        overhead = max(16, self.batch_tokens // 16)
        for batch in _batches(order, lambda i: len(all_ids[i]) + 1, self.batch_tokens, self.max_rows, overhead):
            x, mask, _ = pad_batch([[self.ctx] + all_ids[i] for i in batch])
            T = x.shape[1]
            kwargs = {"input_ids": x.to(self.device), "attention_mask": mask.to(self.device), "use_cache": False,
                      "output_hidden_states": self.hidden}
            lengths = [len(all_ids[i]) for i in batch]
            real = torch.cat([torch.arange(n) + b * T for b, n in enumerate(lengths)]).to(self.device)
            if self._split:
                decoder, head = self._split
                out = decoder(**kwargs)
                last = out.last_hidden_state
                logits = head(last.reshape(-1, last.shape[-1]).index_select(0, real))
            else:
                out = self.model(**kwargs)
                logits = out.logits.reshape(-1, out.logits.shape[-1]).index_select(0, real)
            self.positions += sum(n + 1 for n in lengths)  # with the context token
            logps = torch.split(log_softmax_in_place(logits.float()), lengths)
            hidden = torch.stack(out.hidden_states, 1) if self.hidden else None   # [B, L+1, T, H]
            for b, i in enumerate(batch):
                n = lengths[b]
                h = hidden[b, :, :n + 1].float().clone() if hidden is not None else None
                result[i] = _Full(all_ids[i], logps[b].clone(), h)
            del out, hidden, logits
        return result

    def _ripple(self, a: _Full, b: _Full) -> Ripple:
        f, new, blocks = alignment(a.ids, b.ids)
        tok_b = _token_logp(b)
        surprisal = [float(-tok_b[k]) for k in new]
        ri = [i for i0, _, n in blocks for i in range(i0, i0 + n)]
        ci = [j for _, j0, n in blocks for j in range(j0, j0 + n)]
        start = blocks[0][1] if blocks else None
        if not ci:
            return Ripple(f, start, new, surprisal, [], [], [], [], None, None)
        dev = a.logp.device
        i, j = torch.tensor(ri, device=dev), torch.tensor(ci, device=dev)
        la, lb = a.logp[i], b.logp[j]
        kl = (la.exp() * (la - lb)).sum(-1).clamp_min(0)
        agree = la.argmax(-1) == lb.argmax(-1)
        dnll = _token_logp(a)[i] - tok_b[j]
        drift = layer = None
        if a.hidden is not None and b.hidden is not None:
            ha, hb = a.hidden[:, i + 1], b.hidden[:, j + 1]
            rel = (hb - ha).norm(dim=-1) / ha.norm(dim=-1).clamp_min(1e-6)
            drift = [float(v) for v in rel.mean(1)]
            layer = next((k for k, v in enumerate(drift) if k and v > self.threshold), None)
        return Ripple(f, start, new, surprisal, ci, kl.tolist(), agree.tolist(), dnll.tolist(), drift, layer)


def _token_logp(full: _Full) -> torch.Tensor:
    if not full.ids:
        return torch.zeros(0, device=full.logp.device)
    return full.logp.gather(1, torch.tensor(full.ids, device=full.logp.device)[:, None]).squeeze(1)


def _field(full: _Full) -> TokenField:
    tok = _token_logp(full)
    if not full.ids:
        return TokenField([], [], [], [])
    rank = (full.logp > tok[:, None]).sum(-1) + 1
    return TokenField(list(full.ids), tok.tolist(), rank.tolist(), full.logp.argmax(-1).tolist())
