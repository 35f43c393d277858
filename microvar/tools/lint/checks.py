"""Every check of `microvar lint`, registered here in the order they run, and the run.

A check is a small function ``check(ctx, subject)`` that yields ``Problem``s. A gate is a
check whose error stops the checks after it for that subject (a seed longer than the
context is not tokenized further; a template that does not parse is not rendered). To
add a check: write the function in its family's module, list it here, add a test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from ...dsl.recipe import Recipe
from ...errors import InputError
from ...expand.seeds import Seed
from ...resources import data_dir
from . import expansion, markup, recipes, seeds, templates, tokens
from .context import Context, LintOptions, SeedCase
from .problems import Problem, Report

Check = Callable[..., Iterator[Problem]]

RECIPE: tuple[Check, ...] = (tokens.marker_cost, tokens.tail_cost)                 # (ctx, recipe)
TEMPLATE_GATES: tuple[Check, ...] = (templates.parse,)                             # (ctx, template)
TEMPLATE: tuple[Check, ...] = (templates.undefined_variables, templates.includes)  # (ctx, template)
SEED_GATES: tuple[Check, ...] = (seeds.too_long, seeds.token_checks)               # (ctx, SeedCase)
SEED: tuple[Check, ...] = (                                                        # (ctx, SeedCase)
    seeds.density, seeds.marker_text, seeds.continuation_too_long, markup.alternatives, markup.swaps,
    markup.drops, markup.unused, seeds.unused_continuation, expansion.few_variants,
)
TEMPLATE_SEEDS: tuple[Check, ...] = (templates.rendering,)                         # (ctx, template, [(seed, recipe)])


def lint(opts: LintOptions) -> Report:
    """Check seeds, recipes and templates; raise InputError/MicrovarError only when a path
    given on the command line cannot be read at all (the CLI's exit 2)."""
    from ...model.load import load_tokenizer

    for ref in opts.recipes:
        if not Path(ref).is_file() and not (data_dir("recipes") / f"{ref}.recipe").is_file():
            raise InputError(ref, None, "no such recipe file, and not a shipped recipe name")
    extra = [templates.find(t) for t in opts.templates]
    ctx = Context(opts, "<stdin>" if opts.seeds == "-" else opts.seeds)
    chosen = _seeds_and_recipes(ctx)
    ctx.tk, _ = load_tokenizer(opts.model, opts.tokenizer)
    used = list({id(r): r for r in [*ctx.given, *(r for _, r in chosen)] if r is not None}.values())
    for r in used:
        run(ctx, (), RECIPE, r)
    found = templates.collect(used, extra)
    for t in found.values():
        t.ok = run(ctx, TEMPLATE_GATES, TEMPLATE, t)
    ctx.bad_templates = {key for key, t in found.items() if not t.ok}
    for s, r in chosen:
        _check_seed(ctx, s, r)
    for t in found.values():
        if t.ok:
            run(ctx, (), TEMPLATE_SEEDS, t, chosen)
    return ctx.report


def run(ctx: Context, gates: tuple[Check, ...], checks: tuple[Check, ...], *subject) -> bool:
    """The gates, then (when none found an error) the checks; whether no error was found."""
    for gate in gates:
        if ctx.add_all(gate(ctx, *subject)):
            return False
    return not sum(ctx.add_all(check(ctx, *subject)) for check in checks)


def _seeds_and_recipes(ctx: Context) -> list[tuple[Seed, Recipe | None]]:
    """The seeds read, each with its recipe: the one it names, else the first --recipe."""
    read = seeds.read(ctx)
    ctx.given = [recipes.recipe(ctx, ref, None) for ref in ctx.opts.recipes or ["default"]]
    seeds_dir = Path(ctx.opts.seeds).parent if ctx.opts.seeds != "-" else None
    return [(s, recipes.recipe(ctx, s.recipe, seeds_dir, s) if s.recipe else ctx.given[0]) for s in read]


def _check_seed(ctx: Context, s: Seed, recipe: Recipe | None) -> None:
    if seeds.untokenizable(s.text):
        return  # reported when read
    written = (ctx.line_object(s.line) or {}).get("markup") if s.parts is not None else None
    case = SeedCase(s, recipe, ctx.tk.encode([s.text])[0], written if isinstance(written, str) else None)
    run(ctx, SEED_GATES, SEED, case)
