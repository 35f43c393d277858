"""`microvar preview`: one seed's variants in drift-path order with token diffs, step tokens,
stages, kept/rejected (with reasons), volatility when scored; plain text when piped; JSON;
an unknown id exits 2 naming near ids; the token diff rebuilds both texts exactly."""

from __future__ import annotations

import json
import re

import pytest
from conftest import DATA

from microvar.tools.preview import token_diff

RU = {"id": "cat-ru", "markup": "[[Кот]] {сидит|спит} на ковре.\nОн {~рыжий} и {~толстый}."}


def test_preview_of_a_russian_markup_seed(cli, write_seeds):
    seeds = write_seeds([{"id": "other", "text": "Something else."}, RU])
    r = cli("preview", seeds, "--id", "cat-ru", "--model", "none", "--variants", "12")
    print(r.stdout)
    assert r.exit_code == 0, r.stderr
    out = r.stdout
    assert "\x1b[" not in out                        # piped: no colour codes
    assert "Кот сидит на ковре.\nОн рыжий и толстый." in out   # the seed's text, as is
    assert f"seed cat-ru  ({seeds}:2)" in out
    for words in ("step 0/", "identity · foundation phase 1", "the seed (root)", "step tokens ", "kept",
                  "{+", "+}", "[-", "-]", "▏", "↵", "rejected (", "✗ step:"):
        assert words in out, words
    assert " · mark · " in out and "edits mark:[" in out
    # the blocks follow the drift path: steps counted up from 0
    steps = [int(m.group(1)) for m in re.finditer(r"^step (\d+)/\d+ · ", out, re.MULTILINE)]
    assert steps == list(range(len(steps)))


def test_preview_scored_shows_metrics_and_budget_rejects(cli, write_seeds, model_dir):
    seeds = write_seeds([{"id": "cat-ru", "markup": "[[Кот]] {сидит|спит}."}])
    r = cli("preview", seeds, "--id", "cat-ru", "--model", model_dir, "--variants", "6",
            "--budget", "top1>=1.01")
    print(r.stdout)
    assert r.exit_code == 0, r.stderr
    out = r.stdout
    for metric in ("surprisal", "ripple_kl", "delta_nll", "top1", "nll"):
        assert metric in out
    assert f"scored by {model_dir}" in out
    assert "✗ budget: top1 " in out and "breaks the budget top1 >= 1.01" in out
    r = cli("preview", seeds, "--id", "cat-ru", "--model", model_dir, "--variants", "6", "--format", "json")
    pv = json.loads(r.stdout)
    assert pv["scored"] and pv["path"][0]["parent_id"] == "" and pv["path"][0]["volatility"]["nll"] > 0
    assert all(row["volatility"] is not None for row in pv["path"])


def test_preview_json_rows_rebuild_their_texts(cli):
    r = cli("preview", DATA / "seeds.jsonl", "--id", "lithography-ru", "--model", "none", "--variants", "10",
            "--format", "json")
    assert r.exit_code == 0
    pv = json.loads(r.stdout)
    texts = {row["variant_id"]: row["text"] for row in pv["path"]}
    assert pv["path"][0]["step"] == 0 and pv["path"][0]["stage"] == "identity"
    for row in pv["path"] + pv["rejects"]:
        if not row["diff"]:
            assert row["bridge"]
            continue
        new = "".join("".join(d["tokens"]) for d in row["diff"] if d["op"] != "delete")
        assert new == row["text"]
        if row["parent_id"] in texts:
            old = "".join("".join(d["tokens"]) for d in row["diff"] if d["op"] != "insert")
            assert old == texts[row["parent_id"]]
    assert {row["check"] for row in pv["rejects"]} <= {"step", "anchors", "marker_cost", "context", "in_vocab",
                                                        "share", "budget"}


def test_unknown_id_exits_2_with_near_ids(cli):
    r = cli("preview", DATA / "seeds.jsonl", "--id", "think-ru", "--model", "none")
    assert r.exit_code == 2
    assert "no seed with id 'think-ru'" in r.stderr and "'think-ru-1'" in r.stderr


@pytest.mark.parametrize("old,new", [
    ("Мышление не равно генерации текста.", "Мышление — это не генерация текста."),
    ("Токены 🙂 and tokens: 你好 means hello.", "Токены 🙃 and tokens: 你们好 mean hello!"),
    ("def add(a, b):\n    return a + b\n", "def add(a, b):\n    return a - b\n\nprint(add(2, 3))"),
    ("", "x"),
])
def test_token_diff_rebuilds_both_texts(tk, old, new):
    a, b = tk.encode([old, new])
    diff = token_diff(tk, old, a, new, b)
    assert "".join("".join(p) for op, p in diff if op != "delete") == new
    assert "".join("".join(p) for op, p in diff if op != "insert") == old
    assert all("\ufffd" not in piece for _, pieces in diff for piece in pieces)
