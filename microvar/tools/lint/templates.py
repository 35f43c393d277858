"""Wrap templates: Jinja syntax, unknown filters, missing includes, variables a wrap
template is not given (rendering is strict); then rendering each seed that uses it, as
expand would, and how many tokens wrapping adds against the recipe's ``allow wrap``."""

from __future__ import annotations

import difflib
import re
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rapidfuzz.distance import Levenshtein

from ...dsl.recipe import Recipe
from ...errors import InputError
from ...expand.seeds import Seed
from ...resources import data_dir
from .context import Context
from .problems import Problem
from .seeds import untokenizable

# what edits.base.render gives a wrap template; anything else is undefined (StrictUndefined)
WRAP_VARIABLES = ("text", "seed_id", "meta")
_RENDER_REPORTED = 5  # seeds named per template rendering failure


@dataclass
class Template:
    """A template to check: named by recipes (``uses``: recipe, name, line, column of each
    mention) or on the command line (no uses: rendered with every seed)."""
    path: Path
    dirs: tuple[str, ...]
    uses: list[tuple] = field(default_factory=list)
    ok: bool = True
    lines: list[str] = field(default_factory=list)
    env: object = None
    ast: object = None
    undeclared: set[str] = field(default_factory=set)

    @property
    def name(self) -> str:
        return str(self.path)

    def context(self, lineno: int | None, col: int | None = None, length: int = 1) -> str:
        """Line ``lineno`` of the template, with carets under ``col`` when given."""
        if not lineno or not 0 < lineno <= len(self.lines):
            return ""
        shown = f"    {self.lines[lineno - 1]}"
        return shown + (f"\n    {' ' * (col - 1)}{'^' * length}" if col else "")


