"""`microvar lint`: every mistake in a seeds file, its recipe and its templates reported in one
pass at its FILE:LINE[:COL] with exit 1; the same problems as JSON; the shipped examples pass
(exit 0) with warnings and notes only; the pieces (recipe recovery, JSON columns, marker
suggestions) on their own."""

from __future__ import annotations

import json

import pytest
from conftest import DATA

from microvar.tools.lint import parse_recipe_all, raw_index, string_spans

LONG = " ".join(f"word{k}" for k in range(40))  # far over the tiny model's context of 40 tokens

SEEDS = [
    '{"id": "ok", "markup": "The [[cat]] sat on the {mat|rug}."}',
    '{"id": "bad-markup", "markup": "bad {a|} x"}',                        # empty option: column 8 of the markup
    '{"id": "odd", "markup": "Say {hello|<\\\\|im_start\\\\|>} now."}',      # a special token as an alternative
    '{"id": "sur", "markup": "a {b|c\\ud800} d", "colour": 1}',             # a lone surrogate; an unknown field
    '{"id": "ok", "text": "a duplicate id"}',
    json.dumps({"id": "long", "text": LONG}),
    '{"id": "x", "text": "Hello there.", "recipe": "missing.recipe"}',
    '{"id": "y" "text": 1}',                                                # malformed JSON at column 12
]

RECIPE = """recipe broken
markers "[EXPENSIVE_MARKER_NAME]" "[A]" max 4 tokens
edit identity
edit bogus
edit mark anchors with markers as prefix
edit wrap "bad.j2"
edit swap alternatives
stages identity > mark > nonsense
"""


@pytest.fixture
def broken(tmp_path):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("\n".join(SEEDS) + "\n", encoding="utf-8")
    recipe = tmp_path / "broken.recipe"
    recipe.write_text(RECIPE, encoding="utf-8")
    (tmp_path / "bad.j2").write_text("{{ text }} by {{ author }}\n", encoding="utf-8")
    return seeds, recipe, tmp_path / "bad.j2"


def test_lint_reports_every_mistake_with_its_position_and_exits_1(cli, broken, model_dir):
    seeds, recipe, template = broken
    r = cli("lint", seeds, "--recipe", recipe, "--model", model_dir)
    print(r.stdout)
    assert r.exit_code == 1
    out = r.stdout
    expected = [
        f"{recipe}:4:6: error: unexpected 'bogus'; expected 'drop', 'grow', 'identity'",      # unknown edit kind
        f"{recipe}:8:26: error: unknown stage 'nonsense'",                                     # after the first error
        f"{recipe}:2:9: error: marker '[EXPENSIVE_MARKER_NAME]' costs 11 tokens",
        f"{template}:1:18: error: undefined variable 'author'",
        f"{seeds}:2:40: error: markup column 8: unexpected '}}'",
        f"{seeds}:3:37: error: alternative '<|im_start|>' tokenizes badly: special token '<|im_start|>'",
        f"{seeds}:4: error: 'markup' has a lone surrogate \\ud800 at character 6",
        f"{seeds}:4: warning: unknown field 'colour' ignored",
        f"{seeds}:5: error: duplicate id 'ok' (first used on line 1)",
        f"{seeds}:6: error: seed 'long' is ",
        (f"{seeds}:7:{SEEDS[6].index('missing.recipe') + 1}: error: seed 'x' names recipe 'missing.recipe': no "
         "such recipe file"),
        f"{seeds}:8:12: error: malformed JSON",
    ]
    lines = out.splitlines()
    for start in expected:
        assert any(line.startswith(start) for line in lines), f"missing: {start}\n{out}"
    assert "longer than the model's context of 40" in out and "--split-long" in out
    assert "over the allowance of 4 per marker" in out
    # carets under the markup and the recipe line
    assert "    bad {a|} x\n           ^" in out
    assert "    edit bogus\n         ^" in out
    assert "    {{ text }} by {{ author }}\n                     ^^^^^^" in out
    assert lines[-1].startswith("11 errors, ")
    # sorted by file, then line
    wheres = [(line.split(":")[0], int(line.split(":")[1])) for line in lines if line.startswith(str(seeds))]
    assert wheres == sorted(wheres)


