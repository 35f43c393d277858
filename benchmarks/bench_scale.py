"""Scale-out: does `microvar expand` hold its memory as the corpus grows, and what do Ray and
a local process pool pay and gain on this machine?

1. Memory: `expand --model none` on N and 10*N seeds (the example and plain seeds, repeated
   under new ids), once per schedule, each run a fresh process; peak RSS from the kernel
   (``wait4``). ``rss_ratio_10x`` is the largest 10N/N ratio over the schedules.
2. Speed, expansion only (`--model none`) and scored with the default model on M seeds:
   `--engine local` (one process, torch on every core), `--engine local --workers 2`,
   `--engine ray --workers 2`; seeds per second over the whole command, as a user sees it,
   and how many cores the one-process run kept busy (its CPU time over its wall time).
3. Ray's costs apart: its fixed start-up (a 1-seed run on Ray minus the same on local: Ray
   starting, its actors importing torch and loading the model) and its overhead per shard
   (`--model none`, S seeds as S shards against one shard, the difference per extra shard).

Every figure is measured in this run; the last line is JSON."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = (ROOT / "data" / "seeds.jsonl", ROOT / "tests" / "data" / "plain_seeds.jsonl")


def write_seeds(path: Path, n: int) -> Path:
    """``n`` seeds: the example and plain seeds in turn, each repeat under a new id."""
    base = [json.loads(line) for src in SOURCES for line in src.read_text(encoding="utf-8").splitlines()
            if line.strip()]
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            row = dict(base[i % len(base)])
            row["id"] = f"{row.get('id', 'seed')}~{i // len(base)}"
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def run(args: list[str]) -> tuple[float, int]:
    """Run `microvar expand ARGS` in a fresh process: (wall seconds, peak RSS in MiB of the
    largest of the driver and the pool workers it waited for; Ray's actors are not its
    children and are not counted); the cores it kept busy (CPU time over wall time, itself and
    the children it waited for) in ``LAST_CORES``."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "microvar", "expand", *map(str, args), "-q", "--overwrite"],
                            stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read()
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"microvar expand {' '.join(map(str, args))} failed:\n{err}")
    LAST_CORES[0] = (usage.ru_utime + usage.ru_stime) / wall
    return wall, usage.ru_maxrss // 1024


LAST_CORES = [0.0]


def memory(work: Path, n: int, schedules: list[str]) -> dict:
    out = {}
    for size in (n, 10 * n):
        seeds = write_seeds(work / f"seeds-{size}.jsonl", size)
        for how in schedules:
            wall, rss = run([seeds, "-o", work / "mem", "--model", "none", "--schedule", how])
            out[(size, how)] = rss
            print(f"  {size:>7} seeds, {how:<11}: peak RSS {rss:>6} MiB  ({wall:.0f} s, "
                  f"{size / wall:.1f} seeds/s)", flush=True)
    return {how: out[(10 * n, how)] / out[(n, how)] for how in schedules} | \
        {"peaks": {f"{size}:{how}": mb for (size, how), mb in out.items()}}


def speed(work: Path, m: int, extra: list[str], what: str) -> dict:
    seeds = write_seeds(work / f"seeds-speed-{m}.jsonl", m)
    common = [seeds, "-o", work / "speed", "--shard-seeds", "4", *extra]
    rates = {}
    for name, engine in (("local", []), ("local_workers2", ["--workers", "2"]),
                         ("ray_workers2", ["--engine", "ray", "--workers", "2"])):
        wall, rss = run(common + engine)
        rates[name] = m / wall
        cores = f"; the driver kept {LAST_CORES[0]:.2f} cores busy" if name == "local" else ""
        print(f"  {name:<15}: {m} seeds {what} in {wall:.1f} s = {m / wall:.2f} seeds/s (peak RSS {rss} MiB"
              f"{cores})", flush=True)
    return rates


