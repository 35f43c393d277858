"""Recipe files -> Recipe. The language lives in grammars/recipe.lark; a lark Transformer
turns statements into one plain dataclass, and every error carries file, line and column.

Over 400 lines: the grammar's transformer, the Recipe dataclass and the checks of its
statements read each other's fields; apart, each part would need the other two."""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from lark import Lark, Token, Transformer, Tree, UnexpectedInput, v_args
from lark.exceptions import VisitError

from ..errors import InputError, InputErrors
from ..resources import data_dir, read_text
from .markup import caret_context, describe_expected

STAGES = ("identity", "mark", "tail", "substitute", "reorder", "truncate", "wrap", "grow")
PAIR_METRICS = ("surprisal", "surprisal_max", "ripple_kl", "ripple_kl_max", "delta_nll", "top1")
# against the parent (plain names), against the seed (seed_*), and the variant's own mean NLL
METRICS = PAIR_METRICS + tuple(f"seed_{m}" for m in PAIR_METRICS) + ("nll",)
PHASE_DEFAULT = {"foundation": 1, "domain": 2, "context": 3}
LEVELS_DEFAULT = {"identity": "foundation", "mark": "foundation", "tail": "foundation",
                  "substitute": "domain", "reorder": "domain", "truncate": "domain",
                  "wrap": "domain", "grow": "context"}


@dataclass(frozen=True)
class EditSpec:
    kind: str            # identity, mark, tail, drop, wrap, swap_alternatives, swap_model, reorder, grow, grow_model
    args: tuple = ()
    line: int = 0
    positions: tuple = field(default=(), compare=False)   # (line, column) of each argument


# metrics in nats that a limit may state relative to the seed's own mean NLL per token
RELATIVE_METRICS = tuple(m for m in METRICS if "top1" not in m)


@dataclass(frozen=True)
class Limit:
    metric: str
    op: str               # "<=" or ">="
    value: float
    relative: bool = False   # "3x": value times the seed's own mean NLL per token (its root's nll)

    def bound(self, seed_nll: float | None = None) -> float | None:
        """The limit in nats for a seed (None: a relative limit with no seed NLL to scale)."""
        if not self.relative:
            return self.value
        return self.value * seed_nll if seed_nll else None

    def violated(self, x: float, seed_nll: float | None = None) -> bool:
        b = self.bound(seed_nll)
        if b is None:
            return False
        return x > b if self.op == "<=" else x < b

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.value:g}{'x' if self.relative else ''}"


_LIMIT = re.compile(r"^\s*([a-z_0-9]+)\s*(<=|>=)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(x?)\s*$")


def parse_limits(text: str) -> tuple[Limit, ...]:
    """``"surprisal<=6, top1>=0.9"`` (the recipe's budget syntax) from the command line."""
    limits = []
    for piece in text.split(","):
        m = _LIMIT.match(piece)
        if not m:
            raise ValueError(f"{piece.strip()!r} is not METRIC <= NUMBER or METRIC >= NUMBER")
        if m.group(1) not in METRICS:
            raise ValueError(f"unknown metric {m.group(1)!r}; metrics are {', '.join(METRICS)}")
        if m.group(4) and m.group(1) not in RELATIVE_METRICS:
            raise ValueError(f"{m.group(1)} is a share, not nats: it cannot be relative to the seed's NLL (drop the x)")
        limits.append(Limit(m.group(1), m.group(2), float(m.group(3)), bool(m.group(4))))
    return tuple(limits)


@dataclass(frozen=True)
class Route:
    stages: tuple[str, ...]
    level: str
    phase: int | None = None


@dataclass
class Recipe:
    name: str = "default"
    markers: tuple[str, ...] = ("[HIGHLIGHT]", "[ANCHOR]", "[SHIFT]")
    marker_tokens: int = 8
    anchors: int = 2
    edits: tuple[EditSpec, ...] = ()
    compose: int = 2
    variants: int = 64
    step: int = 2
    allow: dict[str, int] = field(default_factory=dict)
    designer: int | None = None    # `allow designer <= N`: designer-written edits may move N tokens, as jumps
    jumps: int = 10                # % of a seed's variant cap that may use an allowance
    share: dict[str, int] = field(default_factory=dict)   # stage -> most % of a seed's variants
    budget: tuple[Limit, ...] = ()
    stages: tuple[str, ...] = STAGES
    repeat: int = 24
    routes: tuple[Route, ...] = ()
    schedule: str | None = None
    license: str | None = None
    source: str = "<default>"
    text: str = ""
    template_dirs: tuple[str, ...] = ()

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def step_limit(self, stage: str) -> int:
        """Largest token step a variant of this stage may take from its parent."""
        return self.allow.get(stage, self.step)

    def edit(self, kind: str) -> EditSpec | None:
        return next((e for e in self.edits if e.kind == kind), None)

    def route_of(self, stage: str) -> tuple[str, int]:
        """(LoRA level, phase) of a stage: the first route naming it, else the defaults."""
        for r in self.routes:
            if stage in r.stages:
                return r.level, r.phase if r.phase is not None else PHASE_DEFAULT.get(r.level, 1)
        level = LEVELS_DEFAULT[stage]
        return level, PHASE_DEFAULT[level]


