"""Volatility scoring throughput: microvar's batched, prefix-shared scorer against a plain
right-padded batched forward of the same texts under the same token budget (what lm-eval
or `evaluate` do) and a one-text-at-a-time loop (what TextAttack's LM constraint and
Data-Juicer's perplexity filter do), on the default reference model.

Two mixes, each scaled to at least --variants texts:
  examples  the variants of data/seeds.jsonl under the default recipe
  long      paragraphs of 200-500 tokens (sentences of the README frozen in
            benchmarks/data/long_sentences.txt, and the example seeds; English and
            Russian) with the default recipe's edits spread over the text

Every method scores the same thing per text: the log-probability of each of its tokens
behind the context token (so each forward sees the text without its last token). The
baselines compute only that; microvar also computes every metric against parent and seed.
Baseline rates may be measured on a random sample of the texts (--padded-sample,
--loop-sample; 0 = all): they are rates, printed with the sample size.

Also printed: the bound on prefix sharing (all positions / positions that must be computed
once prefixes are reused), achieved FLOP/s on the positions microvar computed as a
fraction of a matmul peak measured in this run, and peak RSS of a child process scoring N
and 10xN long seeds.

The ripple window (--ripple-window, default the scorer's): after the timed runs, the same
texts (all of the examples, --diff-seeds seeds of the long mix) are scored again with the
whole remainder (window 0), and the bench prints, per metric, the p50 and p99 of the
absolute difference, and how many keep/reject decisions change under the example recipe's
budget and the default recipe's.

Peak RSS, two figures: ``peak_rss_mb`` is microvar's scoring of the long mix with the given
settings (the model loaded, the mix built, the process's high-water mark reset just before
the scoring starts and read as it ends), what a user's run holds; ``bench_peak_rss_mb`` is the
whole benchmark process before the window-0 runs, the baselines included (the padded one
holds a batch's full logits and their log-softmax). The last line is JSON for the long mix."""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from microvar.dsl.recipe import METRICS, load_recipe
from microvar.expand.expander import Expander
from microvar.expand.seeds import Seed, read_seeds
from microvar.model.load import load_model, load_tokenizer, pick_device
from microvar.model.score import RIPPLE_WINDOW, Group, Item, Scorer, context_token, flops_per_position
from microvar.pipeline.inputs import choose_recipes

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- mixes


def example_expansions(tk):
    """The example seeds expanded under their recipes, pass after pass (each pass's seeds under
    new ids), without end: (pass, seed, recipe, result). Also read by bench_load.py."""
    base = read_seeds(str(ROOT / "data" / "seeds.jsonl")).seeds
    default, recipes = choose_recipes(base, [], ROOT / "data")
    expander = Expander(tk, seed=0)
    k = 0
    while True:
        for s in base:
            s = Seed(f"{s.id}~{k}", s.text, s.parts, s.continuation, s.recipe, s.meta)
            recipe = recipes[s.recipe] if s.recipe else default
            yield k, s, recipe, expander.expand(s, recipe)
        k += 1


def example_groups(tk, n_variants: int) -> list[Group]:
    """Whole passes over the example seeds until there are ``n_variants`` texts."""
    groups, total, done_pass = [], 0, -1
    for k, _, _, result in example_expansions(tk):
        if total >= n_variants and k != done_pass:
            break
        done_pass = k
        groups.append(_group(result))
        total += len(groups[-1].items)
    return groups


def long_texts(tk, rng: random.Random, count: int) -> list[str]:
    """Paragraphs of 200-500 tokens from fixed sentences and the example seeds. The sentences
    (benchmarks/data/long_sentences.txt) are the README's prose as it stood at 2e78700, one per
    line, frozen so that editing the README no longer changes the mix."""
    sentences = (Path(__file__).parent / "data" / "long_sentences.txt").read_text(encoding="utf-8").splitlines()
    for s in read_seeds(str(ROOT / "data" / "seeds.jsonl")).seeds:
        if s.parts is None and "\n" not in s.text:
            sentences.append(s.text.strip())
    texts = []
    for _ in range(count):
        goal = rng.randint(200, 500)
        start = rng.randrange(len(sentences))
        out, k = [], start
        while True:
            out.append(sentences[k % len(sentences)])
            k += rng.randint(1, 3)
            if len(tk.encode([" ".join(out)])[0]) >= goal:
                break
        ids = tk.encode([" ".join(out)])[0][:goal]
        texts.append(tk.decode([ids])[0].rsplit(" ", 1)[0])
    return texts


