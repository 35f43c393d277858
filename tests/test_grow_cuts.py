"""Where a grown model continuation may end: whole words in prose, whole lines in code, never
a fragment of a word the tokenizer spells in pieces (SmolLM2 spells Russian a letter or two
per token)."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest
from test_edits import ALLOW, recipe, tseed

from microvar.expand.expander import Expander
from microvar.expand.seeds import Seed
from microvar.expand.words import glues, word_ends

ROOT = Path(__file__).resolve().parent.parent
GROW = "edit grow model 1..2 tokens"


class FakeAdvisor:
    """The model's continuation, given: the expander asks it nothing else for a grow recipe."""

    def __init__(self, continuation: str):
        self.cont, self.asked = continuation, []

    def continuation(self, text: str, n_tokens: int = 8, code: bool = False) -> str:
        self.asked.append(code)
        return self.cont


def grown(tk, seed: Seed, cont: str, rng_seed: int = 0, step: int = 2, in_words: bool = True):
    """The grow_model rows of seed under a model that continues it with cont. in_words: as
    if the model read every script in words (Gemma 3 does Russian; the tokenizer here is
    SmolLM2's, whose Russian continuations the fragment rule turns off): the cut tests are
    about where rows end, not about which scripts a model may continue."""
    advisor = FakeAdvisor(cont)
    rcp = recipe(GROW, extra=ALLOW + f"step tokens <= {step}\n")
    with mock.patch("microvar.expand.expander.MAX_TOKENS_PER_CHAR", float("inf") if in_words else 0.4):
        res = Expander(tk, seed=rng_seed, advisor=advisor).expand(seed, rcp)
    rows = [v for v in res.kept if v.kinds == ["grow_model"]]
    for v in rows:
        assert v.text.startswith(seed.text)
    return rows, advisor


def _no_fragment(rest: str, code: bool) -> bool:
    """What follows a cut says it was no fragment: nothing, whitespace (a line end in code),
    or, between characters of a script without spaces, anything but closing punctuation."""
    if not rest:
        return True
    if code:
        return rest[0] == "\n"
    return rest[0].isspace() or ("\u3000" <= rest[0] <= "\u9fff" and rest[0] not in "、。」』）！？")


CASES = [
    ("ru", "Модель учится на малых шагах:\nи ритм важнее, чем объём.",
     "\nОбъём и ритм — это главное, что нужно.", None),
    ("en", "The capital of France is", " Paris, a city on the Seine known for its museums.", None),
    ("code", "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
     " # 5\nprint(add(10, 2))  # 12\nprint(add(", {"lang": "python"}),
    ("zh", "我喜欢猫。", "它们很可爱，也很安静。", None),
    ("emoji", "Всё готово 🙂", " Ура 👍🏽 ❤️ и дальше", None),
]


def _revealed(rows, sid: str, text: str, cont: str, code: bool) -> list[int]:
    """How much of the continuation each grow row shows; each must end a word (a line in code)."""
    shown = []
    for v in rows:
        revealed = v.text[len(text):]
        assert cont.startswith(revealed) and revealed.strip()
        assert _no_fragment(cont[len(revealed):], code), f"{sid}: the row ends mid-word: {v.text!r}"
        assert not revealed[-1].isspace()
        shown.append(len(revealed))
    return shown


@pytest.mark.parametrize("sid,text,cont,meta", CASES, ids=[c[0] for c in CASES])
def test_grow_model_rows_end_at_word_or_line_ends(tk, sid, text, cont, meta):
    code = meta is not None
    for rng_seed in range(3):
        rows, advisor = grown(tk, Seed(sid, text, None, meta=meta), cont, rng_seed)
        assert advisor.asked == [code]
        assert rows, "no grow row at all"
        shown = _revealed(rows, sid, text, cont, code)
        # each step reveals more, and the chain goes as far as the continuation's last whole unit
        assert shown == sorted(set(shown))
        assert max(shown) == (word_ends(cont, code, closed=True) or [0])[-1]


