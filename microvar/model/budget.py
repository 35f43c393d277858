"""The volatility budget: scored variants over a limit go to the rejects with the metric, its
value and the limit; their descendants follow (their parent is gone). A limit may be
absolute (nats) or relative to the seed's own mean NLL per token (``surprisal <= 2.5x``), so
one budget means the same for a model that finds a text easy and one that finds it hard. Stats keep what a
designer needs to set budgets from data: each metric's distribution, and what each limit
removed."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from ..dsl.recipe import METRICS, Limit
from ..expand.expander import Reject, SeedResult

# the dataset's `volatility` struct: every metric (float32), these counts (int32), and `drift`
INT_FIELDS = ("new_tokens", "aligned_tokens", "drift_layer", "seed_drift_layer")


def volatility_record(m: dict, drift: bool) -> dict:
    rec = {k: float(m[k]) for k in METRICS}
    rec.update({k: m.get(k) for k in INT_FIELDS})
    rec["drift"] = [float(x) for x in m["drift"]] if drift else None
    return rec


def combine(recipe_limits: tuple[Limit, ...], overrides: tuple[Limit, ...]) -> tuple[Limit, ...]:
    """The recipe's budget with command-line limits replacing those on the same metric and side."""
    replaced = {(o.metric, o.op) for o in overrides}
    return tuple(x for x in recipe_limits if (x.metric, x.op) not in replaced) + tuple(overrides)


@dataclass
class BudgetStats:
    values: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in METRICS})
    removed: Counter = field(default_factory=Counter)      # limit text -> variants over it
    cascaded: int = 0                                       # removed because an ancestor was
    drift_layers: Counter = field(default_factory=Counter)

    def add(self, m: dict) -> None:
        for k in METRICS:
            self.values[k].append(m[k])
        if "drift_layer" in m:
            self.drift_layers[m["drift_layer"]] += 1

    def distribution(self) -> dict[str, dict]:
        out = {}
        for k, xs in self.values.items():
            if xs:
                a = np.asarray(xs, dtype=np.float64)
                q = np.quantile(a, [0.1, 0.5, 0.9])
                out[k] = {"n": len(xs), "min": float(a.min()), "p10": float(q[0]), "p50": float(q[1]),
                          "p90": float(q[2]), "max": float(a.max()), "mean": float(a.mean())}
        return out


def apply_budget(result: SeedResult, limits: tuple[Limit, ...], stats: BudgetStats) -> None:
    """Move variants over budget (and their descendants) from kept to rejects, in place."""
    gone: dict[str, str] = {}   # variant_id -> why
    survivors = []
    root = result.kept[0] if result.kept and not result.kept[0].parent_id else None
    seed_nll = root.volatility["nll"] if root is not None and root.volatility else None
    for v in result.kept:
        m = v.volatility
        if v.parent_id:
            stats.add(m)
        if v.parent_id in gone:
            gone[v.variant_id] = gone[v.parent_id]
            stats.cascaded += 1
            result.rejects.append(Reject(v.seed_id, v.text, "budget", f"its parent {v.parent_id} was removed "
                                         f"({gone[v.parent_id]})", v.variant_id, v.parent_id, v.edits,
                                         volatility=m))
            result.counts["rejected:budget"] += 1
            continue
        broken = [x for x in limits if x.violated(m[x.metric], seed_nll)]
        if broken and v.parent_id:  # the seed itself is the path's start: never removed
            for x in broken:
                stats.removed[str(x)] += 1
            first = broken[0]
            why = f"{first.metric} {m[first.metric]:.4g} breaks the budget {first}"
            if first.relative:
                why += f" ({first.bound(seed_nll):.4g} nats: the seed's own NLL is {seed_nll:.4g} nats/token)"
            if len(broken) > 1:
                why += " (also " + ", ".join(str(x) for x in broken[1:]) + ")"
            gone[v.variant_id] = why
            result.rejects.append(Reject(v.seed_id, v.text, "budget", why, v.variant_id, v.parent_id, v.edits,
                                         str(first), float(m[first.metric]), m))
            result.counts["rejected:budget"] += 1
            continue
        survivors.append(v)
    result.kept = survivors
    result.counts["kept"] = len(survivors)
