"""Kept variants -> a curriculum: a drift path through each seed, repeated up to the
recipe's presentations, phases one after another, seeds scheduled within each phase.

A seed's path starts at the unchanged text and walks the recipe's stages in order. Within a
stage it moves to a variant whose parent has already been shown (so a pair's prompt is
never ahead of it) and that is within the step budget of the row before it, preferring the
less volatile; when none is near, it may step back through a row or two already shown (a
bridge: those rows are presented again) and, failing that, jumps to the nearest variant and
records the jump as a gap (seed, from, to, tokens). Token distance between any two rows is
the expansion's step measure: token edit distance with each inserted or removed marker
counted as one step.

Schedules arrange the seeds' sequences within a phase: ``blocked`` (one seed after
another), ``interleaved`` (round robin, one row of each seed in turn) and ``spaced`` (each
seed's rows spread evenly over the phase)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from rapidfuzz.distance import Levenshtein

from .dsl.recipe import Recipe
from .expand.expander import Variant

SCHEDULES = ("blocked", "interleaved", "spaced")
DEFAULT_SCHEDULE = "blocked"


@dataclass
class Gap:
    seed_id: str
    from_id: str
    to_id: str
    tokens: int
    budget: int

    def to_json(self) -> dict:
        return {"seed_id": self.seed_id, "from": self.from_id, "to": self.to_id, "tokens": self.tokens,
                "budget": self.budget}


@dataclass
class DriftPath:
    """One seed's variants in path order, with the distance of each step from the row before."""
    seed_id: str
    rows: list[Variant]
    distances: list[int]          # distances[k]: rows[k-1] -> rows[k]; 0 for the first row
    budgets: list[int]
    gaps: list[Gap] = field(default_factory=list)
    bridged: int = 0              # rows shown again to bridge between variants

    @property
    def within(self) -> int:
        return sum(d <= b for d, b in zip(self.distances[1:], self.budgets[1:]))


class StepMeasure:
    """Step distance between any two variants of a seed, markers counted as one step each."""

    def __init__(self, markers: list[str], marker_cost) -> None:
        self.markers = markers
        self.cost = {m: marker_cost(m) for m in markers}

    @classmethod
    def of(cls, recipe: Recipe, marker_cost) -> StepMeasure:
        """The measure for a recipe's markers and their closing forms."""
        from .expand.edits.base import closing

        return cls(list(recipe.markers) + [closing(m) for m in recipe.markers], marker_cost)

    def __call__(self, a: Variant, b: Variant) -> int:
        dist = Levenshtein.distance(a.ids, b.ids)
        moved = [(m, abs(a.text.count(m) - b.text.count(m))) for m in self.markers]
        n = sum(k for _, k in moved)
        if not n:
            return dist
        cost = sum(self.cost[m] * k for m, k in moved)
        return max(n, dist - cost + n)


def volatility_key(v: Variant) -> tuple:
    """Lower first: how far the model's predictions moved from the seed's, then how surprising
    the new tokens are to it; unscored runs fall back to depth and step size."""
    m = v.volatility
    if m:
        return (round(m["seed_ripple_kl"], 6), round(m["seed_surprisal"], 6), v.variant_id)
    return (v.depth, v.step_tokens, v.variant_id)


class _Steps:
    """Distances and budgets between a seed's variants, memoised."""

    def __init__(self, recipe: Recipe, measure: StepMeasure) -> None:
        self.recipe, self.measure = recipe, measure
        self._d: dict[tuple[str, str], int] = {}

    def dist(self, a: Variant, b: Variant) -> int:
        key = (a.variant_id, b.variant_id) if a.variant_id < b.variant_id else (b.variant_id, a.variant_id)
        if key not in self._d:
            self._d[key] = self.measure(a, b)
        return self._d[key]

    def budget(self, a: Variant, b: Variant) -> int:
        """The larger step limit of the two rows' stages (a change between them is of that
        kind, either way); a parent and its child are as far apart as expansion allowed."""
        limit = max(self.recipe.step_limit(a.stage), self.recipe.step_limit(b.stage))
        if b.parent_id == a.variant_id:
            limit = max(limit, b.step_tokens)
        elif a.parent_id == b.variant_id:
            limit = max(limit, a.step_tokens)
        return limit

    def near(self, a: Variant, b: Variant) -> bool:
        return self.dist(a, b) <= self.budget(a, b)


