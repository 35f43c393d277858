"""Scoring under load: how much slower volatility scoring gets when another CPU-bound
process shares the machine, against the share of the CPU it is left.

Each OpenMP wait policy runs in its own child process (libgomp reads OMP_WAIT_POLICY once,
when torch loads it): PASSIVE (what the `microvar` command sets), the default (unset: what
it ran with before) and ACTIVE. Each child loads the default reference model, expands the
example seeds (no model-guided edits: the scoring is what is measured), then times

  quiet   scoring the variants, and a loop of 2048x2048 fp32 matmuls
  loaded  the same, while --competitors busy processes (one per core by default: a
          Python spin loop, or with --competitor matmul a torch matmul loop) run

The matmul is the fair-share reference: one big kernel per call, nothing to wait on, so
its slowdown is the CPU share the load leaves. Scoring that slows down more than the
matmul in the same child loses the difference to waiting, not to the competitor.

Every ratio is measured in this one run; the last line is JSON (``slowdown_passive``,
``slowdown_default``, ``slowdown_active``, ``fair_share_slowdown``, ...)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
POLICIES = {"passive": "PASSIVE", "default": None, "active": "ACTIVE"}
SPIN_COUNTS = {"spin10k": "10000", "spin1k": "1000"}   # OMP_WAIT_POLICY unset, GOMP_SPINCOUNT: spin, then sleep
SPIN = "while True: pass"
MATMUL_LOOP = "import torch\na = torch.randn(1024, 1024)\nwhile True: a @ a"


# ---------------------------------------------------------------- in the child


def _expanded(n_variants: int):
    """The example seeds' variants, seed by seed (repeated under new ids) until there are n_variants."""
    from bench_score import example_expansions

    from microvar.model.load import load_tokenizer

    tk, ref = load_tokenizer()
    out, total = [], 0
    for _, s, recipe, result in example_expansions(tk):
        if total >= n_variants:
            break
        out.append((s, recipe, result))
        total += len(result.kept)
    return tk, ref, out


def _score_seconds(expanded, lm, tk, opts) -> float:
    """Seconds to score every kept variant, through the pipeline's own scoring step."""
    from microvar.pipeline.scoring import scored
    from microvar.pipeline.summary import Summary

    start = time.perf_counter()
    n = sum(len(r.kept) for _, _, r in scored(iter(expanded), lm, tk, opts, Summary()))
    assert n == sum(len(r.kept) for _, _, r in expanded)
    return time.perf_counter() - start


def _matmul_seconds(n: int, size: int = 2048) -> float:
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    start = time.perf_counter()
    for _ in range(n):
        a @ b
    return time.perf_counter() - start


def _competitors(kind: str, n: int) -> list[subprocess.Popen]:
    code = SPIN if kind == "spin" else MATMUL_LOOP
    env = {**os.environ, "OMP_NUM_THREADS": "1"}   # one core's worth each
    return [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL) for _ in range(n)]


def child(args) -> None:
    import torch

    from microvar.model.load import load_model
    from microvar.pipeline.options import Options

    tk, ref, expanded = _expanded(args.variants)
    lm = load_model(ref, "cpu", "auto")
    opts = Options(str(ROOT / "data" / "seeds.jsonl"), Path("."), device="cpu", batch_tokens=args.batch_tokens)
    _score_seconds(expanded[:4], lm, tk, opts)                     # warm-up: first allocations
    n_mm = max(4, round(args.matmul_seconds / max(_matmul_seconds(2) / 2, 1e-3)))
    quiet_score = _score_seconds(expanded, lm, tk, opts)
    quiet_mm = _matmul_seconds(n_mm)
    procs = _competitors(args.competitor, args.competitors)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))         # a killed child still stops them
    try:
        time.sleep(1.0)                                            # let them start spinning
        loaded_score = _score_seconds(expanded, lm, tk, opts)
        loaded_mm = _matmul_seconds(n_mm)
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()
    print(json.dumps({"policy": os.environ.get("OMP_WAIT_POLICY"), "threads": torch.get_num_threads(),
                      "variants": sum(len(r.kept) for _, _, r in expanded), "matmuls": n_mm,
                      "quiet_score_s": quiet_score, "loaded_score_s": loaded_score,
                      "quiet_matmul_s": quiet_mm, "loaded_matmul_s": loaded_mm}))


# ---------------------------------------------------------------- the driver


def run_policy(name: str, args) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if POLICIES.get(name) is not None:
        env["OMP_WAIT_POLICY"] = POLICIES[name]
    if name in SPIN_COUNTS:
        env["GOMP_SPINCOUNT"] = SPIN_COUNTS[name]
    cmd = [sys.executable, __file__, "--child", "--variants", str(args.variants), "--batch-tokens",
           str(args.batch_tokens), "--competitors", str(args.competitors), "--competitor", args.competitor,
           "--matmul-seconds", str(args.matmul_seconds)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{name} child failed:\n{done.stderr[-3000:]}")
    r = json.loads(done.stdout.strip().splitlines()[-1])
    r["slowdown"] = r["loaded_score_s"] / r["quiet_score_s"]
    r["fair_share"] = r["loaded_matmul_s"] / r["quiet_matmul_s"]
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", type=int, default=400, help="texts scored per measurement, at least")
    ap.add_argument("--batch-tokens", type=int, default=2048)
    ap.add_argument("--competitors", type=int, default=os.cpu_count(), help="busy processes (default: one per core)")
    ap.add_argument("--competitor", choices=["spin", "matmul"], default="spin",
                    help="what each busy process runs: a Python spin loop, or a one-thread torch matmul loop")
    ap.add_argument("--matmul-seconds", type=float, default=3.0, help="length of the quiet matmul reference")
    ap.add_argument("--policies", default="passive,default,active", help="comma-separated: passive, default, active, spin10k, spin1k")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    names = [p.strip() for p in args.policies.split(",") if p.strip()]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start; "
          f"competitors: {args.competitors} x {args.competitor}")
    results = {}
    for name in names:
        r = results[name] = run_policy(name, args)
        print(f"  {name:8s} OMP_WAIT_POLICY={r['policy'] or '(unset)'}: scoring {r['variants']} variants "
              f"{r['quiet_score_s']:.1f} s quiet, {r['loaded_score_s']:.1f} s loaded: slowdown {r['slowdown']:.2f}x; "
              f"matmul {r['fair_share']:.2f}x (threads {r['threads']})")
    fair = sum(r["fair_share"] for r in results.values()) / len(results)
    print(f"fair share (a matmul's own slowdown, mean of the {len(results)} runs): {fair:.2f}x")
    last = {f"slowdown_{n}": round(r["slowdown"], 3) for n, r in results.items()}
    last["fair_share_slowdown"] = round(fair, 3)
    last.update({f"excess_{n}": round(r["slowdown"] / fair, 3) for n, r in results.items()})
    if "passive" in results and "default" in results:
        last["quiet_passive_vs_default"] = round(results["passive"]["quiet_score_s"]
                                                 / results["default"]["quiet_score_s"], 3)
    last["competitors"] = f"{args.competitors} x {args.competitor}"
    print(json.dumps(last))


if __name__ == "__main__":
    main()
