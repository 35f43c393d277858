"""The two DSLs: seed markup (grammars/markup.lark) and recipes (grammars/recipe.lark)."""

from __future__ import annotations

import pytest
from conftest import DATA, ROOT
from hypothesis import given, settings
from hypothesis import strategies as st

from microvar.dsl.markup import Alt, Anchor, Lit, MarkupSyntaxError, Opt, Swap, parse_markup, render_original
from microvar.dsl.recipe import STAGES, EditSpec, Limit, Route, load_recipe, parse_limits, parse_recipe
from microvar.errors import InputError
from microvar.expand.edits import EDITS


def caret_col(context: str) -> int:
    """1-based column the caret line of a context points at (both lines are indented 4)."""
    shown, caret = context.split("\n")
    assert caret.strip() == "^" and shown.startswith("    ")
    return len(caret) - 4


def markup_error(markup: str) -> MarkupSyntaxError:
    with pytest.raises(MarkupSyntaxError) as info:
        parse_markup(markup)
    e = info.value
    assert caret_col(e.context) == e.column
    assert str(e).startswith(f"line {e.line}, column {e.column}: {e.message}\n")
    return e


# ---------------------------------------------------------------- markup


@pytest.mark.parametrize("markup, parts, original", [
    ("a [[b c]] d", [Lit("a "), Anchor("b c"), Lit(" d")], "a b c d"),
    ("{big|large|huge} dog", [Alt(("big", "large", "huge")), Lit(" dog")], "big dog"),
    ("A {?very }good idea", [Lit("A "), Opt("very "), Lit("good idea")], "A very good idea"),
    ("{~red} and {~blue}", [Swap("red"), Lit(" and "), Swap("blue")], "red and blue"),
    ("no markup here", [Lit("no markup here")], "no markup here"),
    ("a [b] c ] [ d", [Lit("a [b] c ] [ d")], "a [b] c ] [ d"),
    ("[[a]b]] x", [Anchor("a]b"), Lit(" x")], "a]b x"),
    ("[[a]]]", [Anchor("a"), Lit("]")], "a]"),
    ("[[[a]]", [Anchor("[a")], "[a"),
    (r"\[\[x\]\] \{ \| \\ \~ \?", [Lit("[[x]] { | \\ ~ ?")], "[[x]] { | \\ ~ ?"),
    (r"[[a\]]b]] {x\|y|z} {?p\}q} {~m\{} {~n}", None, "a]]b x|y p}q m{ n"),
    ("Мышление — [[это]] {не|вовсе не} генерация {?текста}.", None, "Мышление — это не генерация текста."),
    ("日本語の[[猫]]は{かわいい|可愛い} 😀 {~🐈}{~🐕}", None, "日本語の猫はかわいい 😀 🐈🐕"),
])
def test_markup_parts(markup, parts, original):
    got = parse_markup(markup)
    if parts is not None:
        assert got == parts
    assert render_original(got) == original


def test_escapes_inside_constructs():
    parts = parse_markup(r"[[a\]]b]] {x\|y|z} {?p\}q} {~m\{} {~n}")
    assert parts[0] == Anchor("a]]b")
    assert parts[2] == Alt(("x|y", "z"))
    assert parts[4] == Opt("p}q")
    assert [p.text for p in parts if isinstance(p, Swap)] == ["m{", "n"]


def test_multiline_markup():
    m = "Move {one|a single} token,\nkeep the [[anchor]] fixed,\n{?and }let the {~model} guide the {~rhythm}."
    parts = parse_markup(m)
    assert [type(p) for p in parts] == [Lit, Alt, Lit, Anchor, Lit, Opt, Lit, Swap, Lit, Swap, Lit]
    assert render_original(parts) == "Move one token,\nkeep the anchor fixed,\nand let the model guide the rhythm."


def test_empty_markup_and_adjacent_literals_merge():
    assert parse_markup("") == []
    assert parse_markup("a[b") == [Lit("a[b")]


@pytest.mark.parametrize("markup, line, column, found", [
    ("a [[bcdef", 1, None, "end of markup"),          # unclosed anchor
    ("{|x}", 1, 2, "'|"),                               # empty first option
    ("{a|}", 1, 4, "'}'"),                              # empty last option
    ("{a||b}", 1, 4, "'|"),                             # empty middle option
    ("{a} x", 1, 3, "'}'"),                             # one option only
    ("x ]] y", 1, 3, "']]'"),                           # stray ]]
    ("ok\nfoo {a|bcdef", 2, None, "end of markup"),    # unclosed brace on line 2
    ("one\ntwo\nthree ]] x", 3, 7, "']]'"),
])
def test_markup_errors(markup, line, column, found):
    e = markup_error(markup)
    assert e.line == line
    if column is not None:
        assert e.column == column
    assert f"unexpected {found}" in e.message
    assert e.context.split("\n")[0] == "    " + markup.split("\n")[line - 1]


