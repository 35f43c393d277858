"""Changes measured in the seed's context (the default with a ripple window): a variant's
rows are its seed's, except from each run of changes to R tokens past it (``runs_apart``, 128
by default, at least W), where they are what the model gives for the seed with that run
alone. Changes less than R tokens apart are one run (a zone). The metrics still cover W
tokens past each run.

A zone is scored as a virtual text: the seed up to the run, the zone's tokens, and no more
(``Zone.ids``), so it is computed once over the seed's cache and read by every variant that
carries it (a parent's edit is its children's too). A variant whose edits are far apart
computes each edit's zone only, where computing its own text would run from its first edit to
W tokens past its last: on the long mix (paragraphs of 200-500 tokens), a grandchild computed
245 of its 418 tokens that way.

For a variant whose changes are less than R apart, this is its own text up to R past its
last change: exact there. With changes further apart, a later run is scored as if the earlier
ones were not there: what an edit does past R tokens is taken as died out, as the window
itself takes it past W (the README's Benchmarks measure the difference)."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import torch

from ..dsl.recipe import PAIR_METRICS
from .rows import Change, Plan, common_prefix, request_rows


@dataclass
class Zone:
    key: Hashable                 # ("zone", ss, its tokens)
    ids: list[int]                # the seed's tokens before ss, then the zone's
    ss: int
    rows: int                     # rows it covers, from ss
    level: int                    # depth of the shallowest variant that carries it
    parents: list                 # zones of the first carrier's parent (candidate bases)


@dataclass
class Piece:
    """Rows start..stop-1 of a text are row q - offset of ``source`` (a zone key; None: the seed)."""
    start: int
    stop: int
    source: Hashable | None
    offset: int


@dataclass
class ZonePlan:
    """A group's zones (by key, in level order), their plans (virtual texts over the seed, as
    ``rows.plan_group`` plans texts), each variant's pieces and depth, and the seed's
    positions whose full rows are read."""
    zones: dict
    plans: dict
    pieces: dict
    depth: dict
    seed_need: set
    changes: dict    # item key -> (Change against its parent or seed, against the seed or None)

    def kept(self) -> int:
        return len(self.seed_need) + sum(len(pl.need) for pl in self.plans.values())

    def __post_init__(self) -> None:
        self._sources = {k: frozenset(pc.source for pc in ps if pc.source is not None) for k, ps in self.pieces.items()}

    def sources(self, key) -> frozenset:
        """The zones a variant's rows come from (pieces do not change once planned)."""
        return self._sources[key]


def plan_zones(seed_ids: list[int], items, window: int, drift: bool, apart: int | None = None) -> ZonePlan:
    """``apart``: changes less than this many tokens apart are one run, and a run's rows are its
    own up to ``apart`` tokens past its last change, the seed's after (default and at least: W)."""
    apart = max(apart or window, window)
    zones: dict = {}
    pieces: dict = {}
    depth: dict = {}
    to_seed: dict = {}   # item key -> its Change against the seed (runs, and the metrics against the seed)
    n_seed = len(seed_ids)
    for it in items:
        depth[it.key] = d = 0 if it.parent is None else depth[it.parent] + 1
        mine: list[Piece] = []
        at = 0
        ch = to_seed[it.key] = Change.of(seed_ids, it.ids)
        for s, ss, last in ch.regions(apart):
            stop = min(len(it.ids), last + apart)   # its rows: ``apart`` past it, the seed's after
            if stop <= s:   # a deletion at the very end: nothing after it to measure
                continue
            e = stop + (1 if drift else 0)   # computed: with drift, the window's last token's state
            if s > at:
                mine.append(Piece(at, s, None, s - ss))
            ids = seed_ids[:ss] + it.ids[s:min(len(it.ids), e)]
            key = ("zone", ss, e - s, tuple(ids[ss:]))
            if key in zones:
                zones[key].level = min(zones[key].level, d)
            else:
                parents = [pc.source for pc in pieces.get(it.parent, []) if pc.source is not None]
                zones[key] = Zone(key, ids, ss, e - s, d, parents)
            mine.append(Piece(s, stop, key, s - ss))
            at = stop
        if at < len(it.ids) + 1:   # the last equal run's offset
            i0, j0, _ = ([(0, 0, 0)] + ch.blocks)[-1]
            mine.append(Piece(at, len(it.ids) + 1, None, j0 - i0))
        pieces[it.key] = mine

    plans: dict = {}
    for key, z in sorted(zones.items(), key=lambda kv: kv[1].level):
        base, p = None, min(common_prefix(seed_ids, z.ids), n_seed)
        for other in z.parents:   # a parent's zone computed earlier that shares more
            if zones[other].level < z.level:
                q = min(common_prefix(zones[other].ids, z.ids), len(zones[other].ids))
                if q > p:
                    base, p = other, q
        n = len(z.ids)   # nothing compares against a zone: its change is none, as Change.of(ids, ids) says
        plans[key] = Plan(base, p, max(z.ss + z.rows, p + 1), Change(n, [], [], n, n, n), None, n)
    seed_need: set[int] = set()

    def request(key, q: int) -> None:
        request_rows(plans, seed_need, key, q)

    for key, z in zones.items():
        pl = plans[key]
        if pl.base is not None:          # the base's cache up to p
            plans[pl.base].end = max(plans[pl.base].end, pl.p + 1)
        if pl.p < len(z.ids):            # row p is the base's, read for another target
            request(pl.base, pl.p)

    def read(item_key, q: int) -> None:
        """Full rows at row q of a variant (None: the seed), from whoever computes them."""
        if item_key is None:
            seed_need.add(q)
            return
        for pc in pieces[item_key]:
            if pc.start <= q < pc.stop:
                request(pc.source, q - pc.offset)
                return
        raise AssertionError(f"row {q} of {item_key!r} is in no piece")

    ids_of = {it.key: it.ids for it in items}
    changes: dict = {}
    for it in items:
        vs = to_seed[it.key] if it.parent is not None else None
        vp = Change.of(ids_of[it.parent], it.ids) if it.parent is not None else to_seed[it.key]
        changes[it.key] = (vp, vs)
        for ref, ch in ((it.parent, vp), (None, vs)):
            if ch is None:
                continue
            ri, ci = ch.pairs(window, each=apart)
            for i, j in zip(ri, ci):
                read(ref, i)
                read(it.key, j)
                # with drift, the hidden states of the tokens themselves (input j+1) are inside
                # what is computed already: each zone runs one token past its stop (``e``), and a
                # base's end reaches past its child's p
    order = sorted(zones, key=lambda k: zones[k].level)
    return ZonePlan({k: zones[k] for k in order}, plans, pieces, depth, seed_need, changes)


