"""Batched, prefix-shared scoring equals plain one-at-a-time full forwards (fp32, tiny
random Llama), for prefixes of 0, 1 and many shared tokens, mixed lengths, grandchildren,
and batches that span several seeds; with a ripple window, it equals the same windowed
definition computed one text at a time from full forwards."""

from __future__ import annotations

import random

import pytest
import torch

from microvar.model.score import Change, Group, Item, Scorer

CTX = 0


@pytest.fixture(scope="module")
def tiny():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         initializer_range=0.2)  # peaky distributions: metrics far from zero
    return LlamaForCausalLM(config).eval()


def full_logp(model, ids: list[int]) -> torch.Tensor:
    """log P(t_k | ctx, t_<k) for every k, from one plain forward with no cache."""
    with torch.no_grad():
        out = model(torch.tensor([[CTX] + ids]), output_hidden_states=True)
    return torch.log_softmax(out.logits[0].double(), -1), torch.stack(out.hidden_states)[:, 0].double()


def zoned_states(model, group: Group, window: int, drift: bool, apart: int) -> dict:
    """Per item key (and None: the seed) its rows and hidden states with each change in the
    seed's context, one text at a time from plain forwards: the seed's rows, except within W
    tokens of each run of changes (runs less than W apart merged), where they are the rows of
    the seed cut before the run with the run's tokens after it; a token's hidden state comes
    from whichever gives its row."""
    seed = group.seed_ids
    sl, sh = full_logp(model, seed)
    out = {None: (sl, sh)}
    for it in group.items:
        ids = it.ids
        ch = Change.of(seed, ids)
        rows = torch.empty(len(ids) + 1, sl.shape[1], dtype=sl.dtype)
        hid = torch.empty(sh.shape[0], len(ids) + 1, sh.shape[2], dtype=sh.dtype)
        for q in range(len(ids) + 1):   # the seed's, at the aligned position
            i = _aligned(ch, q)
            rows[q], hid[:, q] = sl[i], sh[:, i]
        for s, ss, last in _runs(seed, ids, apart):
            stop = min(len(ids), last + apart)
            if stop <= s:
                continue
            zl, zh = full_logp(model, seed[:ss] + ids[s:min(len(ids), stop + 1)])
            rows[s:stop] = zl[ss:ss + stop - s]
            hid[:, s + 1:stop + 1] = zh[:, ss + 1:ss + 1 + stop - s]
        out[it.key] = (rows, hid)
    return out


def _runs(ref: list[int], ids: list[int], apart: int) -> list[tuple[int, int, int]]:
    """Runs of changes written out position by position (not Change.regions): every new token
    j marks (j, j+1), a deletion before token j marks (j, j); a mark less than W past the
    previous run's end (``apart``) joins it. Each run: (first position in ids, in ref, one past its end)."""
    ch = Change.of(ref, ids)
    runs_eq = [(0, 0, ch.f)] + list(ch.blocks) + [(len(ref), len(ids), 0)]
    marks = []
    for (i0, j0, n), (i1, j1, _) in zip(runs_eq, runs_eq[1:]):
        if j1 > j0 + n:
            marks += [(j, j + 1, i0 + n) for j in range(j0 + n, j1)]
        elif i1 > i0 + n:
            marks.append((j0 + n, j0 + n, i0 + n))
    out: list[list[int]] = []
    for s, last, ss in marks:
        if out and s < out[-1][2] + apart:
            out[-1][2] = max(out[-1][2], last)
        else:
            out.append([s, ss, last])
    return [tuple(r) for r in out]


def _aligned(ch: Change, q: int) -> int:
    """Row q of ids at the seed's row in the same equal run (the run after q's token, past the end)."""
    runs = [(0, 0, ch.f)] + list(ch.blocks)
    for i0, j0, n in reversed(runs):
        if j0 <= q:
            return min(i0 + q - j0, ch.m)
    return q


def _prefix(a: list[int], b: list[int]) -> int:
    k = 0
    while k < min(len(a), len(b)) and a[k] == b[k]:
        k += 1
    return k


