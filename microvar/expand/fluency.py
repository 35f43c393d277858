"""Does an edited text still read? The reference model's own measure, shared by the reorder
rule and the model's substitutions: the NLL of the sentence holding the edit, edited minus
original (nats, one batched forward for all candidates of a seed), and whether the model
reads that sentence in words at all.

A model that spells a language in small pieces judges it badly: SmolLM2 (0.77 tokens per
character on Russian) scores ``Один и тот же показывают текст много раз.`` 0.85 nats *better*
than the original, and of its Russian ending swaps that passed its own fluency check, 7 of 8
were not words or broke agreement (``шагах→шагар``, ``опорой→опорт``, ``равно→равни``).
Where the sentence costs more than ``MAX_TOKENS_PER_CHAR`` the model's judgement is not used
to approve an edit: such edits are left out and counted ("fragments"); Gemma 3 reads Russian
at 0.26 tokens per character.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field

from .words import WORD

MAX_TOKENS_PER_CHAR = 0.4     # above it the model reads the language in fragments
_SENTENCE_END = re.compile(r"[.!?…:;]\s+|[\n]")


def sentence_of(text: str, s: int, e: int) -> tuple[int, int]:
    """The sentence (or line) holding characters s..e."""
    start = 0
    for m in _SENTENCE_END.finditer(text, 0, s):
        start = m.end()
    m = _SENTENCE_END.search(text, e)
    end = m.start() + 1 if m and m.group().strip() else (m.start() if m else len(text))
    return start, end



def measure(text: str, edits: list[tuple[int, int, str]], advisor) -> list[tuple[float, bool]]:
    """For each edit (start, end, replacement) of text: the NLL change of its sentence (nats)
    and whether the model reads the sentence in words. One batch for all."""
    spans = [sentence_of(text, s, e) for s, e, _ in edits]
    originals = sorted({text[a:b] for a, b in spans})
    edited = [text[a:s] + new + text[e:b] for (s, e, new), (a, b) in zip(edits, spans)]
    scores = advisor.nll(originals + edited)
    base = dict(zip(originals, scores[:len(originals)]))
    lengths = dict(zip(originals, advisor.token_counts(originals)))
    return [(after - base[text[a:b]], lengths[text[a:b]] <= MAX_TOKENS_PER_CHAR * max(1, b - a))
            for (a, b), after in zip(spans, scores[len(originals):])]


def fragment_rate(text: str, offsets: list[tuple[int, int]], start: int, end: int) -> float | None:
    """Tokens per character the model spends on the words of text[start:end] that it cannot
    read in one token (each word with the space before it, which a word-start token
    carries; ``offsets`` are the character spans of text's tokens); None when it reads every
    word there whole. A word in one token is no fragment, whatever its length (``x``, ``a``,
    ``print``: a one-letter name would count as a token a character), and digits and code
    punctuation are no words. Under SmolLM2 on the examples: the English sentences 0.26 or
    None, the code None, the Russian ones 0.77 to 1.04 (``Кот спит на тёплом подоконнике.``
    with its continuation `` Всётся``: 0.85), Japanese 2.0."""
    starts, ends = [s for s, _ in offsets], [e for _, e in offsets]   # both ascending
    rate = [0, 0]
    for m in WORD.finditer(text, start, end):
        a = m.start() - (m.start() > 0 and text[m.start() - 1] == " ")
        n = bisect_left(starts, m.end()) - bisect_right(ends, a)     # tokens overlapping a..end
        if n > 1:
            rate[0] += n
            rate[1] += m.end() - a
    return rate[0] / rate[1] if rate[1] else None


@dataclass
class CheckStats:
    """Counts a proposal check keeps for the summary and manifest: ``COUNTS`` add up across
    shards, ``deltas`` are the NLL changes of what it let through."""
    COUNTS = ()
    margin: float = 1.0
    deltas: list = field(default_factory=list)

    def merge(self, o: CheckStats) -> None:
        for k in self.COUNTS:
            setattr(self, k, getattr(self, k) + getattr(o, k))
        self.deltas.extend(o.deltas)

    @property
    def mean_delta(self) -> float | None:
        return sum(self.deltas) / len(self.deltas) if self.deltas else None

    def to_json(self) -> dict:
        return {"margin": self.margin, **{k: getattr(self, k) for k in self.COUNTS},
                "mean_delta_nll": self.mean_delta}

    def mean_text(self) -> str:
        return f", mean NLL change {self.mean_delta:+.2f} nats" if self.deltas else ""


@dataclass
class SubstitutionStats(CheckStats):
    """What the fluency check did to the model's substitutions in a run."""
    COUNTS = ("proposed", "words", "not_fluent", "function_words", "fragments")
    proposed: int = 0          # alternatives kept
    words: int = 0             # words that got at least one
    not_fluent: int = 0        # the sentence cost more than the margin
    function_words: int = 0    # alternatives that are function words or under 3 letters
    fragments: int = 0         # words in text the model spells in fragments

    def line(self) -> str | None:
        if not (self.proposed or self.not_fluent or self.function_words or self.fragments):
            return None
        parts = [f"model substitutions: {self.proposed} alternatives for {self.words} words{self.mean_text()}"]
        if self.not_fluent:
            parts.append(f"{self.not_fluent} read worse (> {self.margin:g} nats)")
        if self.function_words:
            parts.append(f"{self.function_words} were function words")
        if self.fragments:
            parts.append(f"{self.fragments} words left alone in text the model spells in fragments "
                         "(a multilingual model reads it in words: --model gemma3-270m)")
        return "; ".join(parts)


@dataclass
class ContinuationStats(CheckStats):
    """What the fluency check did to the model's continuations (``grow model``) in a run."""
    COUNTS = ("continued", "fragments")
    continued: int = 0        # seeds the model continued
    fragments: int = 0        # continuations left out: text the model spells in fragments

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in self.COUNTS}

    def line(self) -> str | None:
        if not self.fragments:
            return None
        return (f"model continuations: {self.continued} seeds continued; {self.fragments} left without one, in text "
                "the model spells in fragments (a multilingual model reads it in words: --model gemma3-270m)")
