"""Which word pairs of a plain seed may trade places: the reorder rule.

A reorder is kept only where the sentence still reads. Two kinds of candidate pairs:

* coordinated pairs, ``X and Y`` / ``X or Y`` / ``X и Y`` / ``X или Y``: swapping the two
  conjuncts keeps the grammar in English and Russian alike;
* adjacent content words (no function word, no negation, not the first word of a
  sentence), which read only sometimes: ``модель учат лучше`` does, ``Rhythm matters than
  more quantity`` does not.

With a reference model every candidate is measured: the sentence's total NLL with the pair
swapped minus the original's (nats). A pair is kept when that change is within the recipe's
margin (``edit reorder within M nats``). Adjacent pairs further need the model to read the
sentence in words rather than pieces (at most ``MAX_TOKENS_PER_CHAR`` tokens per character):
a model that spells Russian in fragments also judges Russian word order badly (SmolLM2
scores ``Память равна не пониманию`` 2.2 nats *better* than the original). Without a model
only coordinated pairs are proposed.

Never inside code: a seed whose ``meta.lang`` names a programming language, text that looks
like code (a line with code punctuation, an indented line, a fenced block), and backtick
spans are all skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .fluency import CheckStats, measure
from .words import NEGATIONS, PREPOSITIONS, STOPWORDS, WORD, code_lines, words as find_words

DEFAULT_MARGIN = 0.5          # nats: a swap may cost the sentence at most this much
MAX_CANDIDATES = 24           # pairs measured per seed (one batched forward)
COORDINATED_SLACK = 1.0       # nats more a coordinated pair may cost: "salt and pepper" -> +0.87
CONJUNCTIONS = frozenset({"and", "or", "и", "или"})
NATURAL = frozenset({"en", "ru", "uk", "be", "de", "fr", "es", "it", "pt", "nl", "pl", "cs", "zh", "ja",
                     "ko", "text", "prose", "markdown", "md", "plain"})

# a line that reads as code: code punctuation, a call, an assignment, or indentation
_CODE_LINE = re.compile(r"[{}\[\];=<>$`]|\w\(|^\s{2,}\S|^\t|^\s*(#!|//|--|def |class |import |from \S+ import|"
                        r"return\b|SELECT\b|select\b)")


@dataclass(frozen=True)
class Pair:
    """Two words of one text that may trade places: characters s1..e1 and s2..e2."""
    s1: int
    e1: int
    s2: int
    e2: int
    coordinated: bool
    delta: float | None = None     # NLL change of the sentence when swapped (nats), with a model
    readable: bool = True          # the model reads the sentence in words, not fragments

    def swapped(self, text: str) -> str:
        return text[:self.s1] + text[self.s2:self.e2] + text[self.e1:self.s2] + text[self.s1:self.e1] + text[self.e2:]

    def words(self, text: str) -> tuple[str, str]:
        return text[self.s1:self.e1], text[self.s2:self.e2]


def is_code(meta: dict | None) -> bool:
    """A seed whose ``lang`` (or ``language``) names something other than a natural language."""
    lang = str((meta or {}).get("lang") or (meta or {}).get("language") or "").strip().lower()
    return bool(lang) and lang.split("-")[0] not in NATURAL


def prose_ranges(text: str) -> list[tuple[int, int]]:
    """Character ranges of text that are prose, with fenced blocks and backtick spans cut
    out (``words.code_lines``); none at all when any other line reads as code (a seed that
    holds code is code: ``for item in items:`` reads as prose on its own, but not beside
    ``total = 0``)."""
    out = []
    for start, end, code in code_lines(text):
        pieces, cut = [], start
        for a, b in code:
            pieces.append((cut, a))
            cut = b
        pieces.append((cut, end))
        if _CODE_LINE.search("".join(text[a:b] for a, b in pieces)):
            return []
        out.extend(pieces)
    return [(a, b) for a, b in out if b > a]


def candidates(text: str, taken: set[int] = frozenset()) -> list[Pair]:
    """Coordinated and adjacent content-word pairs inside the prose of text; ``taken`` holds
    start offsets of words already used by another proposal (anchors)."""
    pairs: list[Pair] = []
    for a, b in prose_ranges(text):
        words = [(a + s, a + e) for s, e in find_words(text[a:b])]
        for k in range(len(words) - 1):
            (s1, e1), (s2, e2) = words[k], words[k + 1]
            if text[e1:s2] == " " and _content(text, s1, e1) and _content(text, s2, e2) \
                    and _differ(text, s1, e1, s2, e2) and not _sentence_initial(text, s1) and not {s1, s2} & taken:
                pairs.append(Pair(s1, e1, s2, e2, False))
            if k + 2 < len(words):
                (c1, c2), (s3, e3) = words[k + 1], words[k + 2]
                if text[c1:c2].lower() in CONJUNCTIONS and text[e1:c1] == " " and text[c2:s3] == " " \
                        and _content(text, s1, e1) and _content(text, s3, e3) and _differ(text, s1, e1, s3, e3) \
                        and _phrase_end(text, e3) \
                        and not _sentence_initial(text, s1) and not {s1, s3} & taken:
                    pairs.append(Pair(s1, e1, s3, e3, True))
    return pairs


def _differ(text: str, s1: int, e1: int, s2: int, e2: int) -> bool:
    """Two words whose swap changes more than letter case (``word word`` swaps to itself)."""
    return text[s1:e1].lower() != text[s2:e2].lower()


def _content(text: str, s: int, e: int) -> bool:
    w = text[s:e].lower()
    return len(w) >= 2 and w not in STOPWORDS and w not in NEGATIONS


def _phrase_end(text: str, e: int) -> bool:
    """The second conjunct ends its phrase (punctuation, a line end or a preposition follows):
    ``cats and dogs.`` swaps, ``tea and opened the letter`` does not."""
    rest = text[e:].lstrip(" ")
    m = WORD.match(rest)
    return not rest or not m or m.group().lower() in PREPOSITIONS


def _sentence_initial(text: str, s: int) -> bool:
    before = text[:s].rstrip(" \t")
    return not before or before[-1] in ".!?…\n:;—–-\"«(" or text[s].isupper() and before[-1] in ",—"


def passes(p: Pair, margin: float) -> bool:
    """The rule for one measured (or, without a model, unmeasured) pair."""
    if p.coordinated:   # grammatical by construction; the model may still veto an idiom it reads
        return p.delta is None or not p.readable or p.delta <= margin + COORDINATED_SLACK
    return p.delta is not None and p.readable and p.delta <= margin


def choose(text: str, pairs: list[Pair], n: int, advisor=None, margin: float = DEFAULT_MARGIN,
           rng=None) -> tuple[list[Pair], list[Pair]]:
    """(kept, measured): up to n non-overlapping pairs that pass the rule, best first, and
    every candidate with its measured change (for the summary)."""
    if len(pairs) > MAX_CANDIDATES:
        pairs = sorted(rng.sample(pairs, MAX_CANDIDATES) if rng else pairs[:MAX_CANDIDATES], key=lambda p: p.s1)
    measured = pairs if advisor is None else _measure(text, pairs, advisor)
    passing = sorted((p for p in measured if passes(p, margin)),
                     key=lambda p: (p.delta if p.delta is not None else 0.0, p.s1))
    kept: list[Pair] = []
    for p in passing:
        if all(p.e2 < q.s1 or p.s1 > q.e2 for q in kept):
            kept.append(p)
        if len(kept) == n:
            break
    return sorted(kept, key=lambda p: p.s1), measured


def _measure(text: str, pairs: list[Pair], advisor) -> list[Pair]:
    """Each pair's sentence NLL change when swapped, in one batch."""
    edits = [(p.s1, p.e2, p.swapped(text)[p.s1:p.e2]) for p in pairs]
    return [Pair(p.s1, p.e1, p.s2, p.e2, p.coordinated, delta, readable)
            for p, (delta, readable) in zip(pairs, measure(text, edits, advisor))]


