"""What the report page shows, apart from the seeds: the template's context, the overview
charts as inline SVG geometry (histograms, category bars, the probe's planes and lines) and
the views of rejects, the probe's response map and an evaluation. ``report.py`` reads the
data and the seeds' token fields; this module shapes them for ``templates/report.html.j2``."""

from __future__ import annotations

from .. import __version__
from ..export.stats import histogram, phase_counts, rejects, short_number, stage_counts, volatility

# probability bins of the token field: (lower bound, label); the last bin is below 0.001
BINS = ((0.5, "≥ 0.5"), (0.2, "0.2 – 0.5"), (0.05, "0.05 – 0.2"), (0.01, "0.01 – 0.05"), (0.001, "0.001 – 0.01"),
        (0.0, "< 0.001"))
METRIC_HELP = {
    "surprisal": "mean −log P of the new tokens (nats)", "surprisal_max": "the most surprising new token",
    "ripple_kl": "mean KL at the unchanged tokens after the edit", "ripple_kl_max": "its largest value",
    "delta_nll": "change of −log P of those tokens (+: harder)", "top1": "share of them with the same top token",
    "nll": "the variant's own mean −log P per token", "drift_layer": "first layer whose hidden states drift",
}
for _k in ("surprisal", "surprisal_max", "ripple_kl", "ripple_kl_max", "delta_nll", "top1"):
    METRIC_HELP["seed_" + _k] = f"{_k}, against the seed instead of the parent"
SHOW_REASONS = 10   # per check


def page_context(name, manifest, table, rows, rejected, gaps, seeds, probe, limits, fields) -> dict:
    manifest = manifest or {}
    model = manifest.get("model") or {}
    cur = manifest.get("curriculum") or {}
    unique = {}
    for r in rows:
        unique.setdefault(r["variant_id"], r)
    scored = bool(model.get("scored"))
    if rows:
        from ..export.dataset import variant_text

        gaps = [{**g, "from_text": variant_text(unique[g["from"]]) if g["from"] in unique else "",
                 "to_text": variant_text(unique[g["to"]]) if g["to"] in unique else ""} for g in gaps]
    vol = volatility(table) if scored and rows else None
    stages = stage_counts(table, manifest) if rows else []
    cards = []
    if manifest:
        counts = manifest.get("counts") or {}
        share = cur.get("within_step_share")
        cards = [("seeds", len({r["seed_id"] for r in rows})), ("rows", len(rows)), ("unique variants", len(unique)),
                 ("rejected", len(rejected)), ("steps within budget", f"{100 * share:.1f}%" if share is not None
                                               else "n/a"),
                 ("bridge rows", cur.get("bridged_rows", 0)), ("gaps", len(gaps)),
                 ("duplicates merged", counts.get("duplicates", 0))]
    return {
        "title": f"microvar report — {name}" if name else "microvar response map",
        "name": name, "version": __version__, "manifest": manifest, "model": model, "scored": scored,
        "fields": fields is not None, "fields_model": fields.name if fields is not None else None,
        "curriculum": cur, "cards": cards, "limits": limits, "bins": [{"cls": f"b{i}", "label": lab}
                                                                   for i, (_, lab) in enumerate(BINS)],
        "stage_hist": category_bars([(s.stage, s.rows) for s in stages], extra={s.stage: s.variants for s in stages})
        if stages else None,
        "phase_hist": _phase_bars(table) if rows else None,
        "metric_hists": _metric_hists(vol) if vol is not None else [],
        "scored_variants": vol.variants if vol is not None else 0, "seeds": seeds,
        "rejects": _rejects_view(rejected), "n_rejects": len(rejected), "gaps": gaps,
        "seed_anchor": {s["id"]: s["anchor"] for s in seeds}, "probe": _probe_view(probe) if probe else None,
        "has_dataset": bool(manifest), "metric_help": METRIC_HELP,
    }


def _metric_hists(vol) -> list[dict]:
    """A histogram of every volatility metric, then the first drifting layer as categories."""
    from ..dsl.recipe import METRICS

    hists = [{"name": k, **histogram_bars(vol.metrics[k])} for k in METRICS if len(vol.metrics.get(k, ()))]
    layers = vol.drift_layers
    if layers:
        keys = sorted(k for k in layers if k is not None) + ([None] if None in layers else [])
        hists.append({"name": "drift_layer", **category_bars([("none" if k is None else str(k), layers[k])
                                                              for k in keys])})
    return hists