def test_lint_json_has_the_same_problems(cli, broken, model_dir):
    seeds, recipe, _ = broken
    text = cli("lint", seeds, "--recipe", recipe, "--model", model_dir)
    r = cli("lint", seeds, "--recipe", recipe, "--model", model_dir, "--format", "json")
    assert r.exit_code == 1
    report = json.loads(r.stdout)
    assert report["errors"] == 11 and report["errors"] == sum(p["severity"] == "error" for p in report["problems"])
    assert report["warnings"] == sum(p["severity"] == "warning" for p in report["problems"])
    heads = [line for line in text.stdout.splitlines() if ": error: " in line or ": warning: " in line
             or ": note: " in line]
    assert len(heads) == len(report["problems"])
    for p, head in zip(report["problems"], heads):
        where = ":".join(str(x) for x in (p["file"], p["line"], p["column"]) if x is not None)
        assert head == f"{where}: {p['severity']}: {p['message']} [{p['code']}]"
    codes = {p["code"] for p in report["problems"]}
    assert {"recipe", "markup", "seed", "template-undefined", "marker-cost", "alt-tokens",
            "seed-too-long", "seed-field"} <= codes
    bogus = next(p for p in report["problems"] if "bogus" in p["message"])
    assert (bogus["line"], bogus["column"], bogus["severity"]) == (4, 6, "error")


@pytest.mark.parametrize("recipe", [(), ("--recipe", str(DATA / "example.recipe"))], ids=["default", "example"])
def test_shipped_examples_pass(cli, recipe):
    r = cli("lint", DATA / "seeds.jsonl", *recipe)
    print(r.stdout)
    assert r.exit_code == 0, r.stdout
    assert r.stdout.splitlines()[-1].startswith("0 errors, ")
    report = json.loads(cli("lint", DATA / "seeds.jsonl", *recipe, "--format", "json").stdout)
    assert report["errors"] == 0
    # what is left is true and expected: Russian swaps and pairs over the 2-token step budget, marker
    # costs, and the Russian seeds SmolLM2 spells in small pieces (-> --model gemma3-270m)
    assert {p["code"] for p in report["problems"] if p["severity"] == "warning"} <= {"alt-step", "swap-step"}
    assert {p["code"] for p in report["problems"] if p["severity"] == "note"} <= {"marker-cost", "token-density"}
    assert sum(p["code"] == "marker-cost" for p in report["problems"]) == 3
    dense = [p for p in report["problems"] if p["code"] == "token-density"]
    assert len(dense) == 6 and all("gemma3-270m" in p["suggestion"] for p in dense)


def test_templates_on_the_command_line_and_rendering_each_seed(cli, write_seeds, tmp_path):
    seeds = write_seeds([{"id": "a", "text": "The cat sat on the mat."},
                         {"id": "b", "text": "The dog sat on the rug.", "meta": {"lang": "en"}}])
    (tmp_path / "meta.j2").write_text("{{ meta.lang }}: {{ text }}", encoding="utf-8")
    (tmp_path / "syntax.j2").write_text("line one\n{% if text %}\n{{ text }}\n", encoding="utf-8")
    (tmp_path / "filter.j2").write_text("{{ text | shout }}", encoding="utf-8")
    (tmp_path / "ok.j2").write_text("«{{ text }}» ({{ seed_id }})", encoding="utf-8")
    r = cli("lint", seeds, *(tmp_path / n for n in ("meta.j2", "syntax.j2", "filter.j2", "ok.j2")), "-q")
    print(r.stdout)
    assert r.exit_code == 1
    assert f"{tmp_path / 'meta.j2'}:1: error: rendering fails for 1 of 2 seeds ('a' ({seeds}:1))" in r.stdout
    assert f"{tmp_path / 'syntax.j2'}:3: error: Jinja syntax: Unexpected end of template" in r.stdout
    assert f"{tmp_path / 'filter.j2'}:1: error: Jinja: No filter named 'shout'" in r.stdout
    assert "ok.j2" not in r.stdout
    r = cli("lint", seeds, tmp_path / "nope.j2")
    assert r.exit_code == 2 and "nope.j2: no such template" in r.stderr


