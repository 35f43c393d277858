"""`microvar probe`: the response map, on a tiny random Llama with the real tokenizer."""

from __future__ import annotations

import json

import pytest
from datasets import load_from_disk

from microvar.model.field import BUCKETS

SEEDS = [
    {"id": "en", "markup": "The [[cat]] sat on the {mat|rug} today.", "continuation": " It purred."},
    {"id": "ru", "markup": "[[Кот]] {спит|дремлет} тут."},
    {"id": "code", "markup": "x = {1|3}\ny = [[x]] + 2"},
]


@pytest.fixture
def probe_run(cli, write_seeds, model_dir, tmp_path):
    seeds = write_seeds(SEEDS)

    def run(name="map.json", *extra):
        out = tmp_path / name
        r = cli("probe", seeds, "-o", out, "--model", model_dir, "--variants", 8, *extra)
        assert r.exit_code == 0, r.output
        return out, r
    return run


def test_map_schema_and_content(probe_run):
    out, r = probe_run()
    m = json.loads(out.read_text(encoding="utf-8"))
    assert m["schema"] == "microvar.probe/1"
    assert m["model"]["layers"] == 2 and m["options"]["variants"] == 8
    assert m["distance_buckets"] == list(BUCKETS) == ["1", "2", "3", "4-7", "8-15", "16+"]
    assert [s["id"] for s in m["seeds"]] == ["en", "ru", "code"]
    total = {}
    for s in m["seeds"]:
        assert s["variants"] >= 2 and s["kinds"], s["id"]
        kinds_of_detail = {}
        for v in s["detail"]:
            kinds_of_detail[v["kind"]] = kinds_of_detail.get(v["kind"], 0) + 1
            assert v["parent_id"] and v["text"]
        # every seed x kind present, n > 0, and n matches the variants listed
        assert {k: x["n"] for k, x in s["kinds"].items()} == kinds_of_detail
        assert sum(kinds_of_detail.values()) == s["variants"] - 1   # the root is not a variant of any kind
        for kind, k in s["kinds"].items():
            assert k["n"] > 0
            total[kind] = total.get(kind, 0) + k["n"]
            assert list(k["ripple_kl"]["by_distance"]) == list(BUCKETS)
            assert list(k["ripple_kl"]["positions"]) == list(BUCKETS)
            if k["drift"]["n"]:
                assert len(k["drift"]["curve"]) == 3            # embeddings + 2 layers
                assert k["drift"]["curve"][0] == pytest.approx(0, abs=1e-6)  # same token, same embedding
                assert sum(k["drift"]["layers"].values()) == k["drift"]["n"]
                assert k["top1"]["n"] == k["drift"]["n"] and 0 <= k["top1"]["mean"] <= 1
                assert sum(k["ripple_kl"]["positions"].values()) > 0
            if k["surprisal"]["n"]:
                s_ = k["surprisal"]
                assert s_["std"] >= 0 and s_["p50"] <= s_["p90"] + 1e-9 and s_["mean"] > 0
    # the aggregate is the sum of the seeds, kind by kind
    assert {k: x["n"] for k, x in m["kinds"].items()} == total
    assert {"mark", "swap_alternatives", "grow"} <= set(total)
    assert "probed 3 seeds" in r.stderr and "drift starts at layer" in r.stderr


def test_distance_buckets_follow_the_edit(probe_run):
    """A tail adds tokens at the end: nothing after it to ripple; a mark at the start ripples
    over the rest, the first token after it in bucket 1."""
    out, _ = probe_run()
    m = json.loads(out.read_text(encoding="utf-8"))
    en = next(s for s in m["seeds"] if s["id"] == "en")
    if "tail" in en["kinds"]:
        tail = en["kinds"]["tail"]
        assert tail["ripple_kl"]["mean"] is None and tail["drift"]["n"] == 0
    mark = en["kinds"]["mark"]
    assert mark["ripple_kl"]["positions"]["1"] >= 1


def test_deterministic(probe_run):
    a, _ = probe_run("a.json")
    b, _ = probe_run("b.json")
    assert a.read_bytes() == b.read_bytes()
    c, _ = probe_run("c.json", "--seed", 3)
    assert json.loads(c.read_text())["options"]["seed"] == 3


def test_agrees_with_the_scorer(probe_run, cli, write_seeds, model_dir, tmp_path):
    """The probe's per-variant means equal the volatility `expand` stores for the same variants
    (same expander, seed and cap; the scorer's batched, prefix-shared computation)."""
    out, _ = probe_run()
    m = json.loads(out.read_text(encoding="utf-8"))
    ds_dir = tmp_path / "ds"
    r = cli("expand", write_seeds(SEEDS, name="s2.jsonl"), "-o", ds_dir, "--model", model_dir, "--variants", 8,
            "--drift", "-q")
    assert r.exit_code == 0, r.output
    stored = {row["variant_id"]: row["volatility"] for row in load_from_disk(str(ds_dir))}
    # the probe reads every variant; expand's budget and share caps may then remove some
    removed = {r["variant_id"] for r in map(json.loads, (ds_dir / "rejects.jsonl").read_text().splitlines())
               if r["check"] in ("budget", "share")}
    n = 0
    for s in m["seeds"]:
        for v in s["detail"]:
            if v["variant_id"] in removed:
                continue
            vol = stored.get(v["variant_id"])
            assert vol is not None, v
            for k in ("surprisal", "surprisal_max", "ripple_kl", "ripple_kl_max", "delta_nll", "top1"):
                assert v[k] == pytest.approx(vol[k], abs=2e-4), (v["variant_id"], k)
            assert v["drift_layer"] == vol["drift_layer"]
            n += 1
    assert n >= 10


def test_bad_seeds_exit_2_with_file_line(cli, write_seeds, model_dir, tmp_path):
    seeds = write_seeds([{"id": "a", "text": "ok"}, '{"id": "b", "text": }'])
    out = tmp_path / "map.json"
    r = cli("probe", seeds, "-o", out, "--model", model_dir)
    assert r.exit_code == 2
    assert f"{seeds}:2:" in r.stderr
    assert not out.exists()


def test_needs_a_model(cli, write_seeds, tmp_path):
    r = cli("probe", write_seeds([{"id": "a", "text": "ok"}]), "-o", tmp_path / "m.json", "--model", "none")
    assert r.exit_code == 2 and "needs a model" in r.stderr


def test_html_page(probe_run, tmp_path):
    page = tmp_path / "map.html"
    probe_run("m.json", "--html", page)
    html = page.read_text(encoding="utf-8")
    assert 'id="probe"' in html and "Кот" in html and "swap_alternatives" in html
    assert "http://" not in html and "https://" not in html