def reference(model, ref: list[int], ids: list[int], threshold: float, window: int = 0,
              seed: list[int] | None = None, states=None, own_end: int | None = None, each: int = 0) -> dict:
    """The metrics written out position by position, one text at a time: over the aligned
    tokens of ``ids`` from the first change to ``window`` tokens past the last (0: all);
    nll past the window against ``seed`` takes the seed's log-probability there.
    ``states``: (ref's, ids's, seed's) rows and hidden states (default: full forwards);
    ``own_end``: where nll starts taking the seed's (default: the window's end)."""
    seed = ref if seed is None else seed
    (la, ha), (lb, hb), (ls, _) = states or (full_logp(model, ref), full_logp(model, ids), full_logp(model, seed))
    ch = Change.of(ref, ids)
    new, e = ch.new, ch.end(window)
    ri = [i0 + k for i0, j0, n in ch.blocks for k in range(n) if j0 + k < e]
    ci = [j0 + k for _, j0, n in ch.blocks for k in range(n) if j0 + k < e]
    if each and window:   # only the tokens within W of some change
        near = [any(a <= j < b + window for a, _, b in _runs(ref, ids, each)) for j in ci]
        ri, ci = [i for i, k in zip(ri, near) if k], [j for j, k in zip(ci, near) if k]
    s = [-float(lb[j, ids[j]]) for j in new]
    kls, dns, agree, drifts = [], [], [], []
    for i, j in zip(ri, ci):
        p, q = la[i], lb[j]
        kls.append(float((p.exp() * (p - q)).sum()))
        dns.append(float(-q[ids[j]] + p[ref[i]]))
        agree.append(float(int(p.argmax()) == int(q.argmax())))
        drifts.append([float((hb[l, j + 1] - ha[l, i + 1]).norm() / ha[l, i + 1].norm()) for l in range(ha.shape[0])])
    mean = lambda xs, empty=0.0: sum(xs) / len(xs) if xs else empty
    curve = [mean([d[l] for d in drifts]) for l in range(ha.shape[0])]
    own = Change.of(seed, ids).end(window) if own_end is None else own_end
    shift = len(seed) - len(ids)
    nll = [-float(lb[k, t]) if k < own else -float(ls[k + shift, t]) for k, t in enumerate(ids)]
    return {"surprisal": mean(s), "surprisal_max": max(s, default=0.0), "ripple_kl": mean(kls),
            "ripple_kl_max": max(kls, default=0.0), "delta_nll": mean(dns), "top1": mean(agree, 1.0),
            "drift": curve,
            "drift_layer": next((k for k, x in enumerate(curve) if k and x > threshold), None),
            "nll": mean(nll)}


