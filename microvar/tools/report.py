"""`microvar report`: one self-contained HTML file to inspect a dataset as an object.

Per seed, its curriculum path (the rows of its first presentation, in step order) as token
probability fields: every token shaded by the reference model's probability for it in its
context, the tokens an edit changed underlined. Choosing a row draws its ripple (KL of the
model's next-token distributions, parent vs variant, at each unchanged token after the
edit) and its layer drift curve. Overview histograms of stages and of every volatility
metric, rejects by check and reason, bridge gaps, and optionally the response map of
``microvar probe`` as a page of its own.

Everything is inline (CSS, SVG, a little JS that draws the charts); the page refers to no
outside URL and reads well without a network. Rendered from ``templates/report.html.j2``
with autoescaping on."""

from __future__ import annotations

import fnmatch
import logging
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..errors import MicrovarError
from ..export.dataset import read_manifest
from ..export.stats import histogram, phase_counts, read_rejects, rejects, short_number, stage_counts, volatility
from ..train.eval_inputs import _fingerprint

log = logging.getLogger(__name__)

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
EMBEDDED_PREFIX = "SmolLM2-135M-Instruct (embedded"
SHOW_REASONS = 10   # per check


@dataclass
class ReportOptions:
    out: Path
    output: Path
    model: str | None = None          # None: the model OUT was scored with; "none": no fields
    probe: Path | None = None
    evaluation: Path | None = None    # an `evaluate -o` file, shown as a section
    seeds: str | None = None          # comma-separated ids or shell patterns
    max_seeds: int | None = None
    rows_per_seed: int = 24
    device: str = "auto"
    dtype: str = "auto"
    batch_tokens: int = 1024
    progress: bool = True


# ---------------------------------------------------------------- entry points


def build_report(opts: ReportOptions) -> list[str]:
    """Read OUT, measure the shown rows, render the page to ``opts.output``; returns summary lines."""
    import time

    from tqdm.auto import tqdm

    started = time.perf_counter()
    manifest, table, rejected = _read_out(opts.out)
    rows = table.to_pylist()
    if not opts.output.parent.is_dir():
        raise MicrovarError(f"{opts.output.parent} does not exist")
    probe = None
    if opts.probe is not None:
        from .probe import load_map

        probe = load_map(opts.probe)
    evaluation = None
    if opts.evaluation is not None:
        from ..train.evaluate import load_result

        evaluation = load_result(opts.evaluation)
    by_seed: dict[str, list[dict]] = {}
    for r in sorted(rows, key=lambda r: r["order"]):
        by_seed.setdefault(r["seed_id"], []).append(r)
    all_ids = list(by_seed)
    chosen = _select(all_ids, opts.seeds)
    if opts.max_seeds is not None:
        chosen = chosen[:opts.max_seeds]
    fm, model_note = _field_model(opts, manifest)
    gaps = (manifest.get("curriculum") or {}).get("gaps") or []
    gaps_of: dict[str, list[dict]] = {}
    for g in gaps:
        gaps_of.setdefault(g["seed_id"], []).append(g)
    rejects_of: dict[str, list[dict]] = {}
    for r in rejected:
        rejects_of.setdefault(r.get("seed_id"), []).append(r)
    seeds = []
    bar = tqdm(chosen, unit="seed", leave=False, desc="report", disable=not opts.progress)
    for idx, sid in enumerate(bar):
        seeds.append(_seed_view(idx, sid, by_seed[sid], fm, opts.rows_per_seed, gaps_of.get(sid, []),
                                rejects_of.get(sid, [])))
        if fm is not None:
            fm.clear()
    bar.close()
    shown = sum(s["n_shown"] for s in seeds)
    longer = sum(1 for s in seeds if s["n_path"] > s["n_shown"])
    limits = []
    if len(chosen) < len(all_ids):
        why = []
        if opts.seeds:
            why.append(f"--seeds {opts.seeds}")
        if opts.max_seeds is not None and len(chosen) == opts.max_seeds:
            why.append(f"--max-seeds {opts.max_seeds}")
        limits.append(f"{len(chosen)} of {len(all_ids)} seeds are shown ({', '.join(why)}); the overview, rejects "
                      "and gaps cover the whole dataset.")
    if longer:
        limits.append(f"{longer} seed path(s) are longer than --rows-per-seed {opts.rows_per_seed}: that many rows "
                      "of each are shown and measured, the first rows of every stage in proportion to its length "
                      "(the rows left out are marked where they fall).")
    if model_note:
        limits.append(model_note)
    if evaluation is not None and (evaluation.get("dataset") or {}).get("fingerprint") != _fingerprint(opts.out):
        limits.append(f"The evaluation {opts.evaluation.name} was made on another dataset than this one "
                      f"({(evaluation.get('dataset') or {}).get('path')}).")
    context = _page_context(opts.out.name, manifest, table, rows, rejected, gaps, seeds, probe, limits, fm)
    context["evaluation"] = _eval_view(evaluation) if evaluation is not None else None
    html = render_page(context)
    _write_atomic(opts.output, html)
    seconds = time.perf_counter() - started
    fields = (f"token fields by {fm.name} on {fm.device}: {fm.positions} positions" if fm is not None
              else "no token fields (--model none)")
    return [(f"report: {len(seeds)} of {len(all_ids)} seeds, {shown} path rows; {fields}; "
             f"{len(html.encode()) / 1e6:.1f} MB in {seconds:.1f} s")]


