"""What `microvar lint`'s checks share: the options, the report the problems go into, the
seeds file's raw lines (for columns), the recipes loaded so far, the tokenizer, and what is
worth computing once (token costs, the expander). ``SeedCase`` is one seed as the per-seed
checks see it: with its recipe, its tokens and its markup as written."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property

from ...dsl.recipe import Recipe
from ...expand.seeds import Seed
from .positions import markup_positions, raw_index, string_spans
from .problems import Problem, Report

_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass
class LintOptions:
    seeds: str
    recipes: list[str] = field(default_factory=list)
    templates: list[str] = field(default_factory=list)
    model: str | None = None          # picks the tokenizer and the context; None: the embedded default
    tokenizer: str | None = None
    variants: int | None = None       # the per-seed cap, as expand's --variants
    seed: int = 0
    min_variants: int | None = None   # None: each recipe's `repeat`
    expand: bool = True               # expand every seed to count its variants


@dataclass
class Context:
    opts: LintOptions
    seeds_name: str
    report: Report = field(default_factory=Report)
    raw_lines: list[str] = field(default_factory=list)
    recipes: dict[str, Recipe | None] = field(default_factory=dict)    # by resolved file (or shipped name)
    by_ref: dict[str, Recipe | None] = field(default_factory=dict)     # by reference as written
    missing: dict[str, str] = field(default_factory=dict)              # reference -> why it cannot be loaded
    given: list[Recipe | None] = field(default_factory=list)           # the --recipe ones (or the default)
    tk: object = None
    bad_templates: set[str] = field(default_factory=set)               # resolved paths that cannot render
    _cost: dict[str, int] = field(default_factory=dict)

    def add(self, problem: Problem) -> None:
        def shown(s: str) -> str:  # a lone surrogate cannot be printed: show U+FFFD in its place
            return _SURROGATE.sub("\ufffd", s)

        self.report.problems.append(dataclasses.replace(problem, message=shown(problem.message),
                                                        suggestion=shown(problem.suggestion),
                                                        context=shown(problem.context)))

    def add_all(self, problems: Iterable[Problem]) -> int:
        """Add each problem as it comes; returns how many were errors."""
        errors = 0
        for p in problems:
            self.add(p)
            errors += p.severity == "error"
        return errors

    def at(self, line: int | None, column: int | None, severity: str, code: str, message: str,
           suggestion: str = "", context: str = "") -> Problem:
        """A problem in the seeds file."""
        return Problem(self.seeds_name, line, column, severity, code, message, suggestion, context)

    def has_error(self, line: int) -> bool:
        return any(p.severity == "error" and p.file == self.seeds_name and p.line == line
                   for p in self.report.problems)

    def column(self, lineno: int, key: str, index: int) -> int | None:
        """1-based column in the seeds file of character ``index`` of the string value of ``key``."""
        if not 0 < lineno <= len(self.raw_lines):
            return None
        line = self.raw_lines[lineno - 1]
        span = string_spans(line).get(key)
        if span is None:
            return None
        return raw_index(line, span[0], index) + 1

    def line_object(self, lineno: int) -> dict | None:
        try:
            obj = json.loads(self.raw_lines[lineno - 1])
        except (ValueError, IndexError):
            return None
        return obj if isinstance(obj, dict) else None

    def cost(self, s: str) -> int:
        """Tokens of ``s`` inserted after a space, as expand counts a marker."""
        if s not in self._cost:
            self._cost[s] = len(self.tk.encode([" " + s])[0])
        return self._cost[s]

    def pieces(self, s: str) -> str:
        """The tokens of ``s`` after a space, each quoted."""
        ids = self.tk.encode([" " + s])[0]
        pieces = self.tk.decode([[i] for i in ids])
        if any("\ufffd" in p for p in pieces):
            pieces = self.tk.tokens(ids)
        return " ".join(repr(p) for p in pieces)

    @cached_property
    def expander(self):
        from ...expand.expander import Expander

        return Expander(self.tk, seed=self.opts.seed, variants=self.opts.variants)


@dataclass
class SeedCase:
    seed: Seed
    recipe: Recipe | None
    ids: list[int]              # the seed's tokens
    markup: str | None = None   # as written on its line; None for a plain-text seed

    @cached_property
    def positions(self) -> dict[str, list]:
        return markup_positions(self.markup)
