"""`microvar probe`: the response map. How the reference model reacts to each kind of edit,
measured before a dataset is designed: seeds are expanded with the same recipes and
expander as ``microvar expand`` (token checks included, no volatility budget), and every
kept variant is read against its parent position by position (``field.py``).

Per seed and per edit kind (a variant's last edit), and over all seeds per kind:

  n              variants whose last edit is of that kind
  surprisal      mean / std / p50 / p90 over those variants of each one's mean -log P of its
                 new tokens (variants that only remove tokens have none and are left out: n)
  surprisal_max  mean over the same variants of each one's most surprising new token
  ripple_kl      KL(P_parent || P_variant) at the unchanged tokens after the edit, pooled over
                 positions: overall mean, and mean by distance from the edit (buckets of
                 tokens after it: 1, 2, 3, 4-7, 8-15, 16+; 1 = the first token after the
                 edit), with the number of positions in each bucket
  delta_nll      mean change of -log P at those tokens (positive: the rest got harder)
  top1           mean over variants of the share of those tokens where parent and variant
                 predict the same most probable token
  drift          per layer (0 = embeddings; length = layers + 1) the mean over variants of
                 the relative hidden-state change ||h_variant - h_parent|| / ||h_parent|| at
                 those tokens; ``start_layer``: the first layer >= 1 where that mean passes
                 the threshold (null: never); ``layers``: how many variants start drifting at
                 each layer (their own first layer over the threshold; "none": never)

Variants with no unchanged token after the edit (a tail, a dropped last line) count in n and
surprisal only. The file is JSON, ``"schema": "microvar.probe/1"``, written atomically; the
same inputs, options and machine give the same bytes."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import MicrovarError
from ..expand.edits.base import STAGE_OF_KIND
from ..model.field import BUCKETS, FieldModel, bucket
from ..progress import tracked

log = logging.getLogger(__name__)

SCHEMA = "microvar.probe/1"
KINDS = tuple(k for k in STAGE_OF_KIND if k != "identity")


@dataclass
class ProbeOptions:
    seeds: str
    out: Path
    recipes: list[str] = field(default_factory=list)
    model: str | None = None
    variants: int = 16
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    batch_tokens: int | None = None    # None: the scorer's default for the device and vocabulary
    drift_threshold: float = 0.1
    progress: bool = True


@dataclass
class _Acc:
    """Per-variant measurements of one kind, pooled for its statistics."""
    n: int = 0
    surprisal: list = field(default_factory=list)
    surprisal_max: list = field(default_factory=list)
    kl_by: dict = field(default_factory=lambda: {b: [] for b in BUCKETS})
    dnll: list = field(default_factory=list)
    top1: list = field(default_factory=list)
    curves: list = field(default_factory=list)
    layers: Counter = field(default_factory=Counter)

    def add(self, ripple) -> None:
        self.n += 1
        if ripple.surprisal:
            self.surprisal.append(float(np.mean(ripple.surprisal)))
            self.surprisal_max.append(max(ripple.surprisal))
        if ripple.kl:
            for d, kl in zip(ripple.distances, ripple.kl):
                self.kl_by[bucket(d)].append(kl)
            self.dnll.extend(ripple.dnll)
            self.top1.append(sum(ripple.agree) / len(ripple.agree))
            if ripple.drift is not None:
                self.curves.append(ripple.drift)
                self.layers["none" if ripple.drift_layer is None else str(ripple.drift_layer)] += 1

    def merge(self, o: _Acc) -> None:
        self.n += o.n
        for k in ("surprisal", "surprisal_max", "dnll", "top1", "curves"):
            getattr(self, k).extend(getattr(o, k))
        for b in BUCKETS:
            self.kl_by[b].extend(o.kl_by[b])
        self.layers.update(o.layers)

    def to_json(self, threshold: float) -> dict:
        s = np.asarray(self.surprisal, dtype=np.float64)
        surprisal = {"n": len(s), "mean": _r(s.mean()) if len(s) else None, "std": _r(s.std()) if len(s) else None,
                     "p50": _r(np.quantile(s, 0.5)) if len(s) else None,
                     "p90": _r(np.quantile(s, 0.9)) if len(s) else None}
        pooled = [x for b in BUCKETS for x in self.kl_by[b]]
        ripple = {"mean": _r(np.mean(pooled)) if pooled else None,
                  "by_distance": {b: _r(np.mean(self.kl_by[b])) if self.kl_by[b] else None for b in BUCKETS},
                  "positions": {b: len(self.kl_by[b]) for b in BUCKETS}}
        curve = [_r(x) for x in np.mean(np.asarray(self.curves), 0)] if self.curves else None
        start = next((k for k, x in enumerate(curve) if k and x > threshold), None) if curve else None
        order = sorted(self.layers, key=lambda k: (k == "none", int(k) if k != "none" else 0))
        return {"n": self.n, "surprisal": surprisal,
                "surprisal_max": _r(np.mean(self.surprisal_max)) if self.surprisal_max else None,
                "ripple_kl": ripple,
                "delta_nll": _r(np.mean(self.dnll)) if self.dnll else None,
                "top1": {"n": len(self.top1), "mean": _r(np.mean(self.top1)) if self.top1 else None},
                "drift": {"n": len(self.curves), "curve": curve, "start_layer": start,
                          "layers": {k: self.layers[k] for k in order}}}


def _r(x) -> float:
    """Rounded to 6 significant digits: stable bytes, no false precision."""
    return float(f"{float(x):.6g}")


def run_probe(opts: ProbeOptions) -> dict:
    """Expand, measure and write the response map to ``opts.out``; returns the map."""
    from ..expand.expander import Expander
    from ..expand.seeds import read_seeds
    from ..model.advisor import Advisor
    from ..model.load import load_tokenizer
    from ..pipeline.inputs import choose_recipes, load_reference
    from ..pipeline.options import Options

    if opts.model == "none":
        raise MicrovarError("probe measures the reference model's response: it needs a model (not --model none)")
    if not opts.out.parent.is_dir():
        raise MicrovarError(f"{opts.out.parent} does not exist")
    started = time.perf_counter()
    sf = read_seeds(opts.seeds)
    seeds_dir = Path(opts.seeds).parent if opts.seeds != "-" else None
    default, recipes = choose_recipes(sf.seeds, opts.recipes, seeds_dir)
    tk, ref = load_tokenizer(opts.model)
    lm = load_reference(Options(opts.seeds, opts.out, model=opts.model, device=opts.device, dtype=opts.dtype), tk)
    fm = FieldModel(lm, tk, batch_tokens=opts.batch_tokens, drift_threshold=opts.drift_threshold)
    expander = Expander(tk, seed=opts.seed, variants=opts.variants, advisor=Advisor(lm, tk))
    loaded = time.perf_counter()

    totals: dict[str, _Acc] = {}
    seeds_out = []
    for s in tracked(sf.seeds, desc="probing", unit="seed", enabled=opts.progress):
        recipe = recipes[s.recipe] if s.recipe else default
        result = expander.expand(s, recipe)
        entry = {"id": s.id, "text": s.text, "recipe": recipe.name, "variants": len(result.kept),
                 "rejected": len(result.rejects), "n_tokens": result.kept[0].n_tokens if result.kept else None,
                 "kinds": {}, "detail": []}
        if not result.kept:
            entry["note"] = "seed rejected: " + (result.rejects[0].detail if result.rejects else "no variants")
            seeds_out.append(entry)
            continue
        texts = {v.variant_id: v.text for v in result.kept}
        children = [v for v in result.kept if v.parent_id]
        ripples = fm.compare((texts[v.parent_id], v.text) for v in children)
        fm.clear()
        accs: dict[str, _Acc] = {}
        for v in children:
            rp = ripples[(texts[v.parent_id], v.text)]
            kind = v.kinds[-1]
            accs.setdefault(kind, _Acc()).add(rp)
            m = rp.metrics()
            entry["detail"].append({"variant_id": v.variant_id, "parent_id": v.parent_id, "kind": kind,
                                    "edit": v.edits[-1], "text": v.text, "n_tokens": v.n_tokens,
                                    **{k: (_r(x) if isinstance(x, float) else x) for k, x in m.items()}})
        for kind in _ordered(accs):
            entry["kinds"][kind] = accs[kind].to_json(opts.drift_threshold)
            totals.setdefault(kind, _Acc()).merge(accs[kind])
        seeds_out.append(entry)
    seconds = time.perf_counter() - started
    result = {
        "schema": SCHEMA,
        "model": {"name": lm.name, "gguf_sha256": ref.sha256 if ref else None, "layers": fm.layers,
                  "device": lm.device, "dtype": str(lm.dtype).replace("torch.", ""),
                  "context_token": tk.hf.convert_ids_to_tokens(fm.ctx)},
        "tokenizer": {"name": tk.name, "sha256": tk.sha256},
        "inputs": {"seeds": sf.name, "sha256": sf.sha256, "recipes": sorted({r.name for r in recipes.values()}
                                                                              | {default.name})},
        "options": {"variants": opts.variants, "seed": opts.seed, "drift_threshold": opts.drift_threshold,
                    "budget": "none: every variant the token checks keep"},
        "distance_buckets": list(BUCKETS),
        "kinds": {k: totals[k].to_json(opts.drift_threshold) for k in _ordered(totals)},
        "seeds": seeds_out,
    }
    _write_atomic(opts.out, dumps(result) + "\n")
    n_var = sum(a.n for a in totals.values())
    log.info("model loaded in %.1f s", loaded - started)
    result["_timing"] = {"seconds": seconds, "load_seconds": loaded - started, "variants": n_var,
                         "positions": fm.positions}
    return result


def dumps(obj, indent: int = 0) -> str:
    """Indented JSON with every container of plain values on one line: a curve, a bucket
    table or a variant's record reads as one line."""
    def plain(x) -> bool:
        return not isinstance(x, dict | list)

    if plain(obj) or (isinstance(obj, list) and all(map(plain, obj))) or \
            (isinstance(obj, dict) and all(map(plain, obj.values()))):
        return json.dumps(obj, ensure_ascii=False)
    pad = " " * (indent + 1)
    if isinstance(obj, dict):
        body = ",\n".join(f"{pad}{json.dumps(k, ensure_ascii=False)}: {dumps(v, indent + 1)}" for k, v in obj.items())
        return "{\n" + body + "\n" + " " * indent + "}"
    body = ",\n".join(pad + dumps(v, indent + 1) for v in obj)
    return "[\n" + body + "\n" + " " * indent + "]"


def _ordered(d) -> list[str]:
    return [k for k in KINDS if k in d] + sorted(k for k in d if k not in KINDS)


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_map(path: Path) -> dict:
    """A response map written by ``microvar probe``, checked for its schema."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise MicrovarError(f"{path}: cannot read a response map: {e}") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise MicrovarError(f"{path}: not a response map written by microvar probe (schema {SCHEMA})")
    return data