def write_probe_page(probe: dict, path: Path) -> None:
    """The response map alone, as a self-contained page."""
    context = _page_context(None, None, None, [], [], [], [], probe, [], None)
    _write_atomic(path, render_page(context))


def render_page(context: dict) -> str:
    import jinja2

    from ..resources import data_dir

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(data_dir("templates"))),
                             autoescape=True, undefined=jinja2.ChainableUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = short_number
    env.policies["json.dumps_kwargs"] = {"sort_keys": False, "ensure_ascii": False}
    return env.get_template("report.html.j2").render(**context)


# ---------------------------------------------------------------- reading


def _read_out(out: Path) -> tuple[dict, object, list[dict]]:
    """The manifest, the rows (a ``pyarrow.Table``) and the rejects of OUT."""
    from datasets import load_from_disk

    manifest = read_manifest(out)
    try:
        ds = load_from_disk(str(out))
    except Exception as e:  # noqa: BLE001 (datasets raises several kinds; all mean "not a dataset directory")
        raise MicrovarError(f"{out}: cannot open the dataset: {e}") from None
    return manifest, ds.with_format("arrow")[:], read_rejects(out) or []


def _select(ids: list[str], spec: str | None) -> list[str]:
    if not spec:
        return ids
    patterns = [p.strip() for p in spec.split(",") if p.strip()]
    chosen = [i for i in ids if any(i == p or fnmatch.fnmatchcase(i, p) for p in patterns)]
    if not chosen:
        sample = ", ".join(ids[:8]) + (", ..." if len(ids) > 8 else "")
        raise MicrovarError(f"--seeds {spec}: no seed matches (seeds: {sample})")
    return chosen


class _Fields:
    """A FieldModel and what it is called."""

    def __init__(self, fm, name: str, device: str) -> None:
        self.fm, self.name, self.device = fm, name, device

    @property
    def positions(self) -> int:
        return self.fm.positions

    def clear(self) -> None:
        self.fm.clear()


def _field_model(opts: ReportOptions, manifest: dict) -> tuple[_Fields | None, str | None]:
    """The model for the token fields: --model, else the one OUT was scored with."""
    from ..model.field import FieldModel
    from ..model.load import GEMMA_LABEL, GEMMA_NAME, load_model, load_tokenizer, resolve

    if opts.model == "none":
        return None, "No token fields or charts: --model none."
    model = opts.model
    if model is None:
        name = (manifest.get("model") or {}).get("name")
        if name is None or name.startswith(EMBEDDED_PREFIX):
            model = None
        elif name.startswith(GEMMA_LABEL):
            model = GEMMA_NAME
        elif Path(name).exists():
            model = name
        else:
            raise MicrovarError(f"the model this dataset was made with ({name}) is not here; pass --model PATH, "
                                "or --model none for a report without token fields")
    ref = resolve(model)
    tk, _ = load_tokenizer(model)
    want = (manifest.get("tokenizer") or {}).get("sha256")
    if want and tk.sha256 != want:
        raise MicrovarError(f"--model {ref.name}: its tokenizer is not the one the dataset was made with "
                            f"({(manifest.get('tokenizer') or {}).get('name')}); token fields would not match the "
                            "rows. Pass the dataset's model, or --model none")
    lm = load_model(ref, opts.device, opts.dtype)
    info = manifest.get("model") or {}
    threshold = info.get("drift_threshold") or 0.1
    stored = bool(info.get("scored") and info.get("drift"))   # drift curves are in the rows: no hidden states needed
    fm = FieldModel(lm, tk, batch_tokens=opts.batch_tokens, drift_threshold=threshold, hidden=not stored)
    return _Fields(fm, lm.name, lm.device), None


