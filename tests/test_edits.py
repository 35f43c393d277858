"""Edit kinds through microvar.expand.Expander with the real reference tokenizer."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT

from microvar.dsl.markup import parse_markup, render_original
from microvar.dsl.recipe import load_recipe, parse_recipe
from microvar.expand.expander import Expander
from microvar.expand.seeds import Seed

MARKERS = ("[HIGHLIGHT]", "[ANCHOR]", "[SHIFT]")
ALLOW = "allow tail <= 4, wrap <= 12, truncate <= 24\njumps <= 100%\n"


def mseed(markup: str, sid: str = "s", continuation: str | None = None) -> Seed:
    parts = parse_markup(markup)
    return Seed(sid, render_original(parts), parts, continuation)


def tseed(text: str, sid: str = "s", continuation: str | None = None) -> Seed:
    return Seed(sid, text, None, continuation)


def recipe(*lines: str, extra: str = ALLOW):
    return parse_recipe("edit identity\n" + "\n".join(lines) + "\n" + extra)


def expand(tk, seed, rcp, rng_seed: int = 0, variants: int | None = None):
    res = Expander(tk, seed=rng_seed, variants=variants).expand(seed, rcp)
    root = res.kept[0]
    assert root.edits == ["identity"] and root.text == seed.text and root.parent_id == ""
    return res


def children(res) -> dict[str, object]:
    """Depth-1 variants by their single label."""
    return {v.edits[0]: v for v in res.kept[1:] if len(v.edits) == 1}


def assert_closed(res):
    ids = {v.variant_id for v in res.kept}
    assert len(ids) == len(res.kept)
    assert all(v.parent_id in ids for v in res.kept[1:])


# ---------------------------------------------------------------- one test per kind


@pytest.mark.parametrize("mode", ["prefix", "wrap"])
def test_mark(tk, mode):
    res = expand(tk, mseed("The [[cat]] sat on the [[mat]]."), recipe(f"edit mark anchors with markers as {mode}"))
    by = children(res)
    for marker in MARKERS:
        close = "[/" + marker[1:]
        if mode == "prefix":
            assert by[f"mark:{marker}@cat"].text == f"The {marker} cat sat on the mat."
            assert by[f"mark:{marker}@mat"].text == f"The cat sat on the {marker} mat."
        else:
            assert by[f"mark:{marker}…{close}@cat"].text == f"The {marker} cat {close} sat on the mat."
            assert by[f"mark:{marker}…{close}@mat"].text == f"The cat sat on the {marker} mat {close}."
    assert len(by) == 6
    root = res.kept[0].variant_id
    assert all(v.parent_id == root and v.stage == "mark" and v.marker_tokens > 0 for v in by.values())
    two = [v for v in res.kept if len(v.edits) == 2]
    assert two and all(v.text.count(MARKERS[0]) + v.text.count(MARKERS[1]) + v.text.count(MARKERS[2]) >= 2
                       for v in two)
    assert_closed(res)


def test_mark_custom_markers_and_allowance(tk):
    rcp = recipe('markers "<<" "[ANCHOR]" max 2 tokens', "edit mark anchors with markers as prefix wrap")
    res = expand(tk, mseed("The [[cat]] sat."), rcp)
    texts = {v.edits[0]: v.text for v in res.kept[1:]}
    assert texts == {"mark:<<@cat": "The << cat sat.", "mark:<<…<<@cat": "The << cat << sat."}
    assert {r.check for r in res.rejects} == {"marker_cost"}  # [ANCHOR] costs more than 2 tokens
    assert all(r.edits[0].startswith("mark:[ANCHOR]") for r in res.rejects)


def test_tail(tk):
    rcp = recipe('edit tail "→ summary:" "→ keywords:"')
    by = children(expand(tk, tseed("The weather is nice today."), rcp))
    assert by["tail:→ summary:"].text == "The weather is nice today. → summary:"
    assert by["tail:→ keywords:"].text == "The weather is nice today. → keywords:"
    by = children(expand(tk, tseed("One line.\nTwo line."), rcp))
    assert by["tail:→ summary:"].text == "One line.\nTwo line.\n→ summary:"


def test_tail_the_text_already_ends_with_is_not_appended(tk):
    """A seed that ends ``→ summary:`` got ``→ summary: → summary:``: the same tail again is
    no variant, the other tail still is."""
    rcp = recipe('edit tail "→ summary:" "→ keywords:"')
    for text in ("The weather is nice today. → summary:", "Line one.\nLine two.\n→ summary:  "):
        res = expand(tk, tseed(text), rcp)
        assert [v.edits for v in res.kept[1:]] == [["tail:→ keywords:"]]
        assert not any(v.text.count("→ summary:") > 1 for v in res.kept)
    # nor after another edit (the tail goes after the body and any drop)
    res = expand(tk, mseed("The {weather|sky} is nice. → summary:"), recipe('edit tail "→ summary:"',
                                                                            "edit swap alternatives"))
    assert not any("→ summary: → summary:" in v.text for v in res.kept)
    assert {v.text for v in res.kept[1:]} == {"The sky is nice. → summary:"}


CRLF = "Первая строка.\r\nВторая строка.\r\nТретья строка."


def _breaks(text: str) -> set[str]:
    import re

    return set(re.findall(r"\r\n|\r|\n", text))


def test_a_tail_breaks_its_line_the_way_the_seed_does(tk):
    """Windows text got ``…Третья строка.\n→ summary:``: a bare ``\n`` after ``\r\n`` lines.
    (``\r`` and ``\n`` are two SmolLM2 tokens: such a tail is 5 tokens, over the default
    recipe's ``allow tail <= 4``.)"""
    rcp = recipe('edit tail "→ summary:"', extra="allow tail <= 5\njumps <= 100%\n")
    (v,) = expand(tk, tseed(CRLF), rcp).kept[1:]
    assert v.text == CRLF + "\r\n→ summary:"
    (v,) = expand(tk, tseed("One.\rTwo."), rcp).kept[1:]       # CR alone (old Mac text)
    assert v.text == "One.\rTwo.\r→ summary:"
    (v,) = expand(tk, tseed("One.\nTwo."), rcp).kept[1:]
    assert v.text == "One.\nTwo.\n→ summary:"


def test_a_wrap_template_breaks_its_lines_the_way_the_seed_does(tk):
    rcp = recipe('edit wrap "chat_turn.j2" "json_like.j2"', 'edit tail "→ summary:"',
                 extra="allow tail <= 5, wrap <= 40\njumps <= 100%\n")
    res = expand(tk, tseed(CRLF), rcp)
    texts = {tuple(v.edits): v.text for v in res.kept[1:]}
    assert texts[("wrap:chat_turn",)] == "user: " + CRLF + "\r\nassistant:"
    assert json.loads(texts[("wrap:json_like",)]) == {"text": CRLF}
    for v in res.kept:
        assert _breaks(v.text) <= {"\r\n"}, v.text
    # a seed that mixes its breaks keeps the template's as written
    mixed = "One.\r\nTwo.\nThree."
    (v,) = expand(tk, tseed(mixed), recipe('edit wrap "chat_turn.j2"')).kept[1:]
    assert v.text == "user: " + mixed + "\nassistant:"


def test_a_model_continuation_breaks_its_lines_the_way_the_seed_does(tk):
    """SmolLM2 continues Windows text with ``\n``: the grow rows write ``\r\n``."""
    from test_grow_cuts import grown

    text = "First line.\r\nSecond line."
    rows, _ = grown(tk, tseed(text), "\n\nThird line here.\nAnd more.")
    assert rows
    for v in rows:
        assert _breaks(v.text) == {"\r\n"}, v.text
    assert rows[-1].text == text + "\r\n\r\nThird line here.\r\nAnd more."


def test_tail_rejected_without_allowance(tk):
    res = expand(tk, tseed("The weather is nice today."), recipe('edit tail "→ summary:"', extra=""))
    assert len(res.kept) == 1 and [r.check for r in res.rejects] == ["step"]


@pytest.mark.parametrize("text, dropped, label", [
    ("First line here.\nSecond line here.\nThird one.", "First line here.\nSecond line here.", "drop:last_line"),
    ("First sentence here. Second sentence here.", "First sentence here.", "drop:last_sentence"),
    ("Первое предложение. Второе предложение!", "Первое предложение.", "drop:last_sentence"),
    ("Only one sentence here.", None, None),
])
def test_drop_last_line(tk, text, dropped, label):
    res = expand(tk, tseed(text), recipe("edit drop last_line"))
    if dropped is None:
        assert len(res.kept) == 1 and not res.rejects
    else:
        assert [(v.text, v.edits, v.stage) for v in res.kept[1:]] == [(dropped, [label], "truncate")]


def test_drop_last_sentence_cjk(tk):
    res = expand(tk, tseed("你好。再见。"), recipe("edit drop last_line"))
    assert [(v.text, v.edits) for v in res.kept[1:]] == [("你好。", ["drop:last_sentence"])]


def test_drop_optional(tk):
    res = expand(tk, mseed("A {?very }good {?old }idea."), recipe("edit drop optional"))
    got = {tuple(v.edits): v.text for v in res.kept[1:]}
    assert got[("drop:optional@very",)] == "A good old idea."
    assert got[("drop:optional@old",)] == "A very good idea."
    assert "A good idea." in got.values()
    assert_closed(res)


@pytest.mark.parametrize("template, expected", [
    ("json_like.j2", '{"text": "Мышление не равно генерации текста."}'),
    ("kv.j2", "text: Мышление не равно генерации текста."),
    ("chat_turn.j2", "user: Мышление не равно генерации текста.\nassistant:"),
])
def test_wrap(tk, template, expected):
    res = expand(tk, tseed("Мышление не равно генерации текста."), recipe(f'edit wrap "{template}"'))
    (v,) = res.kept[1:]
    assert v.text == expected and v.edits == [f"wrap:{template[:-3]}"] and v.stage == "wrap"


def test_wrap_json_like_is_json_and_unescaped(tk):
    text = 'Он сказал: "привет"\nи ушёл.'
    res = expand(tk, tseed(text), recipe('edit wrap "json_like.j2"'))
    (v,) = res.kept[1:]
    assert json.loads(v.text) == {"text": text}
    assert "привет" in v.text and "\\u" not in v.text


def test_swap_alternatives(tk):
    res = expand(tk, mseed("A {big|large|huge} dog."), recipe("edit swap alternatives"))
    got = {v.edits[0]: v.text for v in res.kept[1:]}
    assert got == {"swap:big→large": "A large dog.", "swap:big→huge": "A huge dog."}


def test_reorder_swappable_spans(tk):
    res = expand(tk, mseed("The {~red} car and the {~blue} bike."), recipe("edit reorder"))
    assert [(v.text, v.edits) for v in res.kept[1:]] == [("The blue car and the red bike.", ["reorder:red↔blue"])]


def test_reorder_plain_text_without_model_swaps_only_coordinated_words(tk):
    # adjacent words need a model to judge them; "X and Y" swaps keep the grammar
    text = "Rhythm matters more than cats and dogs."
    res = expand(tk, tseed(text), recipe("edit reorder"))
    assert [(v.text, v.edits) for v in res.kept[1:]] == [("Rhythm matters more than dogs and cats.",
                                                          ["reorder:cats↔dogs"])]


def test_grow(tk):
    text, cont = "The capital of France is", " Paris, a city on the Seine known for its museums."
    res = expand(tk, tseed(text, continuation=cont), recipe("edit grow continuation 1..2 tokens"))
    chain = res.kept[1:]
    assert len(chain) >= 6
    prev, revealed = res.kept[0], 0
    for v in chain:
        assert v.parent_id == prev.variant_id and v.kinds == ["grow"] and v.depth == 1
        n = int(v.edits[0].removeprefix("grow:+"))
        assert v.edits == [f"grow:+{n}"] and 1 <= n - revealed <= 2
        assert v.text.startswith(prev.text) and (text + cont).startswith(v.text)
        assert 1 <= v.step_tokens <= 2
        prev, revealed = v, n
    assert chain[-1].text == text + cont


def test_grow_cjk_continuation_steps_are_tokens(tk):
    text, cont = "猫が", "好きです。"
    rcp = recipe("edit grow continuation 1..2 tokens")
    for rng_seed in range(5):
        res = expand(tk, tseed(text, continuation=cont), rcp, rng_seed)
        assert not res.rejects
        assert res.kept[-1].text == text + cont


def test_grow_without_continuation_proposes_nothing(tk):
    res = expand(tk, tseed("No continuation here."), recipe("edit grow continuation 1..2 tokens"))
    assert len(res.kept) == 1 and not res.rejects


# ---------------------------------------------------------------- properties

SEEDS_MARKUP = [
    mseed("[[Мышление]] {не равно|не то же, что} генерации [[текста]]{?, и точка}.", "ru"),
    mseed("Move {one|a single} token at a time,\nkeep the [[anchor]] fixed,\n"
          "and let the {~model} guide the {~rhythm}.", "en"),
    mseed("A pattern becomes a [[stable anchor]] after {twenty|thirty} {presentations|repetitions}{? or so}.", "en2"),
]


@pytest.mark.parametrize("seed", SEEDS_MARKUP, ids=lambda s: s.id)
def test_anchors_never_altered(tk, seed):
    anchors = [p.text for p in seed.parts if type(p).__name__ == "Anchor"]
    res = expand(tk, seed, load_recipe("default"))
    assert len(res.kept) > 10
    for v in res.kept:
        for a in anchors:
            assert a in v.text, (a, v.text)


@pytest.mark.parametrize("text", ["Мышление не равно генерации текста.", "Rhythm matters more than quantity.",
                                  "Продолжение очевидно человеку, но не модели."])
def test_plain_text_gets_anchors_and_many_variants(tk, text):
    res = expand(tk, tseed(text), load_recipe("default"))
    assert len(res.kept) >= 24
    marked = [v for v in res.kept if "mark" in v.kinds]
    assert marked and all(lbl.split("@")[1] in text for v in marked for lbl in v.edits if lbl.startswith("mark:"))
    assert_closed(res)


@pytest.mark.parametrize("n", [1, 2])
def test_compose(tk, n):
    rcp = parse_recipe(load_recipe("default").text.replace("compose up to 2", f"compose up to {n}"))
    seed = mseed("Move {one|a single} token,\nkeep the [[anchor]] fixed.", continuation=" And go on.")
    res = expand(tk, seed, rcp)
    assert max(len(v.edits) for v in res.kept) == n
    assert all(v.depth <= n for v in res.kept)


def test_determinism_same_seed(tk):
    rcp, seed = load_recipe("default"), SEEDS_MARKUP[1]
    a, b = expand(tk, seed, rcp, 5), expand(tk, seed, rcp, 5)
    key = lambda res: [(v.variant_id, v.parent_id, v.text, v.edits, v.ids) for v in res.kept]
    assert key(a) == key(b)
    assert [r.to_json() for r in a.rejects] == [r.to_json() for r in b.rejects]


def test_different_seed_may_differ(tk):
    # the expander's choices (which moves come first under a cap) follow the seed
    rcp = recipe("edit mark anchors", 'edit tail "→ summary:" "→ keywords:"', "edit drop last_line", "variants 4")
    seed = tseed("Rhythm matters more than quantity.\nSmall steps teach best.")
    runs = {tuple(v.text for v in expand(tk, seed, rcp, s).kept) for s in range(8)}
    assert len(runs) > 1


def test_determinism_across_hash_seeds():
    code = ("from microvar.model.load import load_tokenizer; from microvar.expand.expander import Expander;"
            "from microvar.dsl.recipe import load_recipe; from microvar.expand.seeds import Seed;"
            "from microvar.dsl.markup import parse_markup as p, render_original as r;"
            "m=p('A {?very }good [[idea]] {is|was} {~this} and {~that}.');"
            "res=Expander(load_tokenizer()[0], seed=3).expand(Seed('s', r(m), m), load_recipe('default'));"
            "print([(v.variant_id, v.parent_id) for v in res.kept])")
    outs = set()
    for hs in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hs, "MICROVAR_CACHE": os.environ.get("MICROVAR_CACHE", "/tmp/mvcache")}
        out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout
        outs.add(out)
    assert len(outs) == 1


@pytest.mark.parametrize("cap", [1, 5, 17])
def test_variants_cap_and_closure(tk, cap):
    seed = mseed("Move {one|a single} token,\nkeep the [[anchor]] fixed,\n{?so }let the {~a} see the {~b}.")
    rcp = parse_recipe(load_recipe("default").text.replace("variants 64", f"variants {cap}"))
    res = expand(tk, seed, rcp)
    assert len(res.kept) == cap and res.capped
    assert_closed(res)
    over = expand(tk, seed, load_recipe("default"), variants=cap)
    assert len(over.kept) == cap
    assert_closed(over)


def test_default_recipe_closure_and_step_budget(tk):
    rcp = load_recipe("default")
    res = expand(tk, mseed("Модель [[учится]] на {малых|крошечных} шагах:\nодин или {два|пару} токена за раз,\n"
                           "и {~ритм} важнее, чем {~объём}.", "lith"), rcp)
    assert_closed(res)
    assert len({v.text for v in res.kept}) == len(res.kept)
    for v in res.kept[1:]:
        assert v.step_tokens <= rcp.step_limit(v.stage)
    jumps = sum(v.step_tokens > rcp.step for v in res.kept)
    assert jumps <= rcp.variants * rcp.jumps // 100