def test_markup_error_hints():
    assert "at least two options" in markup_error("{a}").message
    assert "empty option" in markup_error("{a|}").message
    assert "expected ']]'" in markup_error("a [[b").message
    assert "nothing to swap with" in markup_error("x\n{~a} y").message
    e = markup_error("x\n{~a} y")
    assert (e.line, e.column) == (2, 1)
    assert "empty anchor" in markup_error("[[ ]]").message


# [[ and ]] are markup everywhere: inside an anchor or inside {…} they are errors, not
# literal text that would leak into every variant; \[\[ \]\] write them literally.
@pytest.mark.parametrize("markup, column, found, words", [
    ("Кот [[спит [[на]] подоконнике.", 12, "'[['", "anchors do not nest"),    # nested anchor
    ("[[[[a]]", 3, "'[['", "anchors do not nest"),
    ("Кот ]] спит.", 5, "']]'", "no [[ is open"),                             # stray ]]
    ("[[a]] b]]", 8, "']]'", "no [[ is open"),
    ("{a|[[b}", 4, "'[['", "anchor cannot sit inside {…}"),                  # [[ in an option
    ("{a[[|b}", 3, "'[['", "anchor cannot sit inside {…}"),
    ("{?x [[y]] z}", 5, "'[['", "anchor cannot sit inside {…}"),
    ("{~x [[y]]} {~z}", 5, "'[['", "anchor cannot sit inside {…}"),
    ("{a|b]]}", 5, "']]'", "anchor cannot sit inside {…}"),                  # ]] in an option
    ("Кот [[спит на {тёплом|мягком}]] подоконнике.", 15, "'{'", "cannot sit inside an anchor"),
    ("[[a {?b}]]", 5, "'{?'", "cannot sit inside an anchor"),
    ("[[a | b]]", 5, "'|'", "write \\} or \\| for a literal"),
    ("[[a } b]]", 5, "'}'", "write \\} or \\| for a literal"),
    ("Кот {?спит {~на}} подоконнике.", 12, "'{~'", "spans do not nest"),
])
def test_brackets_and_braces_in_the_wrong_place_are_errors(markup, column, found, words):
    e = markup_error(markup)
    assert (e.line, e.column) == (1, column)
    assert e.message.startswith(f"unexpected {found}; ") and words in e.message, e.message


@pytest.mark.parametrize("markup, parts", [
    (r"Кот [[спит \[\[на\]\] тут]].", [Lit("Кот "), Anchor("спит [[на]] тут"), Lit(".")]),
    (r"{a\[\[b|c\]\]d}", [Alt(("a[[b", "c]]d"))]),
    (r"{?x \[\[y\]\] z}", [Opt("x [[y]] z")]),
    (r"[[a \{b\} \| c]]", [Anchor("a {b} | c")]),
    ("[[a[b]c]] {x[|]y}", [Anchor("a[b]c"), Lit(" "), Alt(("x[", "]y"))]),   # single brackets are text
])
def test_escaped_brackets_and_braces_inside_constructs(markup, parts):
    assert parse_markup(markup) == parts


@pytest.mark.parametrize("markup, line, opener, end", [
    ("a [[bcdef", 1, 3, 10),
    ("ok\nfoo {a|bcdef", 2, 5, 13),
])
def test_unclosed_error_column(markup, line, opener, end):
    e = markup_error(markup)
    assert e.line == line and e.column in (opener, end)


def test_empty_anchor_position():
    e = markup_error("ok\nabc [[ ]] d")
    assert (e.line, e.column) == (2, 5)


def test_empty_anchor_escaped_blank_position():
    e = markup_error("ab [[\\ ]]")
    assert (e.line, e.column) == (1, 4)


@pytest.mark.parametrize("sep", ["\u2028", "\x0c", "\r"])
def test_context_with_unicode_line_separators(sep):
    e = markup_error(f"a{sep}b ]] c")
    assert e.line == 1
    assert e.context.split("\n")[0] == f"    a{sep}b ]] c"


MARKUP_CHARS = "[]{}|\\~?"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.one_of(st.sampled_from(MARKUP_CHARS + "\n [] {}"), st.characters()), min_size=1))
def test_escaped_text_is_one_literal(text):
    escaped = "".join("\\" + c if c in MARKUP_CHARS else c for c in text)
    assert parse_markup(escaped) == [Lit(text)]
    assert render_original(parse_markup(escaped)) == text


# ---------------------------------------------------------------- recipes


