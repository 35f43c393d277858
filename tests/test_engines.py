"""`--engine ray` writes the dataset `--engine local` writes: same rows, rejects, held-out
variants and manifest (engine fields aside), for every schedule; an actor killed with SIGKILL
mid-run is replaced and its shard run again; a run interrupted on one engine resumes on Ray;
bad input stops both engines the same way before anything is written. One local Ray (2 CPUs)
serves the module; a tiny random Llama scores, so every volatility field is compared."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from conftest import pickled_files
from datasets import load_from_disk

from microvar.dsl.recipe import parse_limits
from microvar.pipeline import Options, run_expand

ray = pytest.importorskip("ray")

WORDS = "rhythm quantity model token bridge anchor drift variant curriculum pattern".split()


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module (runs reuse it, as a notebook that called ray.init would)."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def seeds(tmp_path):
    rows = []
    for i in range(12):
        w = WORDS[i % 10]
        if i % 3 == 0:
            rows.append({"id": f"en{i}", "text": f"The {w} of step {i} matters more than its size."})
        elif i % 3 == 1:
            rows.append({"id": f"ru{i}", "markup": f"[[Ритм]] важнее {{объёма|количества}} в шаге {i}."})
        else:
            rows.append({"id": f"code{i}", "text": f"def f{i}(x):\n    return x * {i}  # {w} 🙂"})
    path = tmp_path / "seeds.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    return path


def _opts(seeds, out, model_dir, **kw) -> Options:
    # a budget the tiny model's variants straddle, so budget rejects and their counts travel too
    base = dict(model=str(model_dir), variants=8, shard_seeds=2, progress=False, holdout=0.2,
                budget=parse_limits("surprisal <= 10.8"))
    return Options(str(seeds), Path(out), **(base | kw))


def _same_dataset(a: Path, b: Path) -> None:
    da, db = load_from_disk(str(a)), load_from_disk(str(b))
    assert da.features == db.features and len(da) > 0
    assert da.to_list() == db.to_list()
    for name in ("rejects.jsonl", "holdout.jsonl", "README.md"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    ma, mb = (json.loads((d / "manifest.json").read_text(encoding="utf-8")) for d in (a, b))
    assert ma.pop("engine")["name"] != mb.pop("engine")["name"]
    assert ma == mb


def _single_threaded():
    """The Ray actors here get one CPU each, so torch runs one thread in each: the local run
    compared with them does the same (volatility is float sums; see pipeline/engines.py)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    return before


@pytest.mark.parametrize("schedule", ["blocked", "interleaved", "spaced"])
def test_ray_writes_what_local_writes(tmp_path, seeds, model_dir, local_ray, schedule):
    import torch

    before = _single_threaded()
    try:
        run_expand(_opts(seeds, tmp_path / "local", model_dir, schedule=schedule))
    finally:
        torch.set_num_threads(before)
    summary = run_expand(_opts(seeds, tmp_path / "ray", model_dir, schedule=schedule, engine="ray", workers=2))
    _same_dataset(tmp_path / "local", tmp_path / "ray")
    engine = json.loads((tmp_path / "ray" / "manifest.json").read_text())["engine"]
    assert engine["name"] == "ray" and engine["workers"] == 2 and engine["threads_per_worker"] == 1
    assert summary.seeds == 12 and not (tmp_path / ".ray.partial").exists()
    assert any(r["volatility"] for r in load_from_disk(str(tmp_path / "ray")).to_list())
    assert summary.budget.removed and '"check": "budget"' in (tmp_path / "ray" / "rejects.jsonl").read_text()


def _actor_pids() -> list[int]:
    import psutil

    return [p.pid for p in psutil.process_iter(["cmdline"]) if "ShardActor" in " ".join(p.info["cmdline"] or [])]


def test_an_actor_killed_mid_run_is_replaced_and_the_output_is_the_same(tmp_path, seeds, model_dir, local_ray):
    import torch

    before = _single_threaded()
    try:
        run_expand(_opts(seeds, tmp_path / "local", model_dir, shard_seeds=1))
    finally:
        torch.set_num_threads(before)
    out = tmp_path / "ray"
    partial = tmp_path / ".ray.partial"
    failed: list[BaseException] = []

    def go():
        try:
            run_expand(_opts(seeds, out, model_dir, shard_seeds=1, engine="ray", workers=2))
        except BaseException as e:  # reported by the assertion below
            failed.append(e)

    runner = threading.Thread(target=go)
    runner.start()
    deadline = time.monotonic() + 300
    killed = None
    while time.monotonic() < deadline and runner.is_alive():
        done = len(list(partial.glob("shard-??????/DONE")))
        pids = _actor_pids()
        if done >= 1 and pids:
            os.kill(pids[0], signal.SIGKILL)
            killed = (pids[0], done)
            pickled = pickled_files(partial)   # what the actors wrote: Arrow files and JSON counts only
            break
        time.sleep(0.05)
    runner.join(600)
    assert killed is not None, "the run finished before an actor could be killed; give it more shards"
    assert killed[1] < 12, "the kill came after the last shard"
    assert not pickled, pickled
    assert not failed, failed
    _same_dataset(tmp_path / "local", out)


def test_a_run_interrupted_locally_resumes_on_ray(tmp_path, seeds, model_dir, local_ray, monkeypatch):
    import torch

    from microvar.pipeline import engines

    before = _single_threaded()
    try:
        run_expand(_opts(seeds, tmp_path / "full", model_dir))
        real = engines.run_shard
        calls = []

        def crash_on_third(job, chunk, tick=None):
            calls.append(1)
            if len(calls) == 3:
                raise KeyboardInterrupt   # as a user's Ctrl-C in the third shard
            return real(job, chunk, tick)

        monkeypatch.setattr(engines, "run_shard", crash_on_third)
        with pytest.raises(KeyboardInterrupt):
            run_expand(_opts(seeds, tmp_path / "out", model_dir))
    finally:
        torch.set_num_threads(before)
    monkeypatch.undo()
    partial = tmp_path / ".out.partial"
    assert len(list(partial.glob("shard-??????/DONE"))) == 2 and not (tmp_path / "out").exists()
    summary = run_expand(_opts(seeds, tmp_path / "out", model_dir, engine="ray", workers=2, resume=True))
    assert summary.resumed == (2, 6)
    _same_dataset(tmp_path / "full", tmp_path / "out")
    assert not partial.exists()


def test_bad_input_stops_ray_as_it_stops_local(tmp_path, cli, write_seeds):
    seeds = write_seeds(['{"id": "a", "text": "One line."}', '{"id": "b", "text": 3}', "not json"])
    results = {}
    for engine in ("local", "ray"):
        out = tmp_path / engine
        res = cli("expand", seeds, "-o", out, "--model", "none", "--engine", engine)
        results[engine] = res
        assert res.exit_code == 2
        assert not out.exists() and not (tmp_path / f".{engine}.partial").exists()
    assert "seeds.jsonl:2" in results["local"].stderr and "seeds.jsonl:3" in results["local"].stderr
    assert results["ray"].stderr == results["local"].stderr
    res = cli("expand", seeds, "-o", tmp_path / "x", "--model", "none", "--ray-address", "auto")
    assert res.exit_code == 2 and "--engine ray" in res.stderr
