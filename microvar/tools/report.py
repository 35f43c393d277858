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
with autoescaping on; ``report_page.py`` shapes the overview, charts and views for it."""

from __future__ import annotations

import fnmatch
import logging
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..errors import MicrovarError
from ..export.dataset import read_manifest
from ..export.stats import read_rejects, short_number
from ..train.eval_inputs import _fingerprint
from .report_page import BINS, eval_view, page_context

log = logging.getLogger(__name__)

EMBEDDED_PREFIX = "SmolLM2-135M-Instruct (embedded"


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
    context = page_context(opts.out.name, manifest, table, rows, rejected, gaps, seeds, probe, limits, fm)
    context["evaluation"] = eval_view(evaluation) if evaluation is not None else None
    html = render_page(context)
    _write_atomic(opts.output, html)
    seconds = time.perf_counter() - started
    fields = (f"token fields by {fm.name} on {fm.device}: {fm.positions} positions" if fm is not None
              else "no token fields (--model none)")
    return [(f"report: {len(seeds)} of {len(all_ids)} seeds, {shown} path rows; {fields}; "
             f"{len(html.encode()) / 1e6:.1f} MB in {seconds:.1f} s")]


def write_probe_page(probe: dict, path: Path) -> None:
    """The response map alone, as a self-contained page."""
    context = page_context(None, None, None, [], [], [], [], probe, [], None)
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


def _write_atomic(path: Path, text: str) -> None:
    from .probe import _write_atomic as write

    write(path, text)