def _phase_bars(table) -> dict | None:
    phases = phase_counts(table)
    if not phases:
        return None
    return category_bars([(f"{p.phase} · {p.level}" if p.level else str(p.phase), p.rows) for p in phases])


def histogram_bars(x, bins: int = 20, width: int = 260, height: int = 64) -> dict:
    """Bars for an inline SVG: equal bins from the minimum to the 98th percentile (of 50
    values or more), the rest in one overflow bar (volatility metrics have long tails)."""
    h = histogram(x, bins, 0, 98 if len(x) >= 50 else 100)
    cells = [(f"{short_number(a)} – {short_number(b)}", c) for a, b, c in zip(h.edges, h.edges[1:], h.counts)]
    if h.above:
        cells.append((f"> {short_number(h.edges[-1])} (up to {short_number(h.hi)})", h.above))
    out = _bars(cells, width, height, overflow=bool(h.above))
    out.update(n=h.n, lo=short_number(h.lo), hi=short_number(h.hi), p50=short_number(h.p50))
    return out


def category_bars(items: list[tuple[str, int]], width: int = 260, height: int = 64, extra: dict | None = None) -> dict:
    out = _bars([(k, v) for k, v in items], width, height, labels=True)
    out["items"] = [{"label": k, "count": v, "extra": (extra or {}).get(k)} for k, v in items]
    out["n"] = sum(v for _, v in items)
    return out


def _bars(cells: list[tuple[str, float]], width: int, height: int, overflow: bool = False, labels: bool = False,
          peak: float | None = None) -> dict:
    n = max(len(cells), 1)
    gap = 1 if n > 12 else 3
    w = (width - gap * (n - 1)) / n
    peak = peak or max((c for _, c in cells), default=0) or 1
    bars = []
    for i, (label, c) in enumerate(cells):
        h = 0 if not c else max(1.5, (height - 2) * c / peak)
        bars.append({"x": round(i * (w + gap), 2), "y": round(height - h, 2), "w": round(w, 2), "h": round(h, 2),
                     "label": label, "count": c, "over": overflow and i == len(cells) - 1})
    return {"bars": bars, "width": width, "height": height, "peak": peak, "labels": labels}


def _rejects_view(rejected: list[dict]) -> list[dict]:
    out = []
    for c in rejects(rejected).checks:
        items = [{"reason": r.reason, "count": r.count, "share": r.count / c.count, "example": r.example}
                 for r in c.reasons[:SHOW_REASONS]]
        out.append({"check": c.check, "count": c.count, "reasons": items,
                    "more": max(0, len(c.reasons) - SHOW_REASONS)})
    return out


def _probe_view(probe: dict) -> dict:
    """The response map with its small charts precomputed; within a table the charts of all
    kinds share one scale, so kinds compare at a glance."""
    from ..model.field import BUCKETS

    threshold = probe["options"]["drift_threshold"]
    layers = probe["model"]["layers"]

    def table(kinds: dict) -> list[dict]:
        kl_peak = max((v for k in kinds.values() for v in k["ripple_kl"]["by_distance"].values() if v is not None),
                      default=0) or 1
        drift_peak = max([threshold * 1.4] + [max(k["drift"]["curve"]) for k in kinds.values() if k["drift"]["curve"]])
        rows = []
        for kind, k in kinds.items():
            by, pos = k["ripple_kl"]["by_distance"], k["ripple_kl"]["positions"]
            ripple = _bars([(f"{b} tokens after the edit: KL {short_number(by[b])} over {pos[b]} positions",
                             0 if by[b] is None else by[b]) for b in BUCKETS], 120, 28, peak=kl_peak)
            curve = k["drift"]["curve"]
            first = k["drift"]["layers"]
            cells = [(f"layer {i}: {first.get(str(i), 0)} variants", first.get(str(i), 0)) for i in range(1, layers + 1)]
            cells.append((f"never: {first.get('none', 0)} variants", first.get("none", 0)))
            rows.append({"kind": kind, "k": k, "ripple": ripple,
                         "drift": _line(curve, 160, 36, drift_peak, threshold) if curve else None,
                         "first": _bars(cells, 120, 28, overflow=True) if k["drift"]["n"] else None})
        return rows

    return {"meta": probe, "kinds": table(probe["kinds"]), "buckets": list(BUCKETS),
            "seeds": [{"id": s["id"], "text": s["text"], "variants": s["variants"], "rejected": s["rejected"],
                       "note": s.get("note"), "kinds": table(s["kinds"]), "detail": s["detail"]}
                      for s in probe["seeds"]]}


