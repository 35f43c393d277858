"""A long expand killed with SIGKILL partway resumes from its finished shards and ends with
the dataset an uninterrupted run writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import pickled_files
from datasets import load_from_disk

WORDS_EN = "rhythm quantity model token bridge anchor drift variant curriculum pattern".split()
WORDS_RU = "ритм объём модель токен мост якорь дрейф вариант учебный узор".split()


@pytest.fixture
def many_seeds(tmp_path):
    rows = []
    for i in range(30):
        en, ru = WORDS_EN[i % 10], WORDS_RU[(3 * i) % 10]
        kind = i % 4
        if kind == 0:
            rows.append({"id": f"en{i}", "text": f"The {en} of step {i} matters more than its size."})
        elif kind == 1:
            rows.append({"id": f"ru{i}", "markup": f"[[{ru.capitalize()}]] важнее {{объёма|количества}} в шаге {i}."})
        elif kind == 2:
            rows.append({"id": f"code{i}", "text": f"def f{i}(x):\n    return x * {i}  # {en} 🙂",
                         "continuation": "\n\nprint(f(2))"})
        else:
            rows.append({"id": f"mix{i}", "text": f"{en} 和 {ru} — шаг {i}."})
    path = tmp_path / "seeds.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    return path


def _command(seeds, out, model_dir, *extra, quiet=True):
    return [sys.executable, "-m", "microvar", "expand", str(seeds), "-o", str(out), "--model", str(model_dir),
            "--variants", "10", "--shard-seeds", "2", *(["-q"] if quiet else []), *extra]


def test_kill_9_then_resume_gives_the_same_dataset(tmp_path, many_seeds, model_dir):
    full, broken = tmp_path / "full", tmp_path / "broken"
    subprocess.run(_command(many_seeds, full, model_dir), check=True, env=os.environ.copy())

    partial = tmp_path / ".broken.partial"
    proc = subprocess.Popen(_command(many_seeds, broken, model_dir), env=os.environ.copy())
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list(partial.glob("shard-??????/DONE"))) >= 3:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be killed; give it more seeds"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = len(list(partial.glob("shard-??????/DONE")))
    assert not broken.exists() and 3 <= finished < 15
    # a finished shard is Arrow files and JSON counts: nothing a resumed run would unpickle
    kept = sorted(p.name for p in (partial / "shard-000000").iterdir())
    assert kept == ["DONE", "holdout.arrow", "paths.arrow", "rejects.arrow", "rows.arrow", "summary.json"]
    assert not pickled_files(partial)

    again = subprocess.run(_command(many_seeds, broken, model_dir), capture_output=True, text=True)
    assert again.returncode == 2 and "--resume" in again.stderr and not broken.exists()
    other = subprocess.run(_command(many_seeds, broken, model_dir, "--resume", "--seed", "5"),
                           capture_output=True, text=True)
    assert other.returncode == 2 and "cannot resume" in other.stderr and "--seed" in other.stderr
    window = subprocess.run(_command(many_seeds, broken, model_dir, "--resume", "--ripple-window", "0"),
                            capture_output=True, text=True)   # another window: other metrics
    assert window.returncode == 2 and "--ripple-window" in window.stderr
    own = subprocess.run(_command(many_seeds, broken, model_dir, "--resume", "--own-context"),
                         capture_output=True, text=True)   # changes measured in another context
    assert own.returncode == 2 and "--own-context" in own.stderr

    resumed = subprocess.run(_command(many_seeds, broken, model_dir, "--resume", quiet=False),
                             capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed: " in resumed.stderr and f"{finished} of 15 shards were already finished" in resumed.stderr
    assert not partial.exists()

    a, b = load_from_disk(str(full)), load_from_disk(str(broken))
    assert a.features == b.features and len(a) == len(b) > 0
    assert a.to_list() == b.to_list()
    assert (full / "rejects.jsonl").read_bytes() == (broken / "rejects.jsonl").read_bytes()
    ma, mb = (json.loads((d / "manifest.json").read_text()) for d in (full, broken))
    assert ma["counts"] == mb["counts"] and ma["curriculum"] == mb["curriculum"]
    assert any(r["volatility"] for r in a.to_list())  # scored: the scorer's batches matched too


def test_overwrite_discards_an_unfinished_run(tmp_path, cli, write_seeds):
    partial = tmp_path / ".out.partial"
    partial.mkdir()
    (partial / "job.json").write_text("{}")
    (partial / "shard-000000.pkl").write_bytes(b"not a shard")
    seeds = write_seeds([{"id": "a", "text": "One line."}])
    res = cli("expand", seeds, "-o", tmp_path / "out", "--model", "none")
    assert res.exit_code == 2 and "--resume" in res.stderr and not (tmp_path / "out").exists()
    res = cli("expand", seeds, "-o", tmp_path / "out", "--model", "none", "--overwrite")
    assert res.exit_code == 0 and not partial.exists() and len(load_from_disk(str(tmp_path / "out"))) >= 1


def _term_when(proc, ready, what: str) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None and not ready():
        time.sleep(0.01)
    assert proc.poll() is None, f"the run finished before {what}; give it more seeds"
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)


def test_sigterm_cleans_up_like_ctrl_c(tmp_path, many_seeds, model_dir):
    """What `timeout`, `kill` and schedulers send: before any shard finished nothing is left and
    the same command runs again; after, the finished shards stay for --resume."""
    runs = tmp_path / "runs"
    runs.mkdir()
    out, partial = runs / "out", runs / ".out.partial"
    proc = subprocess.Popen(_command(many_seeds, out, model_dir, "--shard-seeds", "30"), env=os.environ.copy())
    _term_when(proc, lambda: (partial / "job.json").exists(), "its work directory existed")
    assert proc.returncode == 143
    assert not list(runs.iterdir())   # no work directory, no staging, no OUT

    proc = subprocess.Popen(_command(many_seeds, out, model_dir), env=os.environ.copy())
    _term_when(proc, lambda: len(list(partial.glob("shard-??????/DONE"))) >= 2, "two shards finished")
    assert proc.returncode == 143 and not out.exists()
    assert [p.name for p in runs.iterdir()] == [".out.partial"]
    assert not [p for p in partial.iterdir() if ".tmp" in p.name]
    resumed = subprocess.run(_command(many_seeds, out, model_dir, "--resume"), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert not partial.exists() and len(load_from_disk(str(out))) > 0