def test_a_step_holds_whole_words_and_passes_the_budget_only_for_one_word(tk):
    """Russian words are many SmolLM2 tokens: a step then is one whole word, over the step
    budget; steps within the budget take as many whole words as fit."""
    text, cont = "Модель учится на малых шагах.", "\nОбъём и ритм важнее, а шаги малы."
    rows, _ = grown(tk, tseed(text), cont)
    prev = ""
    for v in rows:
        revealed = v.text[len(text):]
        added = revealed[len(prev):]
        assert v.step_tokens <= 2 or len(added.split()) == 1, (added, v.step_tokens)
        prev = revealed
    assert any(v.step_tokens > 2 for v in rows)       # "\nОбъём" alone is over 2 tokens


def test_code_continuation_without_a_line_end_gives_no_row(tk):
    """``print(add(`` ends no line and closes no call: fewer rows rather than a fragment."""
    seed = Seed("c", "def add(a, b):\n    return a + b\n\n", None, meta={"lang": "python"})
    rows, advisor = grown(tk, seed, "print(add(2, 3)")
    assert advisor.asked == [True] and rows == []
    rows, _ = grown(tk, seed, "print(add(2, 3))")       # closed by the model: one line
    assert [v.text for v in rows] == [seed.text + "print(add(2, 3))"]


def test_text_that_reads_as_code_is_cut_at_line_ends(tk):
    """No ``lang`` in meta, but the seed holds code (the reorder's code detector)."""
    text = "total = 0\nfor item in items:"
    rows, advisor = grown(tk, tseed(text), "\n    total += item\n    print(total)", step=8)
    assert advisor.asked == [True]
    assert [v.text[len(text):] for v in rows][-1] == "\n    total += item\n    print(total)"
    assert all(v.text.endswith((":", "item", "(total)")) for v in rows)


def test_a_leading_newline_goes_with_the_first_word():
    ends = word_ends("\n\nОбъём и ритм", closed=True)
    assert ends and ends[0] == len("\n\nОбъём")
    assert word_ends("\n\n  ", closed=True) == []


@pytest.mark.parametrize("text", ["Объё", "well-craf", "猫", "print(add("])
def test_an_open_end_is_no_word_end(text):
    """Without knowing what follows, the last word of a window may be cut short."""
    code = "(" in text
    assert len(text) not in word_ends(text, code)
    assert word_ends(text, code, closed=True) == ([] if code else [len(text)])


def test_emoji_and_marks_stay_whole():
    text = "ok 👍🏽 👨‍👩‍👧 ❤️ é"      # a skin tone, a ZWJ family, a variation selector, e + combining acute
    for cut in word_ends(text, closed=True):
        assert cut == len(text) or text[cut] == " "


def test_cjk_cuts_fall_between_characters_but_not_before_closing_punctuation():
    text = "它们很可爱，「也很安静」。"
    ends = word_ends(text, closed=True)
    assert ends[-1] == len(text)
    for cut in ends[:-1]:
        assert text[cut] not in "，。」" and text[cut - 1] != "「"


# ---------------------------------------------------------------- where a continuation starts


@pytest.mark.parametrize("text,cont,code,glued", [
    ("x=1", "0\n\nprint(x)", True, True),               # x=10: what SmolLM2 gave
    ("x=1", ".5\n\nThe result", False, True),            # x=1.5
    ("x=1", ".\n\nx=1.", True, True),                     # in code a joiner alone: 1. is a float
    ("x=1", "\nprint(x)", True, False),
    ("The answer is 4", ".\n\nThe answer is 4.", False, False),   # a full stop ends the sentence
    ("Кот спит", "ся на окне", False, True),
    ("Кот спит", " на окне", False, False),
    ("the cat", "'s bowl", False, True),
    ("well", "-made", False, True),
    ("Done.", "Next", False, False),                     # the seed ends at a boundary itself
    ("ok", "", False, False),
    ("x=1", "", True, False),
])
def test_a_continuation_glues_when_it_goes_on_inside_the_last_word(text, cont, code, glued):
    assert glues(text, cont, code) is glued


