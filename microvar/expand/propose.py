"""Proposals for seeds without markup (or markup without anchors): which words become
anchors, which word pairs of a plain seed may trade places, which words the model may
substitute. With
no model, anchors are the longest content words; with one (an Advisor), the words the model
finds most surprising."""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..dsl.markup import Alt, Anchor, Lit, Part, Swap
from .edits.base import closing
from .fluency import SubstitutionStats, measure
from .reorder import DEFAULT_MARGIN, ReorderStats, candidates, choose
from .words import STOPWORDS, code_spans, marker_spans, outside, words as find_words


def _initial_text(p: Part) -> str:
    return p.options[0] if isinstance(p, Alt) else p.text


@dataclass
class ReorderRule:
    """How a seed may get rule-proposed word swaps (None: it may not: markup, or code)."""
    margin: float = DEFAULT_MARGIN
    stats: ReorderStats | None = None


def substitutions(text: str, starts: list[int], words: list[tuple[int, int, int]], advisor, probe, k: int,
                  n: int, stats: SubstitutionStats) -> list[tuple[int, int, int, list[str]]]:
    """Up to n words (most surprising first) with the model's alternatives that still read:
    no function words, the sentence at most ``stats.margin`` nats worse, and only where the
    model reads the sentence in words (see fluency.py)."""
    asked: list[tuple[int, int, int, list[str]]] = []
    for i, start, end in words[:2 * n]:
        alts = advisor.alternatives(probe, starts[i] + start, starts[i] + end, k)
        content = [a for a in alts if a.lower() not in STOPWORDS and len(a) >= 3]
        stats.function_words += len(alts) - len(content)
        if content:
            asked.append((i, start, end, content))
    edits = [(starts[i] + start, starts[i] + end, alt) for i, start, end, alts in asked for alt in alts]
    verdicts = iter(measure(text, edits, advisor) if edits else [])
    out = []
    for i, start, end, alts in asked:
        judged = [(alt, *next(verdicts)) for alt in alts]
        if not all(readable for _, _, readable in judged):
            stats.fragments += 1
            continue
        kept = [(alt, delta) for alt, delta, _ in judged if delta <= stats.margin]
        stats.not_fluent += len(judged) - len(kept)
        if kept and len(out) < n:
            out.append((i, start, end, [alt for alt, _ in kept]))
            stats.words += 1
            stats.proposed += len(kept)
            stats.deltas.extend(delta for _, delta in kept)
    return out


def propose(parts: list[Part], n_anchors: int, n_swaps: int, rng: random.Random, advisor=None,
            model_swaps: int = 0, n_substitute: int = 3, reorder: ReorderRule | None = None,
            substitute: SubstitutionStats | None = None, markers: tuple[str, ...] = ()) -> list[Part]:
    """Add anchors (and, under a reorder rule, up to ``n_swaps`` word pairs that still read
    when swapped, see reorder.py; and model alternatives for up to ``n_substitute``
    words when ``model_swaps`` > 0) inside literal text: never in Markdown code (a fenced
    block, a backtick span), inside one of the recipe's ``markers`` (or its closing form)
    the text already spells, nor on the word such a marker already marks."""
    has_anchor = any(isinstance(p, Anchor) for p in parts)
    has_swap = any(isinstance(p, Swap) for p in parts)
    starts, pos = [], 0
    for p in parts:
        starts.append(pos)
        pos += len(_initial_text(p))
    whole = "".join(_initial_text(p) for p in parts)
    blocked = code_spans(whole) + marker_spans(whole, ((m, closing(m)) for m in markers))
    words = []  # (part index, start, end)
    for i, p in enumerate(parts):
        if isinstance(p, Lit):
            words.extend((i, start, end) for start, end in find_words(p.text)
                         if outside(blocked, starts[i] + start, starts[i] + end))
    chosen: dict[int, list[tuple[int, int, object]]] = {}

    def take(i: int, start: int, end: int, kind) -> None:
        chosen.setdefault(i, []).append((start, end, kind))

    probe = None
    if advisor is not None and words and ((not has_anchor and n_anchors > 0) or model_swaps > 0):
        probe = advisor.probe(whole)
        cost = {w: advisor.surprisal(probe, starts[w[0]] + w[1], starts[w[0]] + w[2]) for w in words}

    def rank(w):  # most surprising first with a model; longest first without
        return (-cost[w] if probe is not None else -(w[2] - w[1]), w[0], w[1])

    used: set[tuple[int, int]] = set()
    if not has_swap and n_swaps > 0 and reorder is not None and len(parts) == 1 and isinstance(parts[0], Lit):
        text = parts[0].text
        pairs = [p for p in candidates(text) if outside(blocked, p.s1, p.e1) and outside(blocked, p.s2, p.e2)]
        pairs, measured = choose(text, pairs, n_swaps, advisor,
                                 reorder.margin, rng)
        if reorder.stats is not None:
            reorder.stats.update(measured, pairs)
        for group, p in enumerate(pairs, start=1):
            take(0, p.s1, p.e1, f"swap{group}")
            take(0, p.s2, p.e2, f"swap{group}")
            used.update({(0, p.s1), (0, p.s2)})
    if not has_anchor and n_anchors > 0:
        seen: set[str] = set()
        ranked = sorted(words, key=rank)
        for i, start, end in ranked:
            word = parts[i].text[start:end]
            if (i, start) in used or len(word) < 4 or word.lower() in STOPWORDS or word.lower() in seen:
                continue
            seen.add(word.lower())
            take(i, start, end, "anchor")
            used.add((i, start))
            if len(seen) == n_anchors:
                break
    if probe is not None and model_swaps > 0:
        text = whole
        candidates_ = [(i, start, end) for i, start, end in sorted(words, key=rank)
                       if (i, start) not in used and parts[i].text[start:end].lower() not in STOPWORDS
                       and end - start >= 3]
        for i, start, end, alts in substitutions(text, starts, candidates_, advisor, probe, model_swaps,
                                                 n_substitute, substitute or SubstitutionStats()):
            take(i, start, end, Alt((parts[i].text[start:end], *alts), model=True))
            used.add((i, start))
    if not chosen:
        return parts
    out: list[Part] = []
    for i, p in enumerate(parts):
        if i not in chosen:
            out.append(p)
            continue
        pos = 0
        for start, end, kind in sorted(chosen[i], key=lambda c: c[:2]):
            if start > pos:
                out.append(Lit(p.text[pos:start]))
            piece = p.text[start:end]
            if isinstance(kind, Alt):
                out.append(kind)
            else:
                out.append(Anchor(piece) if kind == "anchor" else Swap(piece, int(kind[4:])))
            pos = end
        if pos < len(p.text):
            out.append(Lit(p.text[pos:]))
    return out
