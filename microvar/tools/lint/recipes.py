"""Recipes for `microvar lint`: loading each one once (a file, relative to the seeds file
when a seed names it, or a shipped name), every syntax and meaning error reported (after
an error the line is set aside and parsing goes on), and where a statement is in a recipe's
text, for the checks that point into it."""

from __future__ import annotations

import re
from pathlib import Path

from ...dsl.recipe import Recipe, load_recipe, parse_recipe_all
from ...errors import InputError
from ...expand.seeds import Seed
from .context import Context
from .problems import Problem


def recipe(ctx: Context, ref: str, relative_to: Path | None, seed: Seed | None = None) -> Recipe | None:
    """The recipe ``ref`` names (None when it cannot be used); a seed naming one that is
    missing gets the error. Without a seed (a --recipe), a missing recipe raises."""
    if ref in ctx.missing and seed is not None:
        _missing(ctx, seed, ref, ctx.missing[ref])
    if ref in ctx.by_ref:
        return ctx.by_ref[ref]
    candidates = [Path(ref)]
    if relative_to is not None and not Path(ref).is_absolute():
        candidates.insert(0, relative_to / ref)
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        try:
            found = load_recipe(ref)  # a shipped recipe name
        except InputError as e:
            if seed is None:
                raise
            ctx.missing[ref] = e.message
            _missing(ctx, seed, ref, e.message)
            found = None
        ctx.by_ref[ref] = found
        return found
    key = str(path.resolve())
    if key not in ctx.recipes:
        ctx.recipes[key] = _parse_file(ctx, path)
    ctx.by_ref[ref] = ctx.recipes[key]
    return ctx.recipes[key]


def _missing(ctx: Context, seed: Seed, ref: str, why: str) -> None:
    ctx.add(ctx.at(seed.line, ctx.column(seed.line, "recipe", 0), "error", "recipe",
                   f"seed {seed.id!r} names recipe {ref!r}: {why}"))


def _parse_file(ctx: Context, path: Path) -> Recipe | None:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        ctx.add(Problem(str(path), None, None, "error", "recipe",
                        f"recipe is not valid UTF-8 ({e.reason} at byte {e.start})"))
        return None
    found, errors = parse_recipe_all(text, str(path))
    for e in errors:
        ctx.add(Problem(e.file, e.line, e.column, "error", "recipe", e.message, context=e.context))
    return found


def statement(recipe: Recipe, word: str, needle: str | None = None) -> tuple[int | None, int | None]:
    """Line and column of the last ``word`` statement of a recipe (of ``needle`` in it)."""
    found: tuple[int | None, int | None] = (None, None)
    for k, line in enumerate(recipe.text.split("\n"), start=1):
        if re.match(rf"\s*{word}\b", line) and (needle is None or needle in line):
            col = line.find(needle) if needle else len(line) - len(line.lstrip())
            found = (k, col + 1)
    return found


def designer_limit(recipe: Recipe, stage: str) -> int:
    """The most tokens a designer-written edit of this stage may move: the stage's step
    limit, or the recipe's `allow designer` when that is larger."""
    return max(recipe.step_limit(stage), recipe.designer or 0)
