"""Token costs of what a recipe inserts, under the reference tokenizer: each marker against
the recipe's allowance per marker, with cheaper spellings (single tokens first), and each
tail against ``allow tail``."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

from ...dsl.recipe import Recipe
from .context import Context
from .problems import Problem
from .recipes import statement

# symbols that are often one token after a space: candidate markers
_SYMBOLS = ("§", "»", "→", "•", "¶", "※", "▶", "◆", "■", "†", "‡", "<<", ">>", "##", "::", "==", "***")
_DECORATIONS = ("{}", "[{}]", "<{}>", "#{}", "@{}", "{}:", "<<{}>>", "**{}**", "__{}__", "[[{}]]")


def marker_cost(ctx: Context, recipe: Recipe) -> Iterator[Problem]:
    """An error for a marker over the allowance (every `mark` with it is rejected), a note
    for one that costs more than a token."""
    from ...expand.edits.base import closing

    spec = recipe.edit("mark")
    if spec is None:
        return
    modes = spec.args or ("prefix",)
    allowance = recipe.marker_tokens
    for marker in recipe.markers:
        line, col = statement(recipe, "markers", json.dumps(marker, ensure_ascii=False))
        prefix, close = ctx.cost(marker), ctx.cost(closing(marker))
        over = []
        if "prefix" in modes and prefix > allowance:
            over.append(f"as a prefix it costs {prefix} > {allowance}")
        if "wrap" in modes and prefix + close > 2 * allowance:
            over.append(f"wrapping with {closing(marker)!r} costs {prefix + close} > {2 * allowance}")
        what = f"marker {marker!r} costs {prefix} token{'s' if prefix != 1 else ''} ({ctx.pieces(marker)})"
        if "wrap" in modes and closing(marker) != marker:
            what += f", its closing {closing(marker)!r} {close}"
        cheaper = cheaper_spellings(ctx, marker, prefix, set(recipe.markers))
        if over:
            yield Problem(recipe.source, line, col, "error", "marker-cost",
                          f"{what}: over the allowance of {allowance} per marker ({'; '.join(over)}), so every "
                          "`mark` with it is rejected (check marker_cost)",
                          cheaper or f"raise the allowance: `markers ... max {max(prefix, close)} tokens`")
        elif prefix > 1:
            yield Problem(recipe.source, line, col, "note", "marker-cost",
                          f"{what}; allowance {allowance} per marker (a marker counts as one step whatever it costs)",
                          cheaper)


def cheaper_spellings(ctx: Context, marker: str, now: int, taken: set[str]) -> str:
    """Spellings of a marker that cost fewer tokens (after a space): single tokens first."""
    found = _cheaper(ctx, marker, now, taken)
    symbols = [s for s in _SYMBOLS if s not in taken and s != marker and ctx.cost(s) == 1] if now > 1 else []
    marked = sorted((s for s in found if re.search(r"\w", s) and not s.isalnum()), key=lambda s: (found[s], len(s), s))
    plain = sorted((s for s in found if s.isalnum()), key=lambda s: (found[s], len(s), s))
    out = []
    single = [s for s in marked if found[s] == 1][:3] + symbols[:5]
    if single:
        out.append("single tokens: " + ", ".join(map(repr, single)))
    words = [s for s in plain if found[s] == 1][:2]
    if words:
        out.append(f"plain words, one token (they also occur in ordinary text): {', '.join(map(repr, words))}")
    more = [s for s in marked if found[s] > 1][:3]
    if more:
        out.append("cheaper: " + ", ".join(f"{s!r} ({found[s]} tokens)" for s in more))
    return "; ".join(out)


def _cheaper(ctx: Context, marker: str, now: int, taken: set[str]) -> dict[str, int]:
    """Forms of the marker's word (decorated, or vocabulary entries holding it) that cost
    fewer than ``now`` tokens and spell back as themselves, with their cost."""
    word = re.sub(r"\W+", "", marker)
    found: dict[str, int] = {}

    def consider(s: str) -> None:
        if s and s != marker and s not in taken and s not in found:
            n = ctx.cost(s)
            text = " " + s
            if n < now and ctx.tk.decode([ctx.tk.encode([text])[0]])[0] == text:
                found[s] = n

    if word:
        for form in dict.fromkeys([word.upper(), word.capitalize(), word.lower()]):
            for d in _DECORATIONS:
                consider(d.format(form))
        low = word.lower()
        vocab = ctx.tk.backend.get_vocab(with_added_tokens=False)
        hits = [i for t, i in vocab.items() if low in t.lower()]
        for s in ctx.tk.decode([[i] for i in hits[:2000]]):
            if "\ufffd" not in s:
                consider(s.strip())
    return found


def tail_cost(ctx: Context, recipe: Recipe) -> Iterator[Problem]:
    limit = recipe.step_limit("tail")
    for spec in recipe.edits:
        if spec.kind != "tail":
            continue
        for t in spec.args:
            n = ctx.cost(t)
            if n > limit:
                line, col = statement(recipe, "edit", json.dumps(t, ensure_ascii=False)[:-1])
                yield Problem(recipe.source, line, col, "warning", "tail-cost",
                              f"tail {t!r} adds {n} tokens, over the allowance `allow tail <= {limit}`: variants "
                              "with it are rejected by the step check",
                              f"`allow tail <= {n}`, or a shorter tail")