def test_few_variants_and_marker_allowance(cli, write_seeds, tmp_path, tk):
    seeds = write_seeds([{"id": "tiny", "text": "Hi."}])
    r = cli("lint", seeds, "--format", "json")
    assert r.exit_code == 0
    few = [p for p in json.loads(r.stdout)["problems"] if p["code"] == "few-variants"]
    assert len(few) == 1 and few[0]["line"] == 1 and "fewer than 24 (the recipe's `repeat 24`)" in few[0]["message"]
    r = cli("lint", seeds, "--min-variants", "1", "--format", "json")
    assert not [p for p in json.loads(r.stdout)["problems"] if p["code"] == "few-variants"]
    # a marker over its allowance is an error with cheaper spellings that are single tokens
    recipe = tmp_path / "m.recipe"
    recipe.write_text('edit identity\nedit mark anchors with markers as prefix wrap\nmarkers "[ANCHOR]" max 3 tokens\n')
    r = cli("lint", seeds, "--recipe", recipe, "--format", "json", "--no-expand")
    assert r.exit_code == 1
    (p,) = [p for p in json.loads(r.stdout)["problems"] if p["code"] == "marker-cost"]
    assert (p["line"], p["column"], p["severity"]) == (3, 9, "error")
    single = p["suggestion"].split("single tokens: ")[1].split(";")[0].split(", ")
    assert single and all(len(tk.encode([" " + s.strip("'")])[0]) == 1 for s in single)


def test_seed_spelling_a_marker_is_a_warning_at_its_place(cli, write_seeds):
    seeds = write_seeds([{"id": "lit", "text": "Смотри [ANCHOR] здесь и там."}])
    r = cli("lint", seeds, "-q", "--no-expand")
    print(r.stdout)
    assert r.exit_code == 0
    column = seeds.read_text(encoding="utf-8").index("[ANCHOR]") + 1
    assert (f"{seeds}:1:{column}: warning: the text of seed 'lit' holds '[ANCHOR]', a marker of recipe 'default'"
            in r.stdout and "[marker-text]" in r.stdout)


def test_stdin_and_unreadable_paths(cli, tmp_path):
    r = cli("lint", "-", "-q", input='{"id": "a", "markup": "x {y|} z"}\n')
    assert r.exit_code == 1 and r.stdout.startswith("<stdin>:1:29: error: markup column 6")
    r = cli("lint", tmp_path / "missing.jsonl")
    assert r.exit_code == 2 and "no such file" in r.stderr
    r = cli("lint", DATA / "seeds.jsonl", "--recipe", tmp_path / "missing.recipe")
    assert r.exit_code == 2


def test_nested_anchor_is_an_error_in_lint_and_expand_alike(cli, write_seeds, tmp_path):
    """A [[ inside an anchor was taken as text: lint passed, expand wrote `спит [[на` into every
    variant. Both now stop at it with the same caret error, and expand writes nothing."""
    markup = "Кот [[спит [[на]] подоконнике."
    path = write_seeds([{"id": "nested", "markup": markup}])
    column = path.read_text(encoding="utf-8").index("[[на") + 1            # the inner [[
    r = cli("lint", path, "-q", "--no-expand")
    assert r.exit_code == 1
    head = f"{path}:1:{column}: error: markup column 12: unexpected '[['; expected ']]' (anchors do not nest"
    assert r.stdout.startswith(head), r.stdout
    caret = ["    " + markup, "    " + " " * 11 + "^"]
    assert r.stdout.splitlines()[1:3] == caret
    r = cli("expand", path, "-o", tmp_path / "out", "--model", "none")
    assert r.exit_code == 2
    assert r.stderr.startswith(f"{path}:1: markup line 1, column 12: unexpected '[['"), r.stderr
    assert r.stderr.splitlines()[1:3] == caret
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


def test_parse_recipe_all_reports_every_bad_line():
    text = "recipe r\nedit bogus\nvariants 0\nstep tokens <= x\nedit identity\nbudget wobble <= 1\n"
    recipe, errors = parse_recipe_all(text, "r.recipe")
    assert sorted((e.line, e.column) for e in errors) == [(2, 6), (3, 10), (4, 16), (6, 8)]
    assert recipe is not None and recipe.name == "r" and [e.kind for e in recipe.edits] == ["identity"]


def test_columns_in_a_json_line_follow_escapes():
    line = '{"id": "é\\"", "markup": "\\u00e9\\\\ \\ud83d\\ude42 {a|}", "n": [1, "x"]}'
    obj = json.loads(line)
    spans = string_spans(line)
    assert set(spans) == {"id", "markup"}
    start = spans["markup"][0]
    markup = obj["markup"]
    for k, ch in enumerate(markup):
        i = raw_index(line, start, k)
        if ch == "{":
            assert line[i] == "{"
    assert line[raw_index(line, start, markup.index("|") + 1)] == "}"