class ZSeq:
    """A variant's rows read through its pieces: the seed's, or a zone's (``Seq`` each)."""

    def __init__(self, ids: list[int], pieces: list[Piece], seqs: dict) -> None:
        self.ids, self.pieces, self.seqs = ids, pieces, seqs   # seqs: zone key or None -> Seq
        n = len(ids)
        toks, tops = [], []
        for pc in pieces:
            src = seqs[pc.source]
            a, b = pc.start - pc.offset, min(pc.stop, n) - pc.offset
            if b > a:
                toks.append(src.tok_logp[a:b])
                tops.append(src.top[a:b])
        dev = seqs[None].tok_logp.device
        self.tok_logp = torch.cat(toks) if toks else torch.zeros(0, device=dev)
        self.top = torch.cat(tops) if tops else torch.zeros(0, dtype=torch.long, device=dev)
        self._starts = torch.tensor([pc.start for pc in pieces], device=dev)

    def _route(self, idx: torch.Tensor, get, by: torch.Tensor | None = None):
        which = torch.searchsorted(self._starts, idx if by is None else by, right=True) - 1
        first = int(which[0]) if len(idx) else 0
        if not len(idx) or bool((which == first).all()):
            pc = self.pieces[first]
            return get(self.seqs[pc.source], idx - pc.offset)
        parts = []
        for k in torch.unique(which).tolist():
            mask = which == k
            pc = self.pieces[k]
            parts.append((mask, get(self.seqs[pc.source], idx[mask] - pc.offset)))
        return parts

    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        got = self._route(idx, lambda s, i: s.rows(i))
        if not isinstance(got, list):
            return got
        out = got[0][1].new_empty(len(idx), got[0][1].shape[1])
        for mask, x in got:
            out[mask] = x
        return out

    def states(self, idx: torch.Tensor) -> torch.Tensor:
        """Hidden states at inputs ``idx``: token idx-1's, from the piece holding row idx-1."""
        got = self._route(idx, lambda s, i: s.states(i), by=idx - 1)
        if not isinstance(got, list):
            return got
        h = got[0][1]
        out = h.new_empty(h.shape[0], len(idx), h.shape[2])
        for mask, x in got:
            out[:, mask] = x
        return out