def ray_costs(work: Path, shards: int) -> tuple[float, float, float]:
    one = write_seeds(work / "seeds-1.jsonl", 1)
    local, _ = run([one, "-o", work / "one"])
    ray, _ = run([one, "-o", work / "one", "--engine", "ray", "--workers", "1"])
    startup = ray - local
    print(f"  1 seed scored: local {local:.1f} s, ray {ray:.1f} s -> Ray's fixed start-up {startup:.1f} s", flush=True)
    many = write_seeds(work / f"seeds-{shards}.jsonl", shards)
    base = [many, "-o", work / "shards", "--model", "none", "--workers", "1"]
    t_one, _ = run(base + ["--engine", "ray", "--shard-seeds", str(shards)])
    t_many, _ = run(base + ["--engine", "ray", "--shard-seeds", "1"])
    per_shard = (t_many - t_one) / (shards - 1)
    l_one, _ = run(base + ["--shard-seeds", str(shards)])
    l_many, _ = run(base + ["--shard-seeds", "1"])
    local_per_shard = (l_many - l_one) / (shards - 1)
    print(f"  {shards} seeds, --model none: 1 shard {t_one:.1f} s, {shards} shards {t_many:.1f} s on Ray "
          f"-> {per_shard:.3f} s per extra shard (local: {l_one:.1f} s vs {l_many:.1f} s, "
          f"{local_per_shard:.3f} s per shard)", flush=True)
    return startup, per_shard, local_per_shard


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=2000, help="N: the memory test runs N and 10*N seeds")
    ap.add_argument("--schedules", default="blocked,interleaved,spaced")
    ap.add_argument("--speed-seeds", type=int, default=32, help="M: seeds scored for the speed comparison")
    ap.add_argument("--expand-seeds", type=int, default=400, help="seeds expanded (--model none) for the same")
    ap.add_argument("--shards", type=int, default=200, help="S: shards for Ray's per-shard overhead")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: memory, speed, ray")
    a = ap.parse_args()
    skip = set(filter(None, a.skip.split(",")))
    print(f"cpu cores: {os.cpu_count()}  python {sys.version.split()[0]}", flush=True)
    result: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        work = Path(tmp)
        if "memory" not in skip:
            print(f"memory, --model none: {a.seeds} and {10 * a.seeds} seeds", flush=True)
            ratios = memory(work, a.seeds, a.schedules.split(","))
            peaks = ratios.pop("peaks")
            for how, r in ratios.items():
                print(f"  {how}: 10x seeds -> {r:.2f}x peak RSS")
            result.update(rss_ratio_10x=round(max(ratios.values()), 3),
                          rss_ratio_by_schedule={k: round(v, 3) for k, v in ratios.items()}, peak_rss_mb=peaks)
        if "speed" not in skip:
            print(f"speed, expansion only (--model none): {a.expand_seeds} seeds, 4 per shard", flush=True)
            rates = speed(work, a.expand_seeds, ["--model", "none"], "expanded")
            result.update(expand_seeds_per_s={k: round(v, 3) for k, v in rates.items()},
                          expand_local_workers2_vs_1=round(rates["local_workers2"] / rates["local"], 3),
                          expand_ray_vs_local=round(rates["ray_workers2"] / rates["local"], 3))
            print(f"speed, scored with the default model: {a.speed_seeds} seeds, 4 per shard", flush=True)
            rates = speed(work, a.speed_seeds, [], "scored")
            result.update(seeds_per_s={k: round(v, 3) for k, v in rates.items()},
                          ray_vs_local=round(rates["ray_workers2"] / rates["local"], 3),
                          local_workers2_vs_1=round(rates["local_workers2"] / rates["local"], 3))
        if "ray" not in skip:
            print("Ray's fixed and per-shard costs", flush=True)
            startup, per_shard, local_per_shard = ray_costs(work, a.shards)
            result.update(ray_startup_s=round(startup, 2), ray_overhead_per_shard_s=round(per_shard, 4),
                          local_overhead_per_shard_s=round(local_per_shard, 4))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