def test_default_recipe_parses():
    r = load_recipe("default")
    assert r.source == "<shipped>/default.recipe"
    assert r.name == "default" and r.anchors == 3 and r.compose == 2 and r.variants == 64
    kinds = {e.kind for e in r.edits}
    assert kinds == set(EDITS)   # every edit kind, the model-guided ones included (issue 11)
    assert r.edit("tail").args == ("→ summary:", "→ keywords:")
    assert r.share == {"mark": 40} and r.edit("reorder").args == (0.5,)
    assert r.budget and all(x.relative for x in r.budget)
    assert r.stages == STAGES and r.repeat == 24 and len(r.routes) == 3


def test_example_recipe_values():
    r = load_recipe(str(DATA / "example.recipe"))
    assert r.name == "example"
    assert r.markers == ("[HIGHLIGHT]", "[ANCHOR]", "[SHIFT]") and r.marker_tokens == 8
    assert r.anchors == 2
    assert r.edits[0] == EditSpec("identity", (), 7)
    assert r.edit("mark").args == ("prefix", "wrap")
    assert r.edit("tail").args == ("→ summary:",)
    assert r.edit("drop").args == ("last_line", "optional")
    assert r.edit("wrap").args == ("json_like.j2", "kv.j2", "chat_turn.j2")
    assert r.edit("swap_model").args == (5,)
    assert r.edit("grow").args == (1, 2)
    assert (r.compose, r.variants, r.step, r.jumps, r.repeat) == (2, 48, 2, 10, 24)
    assert r.allow == {"tail": 4, "wrap": 12, "truncate": 24}
    assert r.step_limit("wrap") == 12 and r.step_limit("mark") == 2
    assert r.budget == (Limit("surprisal", "<=", 8.0), Limit("ripple_kl", "<=", 1.5), Limit("top1", ">=", 0.5))
    assert r.budget[2].violated(0.4) and not r.budget[0].violated(8.0)
    assert r.stages == STAGES
    assert r.routes == (Route(("identity", "mark", "tail"), "foundation", 1),
                        Route(("substitute", "reorder", "truncate", "wrap"), "domain", 2),
                        Route(("grow",), "context", 3))
    assert r.schedule == "spaced" and r.license == "apache-2.0"
    assert set(EDITS) - {"grow_model"} <= {e.kind for e in r.edits}


def test_example_recipe_uses_every_edit_kind():
    assert {e.kind for e in load_recipe(str(DATA / "example.recipe")).edits} == set(EDITS)


def test_statements_land_in_recipe():
    r = parse_recipe("""# comment
recipe mine   # trailing comment
markers "<<" "[FOCUS]"
anchors 5
edit mark anchors as wrap
edit tail "say \\"hi\\"" "→ x"
edit grow continuation 2..3 tokens
edit grow model 1..1 tokens
edit swap model top 3
compose up to 3
variants 7
step tokens <= 5
allow mark <= 3
jumps <= 100%
budget delta_nll >= -1.5
stages wrap > mark
repeat 2
route grow -> context
schedule interleaved
license "Apache 2.0"
""")
    assert r.name == "mine" and r.markers == ("<<", "[FOCUS]") and r.marker_tokens == 8 and r.anchors == 5
    assert [e.kind for e in r.edits] == ["mark", "tail", "grow", "grow_model", "swap_model"]
    assert r.edit("mark").args == ("wrap",) and r.edit("mark").line == 5
    assert r.edit("tail").args == ('say "hi"', "→ x")
    assert r.edit("grow").args == (2, 3) and r.edit("grow_model").args == (1, 1)
    assert (r.compose, r.variants, r.step, r.jumps, r.repeat) == (3, 7, 5, 100, 2)
    assert r.allow == {"mark": 3} and r.budget == (Limit("delta_nll", ">=", -1.5),)
    assert r.stages[:2] == ("wrap", "mark") and sorted(r.stages) == sorted(STAGES)
    assert r.routes == (Route(("grow",), "context", None),)
    assert r.schedule == "interleaved" and r.license == "Apache 2.0"


def test_relative_limits_scale_with_the_seed():
    r = parse_recipe("budget surprisal <= 2.5x, ripple_kl <= 1, nll <= 1.5x\n")
    rel, absolute, nll = r.budget
    assert str(rel) == "surprisal <= 2.5x" and rel.relative and not absolute.relative
    assert rel.bound(2.0) == 5.0 and rel.violated(5.1, 2.0) and not rel.violated(4.9, 2.0)
    assert rel.violated(5.1, 4.0) is False            # a seed the model finds harder allows more
    assert rel.violated(99, None) is False            # no seed NLL (not scored): nothing to scale
    assert absolute.violated(1.2, 100.0) and nll.violated(3.1, 2.0)
    assert parse_limits("surprisal<=2x") == (Limit("surprisal", "<=", 2.0, True),)
    with pytest.raises(ValueError, match="share, not nats"):
        parse_limits("top1>=0.5x")


