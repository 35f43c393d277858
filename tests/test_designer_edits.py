"""A designer's edit is never silently lost: every markup alternative, optional span and
swappable pair that no kept variant carries is listed, with what removed it, in the expand
summary and the manifest's `unused_edits`; `allow designer <= N` lets them through as
counted jumps; lint warns for {~…} pairs over the step budget as for alternatives; and a
dropped optional span leaves no double space or space before punctuation. Everything here
needs only the default tokenizer (`--model none`)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from datasets import load_from_disk

from microvar.dsl.markup import Anchor, Lit, Swap, parse_markup, render_original
from microvar.dsl.recipe import METRICS, Limit, default_recipe, parse_recipe
from microvar.expand.designer import designer_edits, is_designer_move, summary_line
from microvar.expand.edits.base import Doc, body, close_gaps, spacing_faults
from microvar.expand.expander import Expander
from microvar.expand.seeds import Seed
from microvar.expand.tokens import RefTokenizer
from microvar.model.budget import BudgetStats, apply_budget

RU = "Модель [[учится]] на {малых|крошечных} шагах."
DEFAULT = default_recipe()
# the default recipe's edits without wrap: a wrap's own allowance (12) would also let a swap
# from a wrapped parent through (a composed variant's step is held to its latest stage's limit)
DESIGNER = parse_recipe("""recipe designer
markers "[HIGHLIGHT]" "[ANCHOR]" "[SHIFT]" max 8 tokens
edit identity
edit mark anchors with markers as prefix wrap
edit tail "→ summary:" "→ keywords:"
edit drop last_line optional
edit swap alternatives
edit reorder
compose up to 2
step tokens <= 2
allow tail <= 4, truncate <= 24
jumps <= 10%
""", "<designer>")


def seed(markup: str, sid: str = "ru") -> Seed:
    parts = parse_markup(markup)
    return Seed(sid, render_original(parts), parts)


def recipe_with(*lines: str):
    """The DESIGNER recipe with extra lines (a later line of the same statement wins)."""
    return parse_recipe(DESIGNER.text + "\n".join(lines) + "\n", "<test>")


def unused(tk: RefTokenizer, s: Seed, recipe, variants: int | None = None) -> dict[str, dict]:
    result = Expander(tk, variants=variants).expand(s, recipe)
    return {u["edit"]: u for u in result.unused_edits(recipe, variants or recipe.variants)}


def test_designer_edits_of_a_seed_are_read_from_its_markup():
    doc = Doc("s", parse_markup("{a|b|c} {?x} {~p} and {~q} and {~r}"))
    got = [(e.edit, e.kind) for e in designer_edits(doc)]
    assert got == [("a→b", "alternative"), ("a→c", "alternative"), ("{?x}", "optional"),
                   ("p↔q", "swap"), ("p↔r", "swap"), ("q↔r", "swap")]


def test_rule_proposed_swaps_and_marks_are_not_designer_moves():
    doc = Doc("s", [Lit("The "), Anchor("cat"), Lit(" "), Swap("sat", 1), Lit(" "), Swap("on", 1), Lit(" the mat.")])
    root = doc.initial
    swapped = replace(root, order=(1, 0))
    assert designer_edits(doc) == []
    assert not is_designer_move(doc, root, swapped)
    assert not is_designer_move(doc, root, replace(root, marks=((0, "[ANCHOR]", "prefix"),)))
    mine = Doc("s", parse_markup("{~sat} {~on} {a|b}"))
    assert is_designer_move(mine, mine.initial, replace(mine.initial, order=(1, 0)))
    assert is_designer_move(mine, mine.initial, replace(mine.initial, alts=(1,)))


def test_an_alternative_over_the_step_budget_is_listed_with_its_token_count(tk):
    got = unused(tk, seed(RU), DESIGNER)
    assert got["малых→крошечных"] == {"seed_id": "ru", "edit": "малых→крошечных", "kind": "alternative",
                                      "reason": "moves 7 tokens, step budget 2 (stage substitute)"}


def test_allow_designer_lets_it_through_as_a_counted_jump(tk):
    recipe = recipe_with("allow designer <= 10")
    assert recipe.designer == 10 and recipe.allow == {"tail": 4, "truncate": 24}
    result = Expander(tk).expand(seed(RU), recipe)
    assert result.unused_edits(recipe, recipe.variants) == []
    swap = next(v for v in result.kept if v.edits == ["swap:малых→крошечных"])
    assert swap.step_tokens == 7 and "крошечных" in swap.text
    # a budget below the move says which budget it was
    assert unused(tk, seed(RU), recipe_with("allow designer <= 5"))["малых→крошечных"]["reason"] == \
        "moves 7 tokens, step budget 5 (`allow designer`)"
    # the allowance is a jump: with no jumps left it is rejected, and the reason says so
    why = unused(tk, seed(RU), recipe_with("allow designer <= 10", "jumps <= 0%"))["малых→крошечных"]["reason"]
    assert why.startswith("moves 7 tokens, over the step budget 2: the seed's 0 jumps")


def test_allow_designer_is_not_an_allowance_for_other_edits(tk):
    """A plain seed's rule-proposed reorders and marks keep the 2-token step."""
    s = Seed("plain", "Мышление не равно генерации текста, как чай или кофе в полдень.", None)
    plain = Expander(tk).expand(s, DESIGNER)
    wide = Expander(tk).expand(s, recipe_with("allow designer <= 12"))
    assert any(r.check == "step" and r.edits[-1].startswith("reorder:") for r in plain.rejects)
    assert [v.text for v in wide.kept] == [v.text for v in plain.kept]
    assert wide.unused_edits(DEFAULT, 64) == []    # nothing the designer wrote


