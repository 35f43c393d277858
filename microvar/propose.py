"""Proposals for seeds without markup (or markup without anchors/swaps): which words become
anchors, which adjacent words may trade places, which words the model may substitute. With
no model, anchors are the longest content words; with one (an Advisor), the words the model
finds most surprising."""

from __future__ import annotations

import random
import re

from .markup import Alt, Anchor, Lit, Part, Swap

WORD = re.compile(r"[^\W\d_][\w'’-]*[^\W_]|[^\W\d_]")

# Frequent function words that make poor anchors (English and Russian).
STOPWORDS = frozenset("""
a an the and or but if then else of in on at to for from by with without into onto over under
is are was were be been being this that these those it its as not no yes do does did have has had
will would can could should may might must there their they them he she we you your our his her
what which who whom whose when where why how all any each some such than too very just also only
и в во на не что это как но а с со к ко по из за от до для о об же ли бы то так или ни да
его её ее их он она оно они мы вы ты я был была было были быть есть при без под над
""".split())  # noqa: SIM905 (a word list reads better as text)


def _initial_text(p: Part) -> str:
    return p.options[0] if isinstance(p, Alt) else p.text


def propose(parts: list[Part], n_anchors: int, n_swaps: int, rng: random.Random, advisor=None,
            model_swaps: int = 0, n_substitute: int = 3) -> list[Part]:
    """Add anchors (and swappable word pairs, and model alternatives for up to
    ``n_substitute`` words when ``model_swaps`` > 0) inside literal text."""
    has_anchor = any(isinstance(p, Anchor) for p in parts)
    has_swap = any(isinstance(p, Swap) for p in parts)
    words = []  # (part index, start, end)
    for i, p in enumerate(parts):
        if isinstance(p, Lit):
            words.extend((i, m.start(), m.end()) for m in WORD.finditer(p.text))
    chosen: dict[int, list[tuple[int, int, object]]] = {}

    def take(i: int, start: int, end: int, kind) -> None:
        chosen.setdefault(i, []).append((start, end, kind))

    probe = None
    if advisor is not None and words and ((not has_anchor and n_anchors > 0) or model_swaps > 0):
        starts, pos = [], 0
        for p in parts:
            starts.append(pos)
            pos += len(_initial_text(p))
        probe = advisor.probe("".join(_initial_text(p) for p in parts))
        cost = {w: advisor.surprisal(probe, starts[w[0]] + w[1], starts[w[0]] + w[2]) for w in words}

    def rank(w):  # most surprising first with a model; longest first without
        return (-cost[w] if probe is not None else -(w[2] - w[1]), w[0], w[1])

    used: set[tuple[int, int]] = set()
    if not has_anchor and n_anchors > 0:
        seen: set[str] = set()
        ranked = sorted(words, key=rank)
        for i, start, end in ranked:
            word = parts[i].text[start:end]
            if len(word) < 4 or word.lower() in STOPWORDS or word.lower() in seen:
                continue
            seen.add(word.lower())
            take(i, start, end, "anchor")
            used.add((i, start))
            if len(seen) == n_anchors:
                break
    if not has_swap and n_swaps > 0:
        pairs = []
        for (i, s1, e1), (j, s2, e2) in zip(words, words[1:]):
            if i == j and parts[i].text[e1:s2] == " " and (i, s1) not in used and (j, s2) not in used:
                pairs.append((i, s1, e1, s2, e2))
        picked: list[tuple] = []
        for pair in rng.sample(pairs, len(pairs)):
            if all(pair[0] != q[0] or pair[1] > q[4] or pair[4] < q[1] for q in picked):
                picked.append(pair)
            if len(picked) == n_swaps:
                break
        for group, (i, s1, e1, s2, e2) in enumerate(picked, start=1):
            take(i, s1, e1, f"swap{group}")
            take(i, s2, e2, f"swap{group}")
            used.update({(i, s1), (i, s2)})
    if probe is not None and model_swaps > 0:
        done = 0
        for i, start, end in sorted(words, key=rank):
            word = parts[i].text[start:end]
            if (i, start) in used or word.lower() in STOPWORDS or len(word) < 3:
                continue
            alts = advisor.alternatives(probe, starts[i] + start, starts[i] + end, model_swaps)
            if alts:
                take(i, start, end, Alt((word, *alts), model=True))
                used.add((i, start))
                done += 1
                if done == n_substitute:
                    break
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