def make_groups(rng: random.Random) -> list[Group]:
    groups = []
    for g in range(5):
        n = rng.choice([1, 3, 9, 17, 40])
        seed = [rng.randrange(1, 512) for _ in range(n)]
        items = [Item("root", seed)]
        kids = {
            "first": [rng.randrange(1, 512)] + seed[1:],                      # shares 0 tokens
            "second": seed[:1] + [rng.randrange(1, 512)] + seed[2:],          # shares 1
            "late": seed[:-1] + [rng.randrange(1, 512)],                      # shares many
            "insert": seed[: n // 2] + [7, 8] + seed[n // 2:],
            "delete": seed[: n // 2] + seed[n // 2 + 1:],
            "grow": seed + [rng.randrange(1, 512) for _ in range(rng.randint(1, 5))],
            "cut": seed[: max(1, n - 2)],
            "same": list(seed),                                               # identity as a child
        }
        for k, ids in kids.items():
            if ids:
                items.append(Item(k, ids, "root"))
        # grandchildren: edits on top of edits (parent is not the seed)
        items.append(Item("grow+mid", kids["grow"][: len(kids["grow"]) // 2] + [5] + kids["grow"][len(kids["grow"]) // 2:],
                          "grow"))
        items.append(Item("insert+end", kids["insert"] + [9], "insert"))
        deep = kids["insert"] + [9]
        items.append(Item("insert+end+late", deep[:-3] + [11] + deep[-3:], "insert+end"))  # depth 3
        early = [3] + seed[1:]   # an early edit, then a late one on top (windows far apart)
        items.append(Item("early", early, "root"))
        items.append(Item("early+late", early[:-1] + [13], "early"))
        items.append(Item("early+del", early[:-2] + early[-1:], "early"))
        groups.append(Group(g, seed, items))
    return groups


@pytest.mark.parametrize("batch_tokens,drift,window,pack,seed_context", [
    (64, False, 0, 128, True), (4096, False, 0, 128, True), (96, True, 0, 128, True),
    (64, False, 3, 128, True), (4096, False, 1, 128, True), (96, True, 2, 128, True), (4096, False, 8, 128, True),
    (64, False, 3, 128, False), (96, True, 2, 128, False),   # the window over the texts' own context
    (64, False, 0, 0, True), (96, True, 2, 0, True),          # a row per text
    (96, True, 2, 16, True), (4096, False, 8, 16, True),      # small rows: many per base, merged across bases
    (64, False, 3, 128, 12), (96, True, 2, 16, 7)])           # runs apart from 12 (7) tokens, windows of 3 (2)
def test_batched_prefix_shared_equals_one_at_a_time(tiny, batch_tokens, drift, window, pack, seed_context):
    rng = random.Random(batch_tokens)
    groups = make_groups(rng)
    scorer = Scorer(tiny, CTX, batch_tokens=batch_tokens, drift=drift, window_tokens=10**6 if batch_tokens > 100 else 50,
                    ripple_window=window, pack_tokens=pack, seed_context=bool(seed_context),
                    runs_apart=seed_context if seed_context is not True else window)
    apart = scorer.runs_apart
    assert scorer.packed is None              # nothing checked before a variant is scored
    got = list(scorer.score(groups))
    assert scorer.packed == (pack > 0)
    assert scorer.zoned == (bool(seed_context) and window > 0)
    assert [g.key for g, _ in got] == [g.key for g in groups]  # order kept across windows
    checked = 0
    for g, metrics in got:
        assert set(metrics) == {it.key for it in g.items}
        ids_of = {it.key: it.ids for it in g.items}
        st = zoned_states(tiny, g, window, drift, apart) if scorer.zoned else None
        for it in g.items:
            m = metrics[it.key]
            parent = ids_of[it.parent] if it.parent else g.seed_ids
            if st:
                n = len(it.ids)
                want = reference(tiny, parent, it.ids, scorer.threshold, window, g.seed_ids,
                                 (st[it.parent], st[it.key], st[None]), n, each=apart)
                want_seed = reference(tiny, g.seed_ids, it.ids, scorer.threshold, window, None,
                                      (st[None], st[it.key], st[None]), n, each=apart)
            else:
                want = reference(tiny, parent, it.ids, scorer.threshold, window, g.seed_ids)
                want_seed = reference(tiny, g.seed_ids, it.ids, scorer.threshold, window)
            for k in ("surprisal", "surprisal_max", "ripple_kl", "ripple_kl_max", "delta_nll", "top1", "nll"):
                assert m[k] == pytest.approx(want[k], abs=1e-4), (g.key, it.key, k)
            for k in ("surprisal", "ripple_kl", "ripple_kl_max", "delta_nll", "top1"):
                assert m[f"seed_{k}"] == pytest.approx(want_seed[k], abs=1e-4), (g.key, it.key, k)
            if drift:
                assert m["drift"] == pytest.approx(want["drift"], abs=1e-4)
                assert m["drift_layer"] == want["drift_layer"]
            checked += 1
    assert checked == sum(len(g.items) for g in groups)
    assert scorer.computed_tokens < scorer.total_tokens + sum(len(g.seed_ids) + 1 for g in groups)
    assert scorer.kept_rows == 0   # every kept row released once its readers were measured


def test_metrics_are_not_trivial(tiny):
    """The tiny model is peaky enough that the comparison above means something."""
    rng = random.Random(1)
    g = next(g for g in make_groups(rng) if len(g.seed_ids) >= 9)
    m = dict(next(iter(Scorer(tiny, CTX).score([g])))[1])
    assert m["first"]["ripple_kl"] > 0.01 and m["first"]["surprisal"] > 1
    assert m["first"]["top1"] < 1


def test_identity_scores_zero(tiny):
    seed = [5, 17, 33, 2, 99, 100]
    g = Group("s", seed, [Item("root", seed), Item("same", list(seed), "root")])
    m = dict(next(iter(Scorer(tiny, CTX).score([g])))[1])
    for k in ("root", "same"):
        assert m[k]["ripple_kl"] == 0 and m[k]["ripple_kl_max"] == 0
        assert m[k]["top1"] == 1 and m[k]["surprisal"] == 0 and m[k]["new_tokens"] == 0
    assert m["root"]["nll"] == pytest.approx(m["same"]["nll"])


def test_memory_is_released_between_windows(tiny):
    """Retained rows are dropped once their children are measured: nothing stays behind."""
    rng = random.Random(3)
    scorer = Scorer(tiny, CTX, batch_tokens=64, window_tokens=30)
    import gc
    import weakref

    refs = []
    orig = Scorer._seeds

    def spy(self, window, st):
        states = orig(self, window, st)
        refs.extend(weakref.ref(s) for s in states if s is not None)
        return states

    Scorer._seeds = spy
    try:
        for _ in scorer.score(make_groups(rng) * 3):
            pass
    finally:
        Scorer._seeds = orig
    gc.collect()
    assert refs and all(r() is None for r in refs)


def test_batches_cover_in_order_under_the_budget():
    from microvar.model.score import _batches

    rng = random.Random(5)
    items = sorted(rng.randint(1, 300) for _ in range(500))
    batches = list(_batches(items, lambda x: x, 1024, 64, overhead=64))
    assert [x for b in batches for x in b] == items
    for b in batches:
        assert len(b) <= 64 and (len(b) * max(b) <= 1024 or len(b) == 1)
    padded = sum(len(b) * max(b) for b in batches)
    greedy, count, batch = 0, 1, []
    for x in items:  # a plain greedy cut costs at least as much (padded positions + per-batch overhead)
        if batch and ((len(batch) + 1) * x > 1024 or len(batch) == 64):
            greedy += len(batch) * batch[-1]
            count += 1
            batch = []
        batch.append(x)
    greedy += len(batch) * batch[-1]
    assert padded + 64 * len(batches) <= greedy + 64 * count


def test_max_memory_sizes_the_window(tiny):
    """A kept-row budget closes windows early: the same metrics, fewer rows kept at once."""
    from microvar.errors import MicrovarError

    groups = make_groups(random.Random(7))
    free = Scorer(tiny, CTX, ripple_window=3)
    tight = Scorer(tiny, CTX, ripple_window=3)
    tight.max_rows_kept = 40
    a = {g.key: m for g, m in free.score(groups)}
    b = {g.key: m for g, m in tight.score(groups)}
    for g in groups:
        for key, m in a[g.key].items():
            for k in ("ripple_kl", "seed_ripple_kl", "nll", "surprisal"):
                assert b[g.key][key][k] == pytest.approx(m[k], abs=1e-5)
    assert tight.kept_rows_peak < free.kept_rows_peak
    big = Scorer(tiny, CTX, max_memory=8 * 2**30)
    assert big.max_rows_kept > 1000
    with pytest.raises(MicrovarError, match="--max-memory"):
        Scorer(tiny, CTX, max_memory=2**20)


def test_batches_keep_the_copied_past_under_its_budget():
    """With a past per item, no batch copies more than the past budget (rows x longest past),
    and the cuts still cover every item in order."""
    from microvar.model.score import _batches

    rng = random.Random(6)
    items = sorted((rng.randint(1, 60), rng.randint(0, 500)) for _ in range(400))
    batches = list(_batches(items, lambda x: x[0], 2048, 256, 128, past=lambda x: x[1], past_budget=4096,
                            past_weight=lambda s: s / 4000 + 1 / 64))
    assert [x for b in batches for x in b] == items
    for b in batches:
        assert len(b) * max(x[0] for x in b) <= 2048
        assert len(b) * max(x[1] for x in b) <= 4096 or len(b) == 1
    plain = list(_batches(items, lambda x: x[0], 2048, 256, 128))
    assert max(len(b) * max(x[1] for x in b) for b in plain) > 4096   # the budget is what held it


@pytest.mark.parametrize("ref,ids,window,want", [
    ([1, 2, 3, 4], [1, 2, 3, 4], 2, []),                                   # no change
    ([1, 2, 3, 4], [9, 2, 3, 4], 2, [(0, 0, 1)]),                          # first token
    ([1, 2, 3, 4], [1, 2, 3], 2, [(3, 3, 3)]),                             # a cut: at the end, nothing after
    ([1, 2, 3, 4], [1, 2, 3, 4, 5, 6], 2, [(4, 4, 6)]),                    # grown at the end
    ([1, 2, 3, 4, 5], [1, 2, 4, 5], 2, [(2, 2, 2)]),                       # a deletion counts at the token after it
    (list(range(10, 30)), [0] + list(range(11, 29)) + [0], 4, [(0, 0, 1), (19, 19, 20)]),  # far apart: two runs
    (list(range(10, 30)), [0] + list(range(11, 13)) + [0] + list(range(14, 30)), 4, [(0, 0, 4)]),  # 3 apart: one
    (list(range(10, 30)), [0] + list(range(11, 15)) + [0] + list(range(16, 30)), 4, [(0, 0, 1), (5, 5, 6)]),  # W apart
    (list(range(10, 30)), [0] + list(range(11, 14)) + [0] + list(range(15, 30)), 4, [(0, 0, 5)]),  # W-1 apart
    ([1, 2, 3, 4], [9, 1, 2, 3, 4], 2, [(0, 0, 1)]),                                   # inserted at 0
    (list(range(10, 30)), [0] + list(range(11, 25)), 2, [(0, 0, 1), (15, 15, 15)]),    # an edit, then a cut
    (list(range(10, 30)), list(range(10, 15)) + [0] + list(range(17, 30)), 4, [(5, 5, 6)]),  # a deletion and a change
])
def test_runs_of_changes(ref, ids, window, want):
    """Change.regions: (first position in ids, in ref, one past the last change), runs less
    than W apart merged."""
    assert Change.of(ref, ids).regions(window) == want
    assert _runs(ref, ids, window) == want     # the reference's own, written position by position


def test_seed_context_computes_each_edit_once(tiny):
    """A child editing early in a text its parent edited late computes its own edit's window
    only (measured in its own text, it runs from its edit to past its parent's), and siblings
    carrying the parent's edit do not compute it again."""
    seed = list(range(100, 180))
    late = seed[:70] + [7] + seed[71:]
    items = [Item("root", seed), Item("late", late, "root")]
    items += [Item(f"early{k}", late[:5 + k] + [9] + late[6 + k:], "late") for k in range(4)]
    group = Group("g", seed, items)
    zoned = Scorer(tiny, CTX, ripple_window=4, runs_apart=4)
    own = Scorer(tiny, CTX, ripple_window=4, seed_context=False)
    list(zoned.score([group]))
    list(own.score([group]))
    seed_rows = len(seed) + 1
    assert zoned.computed_tokens - seed_rows <= 5 * 5          # the parent's window, then each child's
    assert own.computed_tokens - seed_rows >= 4 * 60           # each child from its edit to past 70


def test_changes_closer_than_runs_apart_are_measured_as_in_their_own_text(tiny):
    """With the default runs_apart (128) every change of these short texts (up to 44 tokens) is
    in one run, so the seed's context gives what the variant's own text gives: the pair
    metrics of the same window, and the nll of the whole text (a run's rows reach 128 past it)."""
    groups = make_groups(random.Random(5))
    zoned = {g.key: m for g, m in Scorer(tiny, CTX, ripple_window=3).score(groups)}
    own = {g.key: m for g, m in Scorer(tiny, CTX, ripple_window=3, seed_context=False).score(groups)}
    whole = {g.key: m for g, m in Scorer(tiny, CTX, ripple_window=0).score(groups)}
    for g in groups:
        for it in g.items:
            for k, v in own[g.key][it.key].items():
                want = whole[g.key][it.key][k] if k == "nll" else v
                assert zoned[g.key][it.key][k] == pytest.approx(want, abs=1e-4), (it.key, k)