def test_empty_recipe_defaults_to_identity():
    r = parse_recipe("")
    assert r.edits == (EditSpec("identity"),) and r.markers == ("[HIGHLIGHT]", "[ANCHOR]", "[SHIFT]")
    assert parse_recipe("anchors 4").anchors == 4  # no final newline


def recipe_error(text: str, line: int, column: int) -> InputError:
    with pytest.raises(InputError) as info:
        parse_recipe(text, "my.recipe")
    e = info.value
    assert (e.file, e.line, e.column) == ("my.recipe", line, column)
    shown = text.split("\n")[line - 1]
    assert str(e) == f"my.recipe:{line}:{column}: {e.message}\n    {shown}\n    {' ' * (column - 1)}^"
    return e


@pytest.mark.parametrize("text, line, column, words", [
    ("edit bogus\n", 1, 6, ["unexpected 'bogus'", "'drop'", "'mark'", "'wrap'"]),
    ("# c\n\nanchors 2\nedit   frobnicate", 4, 8, ["unexpected 'frobnicate'", "'identity'"]),
    ("variants\n", 1, 9, ["unexpected end of line", "a whole number"]),
    ("compose up to x\n", 1, 15, ["unexpected 'x'", "a whole number"]),
    ("edit tail summary\n", 1, 11, ["unexpected 'summary'", 'a "quoted string"']),
    ("edit wrap\n", 1, 10, ["end of line", 'a "quoted string"']),
    ("stages identity > bogus > mark\n", 1, 19, ["unknown stage 'bogus'", "identity, mark"]),
    ("allow tail <= 4, nope <= 1\n", 1, 18, ["unknown stage 'nope' in allow"]),
    ("route identity bogus -> x\n", 1, 16, ["unknown stage 'bogus' in route"]),
    ("budget surprisal <= 1, foo <= 1\n", 1, 24, ["unknown metric 'foo'", "ripple_kl"]),
    ('edit wrap "nope.j2"\n', 1, 11, ["template 'nope.j2' not found", "templates"]),
    ("edit grow continuation 2..1 tokens\n", 1, 24, ["grow step range 2..1", "1 <= low <= high"]),
    ("compose up to 0\n", 1, 15, ["compose up to N needs N >= 1"]),
    ("anchors 1\njumps <= 150%\n", 2, 10, ["jumps is a percentage: 0 to 100"]),
    ("schedule weird\n", 1, 10, ["unknown schedule 'weird'"]),
    ("edit identity\nedit identity\n", 2, 1, ["edit identity is listed twice"]),
    ("share bogus <= 10%\n", 1, 7, ["unknown stage 'bogus' in share"]),
    ("share mark <= 0%\n", 1, 7, ["share is a percentage: 1 to 100"]),
    ("budget top1 >= 0.5x\n", 1, 8, ["top1 is a share, not nats"]),
    ("edit reorder within nats\n", 1, 21, ["unexpected 'nats'", "a number"]),
])
def test_recipe_errors(text, line, column, words):
    e = recipe_error(text, line, column)
    for w in words:
        assert w in e.message


@pytest.mark.parametrize("text, column", [
    ('edit wrap "nope.j2"\n', 11),
    ("edit grow continuation 2..1 tokens\n", 24),
    ("compose up to 0\n", 15),
    ("jumps <= 150%\n", 10),
])
def test_recipe_value_error_column(text, column):
    with pytest.raises(InputError) as info:
        parse_recipe(text, "my.recipe")
    assert info.value.column == column


def test_recipe_string_unicode_escape():
    assert parse_recipe('edit tail "\\u2192 y"').edit("tail").args == ("→ y",)


def test_recipe_string_bad_escape_is_input_error():
    with pytest.raises(InputError):
        parse_recipe('edit tail "a\\x"', "my.recipe")


def test_wrap_template_beside_recipe(tmp_path):
    (tmp_path / "mine.j2").write_text("<<{{ text }}>>", encoding="utf-8")
    path = tmp_path / "r.recipe"
    path.write_text('edit wrap "mine.j2" "kv.j2"\n', encoding="utf-8")
    r = load_recipe(str(path))
    assert r.edit("wrap").args == ("mine.j2", "kv.j2")
    assert r.template_dirs[0] == str(tmp_path) and r.source == str(path)


def test_load_recipe_by_name_path_and_relative(tmp_path):
    assert load_recipe("default").name == "default"
    assert load_recipe(str(ROOT / "recipes" / "default.recipe")).name == "default"
    (tmp_path / "x.recipe").write_text("\ufeffrecipe x\n", encoding="utf-8")
    assert load_recipe("x.recipe", relative_to=tmp_path).name == "x"


def test_load_recipe_unknown_name():
    with pytest.raises(InputError) as info:
        load_recipe("no-such-recipe")
    e = info.value
    assert e.file == "no-such-recipe" and e.line is None
    assert str(e).startswith("no-such-recipe: no such recipe file") and "default" in str(e)