def test_each_reason_names_what_really_removed_the_edit(tk):
    # a swappable pair over the step budget
    pair = unused(tk, seed("И {~ритм} важнее, чем {~объём}."), DEFAULT)["ритм↔объём"]
    assert pair["kind"] == "swap" and pair["reason"].startswith("moves ") and "(stage reorder)" in pair["reason"]
    # an alternative whose text another variant already has
    assert unused(tk, seed("The {cat|cat} sat."), DEFAULT)["cat→cat"]["reason"] == "its text equals another variant's"
    # a recipe without the edit
    no_reorder = parse_recipe("edit identity\nedit swap alternatives\n")
    assert unused(tk, seed("A {~b} c {~d}."), no_reorder)["b↔d"]["reason"] == \
        "recipe 'default' has no `edit reorder`"
    # the cap: the root alone fills it
    capped = unused(tk, seed("The {cat|dog} sat {?down}."), DEFAULT, variants=1)
    assert {u["reason"] for u in capped.values()} == \
        {"cap reached: the seed's 1 variants were kept before it was tried"}
    assert set(capped) == {"cat→dog", "{?down}"}


def test_a_seed_rejected_whole_lists_its_edits_with_the_seed_s_reason(tk):
    [u] = unused(tk, seed("Say <|im_start|> {hi|hello}."), DESIGNER).values()
    assert u["edit"] == "hi→hello" and u["reason"].startswith("seed rejected: special token '<|im_start|>'")


def test_the_volatility_budget_is_named_when_it_removed_the_edit(tk):
    result = Expander(tk).expand(seed("The {cat|dog} sat."), DEFAULT)
    for v in result.kept:
        v.volatility = {**dict.fromkeys(METRICS, 0.0), "surprisal": 9.0 if "dog" in v.text else 1.0}
    assert result.unused_edits(DEFAULT, 64) == []
    apply_budget(result, (Limit("surprisal", "<=", 8.0),), BudgetStats())
    [u] = result.unused_edits(DEFAULT, 64)
    assert u["edit"] == "cat→dog"
    assert u["reason"] == "removed by the volatility budget (surprisal 9 breaks the budget surprisal <= 8)"


def test_summary_line_counts_and_shows_the_first_few():
    rows = [{"seed_id": f"s{k}", "edit": f"a{k}→b", "kind": "alternative", "reason": "moves 7 tokens"}
            for k in range(5)]
    assert summary_line([], 3) is None
    line = summary_line(rows, 9, shown=2)
    assert line == ("designer edits unused: 5 of 9 (a0→b in s0: moves 7 tokens; a1→b in s1: moves 7 tokens; "
                    "… 3 more in manifest.json)")


@pytest.mark.parametrize("extra, listed", [("", True), ("allow designer <= 10\n", False)],
                         ids=["default", "allow-designer"])
