"""A seed's markup against its recipe and the tokenizer: alternatives that repeat, that
tokenize badly or move more tokens than the step budget; pairs of swappable spans whose
swap does; optional spans whose drop leaves bad spacing; markup the recipe never uses."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from ...dsl.markup import Alt, Opt, Swap, render_original
from ...expand.tokens import Candidate, align, check_in_vocab, check_round_trip
from .context import Context, SeedCase
from .positions import underline
from .problems import Problem
from .recipes import designer_limit
from .seeds import untokenizable


def alternatives(ctx: Context, case: SeedCase) -> Iterator[Problem]:
    """Each option of each {…|…}: a repeat, bad tokens, or a swap over the step budget."""
    if case.markup is None:
        return
    s, recipe = case.seed, case.recipe
    alts = [(i, p) for i, p in enumerate(s.parts) if isinstance(p, Alt)]
    for (i, alt), starts in zip(alts, case.positions["alternatives"]):
        seen: dict[str, int] = {alt.options[0]: 0}
        for j, option in enumerate(alt.options[1:], start=1):
            where, length = starts[j] if j < len(starts) else starts[0]
            ctx_lines = underline(case.markup, where, length)
            col = ctx.column(s.line, "markup", where)
            if option in seen:
                yield ctx.at(s.line, col, "warning", "alt-duplicate",
                             f"alternative {option!r} repeats option {seen[option] + 1} of the same {{…|…}}",
                             context=ctx_lines)
                continue
            seen[option] = j
            if untokenizable(option):
                continue  # reported with the seed's characters
            yield from _option(ctx, case, i, option, col, ctx_lines)


def _option(ctx: Context, case: SeedCase, i: int, option: str, col: int | None, context: str) -> Iterator[Problem]:
    s, recipe, tk = case.seed, case.recipe, ctx.tk
    original = s.parts[i].options[0]
    text = render_original(s.parts[:i]) + option + render_original(s.parts[i + 1:])
    ids = tk.encode([text])[0]
    c = Candidate(text, ids, tk.decode([ids])[0], case.ids, "substitute")
    align(c)
    why = check_in_vocab(c, tk, recipe) or check_round_trip(c, tk, recipe)
    if why:
        yield ctx.at(s.line, col, "error", "alt-tokens",
                     f"alternative {option!r} tokenizes badly: {why}; every swap to it is rejected",
                     "write it without that text", context)
        return
    if recipe is None or not recipe.edit("swap_alternatives"):
        return
    limit = designer_limit(recipe, "substitute")
    if c.distance > limit:
        orig_n = len(tk.encode([original])[0]) if original else 0
        n = len(tk.encode([option])[0])
        yield ctx.at(s.line, col, "warning", "alt-step",
                     f"swap {original!r}→{option!r} moves {c.distance} tokens ({original!r} is {orig_n}, {option!r} "
                     f"{n} on their own), over the step budget {limit} of stage substitute: the swap alone is "
                     "rejected by the step check",
                     f"an alternative closer in tokens, or `step tokens <= {c.distance}` (or `allow designer <= "
                     f"{c.distance}`, which counts against `jumps`) in the recipe", context)


def swaps(ctx: Context, case: SeedCase) -> Iterator[Problem]:
    """Each pair of swappable spans {~…} whose swap alone moves more tokens than the
    reorder step budget (or `allow designer`): the step check rejects it, as with
    alternatives (alt-step)."""
    s, recipe, tk = case.seed, case.recipe, ctx.tk
    if case.markup is None or recipe is None or not recipe.edit("reorder"):
        return
    limit = designer_limit(recipe, "reorder")
    starts = case.positions["swappable"]
    spans = [i for i, p in enumerate(s.parts) if isinstance(p, Swap)]
    for n, i in enumerate(spans):
        for j in spans[n + 1:]:
            a, b = s.parts[i].text, s.parts[j].text
            parts = list(s.parts)
            parts[i], parts[j] = Swap(b), Swap(a)
            text = render_original(parts)
            if untokenizable(text):
                continue  # reported with the seed's characters
            ids = tk.encode([text])[0]
            c = Candidate(text, ids, tk.decode([ids])[0], case.ids, "reorder")
            align(c)
            if c.distance > limit:
                where = starts[n] if n < len(starts) else 0
                yield ctx.at(s.line, ctx.column(s.line, "markup", where), "warning", "swap-step",
                             f"swap {a!r}↔{b!r} moves {c.distance} tokens, over the step budget {limit} of stage "
                             "reorder: the pair is rejected by the step check",
                             f"spans closer in tokens, or `allow designer <= {c.distance}` (which counts against "
                             "`jumps`) in the recipe", underline(case.markup, where, 2))


def drops(ctx: Context, case: SeedCase) -> Iterator[Problem]:
    """Each optional span whose drop leaves a double space or a space before punctuation
    that the seed did not have (expansion closes the spaces around a dropped span, so
    this names what that could not mend)."""
    from ...expand.edits.base import Doc, body, spacing_faults

    s, recipe = case.seed, case.recipe
    drop = recipe.edit("drop") if recipe is not None else None
    if case.markup is None or not drop or "optional" not in drop.args:
        return
    doc = Doc(s.id, list(s.parts))
    before = spacing_faults(body(doc, doc.initial))
    for k, where in zip(range(len(doc.opts)), case.positions["optional"]):
        after = spacing_faults(body(doc, dataclasses.replace(doc.initial, omit=frozenset({k}))))
        new = [name for name in after if after[name] > before[name]]
        if new:
            yield ctx.at(s.line, ctx.column(s.line, "markup", where), "warning", "opt-space",
                         f"dropping {{?{doc.opts[k].text}}} leaves {' and '.join(new)}",
                         "put the span's spaces inside it: `word{? span} word`", underline(case.markup, where, 2))


def unused(ctx: Context, case: SeedCase) -> Iterator[Problem]:
    """Alternatives, optional and swappable spans that the recipe has no edit for."""
    s, recipe = case.seed, case.recipe
    if case.markup is None or recipe is None:
        return
    pos = case.positions
    drop = recipe.edit("drop")
    found = []
    if any(isinstance(p, Alt) for p in s.parts) and not recipe.edit("swap_alternatives"):
        found.append(("alternatives {…|…} are never swapped", "edit swap alternatives",
                      pos["alternatives"][0][0][0] - 1 if pos["alternatives"] else 0))
    if any(isinstance(p, Opt) for p in s.parts) and not (drop and "optional" in drop.args):
        found.append(("optional spans {?…} are never dropped", "edit drop optional",
                      pos["optional"][0] if pos["optional"] else 0))
    if any(isinstance(p, Swap) for p in s.parts) and not recipe.edit("reorder"):
        found.append(("swappable spans {~…} never trade places", "edit reorder",
                      pos["swappable"][0] if pos["swappable"] else 0))
    for what, edit, index in found:
        yield ctx.at(s.line, ctx.column(s.line, "markup", index), "warning", "unused-markup",
                     f"{what}: recipe {recipe.name!r} has no `{edit}`", f"add `{edit}` to the recipe",
                     underline(case.markup, index))

