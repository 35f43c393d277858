"""Packed rows for the scorer: a level's suffixes packed into rows of a fixed number of tokens,
siblings over the same base sharing one copy of its past, each suffix masked (a 4D attention
mask, built in score.py) to its own prefix of that past and to itself. Here: the rows, the
packing, the batch's past as a cache, and the check that a model allows it."""

from __future__ import annotations

import weakref

import torch

from .forward import _kv_layers, cache_kwarg


def pack_rows(work: list, base_key, pack_tokens: int) -> list[Row]:
    """Suffixes (jobs: group, item, p, start, end) into rows of at most ``pack_tokens`` (or the
    longest suffix), siblings over the same base (``base_key(job)``) first: they share its
    past. First fit by decreasing length."""
    longest = max((j[4] - j[3] for j in work), default=0)
    room = max(pack_tokens, longest)
    by_base: dict = {}
    for j in work:
        by_base.setdefault(base_key(j), []).append(j)
    rows: list[Row] = []
    loose: list[Row] = []
    for key, members in by_base.items():
        mine: list[Row] = []
        for j in sorted(members, key=lambda j: j[3] - j[4]):
            n = j[4] - j[3]
            row = next((r for r in mine if r.length + n <= room), None)
            if row is None:
                row = Row()
                mine.append(row)
            row.add(key, j)
        rows += mine[:-1]
        loose.append(mine[-1])
    # the last, partly filled row of each base: merged across bases while the merged row's
    # past stays within a row's room (a long past limits the rows of a batch)
    loose.sort(key=lambda r: -r.length)
    merged: list[Row] = []
    for r in loose:
        into = next((m for m in merged if m.length + r.length <= room and m.past + r.past <= room), None)
        if into is None:
            merged.append(r)
        else:
            into.merge(r)
    return rows + merged


class Row:
    """Suffixes packed into one input row: each attends to its base's past (one copy per
    base in the row, as long as its longest member needs) and to itself."""

    def __init__(self) -> None:
        self.members: list = []          # (base key, job)
        self.segments: list = []         # (base key, past positions), in row order
        self.length = 0
        self.past = 0

    def add(self, key, job) -> None:
        self.members.append((key, job))
        self.length += job[4] - job[3]
        for k, (seg, plen) in enumerate(self.segments):
            if seg == key:
                if job[3] > plen:
                    self.segments[k] = (seg, job[3])
                    self.past += job[3] - plen
                return
        self.segments.append((key, job[3]))
        self.past += job[3]

    def merge(self, other: Row) -> None:
        for key, job in other.members:
            self.add(key, job)


_CHECKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()   # model -> checked once per process


def packable(model) -> bool:
    """Whether rows can be packed: every layer attends to the whole past through the mask the
    caller gives (no sliding-window layers), and a packed forward of two texts over one
    shared past gives what each gives alone (checked on a short input, once per model)."""
    if model not in _CHECKED:
        _CHECKED[model] = _check_packing(model)
    return _CHECKED[model]


def _check_packing(model) -> bool:
    c = model.config
    if any("sliding" in str(t) for t in (getattr(c, "layer_types", None) or [])):
        return False
    if getattr(c, "sliding_window", None) and getattr(c, "use_sliding_window", True):
        return False
    from transformers import DynamicCache

    dev = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    arg = cache_kwarg(model)
    x = torch.tensor([[1, 2, 3, 4, 5, 6]], device=dev)
    try:
        with torch.inference_mode():
            plain = model(input_ids=x).logits[0].float()
            past = model(input_ids=x[:, :3], use_cache=True)
            kv = [(k.clone(), v.clone()) for k, v in _kv_layers(getattr(past, "cache", None) or past.past_key_values)]
            # row: past 0..2 of x; then x[3:6] (positions 3..5) and x[2:4] again at 2..3 over past 0..1
            ids = torch.tensor([[4, 5, 6, 3, 4]], device=dev)
            pos = torch.tensor([[3, 4, 5, 2, 3]], device=dev)
            allow = torch.zeros(1, 1, 5, 8, dtype=torch.bool)
            allow[0, 0, 0:3, 0:3] = True
            allow[0, 0, 0:3, 3:6] = torch.ones(3, 3, dtype=torch.bool).tril()
            allow[0, 0, 3:5, 0:2] = True
            allow[0, 0, 3:5, 6:8] = torch.ones(2, 2, dtype=torch.bool).tril()
            mask = torch.zeros(allow.shape, dtype=dtype).masked_fill_(~allow, torch.finfo(dtype).min).to(dev)
            got = model(input_ids=ids, position_ids=pos, attention_mask=mask, use_cache=True,
                        **{arg: DynamicCache(kv)}).logits[0].float()
    except Exception:  # any failure means: a row per text
        return False
    want = torch.cat([plain[3:6], plain[2:4]])
    # float noise of a cached forward is ~1e-4 of the logits' scale (SmolLM2: 0.0024 of 33, as
    # the unpacked path); attention that ignored the mask is off by the scale itself (27)
    return float((want - got).abs().max()) <= 1e-2 * float(want.abs().max())


def past_cache(kv0, B: int, P: int, fill):
    """A batch's past as a cache: per layer, [B, KV heads, P, head dim] filled by
    ``fill(layer, K, V)`` and handed over at once (the cache keeps its own copy), so that only
    one copy of the past is held while the forward grows it layer by layer."""
    from transformers import DynamicCache

    cache = DynamicCache()
    k0, v0 = kv0[0]
    for layer in range(len(kv0)):
        K = k0.new_zeros(B, k0.shape[0], P, k0.shape[2])
        V = v0.new_zeros(B, v0.shape[0], P, v0.shape[2])
        fill(layer, K, V)
        cache.update(K, V, layer)
        del K, V
    return cache
