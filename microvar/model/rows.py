"""What the scorer keeps of each text between forwards: where two texts differ (the
alignment and the ripple window), which positions of each text someone will read, and the
stored rows themselves.

A text's row k is log P(. | c, t_0..t_{k-1}) over the vocabulary. Text t shares its first
p tokens with its base (the seed, or its parent when that shares more), so its rows 0..p
are the base's; it computes rows p+1..end-1 only, where ``end`` covers its own ripple
windows and what its children need. A text keeps full-vocabulary rows only at the
positions a later comparison reads (``need``), in ``ref_dtype``; everything else is a
token's log-probability and argmax (one number each)."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

import torch
from rapidfuzz.distance import Levenshtein


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    k = 0
    while k < n and a[k] == b[k]:
        k += 1
    return k


def alignment(ref: list[int], ids: list[int]) -> tuple[int, list[int], list[tuple[int, int, int]]]:
    """(f, new positions in ids, equal blocks (ref start, ids start, length) after f)."""
    c = Change.of(ref, ids)
    return c.f, c.new, c.blocks


@dataclass
class Change:
    """How ``ids`` differs from ``ref``: f, the first differing position; ``new``, the new
    or changed positions of ids; ``blocks``, equal runs after f; ``last``, one past the last
    changed position of ids (a deletion counts at the token after it; ``len(ids)`` when
    the edit reaches the end; ``f`` when nothing changed); ``n`` and ``m``, the lengths of
    ids and ref."""
    f: int
    new: list[int]
    blocks: list[tuple[int, int, int]]
    last: int
    n: int
    m: int = 0

    @classmethod
    def of(cls, ref: list[int], ids: list[int]) -> Change:
        f = common_prefix(ref, ids)
        new: list[int] = []
        blocks: list[tuple[int, int, int]] = []
        last = f
        if not (f == len(ref) == len(ids)):
            for op in Levenshtein.opcodes(ref[f:], ids[f:]):
                if op.tag == "equal":
                    blocks.append((f + op.src_start, f + op.dest_start, op.src_end - op.src_start))
                else:
                    new.extend(range(f + op.dest_start, f + op.dest_end))
                    last = f + op.dest_end
        return cls(f, new, blocks, last, len(ids), len(ref))

    def end(self, window: int) -> int:
        """One past the last position of ids measured: ``window`` tokens past the last
        change, or the whole remainder when window is 0."""
        return self.n if window <= 0 else min(self.n, self.last + window)

    def regions(self, apart: int) -> list[tuple[int, int, int]]:
        """The changes in runs, those less than ``apart`` tokens apart merged: (s, ss, last)
        each, its first position in ids (s) and in ref (ss), and one past its last changed
        position in ids (a deletion at the token after it)."""
        out: list[list[int]] = []
        runs = [(0, 0, self.f)] + list(self.blocks)   # equal runs (ref start, ids start, length)
        for (i0, j0, k), nxt in zip(runs, runs[1:] + [None]):
            s, ss = j0 + k, i0 + k
            if nxt is None and s == self.n and ss == self.m:   # equal to the end
                break
            last = nxt[1] if nxt is not None else self.n
            if out and s < out[-1][2] + apart:
                out[-1][2] = last
            else:
                out.append([s, ss, last])
        return [(s, ss, last) for s, ss, last in out]

    def pairs(self, window: int, each: int = 0) -> tuple[list[int], list[int]]:
        """Aligned (ref, ids) positions after f inside the window; ``each`` > 0: inside the
        window of some run of changes (changes less than ``each`` tokens apart are one run),
        not the whole stretch from the first change to W past the last."""
        e = self.end(window)
        ri = [i0 + k for i0, j0, n in self.blocks for k in range(min(n, e - j0))]
        ci = [j0 + k for i0, j0, n in self.blocks for k in range(min(n, e - j0))]
        if each and window > 0:
            spans = [(s, last + window) for s, _, last in self.regions(max(each, window))]
            keep = [any(a <= j < b for a, b in spans) for j in ci]
            ri = [i for i, k in zip(ri, keep) if k]
            ci = [j for j, k in zip(ci, keep) if k]
        return ri, ci


@dataclass
class Plan:
    """What one item of a group will compute and read, decided before any forward."""
    base: Hashable | None        # item key of the base, None for the seed
    p: int                       # shares rows 0..p with the base
    end: int                     # computes input positions p+1..end-1
    vs_parent: Change
    vs_seed: Change | None       # None when the parent is the seed
    own_end: int                 # one past its last position whose log-prob is its own (for nll)
    need: set[int] = field(default_factory=set)   # own positions whose full rows others read


def owner(plans: dict, key, q: int):
    """The text that computes position q of text ``key``: itself, or the base whose cache it
    reuses up to its p, and so on (None: the seed)."""
    while key is not None and q <= plans[key].p:
        key = plans[key].base
    return key


def request_rows(plans: dict, seed_need: set, key, q: int) -> None:
    """Full rows at position q of text ``key`` (None: the seed), kept by whoever computes them
    (``rows.plan_group``'s texts and ``zones.plan_zones``' zones alike)."""
    key = owner(plans, key, q)
    if key is None:
        seed_need.add(q)
    else:
        plans[key].need.add(q)
        plans[key].end = max(plans[key].end, q + 1)


def plan_group(seed_ids: list[int], items, window: int, drift: bool) -> tuple[dict, set[int]]:
    """Per item key its ``Plan``; and the seed's positions whose full rows others read."""
    plans: dict = {}
    ids_of = {it.key: it.ids for it in items}
    seed_need: set[int] = set()
    n_seed = len(seed_ids)
    for it in items:
        par_ids = seed_ids if it.parent is None else ids_of[it.parent]
        base, p = None, min(common_prefix(seed_ids, it.ids), n_seed)
        if it.parent is not None:
            q = min(common_prefix(par_ids, it.ids), len(par_ids))
            if q > p:
                base, p = it.parent, q
        vp = Change.of(par_ids, it.ids)
        vs = None if it.parent is None else Change.of(seed_ids, it.ids)
        own = (vs or vp).end(window)
        end = max(vp.end(window), vs.end(window) if vs else 0) + (1 if drift else 0)
        plans[it.key] = Plan(base, p, max(end, p + 1), vp, vs, own)

    def reach(key, q: int) -> None:
        """Input position q of text ``key`` computed (the seed computes all of its own)."""
        key = owner(plans, key, q)
        if key is not None:
            plans[key].end = max(plans[key].end, q + 1)

    def request(key, q: int) -> None:
        request_rows(plans, seed_need, key, q)

    for it in items:
        pl = plans[it.key]
        if pl.base is not None:   # the base's cache up to p, computed
            plans[pl.base].end = max(plans[pl.base].end, pl.p + 1)
        if pl.p < len(it.ids):    # row p is the base's, read for another target
            request(pl.base, pl.p)
        for ref, ch in ((it.parent, pl.vs_parent), (None, pl.vs_seed)):
            if ch is None:
                continue
            ri, ci = ch.pairs(window)
            for i in ri:
                request(ref, i)
                if drift:   # the hidden state of the token itself
                    reach(ref, i + 1)
            for j in ci:
                if j <= pl.p:
                    request(pl.base, j)
    return plans, seed_need


