"""benchmarks/bench_evidence.py --quick: the mechanics of the evidence benchmark on a tiny
random model (equal trained tokens across arms, checkpoints, held-out figures, the JSON line
and the plot), never its outcome."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
from conftest import ROOT

pytest.importorskip("nlpaug")
pytest.importorskip("matplotlib")
pytest.importorskip("trl")
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_evidence", ROOT / "benchmarks" / "bench_evidence.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_run_trains_every_arm_to_the_same_tokens(tmp_path, capsys):
    bench = load_bench()
    budget = 1200
    record = bench.main(["--quick", "--work", str(tmp_path), "--tokens", str(budget), "--batch-size", "2"])
    out = capsys.readouterr().out.splitlines()
    last = json.loads(out[-1])
    for key in ("collateral_ratio_vs_naive", "collateral_ratio_vs_nlpaug", "order_effect", "implant_vs_naive",
                "presentations_to_implant"):
        assert key in last
    assert [r["arm"] for r in record["results"]] == list(bench.ARMS)
    for r in record["results"]:
        points = r["points"]
        assert len(points) == 1 + bench.QUICK["checkpoints"], r["arm"]    # the base, then each checkpoint
        assert points[0]["tokens"] == 0 and abs(points[0]["kl"]) < 1e-6 and abs(points[0]["implant"]) < 1e-6
        assert [p["tokens"] for p in points] == sorted(p["tokens"] for p in points)
        # every arm stops at the first step that reaches the budget
        assert budget <= points[-1]["tokens"] < budget + r["largest_step_tokens"], r["arm"]
        assert points[-1]["heldout_implant"] is not None
    assert (tmp_path / "evidence.png").stat().st_size > 1000
    assert json.loads((tmp_path / "evidence.json").read_text())["budget_tokens"] == budget
    assert any(line.startswith("microvar ") for line in out) and any(line.startswith("nlpaug ") for line in out)
