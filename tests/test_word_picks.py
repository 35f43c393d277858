"""Which words the proposals pick (anchors for ``mark``, rule-proposed reorders, model
swaps), on text a new user wrote: combining accents and joiners stay inside their word,
and no word is picked inside Markdown code or inside a marker the seed already holds."""

from __future__ import annotations

import random

import pytest

from microvar.dsl.markup import Anchor, Swap
from microvar.dsl.recipe import parse_recipe
from microvar.expand.expander import Expander
from microvar.expand.seeds import Seed
from microvar.expand.words import words

MARKERS = ("[HIGHLIGHT]", "[ANCHOR]", "[SHIFT]")
RECIPE = parse_recipe("edit identity\nedit mark anchors with markers as prefix wrap\nanchors 3\n"
                      "edit reorder within 0.5 nats\n")


def picked(text: str) -> list[str]:
    return [text[s:e] for s, e in words(text)]


def expand_plain(tk, text: str, recipe=RECIPE):
    return Expander(tk).expand(Seed("s", text, None, None), recipe)


def picks(tk, text: str) -> tuple[list[str], list[str]]:
    """The anchors and the rule's swappable words proposed for a plain seed."""
    doc = Expander(tk).make_doc(Seed("s", text, None, None), RECIPE, random.Random(0))
    return [p.text for p in doc.parts if isinstance(p, Anchor)], [p.text for p in doc.parts if isinstance(p, Swap)]


def marked_texts(res) -> list[str]:
    return [v.text for v in res.kept if v.stage == "mark"]


# ---------------------------------------------------------------- 1. combining marks


ACCENTS = "Зàмок и замо́к — разные слова́."


def test_word_includes_its_combining_marks():
    assert picked(ACCENTS) == ["Зàмок", "и", "замо́к", "разные", "слова́"]
    assert picked("cafe\u0301 naïve") == ["cafe\u0301", "naïve"]


def test_marker_never_splits_an_accent_off_its_letter(tk):
    res = expand_plain(tk, ACCENTS)
    texts = marked_texts(res)
    assert texts
    for text in texts:
        for i, ch in enumerate(text):
            if ch in "\u0300\u0301":  # the accent still follows a letter, not a space or a marker
                assert text[i - 1].isalpha(), text
    labels = [e for v in res.kept for e in v.edits if e.startswith("mark:")]
    assert any(e.endswith("@замо́к") for e in labels) and not any(e.endswith("@замо") for e in labels)


# ---------------------------------------------------------------- 2. joiners


ZWJ = "Семья 👩\u200d💻 пишет код, a zero\u200dwidth joiner here."


def test_joined_word_is_one_word():
    assert picked(ZWJ) == ["Семья", "пишет", "код", "a", "zero\u200dwidth", "joiner", "here"]
    assert picked("на\u2060пример и\u200cещё") == ["на\u2060пример", "и\u200cещё"]


def test_word_tied_by_a_joiner_to_an_emoji_is_not_picked():
    assert picked("👩\u200dкод и текст") == ["и", "текст"]
    assert picked("код\u200d👩 и текст") == ["и", "текст"]


def test_marker_never_follows_or_precedes_a_joiner(tk):
    texts = marked_texts(expand_plain(tk, ZWJ))
    assert texts
    for text in texts:
        for marker in MARKERS:
            for m in (marker, marker.replace("[", "[/")):
                at = text.find(m)
                while at >= 0:
                    assert "\u200d" not in text[max(at - 2, 0):at + len(m) + 2], text
                    at = text.find(m, at + 1)
        assert "👩\u200d💻" in text and "zero\u200dwidth" in text


# ---------------------------------------------------------------- 3. Markdown code


FENCED = "Пример:\n```python\ndef calculate_total(items):\n    return sum(items)\n```\nКонец."


def test_code_spans_are_fences_and_backticks():
    from microvar.expand.words import code_spans

    spans = [FENCED[a:b] for a, b in code_spans(FENCED)]
    assert spans == ["```python", "def calculate_total(items):", "    return sum(items)", "```"]
    text = "Call `compute_total(items)` once, then `stop"
    assert [text[a:b] for a, b in code_spans(text)] == ["`compute_total(items)`", "`stop"]


def test_no_mark_inside_a_fenced_block(tk):
    anchors, _ = picks(tk, FENCED)
    assert sorted(anchors) == ["Конец", "Пример"]
    texts = marked_texts(expand_plain(tk, FENCED))
    assert texts and all("```python\ndef calculate_total(items):\n    return sum(items)\n```" in t for t in texts)


def test_no_mark_inside_backticks_and_prose_still_marked(tk):
    text = "Вызовите `calculate_total` для подсчёта, затем проверьте результат."
    anchors, _ = picks(tk, text)
    assert anchors and "calculate_total" not in anchors and all(a in text.replace("`calculate_total`", "")
                                                                for a in anchors)
    texts = marked_texts(expand_plain(tk, text))
    assert texts and all("`calculate_total`" in t for t in texts)


def test_prose_ranges_unchanged_by_the_shared_detector():
    from microvar.expand.reorder import prose_ranges

    text = "Одна строка `код` и ещё.\n```\nx = 1\n```\nКонец."
    assert [text[a:b] for a, b in prose_ranges(text)] == ["Одна строка ", " и ещё.", "Конец."]
    assert prose_ranges("total = 0\nfor item in items:") == []


# ---------------------------------------------------------------- 4. a marker in the seed


LITERAL = "Смотри [ANCHOR] здесь и там."


@pytest.mark.parametrize("text", [LITERAL, "Смотри здесь [/SHIFT] и [HIGHLIGHT] там, всё понятно."])
def test_no_word_picked_inside_or_under_a_marker_the_seed_spells(tk, text):
    anchors, swaps = picks(tk, text)
    for word in ("ANCHOR", "SHIFT", "HIGHLIGHT", "здесь", "там"):
        assert word not in anchors + swaps
    res = expand_plain(tk, text)
    for v in res.kept:
        assert "[[" not in v.text and "]]" not in v.text and "[/[" not in v.text, v.text
        assert not any(e.endswith(("@ANCHOR", "@SHIFT", "@HIGHLIGHT")) for e in v.edits), v.edits


def test_the_repro_literal_marker_keeps_the_seed_intact(tk):
    texts = marked_texts(expand_plain(tk, LITERAL))
    assert texts and all("Смотри [ANCHOR] здесь и там." in t for t in texts)


def test_a_word_before_punctuation_is_a_word():
    """The invisible joiners a word is read through are not the punctuation that glues a
    number (GLUE: ``1.5``, ``don't``): a word before a full stop or a comma stays pickable."""
    from microvar.expand.words import words

    t = "Мышление не равно генерации текста. Well-made, don't; x=1.5!"
    assert [t[s:e] for s, e in words(t)] == ["Мышление", "не", "равно", "генерации", "текста", "Well-made",
                                            "don't", "x"]