def find(name: str) -> Path:
    """A template named on the command line: a file, or a shipped template."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = data_dir("templates") / name
    if shipped.is_file():
        return shipped
    raise InputError(name, None, f"no such template (also looked in {data_dir('templates')})")


def collect(recipes: list[Recipe], extra: list[Path]) -> dict[str, Template]:
    """Every wrap template of the recipes plus those named on the command line, by resolved path."""
    out: dict[str, Template] = {}
    for r in recipes:
        for spec in r.edits:
            if spec.kind != "wrap":
                continue
            for name, (line, col) in zip(spec.args, spec.positions or [(spec.line, None)] * len(spec.args)):
                path = next((Path(d) / name for d in r.template_dirs if (Path(d) / name).is_file()), None)
                if path is None:
                    continue  # the recipe's own error says so
                entry = out.setdefault(str(path.resolve()), Template(path, tuple(r.template_dirs)))
                entry.uses.append((r, name, line, col))
    for path in extra:
        out.setdefault(str(path.resolve()), Template(path, (str(path.parent), str(data_dir("templates")))))
    return out


def parse(ctx: Context, t: Template) -> Iterator[Problem]:
    """Reading, Jinja syntax, and what the compiler finds (an unknown filter)."""
    from jinja2 import TemplateSyntaxError, meta
    from jinja2.exceptions import TemplateAssertionError

    from ...expand.edits.base import _environment

    try:
        source = t.path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        yield Problem(t.name, None, None, "error", "template",
                      f"template is not valid UTF-8 ({e.reason} at byte {e.start})")
        return
    t.lines = source.split("\n")
    t.env = _environment(t.dirs)
    try:
        t.ast = t.env.parse(source, name=t.path.name, filename=t.name)
    except TemplateSyntaxError as e:
        yield Problem(t.name, e.lineno, None, "error", "template", f"Jinja syntax: {e.message}",
                      context=t.context(e.lineno))
        return
    try:
        t.undeclared = meta.find_undeclared_variables(t.ast)
    except TemplateAssertionError as e:
        yield Problem(t.name, e.lineno, None, "error", "template", f"Jinja: {e.message}", context=t.context(e.lineno))


def undefined_variables(ctx: Context, t: Template) -> Iterator[Problem]:
    from jinja2 import nodes

    for var in sorted(t.undeclared - set(WRAP_VARIABLES) - set(t.env.globals)):
        node = next((n for n in t.ast.find_all(nodes.Name) if n.name == var and n.ctx == "load"), None)
        lineno = node.lineno if node is not None else None
        col = None
        if lineno and 0 < lineno <= len(t.lines):
            m = re.search(rf"(?<![\w.]){re.escape(var)}\b", t.lines[lineno - 1])
            col = m.start() + 1 if m else None
        close = difflib.get_close_matches(var, WRAP_VARIABLES, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        yield Problem(t.name, lineno, col, "error", "template-undefined",
                      f"undefined variable {var!r}: a wrap template is given only {', '.join(WRAP_VARIABLES)}, and "
                      "rendering is strict (expand stops at the first variant wrapped with it)",
                      f"{hint}a seed's own fields come in as meta: {{{{ meta.{var} }}}} with \"meta\": "
                      f"{{\"{var}\": ...}} on the seed's line", t.context(lineno, col, len(var)))


def includes(ctx: Context, t: Template) -> Iterator[Problem]:
    from jinja2 import TemplateNotFound, TemplateSyntaxError, meta

    for ref in meta.find_referenced_templates(t.ast):
        if ref is None:
            continue
        try:
            t.env.get_template(ref)
        except TemplateNotFound:
            lineno = next((k for k, x in enumerate(t.lines, start=1) if ref in x), None)
            yield Problem(t.name, lineno, None, "error", "template", f"includes {ref!r}, which is not found "
                          f"(looked in {', '.join(t.dirs)})", context=t.context(lineno))
        except TemplateSyntaxError as e:
            yield Problem(e.filename or ref, e.lineno, None, "error", "template", f"Jinja syntax: {e.message}")


def rendering(ctx: Context, t: Template, chosen: list[tuple[Seed, Recipe | None]]) -> Iterator[Problem]:
    """Render the template with the seeds whose recipe wraps with it (the command line's
    with every seed), as expand would; and measure what wrapping adds."""
    recipes = {id(r): r for r, *_ in t.uses}
    users = [(s, r) for s, r in chosen if r is not None and (id(r) in recipes or not t.uses)]
    failures: dict[str, list] = {}
    over: dict[int, list] = {}    # recipe id -> [(seed, added tokens)]
    for s, r in users:
        if untokenizable(s.text):
            continue
        try:
            out = _render(t, r, s)
        except Exception as e:  # noqa: BLE001 (jinja2 and sandbox errors of many kinds: all a failing template)
            line = next((f.lineno for f in reversed(traceback.extract_tb(e.__traceback__))
                         if f.filename == t.name or f.filename.endswith("/" + t.path.name)), None)
            failures.setdefault(f"{type(e).__name__}: {e}", []).append((s, line))
            continue
        if id(r) in recipes:
            a, b = ctx.tk.encode([s.text, out])
            added = Levenshtein.distance(a, b)
            if added > r.step_limit("wrap"):
                over.setdefault(id(r), []).append((s, added))
    for why, seeds in failures.items():
        named = ", ".join(f"{s.id!r} ({ctx.seeds_name}:{s.line})" for s, _ in seeds[:_RENDER_REPORTED])
        more = f" and {len(seeds) - _RENDER_REPORTED} more" if len(seeds) > _RENDER_REPORTED else ""
        yield Problem(t.name, seeds[0][1], None, "error", "template-render",
                      f"rendering fails for {len(seeds)} of {len(users)} seeds ({named}{more}): {why}",
                      "give those seeds the meta the template reads, or guard it: "
                      "{% if meta.key is defined %}…{% endif %}")
    for rid, seeds in over.items():
        yield _wrap_cost(t, recipes[rid], seeds, sum(1 for _, x in users if x is recipes[rid]))


def _render(t: Template, r: Recipe, s: Seed) -> str:
    from ...expand.edits.base import render_template

    dirs = t.dirs if not t.uses else r.template_dirs
    return render_template(t.path.name, tuple(dirs), text=s.text, seed_id=s.id, meta=s.meta)


def _wrap_cost(t: Template, r: Recipe, seeds: list[tuple[Seed, int]], users: int) -> Problem:
    _, name, line, col = next(u for u in t.uses if u[0] is r)
    worst = max(n for _, n in seeds)
    return Problem(r.source, line, col, "warning", "wrap-cost",
                   f"wrapping with {name!r} moves up to {worst} tokens, over `allow wrap <= "
                   f"{r.step_limit('wrap')}` for {len(seeds)} of {users} seeds "
                   f"(e.g. {seeds[0][0].id!r}): those wraps are rejected by the step check",
                   f"`allow wrap <= {worst}`, or a template that adds fewer tokens")
