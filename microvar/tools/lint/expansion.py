"""Expansion: each seed expanded as ``--model none`` does (the model-guided edits left out),
and a warning when it gives fewer variants than the recipe presents each seed (``repeat``
or ``--min-variants``), with what was made, rejected and kept."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from ...dsl.recipe import Recipe
from .context import Context, SeedCase
from .problems import Problem


def few_variants(ctx: Context, case: SeedCase) -> Iterator[Problem]:
    s, recipe = case.seed, case.recipe
    if recipe is None or not ctx.opts.expand or ctx.has_error(s.line):  # errors first: they change what it expands to
        return
    try:
        result = ctx.expander.expand(s, expandable(ctx, recipe))
    except Exception:  # noqa: BLE001 (a template that fails for this seed only: reported with the templates)
        plain = dataclasses.replace(recipe, edits=tuple(e for e in recipe.edits if e.kind != "wrap"))
        result = ctx.expander.expand(s, plain)
    if not result.kept:
        detail = result.rejects[0].detail if result.rejects else "no variant"
        yield ctx.at(s.line, None, "error", "seed-tokens", f"seed {s.id!r}: {detail}")
        return
    want = min(ctx.opts.min_variants or recipe.repeat, ctx.opts.variants or recipe.variants)
    n = len(result.kept)
    if n >= want:
        return
    skipped = [e.kind for e in recipe.edits if e.kind in ("swap_model", "grow_model")]
    model = f" (without the model's {', '.join(skipped)})" if skipped else ""
    source = "--min-variants" if ctx.opts.min_variants else f"the recipe's `repeat {recipe.repeat}`"
    yield ctx.at(s.line, None, "warning", "few-variants",
                 f"seed {s.id!r} expands to {n} variant{'s' if n != 1 else ''} (the seed included) with recipe "
                 f"{recipe.name!r}{model}, fewer than {want} ({source}): {_why(result)}",
                 "give it more to vary: alternatives {a|b}, optional spans {?…}, swappable spans {~…}, "
                 "anchors [[…]], or a continuation")


def _why(result) -> str:
    """What became of the candidates: made, rejected by check, kept by edit."""
    rejected = Counter({k.split(":", 1)[1]: v for k, v in result.counts.items() if k.startswith("rejected:")})
    kinds = Counter(v.kinds[-1] for v in result.kept[1:])
    why = f"{result.counts['made']} made"
    if rejected:
        why += ", rejected by " + ", ".join(f"{k} {v}" for k, v in rejected.most_common())
    if kinds:
        why += "; kept by edit: " + ", ".join(f"{k} {v}" for k, v in kinds.most_common())
    return why


def expandable(ctx: Context, recipe: Recipe) -> Recipe:
    """The recipe without the wrap templates that cannot render (reported already), so that
    the rest of it can still be expanded."""
    def good(name: str) -> bool:
        path = next((Path(d) / name for d in recipe.template_dirs if (Path(d) / name).is_file()), None)
        return path is not None and str(path.resolve()) not in ctx.bad_templates

    edits = []
    for e in recipe.edits:
        if e.kind == "wrap":
            keep = tuple(a for a in e.args if good(a))
            if not keep:
                continue
            e = dataclasses.replace(e, args=keep, positions=())
        edits.append(e)
    return dataclasses.replace(recipe, edits=tuple(edits))