class ZoneRun:
    """One scoring window in zones: the scorer's seeds forward and batch paths, with the
    window's state (``rows`` of score.py's ``_Window``) carrying the zones' bookkeeping."""

    def __init__(self, scorer, window: list, plans: list[ZonePlan]) -> None:
        self.sc, self.window, self.plans = scorer, window, plans

    def run(self):
        """Zones level by level (a zone's level: the depth of the shallowest variant carrying
        it); a variant is measured as soon as the last of its zones is scored, and a zone is
        let go when the last variant reading it (its carriers and their children) is measured."""
        sc, window, plans = self.sc, self.window, self.plans
        from .score import Item, _Window

        children = [{} for _ in window]        # zone -> zones based on it (they read its cache)
        for gi, zp in enumerate(plans):
            for pl in zp.plans.values():
                if pl.base is not None:
                    children[gi][pl.base] = children[gi].get(pl.base, 0) + 1
        self.st = st = _Window(window, [(zp.plans, zp.seed_need) for zp in plans], children)
        st.zones = self
        st.zp = plans
        st.readers = [dict(c) for c in children]   # zone -> variants and zones still to read it
        st.waits = [{} for _ in window]        # variant -> zones of its level not yet scored
        st.waiting = [{} for _ in window]      # zone -> variants waiting on it
        st.real = [{} for _ in window]         # variants others compare with, until measured
        st.kids = [{} for _ in window]         # variant -> children not yet measured
        for gi, (g, zp) in enumerate(zip(window, plans)):
            for it in g.items:
                sc.total_tokens += len(it.ids) + (1 if self.sc.drift else 0)
                read = zp.sources(it.key) | (zp.sources(it.parent) if it.parent is not None else set())
                for z in read:
                    st.readers[gi][z] = st.readers[gi].get(z, 0) + 1
                if it.parent is not None:
                    st.kids[gi][it.parent] = st.kids[gi].get(it.parent, 0) + 1
        st.seeds = sc._seeds(window, st)
        levels = max((d for zp in plans for d in zp.depth.values()), default=0)
        for level in range(levels + 1):
            todo = []
            for gi, (g, zp) in enumerate(zip(window, plans)):
                todo += [(gi, Item(k, z.ids, st.plans[gi][0][k].base)) for k, z in zp.zones.items() if z.level == level]
                for it in g.items:
                    if zp.depth[it.key] != level:
                        continue
                    wait = {z for z in zp.sources(it.key) if zp.zones[z].level == level}
                    st.waits[gi][it.key] = (it, len(wait))
                    for z in wait:
                        st.waiting[gi].setdefault(z, []).append(it.key)
            for gi, g in enumerate(window):
                for key, (it, n) in list(st.waits[gi].items()):
                    if n == 0:
                        self.measure(gi, it)
            sc._run_level(st, todo)
        for gi, g in enumerate(window):
            assert not st.waits[gi], "a variant was never measured"
            yield g, st.results[gi]

    def done(self, gi: int, zone, seq) -> None:
        """A zone scored: the variants waiting on it measured (from its fresh rows), then only
        the rows later readers need are kept."""
        st = self.st
        st.seqs[gi][zone.key] = seq
        for key in st.waiting[gi].pop(zone.key, []):
            it, n = st.waits[gi][key]
            st.waits[gi][key] = (it, n - 1)
            if n == 1:
                self.measure(gi, it)
        if not st.readers[gi].get(zone.key):
            self.drop(gi, zone.key)
        elif seq.own is not None:
            seq.own = seq.own.keep_only([q - seq.p - 1 for q in st.plans[gi][0][zone.key].need], self.sc.ref_dtype)
            seq.counted = True
            self.sc._count(seq.own, +1)

    def read(self, gi: int, key) -> None:
        st = self.st
        st.readers[gi][key] -= 1
        if st.readers[gi][key] == 0:
            self.drop(gi, key)

    def drop(self, gi: int, key) -> None:
        st = self.st
        gone = st.seqs[gi].pop(key, None)
        if gone is None:
            return
        if gone.own is not None and getattr(gone, "counted", False):
            self.sc._count(gone.own, -1)
        base = st.plans[gi][0][key].base
        if base is not None:   # its rows up to p were its base's: counted as kept until now
            self.read(gi, base)

    def measure(self, gi: int, it) -> None:
        """A variant whose zones are all scored: its metrics, read through its pieces."""
        st = self.st
        del st.waits[gi][it.key]
        zp = st.zp[gi]
        seed = st.seeds[gi]
        seqs = {None: seed}
        seqs.update({z: st.seqs[gi][z] for z in zp.sources(it.key)})
        seq = ZSeq(it.ids, zp.pieces[it.key], seqs)
        parent = seed if it.parent is None else st.real[gi][it.parent]
        apart = self.sc.runs_apart
        vp, vs = zp.changes[it.key]   # the alignments the plan made
        m = self.sc.compare(parent, seq, vp, each=apart)
        vs_seed = m if vs is None else self.sc.compare(seed, seq, vs, each=apart)
        for k in PAIR_METRICS:
            m[f"seed_{k}"] = vs_seed[k]
        if self.sc.drift:
            m["seed_drift_layer"] = vs_seed["drift_layer"]
        m["nll"] = float(-seq.tok_logp.mean()) if len(it.ids) else 0.0
        st.results[gi][it.key] = m
        if st.kids[gi].get(it.key):
            st.real[gi][it.key] = seq
        read = zp.sources(it.key) | (zp.sources(it.parent) if it.parent is not None else set())
        if it.parent is not None:
            st.kids[gi][it.parent] -= 1
            if st.kids[gi][it.parent] == 0:
                st.real[gi].pop(it.parent, None)
        del seq, parent
        for z in read:
            self.read(gi, z)
        st.left[gi] -= 1
        if st.left[gi] == 0 and seed is not None:   # the group is done: its seed goes too
            self.sc._count(seed.own, -1)
            st.seeds[gi] = None