def drift_path(kept: list[Variant], recipe: Recipe, measure: StepMeasure, bridges: int = 2) -> DriftPath:
    """The seed's path (see the module's doc). Within a stage it takes the least volatile
    variant within the step budget of the current row. When none is near, it may go back
    through up to ``bridges`` rows of the same phase already shown (each step within the
    budget) to reach one; those rows are shown again and counted in ``bridged``."""
    root = kept[0]
    st = _Steps(recipe, measure)
    rank = {s: i for i, s in enumerate(recipe.stages)}
    path = DriftPath(root.seed_id, [root], [0], [0])
    shown_rows = [root]
    shown = {root.variant_id}

    def go(v: Variant) -> None:
        cur = path.rows[-1]
        d, b = st.dist(cur, v), st.budget(cur, v)
        if d > b:
            path.gaps.append(Gap(root.seed_id, cur.variant_id, v.variant_id, d, b))
        path.rows.append(v)
        path.distances.append(d)
        path.budgets.append(b)
        if v.variant_id not in shown:
            shown.add(v.variant_id)
            shown_rows.append(v)
        else:
            path.bridged += 1

    pending = sorted(kept[1:], key=lambda v: (rank[v.stage], volatility_key(v)))
    for stage in recipe.stages:
        pool = [v for v in pending if v.stage == stage]
        while pool:
            cur = path.rows[-1]
            eligible = [v for v in pool if v.parent_id in shown] or pool
            near = [v for v in eligible if st.near(cur, v)]
            if near:
                go(min(near, key=volatility_key))
            else:
                phase = recipe.route_of(stage)[1]  # a bridge stays in the phase: phases are trained apart
                same = [r for r in shown_rows if recipe.route_of(r.stage)[1] == phase]
                route = _bridge(cur, eligible, same, st, bridges)
                if route:
                    for r in route:
                        go(r)
                else:
                    go(min(eligible, key=lambda v: (st.dist(cur, v), volatility_key(v))))
            pool.remove(path.rows[-1])
    return path


def _bridge(cur: Variant, targets: list[Variant], shown: list[Variant], st: _Steps, most: int) -> list[Variant]:
    """The shortest way from ``cur`` through at most ``most`` shown rows to one of ``targets``
    with every step within budget (the least volatile target among the shortest), or []."""
    frontier = [(cur, [])]
    seen = {cur.variant_id}
    for _ in range(most):
        nxt_frontier = []
        for row, route in frontier:
            for r in shown:
                if r.variant_id not in seen and st.near(row, r):
                    seen.add(r.variant_id)
                    nxt_frontier.append((r, route + [r]))
        reach = [(volatility_key(t), route + [t]) for r, route in nxt_frontier for t in targets if st.near(r, t)]
        if reach:
            return min(reach, key=lambda x: (x[0], len(x[1])))[1]
        frontier = nxt_frontier
    return []


def repeats_for(path_len: int, presentations: int) -> int:
    """How many times a path is shown so that its seed is presented at least ``presentations`` times."""
    return max(1, math.ceil(presentations / path_len)) if path_len else 0


def schedule(sequences: list[list], how: str) -> list:
    """Merge per-seed sequences (each already in its own order) into one."""
    if how == "blocked":
        return [x for seq in sequences for x in seq]
    if how == "interleaved":
        out = []
        longest = max((len(s) for s in sequences), default=0)
        for k in range(longest):
            out.extend(seq[k] for seq in sequences if k < len(seq))
        return out
    if how == "spaced":
        timed = [((k + 0.5) / len(seq), i, k) for i, seq in enumerate(sequences) for k in range(len(seq))]
        timed.sort()
        return [sequences[i][k] for _, i, k in timed]
    raise ValueError(f"unknown schedule {how!r}; use {', '.join(SCHEDULES)}")
