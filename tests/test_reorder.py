"""The reorder rule (microvar.reorder): which word pairs of a plain seed may trade places."""

from __future__ import annotations

import random

import pytest
from test_edits import expand, mseed, recipe, tseed

from microvar.expand.reorder import ReorderStats, candidates, choose, is_code, prose_ranges
from microvar.expand.seeds import Seed


def pairs_of(text: str) -> list[tuple[str, str, bool]]:
    return [(*p.words(text), p.coordinated) for p in candidates(text)]


def test_candidates_skip_function_words_negations_and_sentence_starts():
    got = pairs_of("Мышление не равно генерации текста.")
    # "Мышление" starts the sentence, "не" is a negation: only the two content words after it
    assert got == [("равно", "генерации", False), ("генерации", "текста", False)]
    assert pairs_of("It is not good.") == []


def test_a_word_next_to_itself_is_no_pair():
    # swapping "word word" gives the same text: nothing to measure (a 2,000-word line of one
    # word once cost minutes of fluency checks)
    assert pairs_of("say word word again") == [("word", "again", False)]
    assert pairs_of("We mix salt and Salt.") == [("mix", "salt", False)]     # no coordinated salt/Salt


def test_coordinated_pairs_need_the_second_word_to_end_its_phrase():
    assert ("cats", "dogs", True) in pairs_of("We feed cats and dogs.")
    assert all(not c for *_, c in pairs_of("She poured the tea and opened the old letter."))


def test_russian_coordinated_pair_before_a_function_word():
    assert ("чай", "кофе", True) in pairs_of("Она пьёт чай или кофе в полдень.")


@pytest.mark.parametrize("text", [
    "def add(a, b):\n    return a + b",
    "x = compute(items)",
    "    indented block of words here",
    "```\nplain words inside a fence\n```",
    "SELECT name FROM users WHERE id = 1;",
])
def test_no_candidates_inside_code(text):
    assert pairs_of(text) == []


def test_backtick_spans_are_cut_out_of_prose():
    text = "Run `make fast build` then read the long report."
    words = {w for a, b, _ in pairs_of(text) for w in (a, b)}
    assert words and not words & {"make", "fast", "build"}
    assert all(text[a:b].count("`") == 0 for a, b in prose_ranges(text))


def test_code_languages():
    assert is_code({"lang": "python"}) and is_code({"language": "sql"})
    assert not is_code({"lang": "ru"}) and not is_code({"lang": "en-GB"}) and not is_code({})


class FakeAdvisor:
    """NLL from a table of sentences (others: 99 nats); 1 token per 4 characters unless told."""

    def __init__(self, table: dict[str, float], tokens_per_char: float = 0.25):
        self.table, self.tpc = table, tokens_per_char

    def nll(self, texts):
        return [self.table.get(t, 99.0) for t in texts]

    def token_counts(self, texts):
        return [int(len(t) * self.tpc) for t in texts]


def test_model_keeps_pairs_within_the_margin_best_first():
    text = "The quiet river runs past the old mill."
    fluent = "The quiet river runs past the mill old."
    adv = FakeAdvisor({text: 20.0, fluent: 20.3})
    kept, measured = choose(text, candidates(text), 2, adv, margin=0.5)
    assert [p.words(text) for p in kept] == [("old", "mill")]
    assert len(measured) == len(candidates(text)) and all(p.delta is not None for p in measured)
    kept, _ = choose(text, candidates(text), 2, adv, margin=0.2)
    assert kept == []


def test_model_that_reads_in_fragments_cannot_approve_adjacent_swaps():
    text = "Река медленно течёт мимо тихой деревни."
    adv = FakeAdvisor({text: 30.0, "Река течёт медленно мимо тихой деревни.": 26.0}, tokens_per_char=0.8)
    kept, measured = choose(text, candidates(text), 2, adv)
    assert kept == [] and all(not p.readable for p in measured)
    stats = ReorderStats()
    stats.update(measured, kept)
    assert stats.fragments == len(measured) and stats.proposed == 0


def test_expander_never_reorders_markup_without_swaps_or_code(tk):
    rcp = recipe("edit reorder")
    assert len(expand(tk, mseed("We feed [[cats]] and dogs daily."), rcp).kept) == 1
    code = Seed("c", "cats and dogs", None, meta={"lang": "python"})
    assert len(expand(tk, code, rcp).kept) == 1
    assert len(expand(tk, tseed("We feed cats and dogs."), rcp).kept) == 2


def test_recipe_margin_reaches_the_rule(tk):
    from microvar.expand.expander import Expander

    ex = Expander(tk)
    ex.expand(tseed("We feed cats and dogs."), recipe("edit reorder within 1.5 nats"))
    assert ex.reorder_stats.margin == 1.5 and ex.reorder_stats.proposed == 1


def test_choice_is_deterministic_for_many_candidates():
    text = " ".join(f"alpha{i} beta{i}," for i in range(40)) + " end"
    adv = FakeAdvisor({text: 99.0})
    a = choose(text, candidates(text), 2, adv, rng=random.Random(1))
    b = choose(text, candidates(text), 2, adv, rng=random.Random(1))
    assert a == b and len(a[1]) <= 24


# ---------------------------------------------------------------- share caps

def test_share_caps_a_stage_during_expansion_and_after(tk):
    from microvar.expand.expander import Expander, trim_shares

    seed = mseed("Move [[one]] token at a [[time]], keep the [[anchor]] fixed {and|while} the [[model]] "
                 "{reads|sees} it.")
    free = recipe("edit mark anchors", "edit swap alternatives", "variants 30")
    capped = recipe("edit mark anchors", "edit swap alternatives", "variants 30", "share mark <= 20%")
    a = Expander(tk).expand(seed, free)
    b = Expander(tk).expand(seed, capped)
    marks = lambda res: sum(v.stage == "mark" for v in res.kept[1:])
    assert marks(a) > 6 and marks(b) <= 30 * 20 // 100
    shared = [r for r in b.rejects if r.check == "share"]
    assert shared and "share mark <= 20%" in shared[0].detail
    assert sum(v.stage == "substitute" for v in b.kept) >= sum(v.stage == "substitute" for v in a.kept)
    # after the budget removed others, trimming holds marks to 20% of what is left
    b.kept = b.kept[:1] + [v for v in b.kept[1:] if v.stage == "mark"] + \
        [v for v in b.kept[1:] if v.stage != "mark"][:3]
    trim_shares(b, capped)
    ids = {v.variant_id for v in b.kept}
    assert marks(b) <= max(1, (len(b.kept) - 1) * 20 // 100)
    assert all(v.parent_id in ids for v in b.kept[1:])