def eval_view(ev: dict) -> dict:
    """The evaluation section: one table row per model (the base first), ΔNLL by stage, and the
    implant-vs-collateral plane (target ΔNLL across, control KL up), one dot per adapter."""
    def held(implant: dict, key: str):
        return (implant.get("heldout") or {}).get("overall", {}).get(key)

    base = ev["base"]
    rows = [{"name": "base", "target": base["implant"]["target"]["overall"]["nll"],
             "seed": base["implant"]["seed"]["overall"]["nll"], "held": held(base["implant"], "nll"),
             "target_change": None, "seed_change": None, "held_change": None, "kl": 0.0, "ctl_change": 0.0,
             "top1": 1.0, "echo": base.get("echo"), "path": None}]
    for a in ev["adapters"]:
        imp, col = a["implant"], a["collateral"]
        rows.append({"name": a["name"], "path": a["path"], "target": imp["target"]["overall"]["nll"],
                     "target_change": imp["target"]["overall"]["nll_change"], "seed": imp["seed"]["overall"]["nll"],
                     "seed_change": imp["seed"]["overall"]["nll_change"], "held": held(imp, "nll"),
                     "held_change": held(imp, "nll_change"), "kl": col["kl"], "ctl_change": col["nll_change"],
                     "top1": col["top1"], "echo": a.get("echo")})
    stages = list(dict.fromkeys(st for a in ev["adapters"] for st in a["implant"]["stages"]))
    stage_rows = [{"name": a["name"], "cells": [(a["implant"]["stages"].get(st) or {}).get("nll_change")
                                                for st in stages]} for a in ev["adapters"]]
    return {"rows": rows, "stages": stages, "stage_rows": stage_rows, "plane": _plane(rows[1:]),
            "model": ev.get("model") or {}, "control": ev.get("control") or {}, "heldout": ev.get("heldout_source"),
            "seeds": (ev.get("dataset") or {}).get("seeds")}


def _plane(rows: list[dict], width: int = 320, height: int = 200, pad: int = 28) -> dict:
    """Adapters as dots: target ΔNLL (x, negative = learned) against control KL (y); the base at (0, 0)."""
    xs = [0.0] + [r["target_change"] or 0.0 for r in rows]
    ys = [0.0] + [r["kl"] or 0.0 for r in rows]
    x_lo, x_hi = min(xs), max(xs)
    x_span = (x_hi - x_lo) or 1.0
    y_hi = max(ys) or 1.0

    def at(x: float, y: float) -> tuple[float, float]:
        return (round(pad + (width - 2 * pad) * (x - x_lo) / x_span, 1),
                round(height - pad - (height - 2 * pad) * y / y_hi, 1))

    dots = [{"name": "base", "xy": at(0.0, 0.0), "base": True}]
    dots += [{"name": r["name"], "xy": at(r["target_change"] or 0.0, r["kl"] or 0.0), "base": False,
              "x": r["target_change"], "y": r["kl"]} for r in rows]
    return {"width": width, "height": height, "pad": pad, "dots": dots, "x_lo": short_number(x_lo),
            "x_hi": short_number(x_hi), "y_hi": short_number(y_hi)}


def _line(values: list[float], width: int, height: int, peak: float, threshold: float) -> dict:
    n = max(len(values) - 1, 1)

    def y(v: float) -> float:
        return height - 2 - (height - 4) * min(v, peak) / peak

    pts = " ".join(f"{width * i / n:.1f},{y(v):.1f}" for i, v in enumerate(values))
    return {"points": pts, "width": width, "height": height, "peak": short_number(max(values)), "layers": len(values),
            "thr_y": round(y(threshold), 1)}