@dataclass
class Rows:
    """Per-position results for input positions lo..lo+m-1 of one text: every position's
    token log-probability and argmax, full-vocabulary rows only where ``slot`` says."""
    logp: torch.Tensor | None            # [k, V] rows, fresh (all m) or stored (the needed ones)
    top: torch.Tensor                    # [m] argmax
    slot: torch.Tensor | None = None     # [m] row of logp for each position (-1: not kept); None: identity
    hidden: torch.Tensor | None = None   # [layers+1, m, H] with --drift
    kv: list | None = None               # per layer (k, v) [kv_heads, m, head_dim], for texts others extend

    def pick(self, local: torch.Tensor) -> torch.Tensor:
        if self.slot is not None:
            local = self.slot[local]
            assert bool((local >= 0).all()), "a row was read that the plan did not keep"
        n = len(local)
        if n and (n == 1 or bool((local.diff() == 1).all())):   # a run of rows: a view, not a copy
            return self.logp.narrow(0, int(local[0]), n).float()
        return self.logp.index_select(0, local).float()

    def keep_only(self, positions: list[int], dtype: torch.dtype) -> Rows:
        """A copy holding full rows only at ``positions`` (local indices), in ``dtype``."""
        m = len(self.top)
        slot = torch.full((m,), -1, dtype=torch.long, device=self.top.device)
        if positions:
            idx = torch.tensor(sorted(positions), dtype=torch.long, device=self.top.device)
            slot[idx] = torch.arange(len(idx), device=self.top.device)
            logp = self.logp.index_select(0, idx).to(dtype)
        else:
            logp = None
        return Rows(logp, self.top.clone(), slot, self.hidden, self.kv)