def long_groups(tk, n_variants: int, seed: int = 0, cap: int | None = None) -> list[Group]:
    rng = random.Random(seed)
    recipe = load_recipe("default")
    expander = Expander(tk, seed=seed, variants=cap)
    groups, total, k = [], 0, 0
    while total < n_variants:
        text = long_texts(tk, rng, 1)[0]
        groups.append(_group(expander.expand(Seed(f"long{k}", text, None), recipe)))
        total += len(groups[-1].items)
        k += 1
    return groups


def _group(result) -> Group:
    root = result.kept[0]
    return Group(result.seed_id, root.ids, [Item(v.variant_id, v.ids, v.parent_id or None) for v in result.kept])


# ---------------------------------------------------------------- methods


def run_microvar(model, ctx, groups, batch_tokens, window: int = RIPPLE_WINDOW,
                 ref_dtype=torch.float32, seed_context: bool = True) -> tuple[float, Scorer, dict]:
    scorer = Scorer(model, ctx, batch_tokens=batch_tokens, ripple_window=window, ref_dtype=ref_dtype,
                    seed_context=seed_context)
    start = time.perf_counter()
    metrics = {g.key: m for g, m in scorer.score(groups)}
    dt = time.perf_counter() - start
    assert sum(len(m) for m in metrics.values()) == sum(len(g.items) for g in groups)
    return dt, scorer, metrics


# ---------------------------------------------------------------- window vs whole remainder


def decisions(groups, metrics, limits) -> dict:
    """(seed, variant) -> kept, under ``limits`` as ``apply_budget`` applies them (a child of
    a removed parent is removed; the root never is)."""
    out = {}
    for g in groups:
        m = metrics[g.key]
        root = next((it for it in g.items if it.parent is None), None)
        seed_nll = m[root.key]["nll"] if root is not None else None
        for it in g.items:
            if it.parent is None:
                out[(g.key, it.key)] = True
            elif not out[(g.key, it.parent)]:
                out[(g.key, it.key)] = False
            else:
                out[(g.key, it.key)] = not any(x.violated(m[it.key][x.metric], seed_nll) for x in limits)
    return out