@pytest.mark.parametrize("text,cont,meta", [
    ("x=1", "0\n\nprint(\"The result of the calculation is:\", x)", None),
    ("The answer is 4", "2, and the question is unknown.", None),
    ("Кот спит", "ся на окне.", None),
])
def test_a_continuation_that_extends_the_seeds_last_word_gives_no_row(tk, text, cont, meta):
    """``grow model`` must start at a boundary: ``x=1`` + ``0`` is another number, not the seed
    grown (the new-user tryout's ``x=10`` rows)."""
    rows, _ = grown(tk, Seed("s", text, None, meta=meta), cont)
    assert rows == []
    rows, _ = grown(tk, Seed("s", text, None, meta=meta), "\n" + cont[1:])   # at a boundary: rows
    assert rows and all(v.text[len(text)] == "\n" for v in rows)


@pytest.mark.slow
def test_real_model_continuation_starts_at_a_boundary(tk):
    """SmolLM2's greedy continuation of ``x=1`` is ``0\n\nprint(...)``, of ``The answer is 4``
    a digit too: the first token may not go on inside the seed's last word or number (nor
    after a joiner: ``x=1`` + ``.5``), and what the model writes instead starts at a boundary."""
    from microvar.model.advisor import Advisor
    from microvar.model.load import load_model, resolve

    advisor = Advisor(load_model(resolve(None), device="cpu"), tk)
    for text, code in [("x=1", True), ("x=1", False), ("The answer is 4", False), ("Кот спит", False)]:
        cont = advisor.continuation(text, code=code)
        assert not glues(text, cont, code), (text, cont)
        assert not cont[:1].isalnum() and not (cont[:1] == "." and cont[1:2].isdigit()), (text, cont)
    assert advisor.continuation("The answer is 4").startswith(".")   # ends its sentence instead


# ---------------------------------------------------------------- text the model spells in fragments

FRAGMENTS = [   # seed, what SmolLM2 continued it with (the tryout's and the examples'), continued?
    ("Кот спит на тёплом подоконнике.", " Всётся", False),
    ("Продолжение очевидно человеку, но не модели.", "\n\nБессерьё,", False),
    ("Мышление не равно генерации текста.", "\n\nОбразца:", False),
    ("שלום לכולם, מה שלומכם?", " עקב עקב", False),
    ("日本語の文章です。", "\n\nそれぞれ", False),
    ("Rhythm matters more than quantity.", "\n\nТак, чтобы", False),   # an English seed, a Russian continuation
    ("Rhythm matters more than quantity.", " A well-crafted rhythm can elevate your", True),
    ("A pattern becomes a stable anchor after twenty presentations or so.", "\n\nThe pattern is a stable anchor",
     True),
    ("The capital of France is", " Paris.", True),
    ("x=1", "\nprint(x)", True),             # one-letter names are one token each: no fragments
]


@pytest.mark.parametrize("text,cont,continued", FRAGMENTS, ids=[f"{c[0][:12]}+{c[1].strip()[:8]}" for c in FRAGMENTS])
def test_no_model_continuation_in_text_the_model_spells_in_fragments(tk, text, cont, continued):
    """The rule that leaves SmolLM2's substitutions out of Russian leaves its continuations
    out too: they were non-words (``Всётся``, ``Бессерьё``, ``עקב עקב``); English and code
    keep theirs. The run's summary says how many seeds were left without one."""
    rows, _ = grown(tk, tseed(text), cont, in_words=False)
    assert bool(rows) is continued
    expander = Expander(tk, advisor=FakeAdvisor(cont))
    expander.expand(tseed(text), recipe(GROW, extra=ALLOW))
    stats = expander.continuation_stats
    assert (stats.continued, stats.fragments) == ((1, 0) if continued else (0, 1))