# ---------------------------------------------------------------- seeds


def _seed_view(idx: int, sid: str, rows: list[dict], fields: _Fields | None, limit: int, gaps: list[dict],
               rejects: list[dict]) -> dict:
    from ..export.dataset import variant_text

    text_of = {r["variant_id"]: variant_text(r) for r in rows}
    path = sorted((r for r in rows if r["repeat"] == 0), key=lambda r: (r["step"], r["order"]))
    gap_at = {(g["from"], g["to"]): g for g in gaps}
    seen: set[str] = set()
    bridge, gap = [], []
    for k, r in enumerate(path):
        bridge.append(r["variant_id"] in seen)
        seen.add(r["variant_id"])
        gap.append(gap_at.get((path[k - 1]["variant_id"], r["variant_id"])) if k else None)
    picked = sample_path([r["stage"] for r in path], limit, bridge)
    shown = [path[k] for k in picked]
    fm = fields.fm if fields is not None else None
    ripples, tfields = {}, {}
    if fm is not None:
        pairs = [(text_of[r["parent_id"]], text_of[r["variant_id"]]) for r in shown
                 if r["parent_id"] and r["parent_id"] in text_of]
        ripples = fm.compare(pairs)
        texts = [text_of[r["variant_id"]] for r in shown]
        tfields = dict(zip(texts, fm.fields(texts)))
    views, data = [], []
    last = -1
    for k, r in zip(picked, shown):
        if k > last + 1:
            views.append({"skip": k - last - 1, "stages": sorted({path[i]["stage"] for i in range(last + 1, k)})})
        last = k
        text = text_of[r["variant_id"]]
        parent = text_of.get(r["parent_id"]) if r["parent_id"] else None
        rp = ripples.get((parent, text)) if parent is not None else None
        tf = tfields.get(text)
        vol = r.get("volatility") or None
        view = {"i": len(data), "step": r["step"], "stage": r["stage"], "edit": r["edits"][-1] if r["edits"] else "",
                "edits": r["edits"], "variant_id": r["variant_id"], "step_tokens": r["step_tokens"],
                "bridge": bridge[k], "gap": gap[k], "phase": r.get("phase"),
                "lora_level": r.get("lora_level"), "vol": _vol_summary(vol) if r["parent_id"] else None,
                "tokens": _token_spans(text, tf, set(rp.new) if rp else set(), fm.tk if fm else None)}
        views.append(view)
        data.append(_row_data(r, text, tf, rp, vol, fm))
    if last < len(path) - 1:
        views.append({"skip": len(path) - 1 - last, "stages": sorted({path[i]["stage"] for i in range(last + 1, len(path))})})
    first_text = text_of[path[0]["variant_id"]] if path else ""
    stages = Counter(r["stage"] for r in path)
    gaps = [{**g, "from_text": text_of.get(g["from"], ""), "to_text": text_of.get(g["to"], "")} for g in gaps]
    return {"idx": idx, "id": sid, "anchor": f"seed-{idx}", "n_path": len(path), "rows": views,
            "n_rows": len(rows), "stages": list(stages.items()), "gaps": gaps, "n_gaps": len(gaps),
            "rejects": rejects[:12], "n_rejects": len(rejects), "first_text": first_text,
            "n_shown": len(shown), "data": {"rows": data}}


def sample_path(stages: list[str], limit: int, bridges: list[bool] | None = None) -> list[int]:
    """Which rows of a path to show when it is longer than ``limit``: the path's runs of one
    stage (a bridge row, shown again, stays in the run it interrupts) each get a share of
    the rows in proportion to their length (at least one while there is room), and show
    their first rows: the whole curriculum at a glance, in order."""
    n = len(stages)
    if n <= limit:
        return list(range(n))
    runs: list[list[int]] = []
    for k, st in enumerate(stages):
        if runs and (stages[runs[-1][0]] == st or (bridges and bridges[k])):
            runs[-1].append(k)
        else:
            runs.append([k])
    quota = [0] * len(runs)
    for i in range(min(limit, len(runs))):
        quota[i] = 1
    left = limit - sum(quota)
    if left > 0:
        extra = [len(r) - 1 for r in runs]
        total = sum(extra) or 1
        shares = [left * e / total for e in extra]
        for i, sh in enumerate(shares):
            quota[i] += int(sh)
        rest = limit - sum(quota)
        for i in sorted(range(len(runs)), key=lambda i: -(shares[i] - int(shares[i])))[:rest]:
            quota[i] += 1
    return [k for run, q in zip(runs, quota) for k in run[:min(q, len(run))]]