class Seq:
    """A scored text. Input position q < p+1 has the same context as in ``base`` (the seed,
    or the parent when it shares more), so its rows and cache are the base's; the rest are
    its own. A seed has no base (p = -1). ``avail``: input positions it has rows for."""

    def __init__(self, base: Seq | None, ids: list[int], p: int, own: Rows | None, avail: int,
                 fresh: torch.Tensor | None = None) -> None:
        """``fresh``: this text's own rows [m, V] straight from the forward, to read its
        token log-probabilities from before ``own`` keeps only some of them."""
        self.base, self.ids, self.p, self.own, self.avail = base, ids, p, own, avail
        n, k = len(ids), p + 1
        m = min(n, avail)   # tokens with a log-probability
        src = fresh if fresh is not None else (own.logp if own is not None else None)
        dev = (src if src is not None else base.tok_logp).device
        tok = torch.tensor(ids[:m], dtype=torch.long, device=dev)
        if base is None:
            self.tok_logp = src[:m].gather(1, tok[:, None]).squeeze(1)
            self.top = own.top[:avail]
            return
        parts = [base.tok_logp[:min(p, n)]]   # same context and same target
        if p < n:                             # same context, another target
            parts.append(base.rows(torch.tensor([p], device=dev))[0, ids[p]].reshape(1))
        if m > k:
            parts.append(src[:m - k].gather(1, tok[k:, None]).squeeze(1).float())
        self.tok_logp = torch.cat(parts)
        shared = min(k, avail)
        self.top = base.top[:shared] if own is None else torch.cat([base.top[:shared], own.top])

    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        """Full rows (float32) at positions ``idx``, from whichever text computed them."""
        if self.base is None:
            return self.own.pick(idx)
        mine = idx > self.p
        if not bool(mine.any()):
            return self.base.rows(idx)
        if bool(mine.all()):
            return self.own.pick(idx - self.p - 1)
        first = self.own.pick(idx[mine] - self.p - 1)
        out = first.new_empty(len(idx), first.shape[1])
        out[mine] = first
        out[~mine] = self.base.rows(idx[~mine])
        return out

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

    def fill_kv(self, layer: int, K: torch.Tensor, V: torch.Tensor, b: int, upto: int, at: int = 0) -> None:
        """Copy this text's cache for input positions 0..upto-1 into row b, from column ``at``."""
        lo = self.p + 1
        if self.base is not None and lo > 0:
            self.base.fill_kv(layer, K, V, b, min(upto, lo), at)
        if upto > lo:
            k, v = self.own.kv[layer]
            K[b, :, at + lo:at + upto] = k[:, :upto - lo]
            V[b, :, at + lo:at + upto] = v[:, :upto - lo]


def stored_kv(seq: Seq):
    """The per-layer cache of the nearest text in the chain that stored one (shapes, dtype)."""
    while seq.own is None or not seq.own.kv:
        seq = seq.base
    return seq.own.kv