def test_the_summary_says_how_many_continuations_the_fragment_rule_left_out():
    from microvar.expand.fluency import ContinuationStats
    from microvar.pipeline.summary import Summary

    s = Summary()
    assert not any(line.startswith("model continuations") for line in s.lines())
    s.continuation = ContinuationStats(continued=6, fragments=7)
    (line,) = [x for x in s.lines() if x.startswith("model continuations")]
    assert line == ("model continuations: 6 seeds continued; 7 left without one, in text the model spells in "
                    "fragments (a multilingual model reads it in words: --model gemma3-270m)")
    assert s.to_json()["model_continuations"] == {"continued": 6, "fragments": 7}
    assert Summary.from_state(s.state()).continuation.fragments == 7
    old = s.state()
    del old["continuation"]                       # a shard written before the count existed
    assert Summary.from_state(old).continuation.fragments == 0


@pytest.mark.slow
def test_real_model_continuation_of_a_russian_seed_is_whole_words(tk):
    """SmolLM2 spells Russian in pieces: its continuation still ends where a word does (the
    longer greedy continuation goes on with whitespace there); the expander then leaves it
    out (the model spells the text in fragments), so the seed has no grow_model row."""
    from microvar.model.advisor import Advisor
    from microvar.model.load import load_model, resolve

    text = "Модель учится на малых шагах:\nодин или два токена за раз,\nи ритм важнее, чем объём."
    advisor = Advisor(load_model(resolve(None), device="cpu"), tk)
    cont = advisor.continuation(text)
    longer = advisor.continuation(text, n_tokens=24)
    assert cont.strip() and longer.startswith(cont)
    assert len(longer) == len(cont) or longer[len(cont)].isspace()
    expander = Expander(tk, advisor=advisor)
    res = expander.expand(tseed(text), recipe(GROW))
    assert [v for v in res.kept if v.kinds == ["grow_model"]] == []
    assert expander.continuation_stats.fragments == 1


def test_real_model_continuation_opens_no_code_fence(tk):
    """SmolLM2 continues the examples' Python seed with a closing fence ("\n```") and a
    sentence about code with "Here is the code:" and an opening one: neither seed opened a
    fence, so the continuation stops before it (the Python seed's then has no line left)."""
    import json

    from microvar.model.advisor import Advisor
    from microvar.model.load import load_model, resolve

    advisor = Advisor(load_model(resolve(None), device="cpu"), tk)
    seeds = {s["id"]: s for s in map(json.loads, (ROOT / "data" / "seeds.jsonl").read_text("utf-8").splitlines())}
    code = "for item in items:\n    total += item.price\nreturn total"
    assert advisor.continuation(code, code=True) == ""
    prose = seeds["drift-en"]["text"]
    cont = advisor.continuation(prose)
    assert cont and "```" not in cont, cont


@pytest.mark.parametrize("text,cont,kept", [
    ("x = 1", "\n```", ""),
    ("Some prose.", "\n\nHere is the code:\n\n```python", "\n\nHere is the code:"),
    ("```python\nx = 1", "\n```", "\n```"),                  # the text opened it: closing is fine
    ("```\nx\n```\nThen", " more words", " more words"),
])
def test_a_fence_the_text_did_not_open_ends_the_continuation(text, cont, kept):
    from microvar.model.advisor import before_unopened_fence

    assert before_unopened_fence(text, cont) == kept


# ---------------------------------------------------------------- the designer's continuation

GIVEN = "edit grow continuation 1..2 tokens"


def given(tk, seed: Seed, rng_seed: int = 0, step: int = 2):
    """The grow rows of a seed's own continuation (no model: nothing else to ask)."""
    rcp = recipe(GIVEN, extra=ALLOW + f"step tokens <= {step}\n")
    res = Expander(tk, seed=rng_seed).expand(seed, rcp)
    rows = [v for v in res.kept if v.kinds == ["grow"]]
    for v in rows:
        assert v.text.startswith(seed.text)
    return rows, res


