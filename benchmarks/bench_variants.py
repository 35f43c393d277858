"""What a designer reads: the variants of finished datasets, compared side by side.

For each dataset directory (what ``microvar expand`` wrote), with the seed file it came from:
rows per stage, distinct variants per stage, the reorder rows and how many of them the rule
proposed (seeds without ``{~...}``), the mean NLL change of the kept reorders under the
reference model (the whole text, reorder variant minus its parent, nats), the reorders that
sit inside code, and the manifest's reorder-rule counts when the dataset has them. Run it on
a dataset made before a change and one made after to see what the change did:

    microvar expand data/seeds.jsonl -o after --overwrite
    python benchmarks/bench_variants.py --seeds data/seeds.jsonl before after --quote 12

The last line is JSON with every figure."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

from datasets import load_from_disk

from microvar.expand.reorder import is_code, prose_ranges
from microvar.expand.seeds import read_seeds


def distinct(out: Path) -> list[dict]:
    """One row per variant (the curriculum repeats them), in dataset order."""
    seen, rows = set(), []
    for r in load_from_disk(str(out)).to_list():
        if r["variant_id"] not in seen:
            seen.add(r["variant_id"])
            rows.append(r)
    return rows


def text_of(r: dict) -> str:
    """The variant's text in any of the three formats (completion side: what the row teaches)."""
    if "messages" in r:
        return r["messages"][-1]["content"]
    return r["text"] if "text" in r else r["completion"]


def designed(seed) -> bool:
    """A seed whose designer wrote {~...} spans: its reorders are the designer's, not the rule's."""
    from microvar.dsl.markup import Swap

    return seed.parts is not None and any(isinstance(p, Swap) for p in seed.parts)


def in_code(seed, edit: str) -> bool:
    """A reorder inside code: a code seed, or a swapped word that occurs in the seed's text
    only outside its prose (code lines, fenced blocks, backtick spans)."""
    if is_code(seed.meta):
        return True
    prose = prose_ranges(seed.text)
    for word in edit.split(":", 1)[1].split("↔"):
        spots = [m.start() for m in re.finditer(re.escape(word), seed.text)]
        if not any(a <= k < b for k in spots for a, b in prose):
            return True
    return False


def designer_alternatives(seed) -> set[str]:
    """The ``a→b`` labels of the alternatives the designer wrote in a seed's markup."""
    from microvar.dsl.markup import Alt

    return {f"{p.options[0]}→{o}" for p in seed.parts or [] if isinstance(p, Alt) and not p.model
            for o in p.options[1:]}


def analyse(out: Path, seeds: dict, advisor, quote: int, match: str | None = None) -> dict:
    keep = (lambda sid: re.search(match, sid) is not None) if match else (lambda sid: True)
    rows = [r for r in distinct(out) if keep(r["seed_id"])]
    by_id = {r["variant_id"]: r for r in rows}
    stages = Counter(s for s, sid in zip(*load_from_disk(str(out)).select_columns(["stage", "seed_id"])[:].values())
                     if keep(sid))
    per_seed = Counter(r["seed_id"] for r in rows)
    alternatives = {sid: designer_alternatives(seeds[sid.split("#")[0]]) for sid in per_seed}
    swaps = [(r["seed_id"], e.split(":", 1)[1]) for r in rows for e in r["edits"][-1:] if e.startswith("swap:")]
    model_subs = {(sid, e) for sid, e in swaps if e not in alternatives[sid]}
    used_alts = {(sid, e) for r in rows for e in r["edits"] for sid in [r["seed_id"]]
                 if e.startswith("swap:") and e.split(":", 1)[1] in alternatives[sid]}
    variants = Counter(r["stage"] for r in rows)
    reorders = [r for r in rows if any(e.startswith("reorder:") for e in r["edits"])
                and r["edits"][-1].startswith("reorder:") and r["parent_id"] in by_id]
    ruled = [r for r in reorders if not designed(seeds[r["seed_id"].split("#")[0]])]
    pairs = [(text_of(by_id[r["parent_id"]]), text_of(r)) for r in ruled]
    deltas = []
    if advisor is not None and pairs:
        nll = advisor.nll([t for p in pairs for t in p])
        deltas = [nll[2 * k + 1] - nll[2 * k] for k in range(len(pairs))]
    code = [r for r in ruled if in_code(seeds[r["seed_id"].split("#")[0]], r["edits"][-1])]
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    rule = manifest.get("summary", {}).get("reorder_rule")
    return {"dataset": str(out), "rows": sum(stages.values()), "rows_by_stage": dict(stages),
            "seeds": len(per_seed), "kept_variants_per_seed": sum(per_seed.values()) / max(1, len(per_seed)),
            "fewest_kept_for_a_seed": min(per_seed.values(), default=0),
            "model_substitutions_kept": len(model_subs),
            "designer_alternatives": sum(len(v) for v in alternatives.values()),
            "designer_alternatives_used": len(used_alts),
            "variants_by_stage": dict(variants), "reorder_variants": len(reorders),
            "rule_proposed_reorders": len(ruled), "designer_reorders": len(reorders) - len(ruled),
            "mean_delta_nll_rule_reorders": sum(deltas) / len(deltas) if deltas else None,
            "rule_reorders_in_code": len(code), "reorder_rule": rule,
            "quoted": quoted(ruled, pairs, deltas, quote)}


