"""Rule-based proposals for seeds without markup (or markup without anchors/swaps):
which words become anchors, which adjacent words may trade places. A later step lets the
reference model propose them instead."""

from __future__ import annotations

import random
import re

from .markup import Anchor, Lit, Part, Swap

WORD = re.compile(r"[^\W\d_][\w'’-]*[^\W_]|[^\W\d_]")

# Frequent function words that make poor anchors (English and Russian).
STOPWORDS = frozenset("""
a an the and or but if then else of in on at to for from by with without into onto over under
is are was were be been being this that these those it its as not no yes do does did have has had
will would can could should may might must there their they them he she we you your our his her
what which who whom whose when where why how all any each some such than too very just also only
и в во на не что это как но а с со к ко по из за от до для о об же ли бы то так или ни да
его её ее их он она оно они мы вы ты я был была было были быть есть при без под над
""".split())


def propose(parts: list[Part], n_anchors: int, n_swaps: int, rng: random.Random) -> list[Part]:
    """Add anchors (and swappable word pairs) inside literal text where the markup has none."""
    has_anchor = any(isinstance(p, Anchor) for p in parts)
    has_swap = any(isinstance(p, Swap) for p in parts)
    words = []  # (part index, start, end)
    for i, p in enumerate(parts):
        if isinstance(p, Lit):
            words.extend((i, m.start(), m.end()) for m in WORD.finditer(p.text))
    chosen: dict[int, list[tuple[int, int, str]]] = {}

    def take(i: int, start: int, end: int, kind: str) -> None:
        chosen.setdefault(i, []).append((start, end, kind))

    used: set[tuple[int, int]] = set()
    if not has_anchor and n_anchors > 0:
        seen: set[str] = set()
        ranked = sorted(words, key=lambda w: (-(w[2] - w[1]), w[0], w[1]))
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
    if not chosen:
        return parts
    out: list[Part] = []
    for i, p in enumerate(parts):
        if i not in chosen:
            out.append(p)
            continue
        pos = 0
        for start, end, kind in sorted(chosen[i]):
            if start > pos:
                out.append(Lit(p.text[pos:start]))
            piece = p.text[start:end]
            out.append(Anchor(piece) if kind == "anchor" else Swap(piece, int(kind[4:])))
            pos = end
        if pos < len(p.text):
            out.append(Lit(p.text[pos:]))
    return out