def window_cost(model, ctx, groups, batch_tokens, windowed: dict) -> dict:
    """Per metric p50/p99 of |windowed - whole remainder|, and the keep/reject decisions that change."""
    _, _, full = run_microvar(model, ctx, groups, batch_tokens, 0)
    diffs = {k: [] for k in METRICS}
    for g in groups:
        for key, m in full[g.key].items():
            for k in METRICS:
                diffs[k].append(abs(windowed[g.key][key][k] - m[k]))
    out = {"metrics": {}}
    for k, xs in diffs.items():
        xs.sort()
        out["metrics"][k] = {"p50": xs[len(xs) // 2], "p99": xs[min(len(xs) - 1, int(0.99 * len(xs)))],
                             "max": xs[-1]}
    for name, recipe in (("example", load_recipe(str(ROOT / "data" / "example.recipe"))),
                         ("default", load_recipe("default"))):
        a, b = decisions(groups, windowed, recipe.budget), decisions(groups, full, recipe.budget)
        out[f"decisions_changed_{name}"] = sum(a[k] != b[k] for k in a)
        out[f"decisions_{name}"] = len(a)
        out[f"budget_{name}"] = ", ".join(str(x) for x in recipe.budget)
    out["texts"] = sum(len(g.items) for g in groups)
    return out


def print_window_cost(mix: str, window: int, cost: dict) -> None:
    print(f"\n[{mix}] ripple window {window} against the whole remainder, {cost['texts']} texts "
          f"(|difference| p50 / p99 / max):")
    for k, d in cost["metrics"].items():
        print(f"  {k:<18} {d['p50']:9.5f} {d['p99']:9.5f} {d['max']:9.5f}")
    for name in ("example", "default"):
        print(f"  keep/reject decisions changed under the {name} recipe's budget ({cost[f'budget_{name}']}): "
              f"{cost[f'decisions_changed_{name}']} of {cost[f'decisions_{name}']}")


@torch.inference_mode()
def run_padded(model, ctx, texts: list[list[int]], batch_tokens: int, device) -> float:
    """Sorted by length, right-padded, batched under the same token budget: token log-probs."""
    order = sorted(texts, key=len)
    start = time.perf_counter()
    batch: list[list[int]] = []
    for ids in order + [None]:
        if ids is not None and (not batch or max(len(ids), len(batch[-1])) * (len(batch) + 1) <= batch_tokens):
            batch.append(ids)
            continue
        T = max(len(x) for x in batch)
        x = torch.zeros(len(batch), T, dtype=torch.long)
        y = torch.zeros(len(batch), T, dtype=torch.long)
        mask = torch.zeros(len(batch), T, dtype=torch.long)
        for b, t in enumerate(batch):
            x[b, :len(t)] = torch.tensor([ctx] + t[:-1])
            y[b, :len(t)] = torch.tensor(t)
            mask[b, :len(t)] = 1
        logp = torch.log_softmax(model(input_ids=x.to(device), attention_mask=mask.to(device)).logits.float(), -1)
        logp.gather(2, y.to(device)[..., None]).sum().item()
        batch = [ids] if ids is not None else []
    return time.perf_counter() - start


@torch.inference_mode()
def run_loop(model, ctx, texts: list[list[int]], device) -> float:
    start = time.perf_counter()
    for t in texts:
        logp = torch.log_softmax(model(input_ids=torch.tensor([[ctx] + t[:-1]], device=device)).logits.float(), -1)
        logp[0].gather(1, torch.tensor(t, device=device)[:, None]).sum().item()
    return time.perf_counter() - start


def matmul_peak(device, dtype) -> float:
    n = 2048 if device == "cpu" else 8192
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = 0.0
    for _ in range(5):
        _sync(device)
        t = time.perf_counter()
        for _ in range(3):
            a @ b
        _sync(device)
        best = max(best, 3 * 2 * n ** 3 / (time.perf_counter() - t))
    return best


def _sync(device) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def achieved_flops(model, scorer, seconds) -> float:
    """FLOPs microvar needed (the positions it computed, each attending to its prefix) per second."""
    linear, attn = flops_per_position(model)
    return (scorer.computed_tokens * linear + scorer.attended * attn) / seconds


# ---------------------------------------------------------------- RSS child


def rss_child(n_seeds: int, cap: int, device: str, batch_tokens: int, window: int = RIPPLE_WINDOW,
              ref_dtype=torch.float32, seed_context: bool = True) -> None:
    tk, ref = load_tokenizer()
    lm = load_model(ref, device)
    rng = random.Random(1)
    recipe = load_recipe("default")
    expander = Expander(tk, seed=1, variants=cap)

    def stream():
        for k in range(n_seeds):
            text = long_texts(tk, rng, 1)[0]
            yield _group(expander.expand(Seed(f"long{k}", text, None), recipe))

    scorer = Scorer(lm.model, context_token(tk.hf), batch_tokens=batch_tokens, ripple_window=window,
                    ref_dtype=ref_dtype, seed_context=seed_context)
    count = sum(len(m) for _, m in scorer.score(stream()))
    print(json.dumps({"seeds": n_seeds, "scored": count, "peak_rss_mb": peak_rss_mb()}))


def peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM belongs to the process's own memory map; ru_maxrss
    would carry the parent's peak across fork+exec on Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak() -> bool:
    """Set this process's peak RSS (VmHWM) to its current RSS (Linux: ``clear_refs`` 5), so
    that the next reading covers only what ran since; False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measure_rss(n: int, cap: int, device: str, batch_tokens: int, extra: list[str]) -> dict:
    out = {}
    for k in (n, 10 * n):
        res = subprocess.run([sys.executable, __file__, "--rss-child", str(k), "--rss-cap", str(cap),
                              "--device", device, "--batch-tokens", str(batch_tokens)] + extra,
                             capture_output=True, text=True, check=True)
        out[k] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


# ---------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", type=int, default=2000, help="texts per mix, at least")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--batch-tokens", type=int, default=None)
    ap.add_argument("--padded-sample", type=int, default=0, help="texts for the padded baseline (0: all)")
    ap.add_argument("--loop-sample", type=int, default=150, help="texts for the loop baseline (0: all)")
    ap.add_argument("--rss-seeds", type=int, default=16, help="N for the N vs 10N peak-RSS runs (0: skip); "
                    "N seeds should fill a scoring window (4 x batch tokens), or the ratio only shows the window")
    ap.add_argument("--rss-cap", type=int, default=2, help="variants per seed in the RSS runs")
    ap.add_argument("--mix", choices=["both", "examples", "long", "none"], default="both",
                    help="none: only the RSS runs")
    ap.add_argument("--ripple-window", type=int, default=RIPPLE_WINDOW, help="tokens past the last change (0: all)")
    ap.add_argument("--ref-dtype", choices=["float32", "float16"], default="float32",
                    help="precision of the rows kept for later comparisons")
    ap.add_argument("--own-context", action="store_true",
                    help="measure later changes in the variant's own text (the scorer's seed_context=False)")
    ap.add_argument("--diff-seeds", type=int, default=6,
                    help="long-mix seeds scored again with window 0 for the differences (0: skip; the examples: all)")
    ap.add_argument("--rss-child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    device = pick_device(args.device)
    batch_tokens = args.batch_tokens or (16384 if device == "cuda" else 2048)
    ref_dtype = getattr(torch, args.ref_dtype)
    if args.rss_child is not None:
        rss_child(args.rss_child, args.rss_cap, device, batch_tokens, args.ripple_window, ref_dtype, not args.own_context)
        return

    tk, ref = load_tokenizer()
    lm = load_model(ref, device, args.dtype)
    model, ctx = lm.model, context_token(tk.hf)
    peak = matmul_peak(device, lm.dtype)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, device {device}"
          + (f" ({torch.cuda.get_device_name()})" if device == "cuda" else "") + f", dtype {lm.dtype}")
    print(f"model: {lm.name}; batch tokens {batch_tokens}; matmul peak {peak / 1e9:.1f} GFLOP/s; "
          f"ripple window {args.ripple_window}; changes in the {'variant' if args.own_context else 'seed'}'s context; "
          f"kept rows in {args.ref_dtype}")
    rng = random.Random(0)
    result, later, mv_peak, whole = {}, {}, {}, 0.0
    mixes = {"both": ["examples", "long"], "none": []}.get(args.mix, [args.mix])
    for mix in mixes:
        t0 = time.perf_counter()
        groups = example_groups(tk, args.variants) if mix == "examples" else long_groups(tk, args.variants)
        texts = [it.ids for g in groups for it in g.items]
        positions = sum(len(t) for t in texts)
        print(f"\n[{mix}] {len(groups)} seeds, {len(texts)} texts, {positions} positions "
              f"(mean {positions / len(texts):.0f} tokens); built in {time.perf_counter() - t0:.1f} s")
        whole = max(whole, peak_rss_mb())
        own = reset_peak()
        t_mv, scorer, metrics = run_microvar(model, ctx, groups, batch_tokens, args.ripple_window, ref_dtype,
                                             not args.own_context)
        mv_peak[mix] = peak_rss_mb() if own else None
        bound = scorer.total_tokens / scorer.computed_tokens
        mv_rate = positions / t_mv
        fraction = achieved_flops(model, scorer, t_mv) / peak
        padded_texts = rng.sample(texts, args.padded_sample) if 0 < args.padded_sample < len(texts) else texts
        t_pad = run_padded(model, ctx, padded_texts, batch_tokens, device)
        pad_rate = sum(len(t) for t in padded_texts) / t_pad
        loop_texts = rng.sample(texts, args.loop_sample) if 0 < args.loop_sample < len(texts) else texts
        t_loop = run_loop(model, ctx, loop_texts, device)
        loop_rate = sum(len(t) for t in loop_texts) / t_loop
        vs_padded, vs_loop = mv_rate / pad_rate, mv_rate / loop_rate
        print(f"  microvar : {mv_rate:8.0f} tokens/s  ({len(texts)} texts in {t_mv:.1f} s, every metric vs parent "
              f"and seed; {scorer.computed_tokens} positions computed, {scorer.padded_tokens} with padding)")
        print(f"  padded   : {pad_rate:8.0f} tokens/s  ({len(padded_texts)} texts in {t_pad:.1f} s)")
        print(f"  loop     : {loop_rate:8.0f} tokens/s  ({len(loop_texts)} texts in {t_loop:.1f} s)")
        print(f"  vs_padded {vs_padded:.2f}x  vs_loop {vs_loop:.2f}x  sharing_bound {bound:.2f}x  "
              f"sharing_efficiency {vs_padded / bound:.2f}  peak_fraction {fraction:.2f}")
        result[mix] = {"vs_padded": round(vs_padded, 3), "vs_loop": round(vs_loop, 3),
                       "sharing_bound": round(bound, 3), "sharing_efficiency": round(vs_padded / bound, 3),
                       "peak_fraction": round(fraction, 3), "tokens_per_s": round(mv_rate, 1),
                       "padded_tokens_per_s": round(pad_rate, 1), "loop_tokens_per_s": round(loop_rate, 1),
                       "texts": len(texts), "positions": positions, "kept_rows_peak": scorer.kept_rows_peak}
        print(f"  full rows kept for later comparisons: at most {scorer.kept_rows_peak} at once")
        if mv_peak[mix] is not None:
            print(f"  peak RSS while microvar scored this mix: {mv_peak[mix]:.0f} MB")
            result[mix]["peak_rss_mb"] = round(mv_peak[mix], 1)
        sample = groups if mix == "examples" else groups[:args.diff_seeds]
        if sample and args.ripple_window:
            later[mix] = (sample, {g.key: metrics[g.key] for g in sample})
        del groups, texts, metrics
    whole = max(whole, peak_rss_mb())   # the benchmark with these settings, before the window-0 runs below
    print(f"\npeak RSS of the whole benchmark process (baselines included): {whole:.0f} MB")
    for mix, (sample, windowed) in later.items():
        cost = window_cost(model, ctx, sample, batch_tokens, windowed)
        print_window_cost(mix, args.ripple_window, cost)
        result[mix]["window_cost"] = cost
        result[mix]["metric_diff_p99"] = {k: round(d["p99"], 6) for k, d in cost["metrics"].items()}
        result[mix]["decisions_changed"] = cost["decisions_changed_example"]
        result[mix]["decisions_changed_default_budget"] = cost["decisions_changed_default"]
    rss_ratio = None
    if args.rss_seeds:
        rss = measure_rss(args.rss_seeds, args.rss_cap, device, batch_tokens,
                          ["--ripple-window", str(args.ripple_window), "--ref-dtype", args.ref_dtype]
                          + (["--own-context"] if args.own_context else []))
        small, big = rss[args.rss_seeds], rss[10 * args.rss_seeds]
        rss_ratio = big["peak_rss_mb"] / small["peak_rss_mb"]
        print(f"\npeak RSS: {small['peak_rss_mb']:.0f} MB for {small['seeds']} long seeds ({small['scored']} texts), "
              f"{big['peak_rss_mb']:.0f} MB for {big['seeds']} ({big['scored']} texts): ratio {rss_ratio:.2f}")
    last = dict(result.get("long", result.get("examples")) or {})
    last["rss_ratio_10x"] = round(rss_ratio, 3) if rss_ratio else None
    last["ripple_window"] = args.ripple_window
    last["seed_context"] = not args.own_context
    last.setdefault("peak_rss_mb", None)      # microvar scoring the long mix (the examples' if only they ran)
    last["bench_peak_rss_mb"] = round(whole, 1)
    last.setdefault("metric_diff_p99", None)
    last.setdefault("decisions_changed", None)
    last.pop("window_cost", None)
    last["device"] = device
    last["examples"] = {k: v for k, v in (result.get("examples") or {}).items() if k != "window_cost"} or None
    print(json.dumps(last))


if __name__ == "__main__":
    main()