def quoted(ruled, pairs, deltas, n) -> list[dict]:
    """One example per (seed, swapped pair), the one with the fewest other edits."""
    best: dict = {}
    for r, (_, child), d in zip(ruled, pairs, deltas or [None] * len(ruled)):
        key = (r["seed_id"], r["edits"][-1])
        if key not in best or len(r["edits"]) < len(best[key][0]["edits"]):
            best[key] = (r, child, d)
    return [{"seed": r["seed_id"], "edit": r["edits"][-1], "edits": r["edits"], "text": child,
             "delta_nll": None if d is None else round(d, 2)} for r, child, d in list(best.values())[:n]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("datasets", nargs="+", type=Path)
    ap.add_argument("--seeds", action="append", required=True, help="seed file(s) the datasets came from")
    ap.add_argument("--model", default=None, help="reference model for the NLL change (default: the default "
                                                   "model; 'none' to skip)")
    ap.add_argument("--quote", type=int, default=0, help="quote this many rule-proposed reorders per dataset")
    ap.add_argument("--match", help="only seeds whose id matches this regular expression (e.g. '-ru')")
    args = ap.parse_args()
    seeds = {s.id: s for f in args.seeds for s in read_seeds(f).seeds}
    advisor = None
    if args.model != "none":
        from microvar.model.advisor import Advisor
        from microvar.model.load import load_model, load_tokenizer, resolve

        tk, _ = load_tokenizer(args.model, None)
        advisor = Advisor(load_model(resolve(args.model), "cpu"), tk)
    results = [analyse(d, seeds, advisor, args.quote, args.match) for d in args.datasets]
    stages = sorted({s for r in results for s in r["rows_by_stage"]},
                    key=lambda s: -max(r["rows_by_stage"].get(s, 0) for r in results))
    print(f"{'':32}" + "".join(f"{Path(r['dataset']).name[:14]:>16}" for r in results), file=sys.stderr)
    for s in stages:
        print(f"rows {s:27}" + "".join(f"{r['rows_by_stage'].get(s, 0):>16}" for r in results), file=sys.stderr)
    for key in ("rows", "seeds", "kept_variants_per_seed", "fewest_kept_for_a_seed", "model_substitutions_kept",
                "designer_alternatives", "designer_alternatives_used", "reorder_variants", "rule_proposed_reorders", "designer_reorders",
                "mean_delta_nll_rule_reorders", "rule_reorders_in_code"):
        cells = "".join(f"{'-' if r[key] is None else round(r[key], 2):>16}" for r in results)
        print(f"{key:32}{cells}", file=sys.stderr)
    for r in results:
        if r["reorder_rule"]:
            print(f"{Path(r['dataset']).name}: reorder rule {json.dumps(r['reorder_rule'])}", file=sys.stderr)
        for q in r["quoted"]:
            print(f"  {Path(r['dataset']).name} {q['seed']:>14} {q['delta_nll']!s:>6}  {q['text']!r}",
                  file=sys.stderr)
    print(json.dumps(results, ensure_ascii=False))


if __name__ == "__main__":
    main()