@functools.cache
def _parser() -> Lark:
    return Lark(read_text("grammars", "recipe.lark"), parser="lalr", propagate_positions=True)


class _BadString(ValueError):
    def __init__(self, token: Token, reason: str) -> None:
        self.token, self.reason = token, reason


def _unquote(tok: Token) -> str:
    """A recipe string uses JSON's escapes (\\" \\\\ \\n \\t \\uXXXX)."""
    try:
        return json.loads(tok)
    except ValueError as e:
        raise _BadString(tok, f"bad escape in string {tok}: {e.msg}") from None


def _where(tokens) -> tuple:
    return tuple((t.line, t.column) for t in tokens)


class _Statements(Transformer):
    """Turn each statement into (name, value, line, column)."""

    def _pos(self, meta):
        return getattr(meta, "line", 0), getattr(meta, "column", 0)

    @v_args(meta=True)
    def recipe_name(self, meta, items):
        return ("name", str(items[0]), *self._pos(meta))

    @v_args(meta=True)
    def markers(self, meta, items):
        strings = tuple(_unquote(t) for t in items if t.type == "STRING")
        ints = [int(t) for t in items if t.type == "INT"]
        return ("markers", (strings, ints[0] if ints else None), *self._pos(meta))

    @v_args(meta=True)
    def anchors(self, meta, items):
        return ("anchors", int(items[0]), *self._pos(meta))

    @v_args(meta=True)
    def edit(self, meta, items):
        spec: EditSpec = items[0]
        return ("edit", EditSpec(spec.kind, spec.args, meta.line, spec.positions), *self._pos(meta))

    @v_args(meta=True)
    def compose(self, meta, items):
        return ("compose", int(items[0]), items[0].line, items[0].column)

    @v_args(meta=True)
    def variants(self, meta, items):
        return ("variants", int(items[0]), items[0].line, items[0].column)

    @v_args(meta=True)
    def step(self, meta, items):
        return ("step", int(items[0]), *self._pos(meta))

    @v_args(meta=True)
    def allow(self, meta, items):
        return ("allow", items, *self._pos(meta))

    @v_args(meta=True)
    def allowance(self, meta, items):
        return (str(items[0]), int(items[1]), *self._pos(meta))

    @v_args(meta=True)
    def jumps(self, meta, items):
        return ("jumps", int(items[0]), items[0].line, items[0].column)

    @v_args(meta=True)
    def budget(self, meta, items):
        return ("budget", items, *self._pos(meta))

    @v_args(meta=True)
    def limit(self, meta, items):
        return (str(items[0]), str(items[1]), float(items[2]), len(items) > 3, *self._pos(meta))

    @v_args(meta=True)
    def share(self, meta, items):
        return ("share", items, *self._pos(meta))

    @v_args(meta=True)
    def share_cap(self, meta, items):
        return (str(items[0]), int(items[1]), items[0].line, items[0].column)

    @v_args(meta=True)
    def stages(self, meta, items):
        return ("stages", [(str(t), t.line, t.column) for t in items], *self._pos(meta))

    @v_args(meta=True)
    def repeat(self, meta, items):
        return ("repeat", int(items[0]), *self._pos(meta))

    @v_args(meta=True)
    def route(self, meta, items):
        return ("route", items, *self._pos(meta))

    @v_args(meta=True)
    def route_rule(self, meta, items):
        names = [t for t in items if t.type == "NAME"]
        phase = next((int(t) for t in items if t.type == "INT"), None)
        return ([(str(t), t.line, t.column) for t in names[:-1]], str(names[-1]), phase)

    @v_args(meta=True)
    def schedule(self, meta, items):
        return ("schedule", str(items[0]), items[0].line, items[0].column)

    @v_args(meta=True)
    def license(self, meta, items):
        t = items[0]
        return ("license", _unquote(t) if t.type == "STRING" else str(t), *self._pos(meta))

    # edit kinds
    def identity(self, _):
        return EditSpec("identity")

    def mark(self, items):
        modes = tuple(str(t) for t in items) or ("prefix", "wrap")
        return EditSpec("mark", modes)

    def tail(self, items):
        return EditSpec("tail", tuple(_unquote(t) for t in items))

    def drop(self, items):
        return EditSpec("drop", tuple(str(t) for t in items))

    def wrap(self, items):
        return EditSpec("wrap", tuple(_unquote(t) for t in items), positions=_where(items))

    def swap_alternatives(self, _):
        return EditSpec("swap_alternatives")

    def swap_model(self, items):
        return EditSpec("swap_model", (int(items[0]), *(float(t) for t in items[1:])), positions=_where(items))

    def reorder(self, items):
        return EditSpec("reorder", tuple(float(t) for t in items), positions=_where(items))

    def grow(self, items):
        return EditSpec("grow", (int(items[0]), int(items[1])), positions=_where(items))

    def grow_model(self, items):
        return EditSpec("grow_model", (int(items[0]), int(items[1])), positions=_where(items))


