"""CLI options around models, tokenizers and recipes, through click's CliRunner."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from datasets import load_from_disk

SEEDS = [{"id": "en", "text": "Rhythm matters more than quantity."},
         {"id": "ru", "markup": "[[Ритм]] важнее {объёма|количества}."}]


def test_model_directory_sets_tokenizer_and_context(cli, write_seeds, tmp_path, model_dir):
    long = {"id": "long", "text": "word " * 60}
    out = tmp_path / "out"
    res = cli("expand", write_seeds(SEEDS + [long]), "-o", out, "--model", model_dir, "--variants", "6")
    assert res.exit_code == 0, res.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["tokenizer"]["context"] == 40 and manifest["tokenizer"]["name"] == str(model_dir)
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert any(r["seed_id"] == "long" and r["check"] == "context" for r in rejects)


def test_tokenizer_only(cli, write_seeds, tmp_path, model_dir):
    out = tmp_path / "out"
    res = cli("expand", write_seeds(SEEDS), "-o", out, "--tokenizer", model_dir, "--variants", "6")
    assert res.exit_code == 0, res.stderr
    counts = _variants_per_seed(out)
    assert counts["en"] == 6 and 1 <= counts["ru"] <= 6


@pytest.mark.parametrize("bad, words", [("missing-dir", "no such file"), ("weights.bin", "must be a .gguf")])
def test_bad_model_paths_exit_2(cli, write_seeds, tmp_path, bad, words):
    target = tmp_path / bad
    if bad.endswith(".bin"):
        target.write_bytes(b"\0")
    res = cli("expand", write_seeds(SEEDS), "-o", tmp_path / "out", "--model", target)
    assert res.exit_code == 2 and words in res.stderr and not (tmp_path / "out").exists()


def test_model_dir_without_config_exits_2(cli, write_seeds, tmp_path):
    (tmp_path / "empty").mkdir()
    res = cli("expand", write_seeds(SEEDS), "-o", tmp_path / "out", "--model", tmp_path / "empty")
    assert res.exit_code == 2 and "config.json" in res.stderr


def test_seed_recipe_field_picks_a_recipe_beside_the_seeds(cli, write_seeds, tmp_path):
    (tmp_path / "tiny.recipe").write_text("recipe tiny\nedit identity\nedit tail \"→ summary:\"\nallow tail <= 4\n")
    seeds = write_seeds([{"id": "a", "text": "One line.", "recipe": "tiny.recipe"}, {"id": "b", "text": "Other line here."}])
    out = tmp_path / "out"
    assert cli("expand", seeds, "-o", out, "--variants", "10", "--format", "prompt-completion").exit_code == 0
    rows = load_from_disk(str(out)).to_list()
    a = [r for r in rows if r["seed_id"] == "a"]
    assert {r["recipe"] for r in a} == {"tiny"}
    assert sorted({r["completion"] for r in a}) == ["One line.", "One line. → summary:"]
    assert {r["recipe"] for r in rows if r["seed_id"] == "b"} == {"default"}


def test_unknown_seed_recipe_names_the_line(cli, write_seeds, tmp_path):
    seeds = write_seeds([{"id": "a", "text": "x y z"}, {"id": "b", "text": "x", "recipe": "nope"}])
    res = cli("expand", seeds, "-o", tmp_path / "out")
    assert res.exit_code == 2 and f"{seeds}:2: recipe 'nope'" in res.stderr


def test_recipe_syntax_error_exits_2_with_caret(cli, write_seeds, tmp_path):
    recipe = tmp_path / "bad.recipe"
    recipe.write_text("recipe bad\nedit mark anchors\ncompose up to two\n")
    res = cli("expand", write_seeds(SEEDS), "-o", tmp_path / "out", "--recipe", recipe)
    assert res.exit_code == 2
    lines = res.stderr.splitlines()
    assert lines[0].startswith(f"{recipe}:3:15: unexpected 'two'") and "a whole number" in lines[0]
    assert lines[1].strip() == "compose up to two" and lines[2].index("^") == lines[1].index("two")
    assert not (tmp_path / "out").exists()


def test_variants_caps_every_seed(cli, write_seeds, tmp_path):
    out = tmp_path / "out"
    assert cli("expand", write_seeds(SEEDS), "-o", out, "--variants", "5").exit_code == 0
    counts = _variants_per_seed(out)
    assert counts["en"] == 5 and max(counts.values()) == 5


def _variants_per_seed(out) -> Counter:
    """Distinct variants per seed (rows repeat a seed's path up to its presentations)."""
    ds = load_from_disk(str(out))
    return Counter(s for s, _ in set(zip(ds["seed_id"], ds["variant_id"])))


def test_seeds_that_kept_no_variant_are_named(cli, write_seeds, tmp_path):
    """A seed with nothing to edit is presented as it is, 24 times: the summary and the
    manifest name it, not only 'fewest kept for a seed: 1'; the naive recipe's one row is
    what it asks for and is not listed."""
    (tmp_path / "marks.recipe").write_text("recipe marks\nedit identity\nedit mark anchors with markers as wrap\n")
    seeds = write_seeds([{"id": "emoji", "text": "🙂👍🏽👨‍👩‍👧‍👦🇷🇺", "recipe": "marks.recipe"},
                         {"id": "words", "text": "A small cat sleeps.", "recipe": "marks.recipe"}])
    res = cli("expand", seeds, "-o", tmp_path / "out", "--model", "none")
    assert res.exit_code == 0, res.stderr
    assert "1 seeds kept no variant, only the seed itself, presented as it is: emoji (" in res.stderr
    counts = json.loads((tmp_path / "out" / "manifest.json").read_text())["counts"]
    assert counts["seeds_without_variants"] == 1 and counts["seeds_without_variants_ids"] == ["emoji"]
    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps({"id": "emoji", "text": "🙂👍🏽"}) + "\n" + json.dumps({"id": "w", "text": "A cat."}) + "\n")
    res = cli("expand", plain, "-o", tmp_path / "naive", "--model", "none", "--recipe", "naive")
    assert res.exit_code == 0 and "kept no variant" not in res.stderr