def _vol_summary(vol: dict | None) -> dict | None:
    if not vol:
        return None
    return {k: vol.get(k) for k in ("surprisal", "ripple_kl", "top1", "delta_nll", "drift_layer")}


def _row_data(r: dict, text: str, tf, rp, vol: dict | None, fm) -> dict:
    """What the page's script needs to draw a row's charts."""
    out = {"step": r["step"], "edit": r["edits"][-1] if r["edits"] else "", "root": not r["parent_id"]}
    if tf is not None:
        _, offsets = fm.tk.encode_offsets(text)
        shared = Counter(offsets)
        out["toks"] = [_show(text[a:b]) + (" (part)" if shared[(a, b)] > 1 else "") for a, b in offsets]
    if rp is not None:
        n = len(tf.ids) if tf is not None else max(rp.positions + rp.new, default=-1) + 1
        kl = [None] * n
        for j, x in zip(rp.positions, rp.kl):
            kl[j] = round(x, 5)
        out.update(kl=kl, new=rp.new, start=rp.start)
        m = rp.metrics()
        out["ripple_kl"], out["top1"] = round(m["ripple_kl"], 4), round(m["top1"], 4)
    stored = (vol or {}).get("drift")
    if stored:
        out.update(drift=[round(x, 5) for x in stored], drift_layer=(vol or {}).get("drift_layer"),
                   drift_from="the dataset (expand --drift)")
    elif rp is not None and rp.drift is not None:
        out.update(drift=[round(x, 5) for x in rp.drift], drift_layer=rp.drift_layer, drift_from="computed here")
    if fm is not None:
        out["threshold"] = fm.threshold
    return out


def _show(s: str) -> str:
    """A token's text with whitespace made visible."""
    return s.replace("\r", "␍").replace("\n", "⏎").replace("\t", "⇥").replace(" ", "·")


def _token_spans(text: str, tf, new: set[int], tk) -> list[dict]:
    """The text cut into its tokens, shaded by probability. Tokens that share characters (a
    character spelled in several byte-level tokens) form one span with their joint
    probability; every character of the text appears exactly once."""
    if tf is None or tk is None:
        return [{"text": _visible(text, False), "cls": "", "title": None}]
    ids, offsets = tk.encode_offsets(text)
    if ids != tf.ids:   # cannot happen with the same tokenizer; show the text plain rather than wrong
        return [{"text": _visible(text, False), "cls": "", "title": None}]
    groups: list[list[int]] = []
    end = -1
    for k, (a, b) in enumerate(offsets):
        if groups and a < end:
            groups[-1].append(k)
            end = max(end, b)
        else:
            groups.append([k])
            end = b
    spans = []
    for g, members in enumerate(groups):
        start = 0 if g == 0 else offsets[members[0]][0]
        stop = offsets[groups[g + 1][0]][0] if g + 1 < len(groups) else len(text)
        piece = text[start:stop]
        logp = sum(tf.logp[k] for k in members)
        p = math.exp(logp)
        ranks = [tf.rank[k] for k in members]
        title = f"{_show(piece)}   p {_prob(p)} · rank {ranks[0]}" if len(members) == 1 else \
            f"{_show(piece)}   p {_prob(p)} (joint, {len(members)} tokens) · ranks {', '.join(map(str, ranks))}"
        cls = f"t b{_bin(p)}" + (" n" if any(k in new for k in members) else "") + \
            (" ws" if piece and piece.strip(" ") == "" else "")
        spans.append({"text": _visible(piece, True), "cls": cls, "title": title})
    return spans


def _visible(s: str, token: bool) -> str:
    """Line breaks shown as ⏎ (and kept), tabs as ⇥; a token of spaces only as dots."""
    if token and s and s.strip(" ") == "":
        return "·" * len(s)
    return s.replace("\r", "␍").replace("\t", "⇥\t").replace("\n", "⏎\n")


def _bin(p: float) -> int:
    return next(i for i, (lo, _) in enumerate(BINS) if p >= lo)


def _prob(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


# ---------------------------------------------------------------- page


def _page_context(name, manifest, table, rows, rejected, gaps, seeds, probe, limits, fields) -> dict:
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


def _eval_view(ev: dict) -> dict:
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


def _write_atomic(path: Path, text: str) -> None:
    from .probe import _write_atomic as write

    write(path, text)