def parse_recipe(text: str, filename: str = "<recipe>") -> Recipe:
    """Parse recipe text; raise InputError with file, line, column and a caret."""
    parser = _parser()
    if not text.endswith("\n"):
        text += "\n"
    try:
        tree = parser.parse(text)
    except UnexpectedInput as e:
        expected = set(getattr(e, "expected", None) or getattr(e, "allowed", None) or ())
        token = getattr(e, "token", None)
        if token is not None and token.type in ("$END", "_NL"):
            found = "end of line"
        elif token is not None:
            found = repr(str(token))
        else:
            found = repr(text[e.pos_in_stream:e.pos_in_stream + 1])
        words = describe_expected(parser, expected, {"_NL": "end of line", "STRING": 'a "quoted string"',
                                                     "INT": "a whole number", "NUMBER": "a number",
                                                     "NAME": "a name", "CMP": "'<=' or '>='",
                                                     "MARK_MODE": "'prefix' or 'wrap'",
                                                     "DROP_WHAT": "'last_line' or 'optional'"})
        raise InputError(filename, e.line, f"unexpected {found}; expected {words}", e.column,
                         caret_context(text, e.line, e.column)) from None
    try:
        statements = _Statements().transform(tree)
    except VisitError as e:
        if isinstance(e.orig_exc, _BadString):
            t = e.orig_exc.token
            raise InputError(filename, t.line, e.orig_exc.reason, t.column,
                             caret_context(text, t.line, t.column)) from None
        raise
    items = statements.children if isinstance(statements, Tree) else statements
    return _build(items, text, filename)


def parse_recipe_all(text: str, filename: str) -> tuple[Recipe | None, list[InputError]]:
    """Parse a recipe, collecting every error: after an error its line is set aside (blanked)
    and parsing starts again. Returns the recipe without the bad lines (None if nothing is
    left to parse) and the errors."""
    errors: list[InputError] = []
    lines = text.split("\n")
    for _ in range(len(lines) + 1):
        try:
            recipe = parse_recipe("\n".join(lines), filename)
        except InputError as e:
            errors.append(e)
            if e.line is None or not 0 < e.line <= len(lines) or not lines[e.line - 1].strip():
                return None, errors
            lines[e.line - 1] = ""
            continue
        if errors:
            recipe = replace(recipe, text=text)
        return recipe, errors
    return None, errors