def test_expand_lists_unused_edits_in_summary_and_manifest(cli, write_seeds, tmp_path, extra, listed):
    """The Russian seed under the default SmolLM2 tokenizer: `малых→крошечных` is unused (step
    budget) in the manifest and on stderr; with `allow designer <= 10` it is in the dataset."""
    seeds = write_seeds([{"id": "lithography-ru", "markup": RU}])
    recipe = tmp_path / "designer.recipe"
    recipe.write_text(DESIGNER.text + extra, encoding="utf-8")
    out = tmp_path / "out"
    r = cli("expand", seeds, "-o", out, "--model", "none", "--recipe", recipe, "--format", "prompt-completion")
    assert r.exit_code == 0, r.stderr
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    texts = set(load_from_disk(str(out))["completion"])
    entry = {"seed_id": "lithography-ru", "edit": "малых→крошечных", "kind": "alternative",
             "reason": "moves 7 tokens, step budget 2 (stage substitute)"}
    assert manifest["counts"]["designer_edits"] == 1
    if listed:
        assert manifest["unused_edits"] == [entry]
        assert manifest["counts"]["designer_edits_unused"] == 1
        assert ("designer edits unused: 1 of 1 (малых→крошечных in lithography-ru: moves 7 tokens, "
                "step budget 2 (stage substitute))") in r.stderr
        assert not any("крошечных" in t for t in texts)
    else:
        assert manifest["unused_edits"] == []
        assert "designer edits unused" not in r.stderr
        assert any("на крошечных шагах" in t for t in texts)


# ---------------------------------------------------------------- whitespace


@pytest.mark.parametrize("markup, dropped", [
    ("Кот спит на {?тёплом} подоконнике.", "Кот спит на подоконнике."),
    ("Кот спит {?тихо}.", "Кот спит."),
    ("Кот спит {?тихо}, и всё.", "Кот спит, и всё."),
    ("Кот спит {?тихо}", "Кот спит"),
    ("Кот спит {?тихо}\nи видит сны.", "Кот спит\nи видит сны."),
    ("{?Итак,} кот спит.", "кот спит."),
    ("Кот.\n{?Итак,} кот спит.", "Кот.\nкот спит."),
    ("a {?b} {?c} d.", "a d."),
    ("a {?b} {?c}.", "a."),
    ("The cat{? really} sleeps.", "The cat sleeps."),
    # a span that is a whole line (only spaces around it) takes its line along: one break, not two
    ("def f(x):\n    {?x = x + 1;} return  x\n    {?pass}\n", "def f(x):\n    return  x\n"),
    ("Первая строка\n{?Вторая строка целиком}\nТретья.", "Первая строка\nТретья."),
    ("Первая строка\n  {?Вторая строка}\t\nТретья.", "Первая строка\nТретья."),
    ("Первая строка\r\n{?Вторая строка}\r\nТретья.", "Первая строка\r\nТретья."),
    ("Первая строка\n{?Вторая строка}", "Первая строка"),                   # the last line
    ("Первая строка\n{?Вторая строка}\n", "Первая строка\n"),
    ("{?Первая строка}\nВторая.", "Вторая."),                               # the first line
    ("a\n{?b}\n{?c}\nd", "a\nd"),                                          # two lines
    ("a\n{?b} {?c}\nd", "a\nd"),                                            # two spans, one line
    ("a\n{?b\nc}\nd", "a\nd"),                                             # a span over two lines
    ("a {?b}\n{?c}", "a"),
    ("a\n\n{?b}\n\nc", "a\n\n\nc"),                                       # a blank line stays blank
])
def test_a_dropped_optional_span_leaves_no_double_space_or_space_before_punctuation(markup, dropped):
    doc = Doc("s", parse_markup(markup))
    text = body(doc, replace(doc.initial, omit=frozenset(range(len(doc.opts)))))
    assert text == dropped
    before = spacing_faults(body(doc, doc.initial))
    assert all(n <= before[k] for k, n in spacing_faults(text).items())


@pytest.mark.parametrize("markup, omit, dropped", [
    ("a\n{?b}\n{?c}\nd", {0}, "a\nc\nd"),
    ("a\n{?b}\n{?c}\nd", {1}, "a\nb\nd"),
    ("a\n{?b}{?c}\nd", {0}, "a\nc\nd"),                  # the line is not empty: it stays
    ("a\n{?b} {?c}\nd", {1}, "a\nb\nd"),
    ("a\n{?b} c\nd", {0}, "a\nc\nd"),                    # within a line: as before
    ("a\nc {?b}\nd", {0}, "a\nc\nd"),
    ("{?a}", {0}, ""),
])
def test_a_dropped_span_removes_its_line_only_when_it_was_the_whole_line(markup, omit, dropped):
    doc = Doc("s", parse_markup(markup))
    assert body(doc, replace(doc.initial, omit=frozenset(omit))) == dropped


