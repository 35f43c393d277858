"""Expansion + token checks throughput on the example seeds scaled to N seeds (default 1,000).

Measures only the expander (edits, rendering, batched tokenization, checks); tokenizer
loading and the Arrow export are timed apart. The last line is JSON."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from microvar.expand.expander import Expander
from microvar.expand.seeds import Seed, read_seeds
from microvar.model.load import load_tokenizer
from microvar.pipeline.inputs import choose_recipes

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", default=str(ROOT / "data" / "seeds.jsonl"))
    ap.add_argument("-n", type=int, default=1000, help="number of seeds after scaling")
    ap.add_argument("--recipe", action="append", default=[])
    args = ap.parse_args()

    t0 = time.perf_counter()
    tk, _ = load_tokenizer()
    t_load = time.perf_counter() - t0
    base = read_seeds(args.seeds).seeds
    default, recipes = choose_recipes(base, args.recipe, Path(args.seeds).parent)
    seeds = [Seed(f"{s.id}~{k}", s.text, s.parts, s.continuation, s.recipe, s.meta)
             for k in range(-(-args.n // len(base))) for s in base][: args.n]
    expander = Expander(tk, seed=0)
    made = kept = 0
    t0 = time.perf_counter()
    for s in seeds:
        res = expander.expand(s, recipes[s.recipe] if s.recipe else default)
        made += res.counts["made"] + 1  # +1: the root is checked too
        kept += len(res.kept)
    dt = time.perf_counter() - t0
    print(f"cpu cores: {os.cpu_count()}  python {sys.version.split()[0]}")
    print(f"tokenizer load: {t_load:.2f} s")
    print(f"{len(seeds)} seeds: {made} variants made and checked, {kept} kept in {dt:.2f} s")
    print(f"checked variants per second: {made / dt:,.0f}; kept per second: {kept / dt:,.0f}; "
          f"seeds per second: {len(seeds) / dt:,.1f}")
    print(json.dumps({"variants_per_s": round(made / dt, 1), "kept_per_s": round(kept / dt, 1),
                      "seeds": len(seeds), "variants": made, "kept": kept, "seconds": round(dt, 3)}))


if __name__ == "__main__":
    main()