def _build(items: list, text: str, filename: str) -> Recipe:
    r = Recipe(source=filename, text=text, edits=())
    base = Path(filename).parent if filename and not filename.startswith("<") else None
    r.template_dirs = ((str(base),) if base else ()) + (str(data_dir("templates")),)

    def fail(line: int, col: int, msg: str):
        raise InputError(filename, line, msg, col, caret_context(text, line, col))

    edits: list[EditSpec] = []
    stage_names: list[str] | None = None
    for name, value, line, col in items:
        if name == "name":
            r.name = value
        elif name == "markers":
            strings, allowance = value
            if any(not s.strip() for s in strings):
                fail(line, col, "a marker cannot be empty")
            r.markers = strings
            if allowance is not None:
                r.marker_tokens = allowance
        elif name == "anchors":
            r.anchors = value
        elif name == "edit":
            if any(e.kind == value.kind and e.args == value.args for e in edits):
                fail(line, col, f"edit {value.kind} is listed twice")
            if value.kind in ("grow", "grow_model"):
                lo, hi = value.args
                if not 1 <= lo <= hi:
                    line, col = value.positions[0] if value.positions else (line, col)
                    fail(line, col, f"grow step range {lo}..{hi} must satisfy 1 <= low <= high")
            if value.kind == "swap_model" and value.args[0] < 1:
                fail(*(value.positions[0] if value.positions else (line, col)), "swap model top K needs K >= 1")
            if value.kind == "wrap":
                for t, where in zip(value.args, value.positions or [(line, col)] * len(value.args)):
                    if not any((Path(d) / t).is_file() for d in r.template_dirs):
                        fail(*where, f"template {t!r} not found (looked in {', '.join(r.template_dirs)})")
            edits.append(value)
        elif name == "compose":
            if value < 1:
                fail(line, col, "compose up to N needs N >= 1")
            r.compose = value
        elif name == "variants":
            if value < 1:
                fail(line, col, "variants needs at least 1")
            r.variants = value
        elif name == "step":
            r.step = value
        elif name == "allow":
            for stage, n, sl, sc in value:
                if stage == "designer":
                    r.designer = n
                    continue
                if stage not in STAGES:
                    fail(sl, sc, f"unknown stage {stage!r} in allow; stages are {', '.join(STAGES)}, "
                                 "or designer (edits written in the markup)")
                r.allow[stage] = n
        elif name == "jumps":
            if value > 100:
                fail(line, col, "jumps is a percentage: 0 to 100")
            r.jumps = value
        elif name == "budget":
            limits = []
            for metric, op, x, relative, ml, mc in value:
                if metric not in METRICS:
                    fail(ml, mc, f"unknown metric {metric!r}; metrics are {', '.join(METRICS)}")
                if relative and metric not in RELATIVE_METRICS:
                    fail(ml, mc, f"{metric} is a share, not nats: it cannot be relative to the seed's NLL "
                                 "(drop the x)")
                limits.append(Limit(metric, op, x, relative))
            r.budget = tuple(limits)
        elif name == "share":
            for stage, pct, sl, sc in value:
                if stage not in STAGES or stage == "identity":
                    fail(sl, sc, f"unknown stage {stage!r} in share; stages are {', '.join(STAGES[1:])}")
                if not 1 <= pct <= 100:
                    fail(sl, sc, "share is a percentage: 1 to 100")
                r.share[stage] = pct
        elif name == "stages":
            for s, sl, sc in value:
                if s not in STAGES:
                    fail(sl, sc, f"unknown stage {s!r}; stages are {', '.join(STAGES)}")
            stage_names = [s for s, _, _ in value]
        elif name == "repeat":
            r.repeat = value
        elif name == "route":
            routes = []
            for stages, level, phase in value:
                for s, sl, sc in stages:
                    if s not in STAGES:
                        fail(sl, sc, f"unknown stage {s!r} in route; stages are {', '.join(STAGES)}")
                routes.append(Route(tuple(s for s, _, _ in stages), level, phase))
            r.routes = tuple(routes)
        elif name == "schedule":
            if value not in ("blocked", "interleaved", "spaced"):
                fail(line, col, f"unknown schedule {value!r}; use blocked, interleaved or spaced")
            r.schedule = value
        elif name == "license":
            r.license = value
    if stage_names is not None:
        # stages not named keep their default relative order, after the named ones
        r.stages = tuple(stage_names) + tuple(s for s in STAGES if s not in stage_names)
    r.edits = tuple(edits) if edits else (EditSpec("identity"),)
    return r


def load_recipe(ref: str, relative_to: Path | None = None) -> Recipe:
    """A recipe file path, or the name of a shipped recipe (e.g. ``default``)."""
    candidates = [Path(ref)]
    if relative_to is not None and not Path(ref).is_absolute():
        candidates.insert(0, relative_to / ref)
    for path in candidates:
        if path.is_file():
            try:
                text = path.read_text(encoding="utf-8-sig")
            except UnicodeDecodeError as e:
                raise InputError(str(path), None, f"recipe is not valid UTF-8 ({e.reason} at byte {e.start})") from None
            return _parse_reporting_all(text, str(path))
    shipped = data_dir("recipes") / f"{ref}.recipe"
    if shipped.is_file():
        return parse_recipe(shipped.read_text(encoding="utf-8"), f"<shipped>/{shipped.name}")
    names = ", ".join(sorted(p.stem for p in data_dir("recipes").glob("*.recipe")))
    raise InputError(ref, None, f"no such recipe file, and not a shipped recipe name ({names})")


def _parse_reporting_all(text: str, filename: str) -> Recipe:
    """The recipe, or every error in it at once (as lint lists them), not only the first."""
    recipe, errors = parse_recipe_all(text, filename)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise InputErrors(errors)
    return recipe


def default_recipe() -> Recipe:
    return load_recipe("default")