@pytest.mark.parametrize("sid,text,cont,meta", CASES, ids=[c[0] for c in CASES])
def test_given_continuation_rows_end_at_word_or_line_ends(tk, sid, text, cont, meta):
    """The designer's continuation is cut like the model's: whole words, whole lines in code,
    never a piece of a word the tokenizer spells in several tokens."""
    code = meta is not None
    for rng_seed in range(3):
        rows, _ = given(tk, Seed(sid, text, None, cont, meta=meta), rng_seed)
        assert rows, "no grow row at all"
        shown = _revealed(rows, sid, text, cont, code)
        assert shown == sorted(set(shown))
        # the designer ended the continuation: its end is a unit's end (unless code left a bracket open)
        assert max(shown) == word_ends(cont, code, closed=True)[-1]
        assert max(shown) == len(cont) or code


def test_given_russian_continuation_steps_are_whole_words(tk):
    """The example seed bridge-ru: SmolLM2 spells its Russian words in many tokens; each grow
    row ends after a whole word, one word alone may pass the step budget, and rows within
    the budget hold as many whole words as fit."""
    text, cont = "Продолжение очевидно человеку, но не модели.", " Поэтому его открывают по одному токену за раз."
    for rng_seed in range(3):
        rows, res = given(tk, Seed("bridge-ru", text, None, cont), rng_seed)
        assert not [r for r in res.rejects if any(e.startswith("grow") for e in r.edits)]
        assert rows[-1].text == text + cont
        prev = ""
        for v in rows:
            revealed = v.text[len(text):]
            assert cont[len(revealed):][:1] in ("", " "), v.text
            added = revealed[len(prev):]
            assert v.step_tokens <= 2 or len(added.split()) == 1, (added, v.step_tokens)
            prev = revealed
        assert any(v.step_tokens > 2 for v in rows)       # " Поэтому" alone is over 2 tokens


def test_given_code_continuation_is_cut_at_line_ends(tk):
    seed = Seed("c", "total = 0\nfor item in items:", None, "\n    total += item\n    print(total)\n",
                meta={"lang": "python"})
    rows, _ = given(tk, seed, step=8)
    assert [v.text[len(seed.text):] for v in rows][-1] == "\n    total += item\n    print(total)"
    assert all(v.text.endswith((":", "item", "(total)")) for v in rows)


def test_given_continuation_in_markup_seed_and_trailing_space(tk):
    """A markup seed's continuation likewise; trailing whitespace is no row of its own."""
    from test_edits import mseed

    seed = mseed("The [[cat]] sat on the {mat|rug}.", continuation=" It purred, then slept. ")
    for rng_seed in range(3):
        rows, _ = given(tk, seed, rng_seed)
        ends = {v.text[len(seed.text):] for v in rows}
        assert ends <= {" It", " It purred,", " It purred, then", " It purred, then slept."}
        assert " It purred, then slept." in ends


def test_lint_warns_of_a_code_continuation_that_ends_no_line(tmp_path, tk):
    """``print(add(`` leaves its call open: no row can show it whole, and lint says so."""
    from test_lint_checks import case, context

    from microvar.dsl.recipe import parse_recipe
    from microvar.tools.lint import seeds as seed_checks

    recipe = parse_recipe(f"recipe r\nedit identity\n{GIVEN}\n", "r.recipe")
    ctx, (open_, closed) = context(tmp_path, tk,
                                   {"id": "open", "text": "x = 1\n", "continuation": "print(add(", "meta": {"lang": "py"}},
                                   {"id": "closed", "text": "x = 1\n", "continuation": "print(x)", "meta": {"lang": "py"}})
    (problem,) = seed_checks.unused_continuation(ctx, case(ctx, open_, recipe))
    assert problem.code == "unused-markup" and "never revealed" in problem.message and "'open'" in problem.message
    assert list(seed_checks.unused_continuation(ctx, case(ctx, closed, recipe))) == []
    rows, _ = given(tk, open_)
    assert rows == []
