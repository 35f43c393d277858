"""Volatility scoring: how much a variant disturbs the reference model, against its parent
and against its seed, computed in batches that reuse each seed's KV cache.

Every text is scored behind one context token c (the model's document boundary), so the
model predicts each text token: row k of a sequence's log-probabilities is
log P(t_k | c, t_0..t_{k-1}). A variant equal to its seed in its first p tokens has the
seed's rows 0..p, so only its rows after p are computed, as a batch of right-padded
suffixes over the seeds' caches, each row masked to its own prefix, positions continuing
from it. What each text computes and keeps is planned per group before any forward
(rows.plan_group); a text's full rows are kept only at the positions others read, and a
parent is dropped the moment its last child is measured.

Metrics of a child b against a reference a (its parent, or its seed), aligned by a diff of
token ids; f is the first position where they differ, l one past the last changed position
of b (a deletion counts at the token after it), and the ripple window the positions of b in
[f, l + W) (W = ``ripple_window``; 0: to the end of b):
  surprisal, surprisal_max  -log P_b(b_j) over the new or changed tokens j (nats)
  ripple_kl, ripple_kl_max  KL(P_a(.|a_<i) || P_b(.|b_<j)) over unchanged tokens in the window
  delta_nll                 mean of NLL_b(b_j) - NLL_a(a_i) over the same tokens
  top1                      share of the same tokens where both predict the same argmax
  drift, drift_layer        (--drift) relative change of each layer's hidden state at
                            those tokens, and the first layer where it passes a threshold
  nll                       b's mean -log P per token; past its window against the seed, a
                            token's log-probability is the seed's at the aligned position
Positions past the window are neither computed nor stored: the ripple has died out there
(the README's Volatility section has the measured decay).

With a window, by default (``seed_context``), each run of changes is measured in the seed's
context (zones.py): a variant's rows are the seed's except within W tokens of each run,
computed once per run for every variant that carries it, and the pair metrics cover the
tokens within W past each run. ``seed_context=False``: in the variant's own text, from its
first change to W past its last, as above.

Over 400 lines: one scoring window's state (plans, bases, kept rows, each parent released
when its last child is measured) is read and changed by the seeds' forward and both batch
paths (packed rows, pack.py; a row per suffix for models that cannot pack); apart, each would
hand the window's internals to the others. The metrics are in metrics.py, the zones' window
in zones.py."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass

import torch

from ..dsl.recipe import PAIR_METRICS
from ..errors import MicrovarError
from .forward import (  # noqa: F401  (re-exported: other commands import them from here)
    REFERENCE_VOCAB,
    _batches,
    _kv_layers,
    _split_model,
    adds_bos,
    cache_kwarg,
    context_token,
    default_batch_tokens,
    log_softmax_in_place,
    pad_batch,
)
from .metrics import compare, nll
from .pack import Row, pack_rows, packable, past_cache
from .rows import Change, Rows, Seq, alignment, common_prefix, plan_group, stored_kv  # noqa: F401
from .zones import ZoneRun, plan_zones

RIPPLE_WINDOW = 32   # tokens past the last change; chosen from the measured decay (README, Volatility)
PAST_SHARE = 2       # a batch's copied past: at most this many x batch tokens positions
PACK_TOKENS = 128    # suffixes packed into rows of this many tokens (0: a row each)
RUNS_APART = 128     # seed context: a run's own rows reach this far past it; runs closer are one (README)
COPY_SHARE = 1 / 64  # a past position's copy into the batch's cache, in computed positions
RUNTIME_BYTES = 600 * 2**20   # torch, tokenizer, Python objects: measured RSS before the first forward, rounded up


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


class Scorer:
    """Scores groups (a seed and its variants) in batches under a token budget.

    ``ripple_window``: tokens past a variant's last change that its metrics cover (0: all).
    ``ref_dtype``: precision of the full rows kept for later comparisons (float32: exact;
    float16 halves their memory, see the README for the error).
    ``window_tokens``: seed and variant tokens scored together (default 2 x batch tokens).
    ``max_memory``: bytes the run may take; the window then also closes before its planned
    kept rows pass what is left (``memory_plan``).
    ``pack_tokens``: suffixes are packed into rows of this many tokens (0: a row each);
    ``packed`` says whether they were (``pack.packable``; None until a variant was scored).
    ``seed_context``: with a window, each run of changes (changes less than ``runs_apart``
    tokens apart, at least W) is measured in the seed's context (zones.py); False: in the
    variant's own text, from its first change to W past its last."""

    def __init__(self, model, context_id: int, *, batch_tokens: int = 2048, drift: bool = False,
                 drift_threshold: float = 0.1, window_tokens: int | None = None, max_rows: int = 256,
                 ripple_window: int = RIPPLE_WINDOW, ref_dtype: torch.dtype = torch.float32,
                 max_memory: float | None = None, pack_tokens: int = PACK_TOKENS,
                 seed_context: bool = True, runs_apart: int = RUNS_APART) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.ctx = context_id
        self.batch_tokens = batch_tokens
        self.drift = drift
        self.threshold = drift_threshold
        self.window_tokens = window_tokens or 2 * batch_tokens   # half of 4x: half the rows kept at once
        self.max_rows = max_rows
        self.ripple_window = ripple_window
        self.ref_dtype = ref_dtype
        self.computed_tokens = 0   # input positions actually run through the model (padding not counted)
        self.padded_tokens = 0     # ... and with the padding of each batch
        self.total_tokens = 0      # what a full forward of every text would have run
        self.attended = 0          # sum over computed positions of the keys each attends to
        self.kept_rows = 0         # full rows kept for later comparisons, now
        self.kept_rows_peak = 0    # ... at most
        self.max_rows_kept: int | None = None   # full rows a window's plans may keep (set by max_memory)
        self._split = _split_model(model)
        self._attn_share = _attention_share(model)
        self.pack_tokens = pack_tokens
        self.packed: bool | None = None   # decided when the first variant is scored (pack.packable)
        self.zoned = seed_context and ripple_window > 0
        self.runs_apart = max(runs_apart, ripple_window)
        if max_memory:
            self.memory_plan(max_memory)
        self._cache_arg = cache_kwarg(self._split[0] if self._split else model)

    # ------------------------------------------------------------ public

    def score(self, groups: Iterable[Group]) -> Iterator[tuple[Group, dict]]:
        """Yield (group, {key: metrics}) in input order, a window of groups at a time: until
        ``window_tokens``, or until the rows the window's plans keep reach ``max_rows_kept``."""
        window: list[Group] = []
        plans: list = []
        size = rows = 0
        for g in groups:
            if self.zoned:
                plan = plan_zones(g.seed_ids, g.items, self.ripple_window, self.drift, self.runs_apart)
                planned = plan.kept()
            else:
                plan = plan_group(g.seed_ids, g.items, self.ripple_window, self.drift)
                planned = len(plan[1]) + sum(len(pl.need) for pl in plan[0].values())   # at most, at once
            if window and self.max_rows_kept is not None and rows + planned > self.max_rows_kept:
                yield from self._score_window(window, plans)
                window, plans, size, rows = [], [], 0, 0
            window.append(g)
            plans.append(plan)
            size += len(g.seed_ids) + 1 + sum(len(i.ids) for i in g.items) // 4
            rows += planned
            if size >= self.window_tokens:
                yield from self._score_window(window, plans)
                window, plans, size, rows = [], [], 0, 0
        if window:
            yield from self._score_window(window, plans)

    def memory_plan(self, max_memory: float) -> int:
        """Size the window for ``max_memory`` bytes in all: what is left after the weights, one
        batch's log-probabilities, its past as the forward grows it (the copied past and the
        batch's own positions) and
        a runtime allowance, in full rows kept for later comparisons. Sets and returns it."""
        vocab = self.model.get_output_embeddings().weight.shape[0]
        weights = sum(p.numel() * p.element_size() for p in self.model.parameters())
        c = self.model.config
        heads = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        kv = c.num_hidden_layers * 2 * heads * head_dim * 4          # bytes per cached position
        batch = self.batch_tokens * vocab * 4 + (PAST_SHARE + 1) * self.batch_tokens * kv
        fixed = weights + batch + RUNTIME_BYTES
        row = vocab * torch.empty((), dtype=self.ref_dtype).element_size() + kv
        if max_memory <= fixed + 64 * row:
            raise MicrovarError(f"--max-memory {max_memory / 2**30:.2f} GB is less than the model and one batch need "
                             f"({fixed / 2**30:.2f} GB with --batch-tokens {self.batch_tokens}): give more, or "
                             "lower --batch-tokens")
        self.max_rows_kept = int((max_memory - fixed) // row)
        return self.max_rows_kept

    # ------------------------------------------------------------ window

    @torch.inference_mode()
    def _score_window(self, window: list[Group], plans: list):
        if self.zoned:
            yield from ZoneRun(self, window, plans).run()
            return
        st = _Window(window, plans)
        st.seeds = self._seeds(window, st)
        depth: list[dict] = [{} for _ in window]
        for gi, g in enumerate(window):
            for it in g.items:
                depth[gi][it.key] = 0 if it.parent is None else depth[gi][it.parent] + 1
        levels = max((d for dd in depth for d in dd.values()), default=0)
        for level in range(levels + 1):
            todo = [(gi, it) for gi, g in enumerate(window) for it in g.items if depth[gi][it.key] == level]
            self._run_level(st, todo)
        for gi, g in enumerate(window):
            yield g, st.results[gi]

    def _seeds(self, window: list[Group], st: _Window) -> list[Seq | None]:
        """One plain forward per seed (batched): its rows, and its KV cache for the variants."""
        order = sorted((i for i, g in enumerate(window) if g.items), key=lambda i: len(window[i].seed_ids))
        seeds: list[Seq | None] = [None] * len(window)
        for batch in _batches(order, lambda i: len(window[i].seed_ids) + 1, self.batch_tokens, self.max_rows):
            inputs = [[self.ctx] + window[i].seed_ids for i in batch]
            ids, mask, lengths = pad_batch(inputs)
            spans = [(b * ids.shape[1], n, 0) for b, n in enumerate(lengths)]
            logps, hidden, layers = self._forward(ids, mask, None, None, spans)
            for b, i in enumerate(batch):
                n = lengths[b]
                h = hidden[b, :, :n].float().clone() if hidden is not None else None
                kv = [(k[b, :, :n].clone(), v[b, :, :n].clone()) for k, v in layers]
                fresh = Rows(logps[b], logps[b].argmax(-1), hidden=h, kv=kv)
                seq = Seq(None, window[i].seed_ids, -1, fresh, n, fresh=logps[b])
                seq.own = fresh.keep_only(sorted(st.plans[i][1]), self.ref_dtype)
                self._count(seq.own, +1)
                seeds[i] = seq
            del logps, hidden, layers
        return seeds

    def _run_level(self, st: _Window, todo) -> None:
        # (gi, item, p, start, end): input positions start..end-1 to compute. Bases are looked
        # up when a batch runs, so that nothing here holds a parent already let go
        jobs = []
        for gi, it in todo:
            pl = st.plans[gi][0][it.key]
            if not self.zoned:
                self.total_tokens += len(it.ids) + (1 if self.drift else 0)
            jobs.append((gi, it, pl.p, pl.p + 1, pl.end))
        for gi, it, p, start, end in jobs:
            if end <= start:  # every row is its base's (a cut, or the seed itself)
                self._finish(st, gi, it, Seq(st.base(gi, it), it.ids, p, None, start))
        work = [j for j in jobs if j[4] > j[3]]
        del jobs
        overhead = max(16, self.batch_tokens // 16)
        share = lambda s: s * self._attn_share + COPY_SHARE  # noqa: E731
        if self.packed is None and work:   # checked when needed: a run whose seeds all fail runs nothing
            self.packed = self.pack_tokens > 0 and packable(self.model)
        if self.packed:
            # packed rows: a row's cost is its length, its past the pasts of its bases
            rows = sorted(pack_rows(work, lambda j: (j[0], st.plans[j[0]][0][j[1].key].base), self.pack_tokens),
                          key=lambda r: (r.length, r.past))
            for batch in _batches(rows, lambda r: r.length, self.batch_tokens, self.max_rows, overhead,
                                  past=lambda r: r.past, past_budget=PAST_SHARE * self.batch_tokens,
                                  past_weight=share):
                self._run_packed(st, batch)
            return
        # a batch computes rows x longest suffix, and copies rows x longest past into its
        # cache (at most PAST_SHARE x batch tokens: short windowed suffixes over long pasts
        # would make it gigabytes); a past position costs its copy and the attention to it
        work.sort(key=lambda j: (j[4] - j[3], j[3]))
        for batch in _batches(work, lambda j: j[4] - j[3], self.batch_tokens, self.max_rows, overhead,
                              past=lambda j: j[3], past_budget=PAST_SHARE * self.batch_tokens, past_weight=share):
            keep = [bool(st.children[j[0]].get(j[1].key)) for j in batch]
            bases = [st.base(j[0], j[1]) for j in batch]
            logps, hidden, layers = self._forward_suffixes(batch, bases, keep)
            for b, (gi, it, p, start, end) in enumerate(batch):
                n = end - start
                h = hidden[b, :, :n].float().clone() if hidden is not None else None
                own = Rows(logps[b], logps[b].argmax(-1), hidden=h, kv=layers[b] if keep[b] else None)
                self._finish(st, gi, it, Seq(bases[b], it.ids, p, own, end, fresh=logps[b]))
            del logps, hidden, layers, bases

    # ------------------------------------------------------------ packed rows

    def _run_packed(self, st: _Window, batch: list[Row]) -> None:
        B, L, P = len(batch), max(r.length for r in batch), max(r.past for r in batch)
        dtype = next(self.model.parameters()).dtype
        ids = torch.zeros(B, L, dtype=torch.long)
        pos = torch.zeros(B, L, dtype=torch.long)
        allow = torch.zeros(B, 1, L, P + L, dtype=torch.bool)
        allow[:, 0, torch.arange(L), P + torch.arange(L)] = True     # padding sees itself: no empty row
        causal = torch.ones(L, L, dtype=torch.bool).tril()
        spans, members, where = [], [], []
        for b, row in enumerate(batch):
            seg, off = {}, 0
            for key, plen in row.segments:
                seg[key] = off
                off += plen
            a = 0
            for key, (gi, it, p, start, end) in row.members:
                n = end - start
                x = [self.ctx] + it.ids
                ids[b, a:a + n] = torch.tensor(x[start:end])
                pos[b, a:a + n] = torch.arange(start, end)
                allow[b, 0, a:a + n, seg[key]:seg[key] + start] = True
                allow[b, 0, a:a + n, P + a:P + a + n] = causal[:n, :n]
                spans.append((b * L + a, n, start))
                members.append((gi, it, p, start, end))
                where.append((b, a, n))
                a += n
        mask = torch.zeros(allow.shape, dtype=dtype).masked_fill_(~allow, torch.finfo(dtype).min)
        del allow
        row_bases = [[(seg_key, st.by_key(seg_key), plen) for seg_key, plen in row.segments] for row in batch]

        def fill(layer, K, V):
            for b, segs in enumerate(row_bases):
                off = 0
                for _, base, plen in segs:
                    base.fill_kv(layer, K, V, b, plen, at=off)
                    off += plen

        cache = past_cache(stored_kv(row_bases[0][0][1]), B, P, fill)
        base_of = {seg_key: base for segs in row_bases for seg_key, base, _ in segs}
        del row_bases
        logps, hidden, layers = self._forward(ids, mask, pos, cache, spans)
        del cache, mask
        for k, ((gi, it, p, start, end), (b, a, n)) in enumerate(zip(members, where)):
            keep = bool(st.children[gi].get(it.key))
            kv = [(kk[b, :, P + a:P + a + n].clone(), vv[b, :, P + a:P + a + n].clone()) for kk, vv in layers] \
                if keep else None
            h = hidden[b, :, a:a + n].float().clone() if hidden is not None else None
            own = Rows(logps[k], logps[k].argmax(-1), hidden=h, kv=kv)
            base = base_of[(gi, st.plans[gi][0][it.key].base)]
            self._finish(st, gi, it, Seq(base, it.ids, p, own, end, fresh=logps[k]))
        del logps, hidden, layers, base_of

    def _forward_suffixes(self, batch, bases, keep):
        """Right-padded suffixes over their bases' caches, each row masked to its own prefix."""
        B = len(batch)
        S = max(j[4] - j[3] for j in batch)
        P = max(j[3] for j in batch)
        ids = torch.zeros(B, S, dtype=torch.long)
        pos = torch.zeros(B, S, dtype=torch.long)
        mask = torch.zeros(B, P + S, dtype=torch.long)
        for b, (_, it, _, start, end) in enumerate(batch):
            x = [self.ctx] + it.ids
            ids[b, :end - start] = torch.tensor(x[start:end])
            pos[b] = torch.arange(start, start + S)
            mask[b, :start] = 1
            mask[b, P:P + end - start] = 1

        def fill(layer, K, V):
            for b, j in enumerate(batch):
                bases[b].fill_kv(layer, K, V, b, j[3])

        cache = past_cache(stored_kv(bases[0]), B, P, fill)
        lengths = [j[4] - j[3] for j in batch]
        logps, hidden, layers = self._forward(ids, mask, pos, cache,
                                              [(b * S, n, j[3]) for b, (n, j) in enumerate(zip(lengths, batch))])
        del cache
        own_kv = [[(k[b, :, P:P + lengths[b]].clone(), v[b, :, P:P + lengths[b]].clone()) for k, v in layers]
                  if keep[b] else None for b in range(B)]
        return logps, hidden, own_kv

    def _forward(self, ids, mask, pos, cache, spans):
        """Run the model; log-probabilities only for the real positions: ``spans`` (flat start
        in the [rows x length] input, length, position of its first token), one tensor each."""
        kwargs = {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device), "use_cache": True,
                  "output_hidden_states": self.drift}
        if pos is not None:
            kwargs["position_ids"] = pos.to(self.device)
        if cache is not None:
            kwargs[self._cache_arg] = cache
        lengths = [n for _, n, _ in spans]
        self.computed_tokens += sum(lengths)
        self.padded_tokens += ids.numel()
        self.attended += sum((s + n) * (s + n + 1) // 2 - s * (s + 1) // 2 for _, n, s in spans)
        real = torch.cat([torch.arange(a, a + n) for a, n, _ in spans]).to(self.device)
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

    def _finish(self, st: _Window, gi: int, it: Item, seq: Seq) -> None:
        if self.zoned:
            st.zones.done(gi, it, seq)
            return
        seed = st.seeds[gi]
        plans = st.plans[gi][0]
        pl = plans[it.key]
        parent = seed if it.parent is None else st.seqs[gi][it.parent]
        m = self.compare(parent, seq, pl.vs_parent)
        vs_seed = m if pl.vs_seed is None else self.compare(seed, seq, pl.vs_seed)
        for k in PAIR_METRICS:
            m[f"seed_{k}"] = vs_seed[k]
        if self.drift:
            m["seed_drift_layer"] = vs_seed["drift_layer"]
        m["nll"] = nll(seed, seq, pl.own_end)
        st.results[gi][it.key] = m
        if st.children[gi].get(it.key):   # others read it: keep the rows they need, nothing else
            if seq.own is not None:
                seq.own = seq.own.keep_only([q - seq.p - 1 for q in pl.need], self.ref_dtype)
                self._count(seq.own, +1)
            st.seqs[gi][it.key] = seq
        if it.parent is not None:         # its last child measured: the parent goes
            st.children[gi][it.parent] -= 1
            if st.children[gi][it.parent] == 0:
                gone = st.seqs[gi].pop(it.parent, None)
                if gone is not None and gone.own is not None:
                    self._count(gone.own, -1)
        st.left[gi] -= 1
        if st.left[gi] == 0 and seed is not None:   # the group is done: its seed goes too
            self._count(seed.own, -1)
            st.seeds[gi] = None

    def _count(self, rows: Rows, sign: int) -> None:
        self.kept_rows += sign * (0 if rows.logp is None else rows.logp.shape[0])
        self.kept_rows_peak = max(self.kept_rows_peak, self.kept_rows)

    def compare(self, ref, seq, ch: Change, each: int = 0) -> dict:
        return compare(ref, seq, ch, self.ripple_window, drift=self.drift, threshold=self.threshold,
                       layers=self.model.config.num_hidden_layers, each=each)


class _Window:
    """The state of one scoring window: plans, seeds, texts others still read, results."""

    def __init__(self, window: list[Group], plans: list, children: list[dict] | None = None) -> None:
        self.plans = plans                                   # per group (plans by key, seed's needed rows)
        self.seeds: list[Seq | None] = []
        self.seqs: list[dict] = [{} for _ in window]         # texts that are someone's parent, until measured
        self.results: list[dict] = [{} for _ in window]
        self.left = [len(g.items) for g in window]
        if children is None:                                 # children not yet measured, per parent
            children = [{} for _ in window]
            for gi, g in enumerate(window):
                for it in g.items:
                    if it.parent is not None:
                        children[gi][it.parent] = children[gi].get(it.parent, 0) + 1
        self.children: list[dict] = children   # (zones.py: zones based on each zone)

    def base(self, gi: int, it: Item) -> Seq:
        return self.by_key((gi, self.plans[gi][0][it.key].base))

    def by_key(self, key: tuple) -> Seq:
        """The text (group index, item key; None: the seed) that others extend."""
        gi, k = key
        return self.seeds[gi] if k is None else self.seqs[gi][k]


def flops_per_position(model) -> tuple[float, float]:
    """(matmul FLOPs per position, attention FLOPs per position per attended key). Every 2-D
    weight is a matmul except the input embedding (a lookup); a tied head is that tensor."""
    c = model.config
    heads = c.num_attention_heads
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // heads
    embed = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    linear = 2 * (sum(p.numel() for p in model.parameters() if p.dim() == 2 and p is not embed)
                  + (head.numel() if head is embed else 0))
    return linear, 4 * c.num_hidden_layers * heads * head_dim


def _attention_share(model) -> float:
    """One query attending to one key, over a position's matmul FLOPs (SmolLM2: 1/3900): what
    a past position costs per suffix token."""
    linear, attn = flops_per_position(model)
    return attn / linear