def test_expand_drops_a_whole_line_span_with_its_line(cli, write_seeds, tmp_path):
    path = write_seeds([{"id": "multi", "markup": "Первая строка\n{?Вторая строка целиком}\nТретья."}])
    r = cli("expand", path, "-o", tmp_path / "out", "--model", "none")
    assert r.exit_code == 0, r.stderr
    texts = load_from_disk(str(tmp_path / "out"))["text"]
    assert "Первая строка\nТретья." in texts
    assert not [t for t in texts if "\n\n" in t], texts


def test_close_gaps_touches_only_the_cuts():
    code = "x  =  1\n    y = 2  # aligned\n"
    assert close_gaps(code, []) == code
    assert close_gaps("a  b c ", [(7, "x")]) == "a  b c"          # the double space elsewhere stays
    assert spacing_faults("a  b ,c\n    d") == {"a double space": 1, "a space before punctuation": 1}


def test_expanded_variants_of_a_seed_with_optional_spans_read_clean(tk):
    s = seed("The cat sleeps on the {?warm} windowsill {?today}. {~Quiet} and {~calm}.")
    result = Expander(tk).expand(s, DEFAULT)
    drops = [v.text for v in result.kept if any(e.startswith("drop:optional") for e in v.edits)]
    assert {"The cat sleeps on the windowsill today. Quiet and calm.",
            "The cat sleeps on the warm windowsill. Quiet and calm."} <= set(drops)
    for t in drops:
        assert sum(spacing_faults(t).values()) == 0, t


# ---------------------------------------------------------------- lint


def lint_json(cli, write_seeds, tmp_path, rows, recipe_text=None) -> list[dict]:
    seeds = write_seeds(rows)
    args = ["lint", seeds, "--format", "json"]
    if recipe_text is not None:
        path = tmp_path / "r.recipe"
        path.write_text(recipe_text, encoding="utf-8")
        args += ["--recipe", path]
    return json.loads(cli(*args).stdout)["problems"]


def test_lint_warns_for_swappable_pairs_over_the_step_budget(cli, write_seeds, tmp_path):
    markup = "и {~ритм} важнее, чем {~объём}."
    problems = lint_json(cli, write_seeds, tmp_path, [{"id": "r", "markup": markup}])
    [p] = [p for p in problems if p["code"] == "swap-step"]
    assert p["severity"] == "warning" and p["message"].startswith("swap 'ритм'↔'объём' moves ")
    assert "`allow designer <= " in p["suggestion"]
    column = json.dumps({"id": "r", "markup": markup}, ensure_ascii=False).index("{~ритм}") + 1
    assert p["column"] == column
    # within `allow designer`, neither swaps nor alternatives are warned about
    wide = lint_json(cli, write_seeds, tmp_path, [{"id": "r", "markup": markup + " " + RU}],
                     DEFAULT.text + "allow designer <= 16\n")
    assert not [p for p in wide if p["code"] in ("swap-step", "alt-step")]
    # a pair of one-token words moves 2 tokens: within the budget
    en = lint_json(cli, write_seeds, tmp_path, [{"id": "e", "markup": "The {~cat} and the {~dog} play."}])
    assert not [p for p in en if p["code"] == "swap-step"]


def test_lint_warns_only_for_spacing_the_drop_cannot_mend(cli, write_seeds, tmp_path):
    mended = lint_json(cli, write_seeds, tmp_path, [{"id": "cat", "markup": "Кот спит на {?тёплом} подоконнике."}])
    assert not [p for p in mended if p["code"] == "opt-space"]
    # a span at a code line's indentation, before punctuation: the indentation is not eaten
    left = lint_json(cli, write_seeds, tmp_path, [{"id": "code", "markup": "f(\n    {?x}, y)"}])
    [p] = [p for p in left if p["code"] == "opt-space"]
    assert p["message"] == "dropping {?x} leaves a space before punctuation"
