"""`microvar lint`'s checks one at a time: each is a function of the shared context and one
subject that yields problems, listed once in the registry."""

from __future__ import annotations

import inspect
import json

from microvar.dsl.recipe import parse_recipe
from microvar.tools.lint import Context, LintOptions, SeedCase, checks, markup as markup_checks, seeds as seed_checks, tokens as token_checks


def context(tmp_path, tk, *lines: dict) -> tuple[Context, list]:
    path = tmp_path / "seeds.jsonl"
    path.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n", encoding="utf-8")
    ctx = Context(LintOptions(str(path)), str(path))
    ctx.tk = tk
    return ctx, seed_checks.read(ctx)


def case(ctx: Context, seed, recipe) -> SeedCase:
    written = (ctx.line_object(seed.line) or {}).get("markup")
    return SeedCase(seed, recipe, ctx.tk.encode([seed.text])[0], written)


def test_every_check_is_registered_once_and_yields():
    listed = [c for group in (checks.RECIPE, checks.TEMPLATE_GATES, checks.TEMPLATE, checks.SEED_GATES, checks.SEED,
                              checks.TEMPLATE_SEEDS) for c in group]
    assert len(listed) == len(set(listed))
    assert all(inspect.isgeneratorfunction(c) for c in listed)


def test_unused_markup_alone(tmp_path, tk):
    ctx, (seed,) = context(tmp_path, tk, {"id": "a", "markup": "The {~cat} and the {~dog} ran."})
    recipe = parse_recipe("recipe r\nedit identity\n", "r.recipe")
    (problem,) = markup_checks.unused(ctx, case(ctx, seed, recipe))
    line = (tmp_path / "seeds.jsonl").read_text(encoding="utf-8").splitlines()[0]
    assert (problem.code, problem.line, problem.column) == ("unused-markup", 1, line.index("{~") + 1)
    assert "edit reorder" in problem.message and not ctx.report.problems   # a check yields; the run adds


def test_tail_cost_alone(tmp_path, tk):
    ctx, _ = context(tmp_path, tk, {"id": "a", "text": "Hi."})
    recipe = parse_recipe('recipe r\nedit identity\nedit tail "→ a long tail of many words:"\n', "r.recipe")
    (problem,) = token_checks.tail_cost(ctx, recipe)
    assert (problem.code, problem.severity, problem.line) == ("tail-cost", "warning", 3)


def test_marker_text_alone(tmp_path, tk):
    ctx, seeds = context(tmp_path, tk, {"id": "lit", "text": "Смотри [ANCHOR] здесь и там."},
                         {"id": "m", "markup": "See [[here]] and [/SHIFT] there.", "continuation": " Then [SHIFT] go."},
                         {"id": "ok", "text": "A [note] in brackets is fine."})
    recipe = parse_recipe('recipe r\nedit identity\nmarkers "[HIGHLIGHT]" "[ANCHOR]" "[SHIFT]" max 8 tokens\n',
                          "r.recipe")
    lines = (tmp_path / "seeds.jsonl").read_text(encoding="utf-8").splitlines()
    (lit,) = seed_checks.marker_text(ctx, case(ctx, seeds[0], recipe))
    assert (lit.code, lit.severity, lit.line, lit.column) == ("marker-text", "warning", 1, lines[0].index("[ANCHOR]") + 1)
    assert "'[ANCHOR]'" in lit.message and "'lit'" in lit.message and "^^^^^^^^" in lit.context
    found = list(seed_checks.marker_text(ctx, case(ctx, seeds[1], recipe)))
    assert [(p.line, p.column) for p in found] == [(2, lines[1].index("[/SHIFT]") + 1), (2, lines[1].index("[SHIFT]") + 1)]
    assert "markup" in found[0].message and "continuation" in found[1].message
    assert not list(seed_checks.marker_text(ctx, case(ctx, seeds[2], recipe)))