@dataclass
class ReorderStats(CheckStats):
    """What the reorder rule did in a run: for the summary and the manifest."""
    COUNTS = ("considered", "proposed", "not_fluent", "fragments", "no_model", "skipped_code", "skipped_markup")
    margin: float = DEFAULT_MARGIN
    considered: int = 0        # candidate pairs measured (or, without a model, looked at)
    proposed: int = 0          # pairs that became swappable spans
    not_fluent: int = 0        # the swapped sentence cost more than the margin
    fragments: int = 0         # adjacent pairs in text the model spells in fragments
    no_model: int = 0          # adjacent pairs left out for want of a model to judge them
    skipped_code: int = 0      # plain seeds that are code: no rule proposals
    skipped_markup: int = 0    # markup seeds without {~...}: the designer chose their edits

    def update(self, measured: list[Pair], kept: list[Pair]) -> None:
        self.considered += len(measured)
        self.proposed += len(kept)
        for p in measured:
            if passes(p, self.margin):
                continue
            if p.delta is None:
                self.no_model += 1
            elif not p.readable:
                self.fragments += 1
            else:
                self.not_fluent += 1
        self.deltas.extend(p.delta for p in kept if p.delta is not None and p.readable)

    def line(self) -> str | None:
        if not (self.considered or self.skipped_code or self.skipped_markup):
            return None
        parts = [f"reorder rule: {self.proposed} of {self.considered} word pairs proposed{self.mean_text()}"]
        if self.not_fluent:
            parts.append(f"{self.not_fluent} read worse swapped (> {self.margin:g} nats)")
        if self.fragments:
            parts.append(f"{self.fragments} adjacent pairs in text the model spells in fragments")
        if self.no_model:
            parts.append(f"{self.no_model} adjacent pairs need a model to judge them")
        if self.skipped_code or self.skipped_markup:
            parts.append(f"none for {self.skipped_code} code seeds and {self.skipped_markup} markup seeds "
                         f"without {{~...}}")
        return "; ".join(parts)
