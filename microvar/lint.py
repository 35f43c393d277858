"""`microvar lint`: every problem in a seeds file, its recipes and their wrap templates, found
in one pass and each reported at its place (``FILE:LINE[:COL]``).

What is checked:
  seeds      bad lines (JSON, fields, duplicate ids), markup syntax, unknown fields, odd
             characters (lone surrogates, control and invisible characters)
  recipes    syntax and meaning; after an error the line is set aside and parsing goes on,
             so every bad line is reported; recipes that seeds name are checked too
  templates  Jinja syntax, unknown filters, missing includes, variables a wrap template is
             not given (rendering is strict), rendering each seed that uses it, and how many
             tokens wrapping adds against the recipe's ``allow wrap``
  tokens     (the reference tokenizer only, no model) each marker's cost against the
             allowance, with cheaper spellings; tails against ``allow tail``; alternatives
             that tokenize badly or move more tokens than the step budget; seeds longer than
             the model's context; seeds that expand (as ``--model none`` does) to fewer
             variants than the recipe presents each seed (``repeat``); seeds the tokenizer
             spells in small pieces (a note naming a multilingual model)

Severities: ``error`` (expand would fail, or the thing can never be used: exit 1),
``warning`` (works, but probably not as meant) and ``note`` (information)."""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import re
import tempfile
import traceback
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from rapidfuzz.distance import Levenshtein

from .errors import InputError, location
from .markup import Alt, MarkupSyntaxError, Opt, Swap, parse_markup, render_original
from .recipe import Recipe, load_recipe, parse_recipe_all
from .resources import data_dir
from .seeds import Seed, read_seeds
from .tokens import Candidate, align, check_in_vocab, check_round_trip

SEVERITIES = ("error", "warning", "note")
# what edits.base.render gives a wrap template; anything else is undefined (StrictUndefined)
WRAP_VARIABLES = ("text", "seed_id", "meta")
# symbols that are often one token after a space: candidate markers
_SYMBOLS = ("§", "»", "→", "•", "¶", "※", "▶", "◆", "■", "†", "‡", "<<", ">>", "##", "::", "==", "***")
_DECORATIONS = ("{}", "[{}]", "<{}>", "#{}", "@{}", "{}:", "<<{}>>", "**{}**", "__{}__", "[[{}]]")
_RENDER_REPORTED = 5  # seeds named per template rendering failure
MAX_TOKENS_PER_CHAR = 0.6  # above: a seed in small pieces (measured ranges: _Linter._check_density)
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass
class Problem:
    file: str
    line: int | None
    column: int | None
    severity: str
    code: str
    message: str
    suggestion: str = ""
    context: str = ""

    @property
    def where(self) -> str:
        return location(self.file, self.line, self.column)

    def render(self) -> str:
        out = [f"{self.where}: {self.severity}: {self.message} [{self.code}]"]
        if self.context:
            out.append(self.context)
        if self.suggestion:
            out.append(f"    suggestion: {self.suggestion}")
        return "\n".join(out)

    def to_json(self) -> dict:
        return {"file": self.file, "line": self.line, "column": self.column, "severity": self.severity,
                "code": self.code, "message": self.message, "suggestion": self.suggestion or None,
                "context": self.context or None}


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)

    def count(self, severity: str) -> int:
        return sum(p.severity == severity for p in self.problems)

    @property
    def errors(self) -> int:
        return self.count("error")

    @property
    def warnings(self) -> int:
        return self.count("warning")

    @property
    def notes(self) -> int:
        return self.count("note")

    @property
    def exit_code(self) -> int:
        return 1 if self.errors else 0

    def sorted(self, notes: bool = True) -> list[Problem]:
        shown = [p for p in self.problems if notes or p.severity != "note"]
        return sorted(shown, key=lambda p: (p.file, p.line or 0, p.column or 0))

    def totals(self) -> str:
        def n(k: int, word: str) -> str:
            return f"{k} {word}{'' if k == 1 else 's'}"
        if not self.problems:
            return "no problems found"
        return f"{n(self.errors, 'error')}, {n(self.warnings, 'warning')}, {n(self.notes, 'note')}"

    def lines(self, notes: bool = True) -> list[str]:
        return [p.render() for p in self.sorted(notes)] + [self.totals()]

    def to_json(self, notes: bool = True) -> dict:
        return {"problems": [p.to_json() for p in self.sorted(notes)], "errors": self.errors,
                "warnings": self.warnings, "notes": self.notes}


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


def lint(opts: LintOptions) -> Report:
    """Check seeds, recipes and templates; raise InputError/MicrovarError only when a path
    given on the command line cannot be read at all (the CLI's exit 2)."""
    return _Linter(opts).run()


# ---------------------------------------------------------------- positions in a JSONL line


def string_spans(line: str) -> dict[str, tuple[int, int]]:
    """Raw [start, end) of each top-level string value of a one-line JSON object, by key
    (start is the opening quote)."""
    dec = json.JSONDecoder()
    spans: dict[str, tuple[int, int]] = {}

    def ws(i: int) -> int:
        while i < len(line) and line[i] in " \t\r\n":
            i += 1
        return i

    i = ws(0)
    if line[i:i + 1] != "{":
        return spans
    i += 1
    while True:
        i = ws(i)
        try:
            key, j = dec.raw_decode(line, i)
        except ValueError:
            return spans
        j = ws(j)
        if line[j:j + 1] != ":":
            return spans
        j = ws(j + 1)
        try:
            value, k = dec.raw_decode(line, j)
        except ValueError:
            return spans
        if isinstance(key, str) and isinstance(value, str):
            spans[key] = (j, k)
        i = ws(k)
        if line[i:i + 1] != ",":
            return spans
        i += 1


def raw_index(line: str, quote: int, k: int) -> int:
    """Index in ``line`` of character ``k`` of the JSON string literal opening at ``quote``."""
    i, n = quote + 1, 0
    while i < len(line) and n < k:
        if line[i] == "\\" and line[i + 1:i + 2] == "u":
            cp = int(line[i + 2:i + 6] or "0", 16)
            i += 6
            if 0xD800 <= cp < 0xDC00 and line[i:i + 2] == "\\u" and 0xDC00 <= int(line[i + 2:i + 6] or "0", 16) < 0xE000:
                i += 6  # a surrogate pair decodes to one character
        elif line[i] == "\\":
            i += 2
        else:
            i += 1
        n += 1
    return i


def _underline(text: str, index: int, length: int = 1) -> str:
    """The line of ``text`` holding ``index``, with carets under ``length`` characters."""
    start = text.rfind("\n", 0, index) + 1
    end = text.find("\n", index)
    end = len(text) if end < 0 else end
    length = max(1, min(length, end - index))
    return f"    {text[start:end]}\n    {' ' * (index - start)}{'^' * length}"


def _markup_index(markup: str, line: int, column: int) -> int:
    lines = markup.split("\n")
    return sum(len(x) + 1 for x in lines[:line - 1]) + column - 1


def markup_positions(markup: str) -> dict[str, list]:
    """Where the markup's spans are (indices in the markup string, escapes included), in the
    order of the parsed parts: per alternatives the (start, length) of each option; per
    optional or swappable span the index of its ``{?`` / ``{~``."""
    from lark import Tree

    from .markup import _parser

    out: dict[str, list] = {"alternatives": [], "optional": [], "swappable": []}
    for node in _parser().parse(markup).children:
        if isinstance(node, Tree) and node.data in out:
            if node.data == "alternatives":
                out["alternatives"].append([(tok.start_pos, len(tok)) for tok in node.children])
            else:
                out[node.data].append(node.children[0].start_pos - 2)
    return out


# ---------------------------------------------------------------- odd characters


def odd_characters(text: str) -> list[tuple[int, str, str]]:
    """(index, severity, what) of characters a tokenizer cannot take or a reader cannot see."""
    found = []
    for i, ch in enumerate(text):
        cp = ord(ch)
        if 0xD800 <= cp <= 0xDFFF:
            found.append((i, "error", (f"lone surrogate U+{cp:04X} (not valid Unicode: the tokenizer cannot "
                                       "take it, and expand stops)")))
        elif ch in "\t\n\r":
            continue
        elif unicodedata.category(ch) == "Cc":
            found.append((i, "warning", f"control character U+{cp:04X}"))
        elif unicodedata.category(ch) in ("Cf", "Zl", "Zp") or ch == "\ufffd":
            name = unicodedata.name(ch, "")
            what = "replacement character U+FFFD (the text was probably decoded wrongly)" if ch == "\ufffd" \
                else f"invisible character U+{cp:04X}{f' {name}' if name else ''}"
            found.append((i, "warning", what))
    return found


# ---------------------------------------------------------------- the linter


class _Linter:
    def __init__(self, opts: LintOptions) -> None:
        self.opts = opts
        self.report = Report()
        self.seeds_name = opts.seeds
        self.raw_lines: list[str] = []
        self.recipes: dict[str, Recipe | None] = {}       # by resolved file (or shipped name)
        self.by_ref: dict[str, Recipe | None] = {}        # by reference as written
        self.missing: dict[str, str] = {}                  # reference -> why it cannot be loaded
        self.tk = None
        self.bad_templates: set[str] = set()
        self._cost: dict[str, int] = {}

    def add(self, file: str, line: int | None, column: int | None, severity: str, code: str, message: str,
            suggestion: str = "", context: str = "") -> None:
        def shown(s: str) -> str:  # a lone surrogate cannot be printed: show U+FFFD in its place
            return _SURROGATE.sub("\ufffd", s)

        self.report.problems.append(Problem(file, line, column, severity, code, shown(message), shown(suggestion),
                                            shown(context)))

    def has_error(self, line: int) -> bool:
        return any(p.severity == "error" and p.file == self.seeds_name and p.line == line
                   for p in self.report.problems)

    # ------------------------------------------------------------ driver

    def run(self) -> Report:
        from .tokens import load_tokenizer

        for ref in self.opts.recipes:
            if not Path(ref).is_file() and not (data_dir("recipes") / f"{ref}.recipe").is_file():
                raise InputError(ref, None, "no such recipe file, and not a shipped recipe name")
        template_paths = [self._find_template(t) for t in self.opts.templates]
        seeds = self._read_seeds()
        given = [self._recipe(ref, None) for ref in self.opts.recipes or ["default"]]
        default = given[0]
        seeds_dir = Path(self.opts.seeds).parent if self.opts.seeds != "-" else None
        chosen: list[tuple[Seed, Recipe | None]] = []
        for s in seeds:
            if s.recipe:
                chosen.append((s, self._recipe(s.recipe, seeds_dir, s)))
            else:
                chosen.append((s, default))
        self.tk, _ = load_tokenizer(self.opts.model, self.opts.tokenizer)
        used = list({id(r): r for r in [*given, *(r for _, r in chosen)] if r is not None}.values())
        for r in used:
            self._check_markers(r)
            self._check_tails(r)
        templates = self._templates(used, template_paths)
        self.bad_templates = {k for k, e in templates.items() if not e["ok"]}
        for s, r in chosen:
            self._check_seed(s, r)
        self._render_templates(templates, chosen)
        return self.report

    # ------------------------------------------------------------ seeds

    def _read_seeds(self) -> list[Seed]:
        path = self.opts.seeds
        if path == "-":
            import sys

            data = sys.stdin.buffer.read()
            with tempfile.NamedTemporaryFile(suffix=".jsonl", delete=False) as tmp:
                tmp.write(data)
            path, self.seeds_name = tmp.name, "<stdin>"
        else:
            data = Path(path).read_bytes() if Path(path).is_file() else b""
        self.raw_lines = [x.removesuffix(b"\r").decode("utf-8", "replace")
                          for x in data.removeprefix(b"\xef\xbb\xbf").split(b"\n")]
        quiet = logging.getLogger("microvar.seeds")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # unknown fields become problems here, not log lines
        try:
            sf = read_seeds(path, skip_invalid=True)
        except InputError as e:
            if e.line is None:  # no such file, a directory: nothing to lint
                raise
            self.add(self.seeds_name, e.line, e.column, "error", "seed", e.message, context=e.context)
            return []
        finally:
            quiet.setLevel(level)
            if self.seeds_name == "<stdin>":
                Path(path).unlink(missing_ok=True)
        for w in sf.warnings:
            m = re.match(r"^.*:(\d+): warning: (.*)$", w, re.DOTALL)
            if m:
                self.add(self.seeds_name, int(m.group(1)), None, "warning", "seed-field", m.group(2))
        for bad in sf.bad:
            self._bad_line(bad.line, bad.raw, bad.error)
        for s in sf.seeds:
            s.file = self.seeds_name
            self._seed_characters(s)
        return sf.seeds

    def _bad_line(self, lineno: int, raw: str, err: InputError) -> None:
        try:
            obj = json.loads(raw)
        except ValueError:
            obj = None
        if isinstance(obj, dict) and isinstance(obj.get("markup"), str) and "text" not in obj:
            try:
                parse_markup(obj["markup"])
            except MarkupSyntaxError as e:
                index = _markup_index(obj["markup"], e.line, e.column)
                where = f"markup line {e.line}, column {e.column}" if "\n" in obj["markup"] \
                    else f"markup column {e.column}"
                self.add(self.seeds_name, lineno, self._column(lineno, "markup", index), "error",
                         "markup", f"{where}: {e.message}", context=e.context)
                return
        column = err.column
        m = re.search(r"\(column (\d+)\)$", err.message)
        if column is None and m:
            column = int(m.group(1))
        self.add(self.seeds_name, lineno, column, "error", "seed", err.message, context=err.context)

    def _column(self, lineno: int, key: str, index: int) -> int | None:
        """1-based column in the seeds file of character ``index`` of the string value of ``key``."""
        if not 0 < lineno <= len(self.raw_lines):
            return None
        line = self.raw_lines[lineno - 1]
        span = string_spans(line).get(key)
        if span is None:
            return None
        return raw_index(line, span[0], index) + 1

    def _seed_characters(self, s: Seed) -> None:
        key = "text" if s.parts is None else "markup"
        value = s.text
        if s.parts is not None:
            obj = self._line_object(s.line)
            value = obj.get("markup", s.text) if obj else s.text
        for field_name, text in ((key, value), ("continuation", s.continuation or "")):
            for index, severity, what in odd_characters(text):
                article = "an" if what[0] in "aeiou" else "a"
                self.add(self.seeds_name, s.line, self._column(s.line, field_name, index), severity, "character",
                         f"the {field_name} of seed {s.id!r} has {article} {what}", context=_underline(text, index))

    def _line_object(self, lineno: int) -> dict | None:
        try:
            obj = json.loads(self.raw_lines[lineno - 1])
        except (ValueError, IndexError):
            return None
        return obj if isinstance(obj, dict) else None

    # ------------------------------------------------------------ recipes

    def _recipe(self, ref: str, relative_to: Path | None, seed: Seed | None = None) -> Recipe | None:
        if ref in self.missing and seed is not None:
            self._missing_recipe(seed, ref, self.missing[ref])
        if ref in self.by_ref:
            return self.by_ref[ref]
        candidates = [Path(ref)]
        if relative_to is not None and not Path(ref).is_absolute():
            candidates.insert(0, relative_to / ref)
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            try:
                recipe = load_recipe(ref)  # a shipped recipe name
            except InputError as e:
                if seed is None:
                    raise
                self.missing[ref] = e.message
                self._missing_recipe(seed, ref, e.message)
                recipe = None
            self.by_ref[ref] = recipe
            return recipe
        key = str(path.resolve())
        if key not in self.recipes:
            self.recipes[key] = self._parse_recipe_file(path)
        self.by_ref[ref] = self.recipes[key]
        return self.recipes[key]

    def _missing_recipe(self, seed: Seed, ref: str, why: str) -> None:
        self.add(self.seeds_name, seed.line, self._column(seed.line, "recipe", 0), "error", "recipe",
                 f"seed {seed.id!r} names recipe {ref!r}: {why}")

    def _parse_recipe_file(self, path: Path) -> Recipe | None:
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as e:
            self.add(str(path), None, None, "error", "recipe", f"recipe is not valid UTF-8 ({e.reason} at byte {e.start})")
            return None
        recipe, errors = parse_recipe_all(text, str(path))
        for e in errors:
            self.add(e.file, e.line, e.column, "error", "recipe", e.message, context=e.context)
        return recipe

    def _statement(self, recipe: Recipe, word: str, needle: str | None = None) -> tuple[int | None, int | None]:
        """Line and column of the last ``word`` statement of a recipe (of ``needle`` in it)."""
        found: tuple[int | None, int | None] = (None, None)
        for k, line in enumerate(recipe.text.split("\n"), start=1):
            if re.match(rf"\s*{word}\b", line) and (needle is None or needle in line):
                col = line.find(needle) if needle else len(line) - len(line.lstrip())
                found = (k, col + 1)
        return found

    def cost(self, s: str) -> int:
        """Tokens of ``s`` inserted after a space, as expand counts a marker."""
        if s not in self._cost:
            self._cost[s] = len(self.tk.encode([" " + s])[0])
        return self._cost[s]

    def _pieces(self, s: str) -> str:
        ids = self.tk.encode([" " + s])[0]
        pieces = self.tk.decode([[i] for i in ids])
        if any("\ufffd" in p for p in pieces):
            pieces = self.tk.tokens(ids)
        return " ".join(repr(p) for p in pieces)

    def _check_markers(self, recipe: Recipe) -> None:
        from .edits.base import closing

        spec = recipe.edit("mark")
        if spec is None:
            return
        modes = spec.args or ("prefix",)
        allowance = recipe.marker_tokens
        for marker in recipe.markers:
            line, col = self._statement(recipe, "markers", json.dumps(marker, ensure_ascii=False))
            prefix, close = self.cost(marker), self.cost(closing(marker))
            over = []
            if "prefix" in modes and prefix > allowance:
                over.append(f"as a prefix it costs {prefix} > {allowance}")
            if "wrap" in modes and prefix + close > 2 * allowance:
                over.append(f"wrapping with {closing(marker)!r} costs {prefix + close} > {2 * allowance}")
            what = f"marker {marker!r} costs {prefix} token{'s' if prefix != 1 else ''} ({self._pieces(marker)})"
            if "wrap" in modes and closing(marker) != marker:
                what += f", its closing {closing(marker)!r} {close}"
            cheaper = self.cheaper_spellings(marker, prefix, set(recipe.markers))
            if over:
                self.add(recipe.source, line, col, "error", "marker-cost",
                         f"{what}: over the allowance of {allowance} per marker ({'; '.join(over)}), so every "
                         "`mark` with it is rejected (check marker_cost)",
                         cheaper or f"raise the allowance: `markers ... max {max(prefix, close)} tokens`")
            elif prefix > 1:
                self.add(recipe.source, line, col, "note", "marker-cost",
                         f"{what}; allowance {allowance} per marker (a marker counts as one step whatever it costs)",
                         cheaper)

    def cheaper_spellings(self, marker: str, now: int, taken: set[str]) -> str:
        """Spellings of a marker that cost fewer tokens (after a space): single tokens first."""
        word = re.sub(r"\W+", "", marker)
        found: dict[str, int] = {}

        def consider(s: str) -> None:
            if s and s != marker and s not in taken and s not in found:
                n = self.cost(s)
                text = " " + s
                if n < now and self.tk.decode([self.tk.encode([text])[0]])[0] == text:
                    found[s] = n

        if word:
            for form in dict.fromkeys([word.upper(), word.capitalize(), word.lower()]):
                for d in _DECORATIONS:
                    consider(d.format(form))
            low = word.lower()
            vocab = self.tk.backend.get_vocab(with_added_tokens=False)
            hits = [i for t, i in vocab.items() if low in t.lower()]
            for s in self.tk.decode([[i] for i in hits[:2000]]):
                if "\ufffd" not in s:
                    consider(s.strip())
        symbols = [s for s in _SYMBOLS if s not in taken and s != marker and self.cost(s) == 1] if now > 1 else []
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

    def _check_tails(self, recipe: Recipe) -> None:
        limit = recipe.step_limit("tail")
        for spec in recipe.edits:
            if spec.kind != "tail":
                continue
            for t in spec.args:
                n = self.cost(t)
                if n > limit:
                    line, col = self._statement(recipe, "edit", json.dumps(t, ensure_ascii=False)[:-1])
                    self.add(recipe.source, line, col, "warning", "tail-cost",
                             f"tail {t!r} adds {n} tokens, over the allowance `allow tail <= {limit}`: variants "
                             "with it are rejected by the step check",
                             f"`allow tail <= {n}`, or a shorter tail")

    # ------------------------------------------------------------ templates

    def _find_template(self, name: str) -> Path:
        path = Path(name)
        if path.is_file():
            return path
        shipped = data_dir("templates") / name
        if shipped.is_file():
            return shipped
        raise InputError(name, None, f"no such template (also looked in {data_dir('templates')})")

    def _templates(self, recipes: list[Recipe], extra: list[Path]) -> dict[str, dict]:
        """Every wrap template of the recipes plus those named on the command line, checked:
        key (resolved path) -> {path, dirs, ok, uses: [(recipe, name)]}."""
        out: dict[str, dict] = {}
        for r in recipes:
            for spec in r.edits:
                if spec.kind != "wrap":
                    continue
                for name, (line, col) in zip(spec.args, spec.positions or [(spec.line, None)] * len(spec.args)):
                    path = next((Path(d) / name for d in r.template_dirs if (Path(d) / name).is_file()), None)
                    if path is None:
                        continue  # the recipe's own error says so
                    key = str(path.resolve())
                    entry = out.setdefault(key, {"path": path, "dirs": r.template_dirs, "uses": []})
                    entry["uses"].append((r, name, line, col))
        for path in extra:
            key = str(path.resolve())
            out.setdefault(key, {"path": path, "dirs": (str(path.parent), str(data_dir("templates"))), "uses": []})
        for entry in out.values():
            entry["ok"] = self._check_template(entry["path"], entry["dirs"])
        return out

    def _check_template(self, path: Path, dirs: tuple[str, ...]) -> bool:
        from jinja2 import TemplateNotFound, TemplateSyntaxError, meta, nodes
        from jinja2.exceptions import TemplateAssertionError

        from .edits.base import _environment

        name = str(path)
        try:
            source = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            self.add(name, None, None, "error", "template", f"template is not valid UTF-8 ({e.reason} at byte {e.start})")
            return False
        lines = source.split("\n")
        env = _environment(tuple(dirs))

        def context(lineno: int | None, col: int | None = None, length: int = 1) -> str:
            if not lineno or not 0 < lineno <= len(lines):
                return ""
            shown = f"    {lines[lineno - 1]}"
            return shown + (f"\n    {' ' * (col - 1)}{'^' * length}" if col else "")

        try:
            ast = env.parse(source, name=path.name, filename=name)
        except TemplateSyntaxError as e:
            self.add(name, e.lineno, None, "error", "template", f"Jinja syntax: {e.message}", context=context(e.lineno))
            return False
        try:
            undeclared = meta.find_undeclared_variables(ast)
        except TemplateAssertionError as e:
            self.add(name, e.lineno, None, "error", "template", f"Jinja: {e.message}", context=context(e.lineno))
            return False
        ok = True
        for var in sorted(undeclared - set(WRAP_VARIABLES) - set(env.globals)):
            node = next((n for n in ast.find_all(nodes.Name) if n.name == var and n.ctx == "load"), None)
            lineno = node.lineno if node is not None else None
            col = None
            if lineno and 0 < lineno <= len(lines):
                m = re.search(rf"(?<![\w.]){re.escape(var)}\b", lines[lineno - 1])
                col = m.start() + 1 if m else None
            close = difflib.get_close_matches(var, WRAP_VARIABLES, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            self.add(name, lineno, col, "error", "template-undefined",
                     f"undefined variable {var!r}: a wrap template is given only {', '.join(WRAP_VARIABLES)}, and "
                     "rendering is strict (expand stops at the first variant wrapped with it)",
                     f"{hint}a seed's own fields come in as meta: {{{{ meta.{var} }}}} with \"meta\": "
                     f"{{\"{var}\": ...}} on the seed's line", context(lineno, col, len(var)))
            ok = False
        for ref in meta.find_referenced_templates(ast):
            if ref is None:
                continue
            try:
                env.get_template(ref)
            except TemplateNotFound:
                lineno = next((k for k, x in enumerate(lines, start=1) if ref in x), None)
                self.add(name, lineno, None, "error", "template", f"includes {ref!r}, which is not found "
                         f"(looked in {', '.join(dirs)})", context=context(lineno))
                ok = False
            except TemplateSyntaxError as e:
                self.add(e.filename or ref, e.lineno, None, "error", "template", f"Jinja syntax: {e.message}")
                ok = False
        return ok

    def _render_templates(self, templates: dict[str, dict], chosen: list[tuple[Seed, Recipe | None]]) -> None:
        """Render each compiled template with the seeds whose recipe wraps with it (the
        command line's with every seed), as expand would; and measure what wrapping adds."""
        from .edits.base import render_template

        for entry in templates.values():
            if not entry["ok"]:
                continue
            path, name = entry["path"], str(entry["path"])
            recipes = {id(r): r for r, *_ in entry["uses"]}
            users = [(s, r) for s, r in chosen if r is not None and (id(r) in recipes or not entry["uses"])]
            failures: dict[str, list] = {}
            over: dict[int, list] = {}    # recipe id -> [(seed, added tokens)]
            for s, r in users:
                if any(ch[1] == "error" for ch in odd_characters(s.text)):
                    continue
                try:
                    out = render_template(path.name, tuple(entry["dirs"]) if not entry["uses"]
                                          else r.template_dirs, text=s.text, seed_id=s.id, meta=s.meta)
                except Exception as e:  # noqa: BLE001 (jinja2 and sandbox errors of many kinds: all a failing template)
                    line = next((f.lineno for f in reversed(traceback.extract_tb(e.__traceback__))
                                 if f.filename == name or f.filename.endswith("/" + path.name)), None)
                    failures.setdefault(f"{type(e).__name__}: {e}", []).append((s, line))
                    continue
                if id(r) in recipes:
                    a, b = self.tk.encode([s.text, out])
                    added = Levenshtein.distance(a, b)
                    if added > r.step_limit("wrap"):
                        over.setdefault(id(r), []).append((s, added))
            for why, seeds in failures.items():
                named = ", ".join(f"{s.id!r} ({self.seeds_name}:{s.line})" for s, _ in seeds[:_RENDER_REPORTED])
                more = f" and {len(seeds) - _RENDER_REPORTED} more" if len(seeds) > _RENDER_REPORTED else ""
                self.add(name, seeds[0][1], None, "error", "template-render",
                         f"rendering fails for {len(seeds)} of {len(users)} seeds ({named}{more}): {why}",
                         "give those seeds the meta the template reads, or guard it: "
                         "{% if meta.key is defined %}…{% endif %}")
            for rid, seeds in over.items():
                r = recipes[rid]
                uses = [u for u in entry["uses"] if u[0] is r]
                _, tname, line, col = uses[0]
                worst = max(n for _, n in seeds)
                self.add(r.source, line, col, "warning", "wrap-cost",
                         f"wrapping with {tname!r} moves up to {worst} tokens, over `allow wrap <= "
                         f"{r.step_limit('wrap')}` for {len(seeds)} of {sum(1 for _, x in users if x is r)} seeds "
                         f"(e.g. {seeds[0][0].id!r}): those wraps are rejected by the step check",
                         f"`allow wrap <= {worst}`, or a template that adds fewer tokens")

    # ------------------------------------------------------------ seeds against the tokenizer

    def _check_seed(self, s: Seed, recipe: Recipe | None) -> None:
        tk = self.tk
        if any(sev == "error" for _, sev, _ in odd_characters(s.text)):
            return  # reported; the tokenizer cannot take it
        ids = tk.encode([s.text])[0]
        if tk.context is not None and len(ids) > tk.context:
            how = "run expand with --split-long (cuts it at lines and sentences)" if s.parts is None \
                else "split the markup into several seeds (--split-long splits plain-text seeds only)"
            self.add(self.seeds_name, s.line, None, "error", "seed-too-long",
                     f"seed {s.id!r} is {len(ids)} tokens, longer than the model's context of {tk.context} "
                     f"({tk.name}): it is rejected whole", how)
            return
        root = Candidate(s.text, ids, tk.decode([ids])[0], None, "identity")
        align(root)
        why = check_in_vocab(root, tk, recipe) or check_round_trip(root, tk, recipe)
        if why:
            self.add(self.seeds_name, s.line, None, "error", "seed-tokens",
                     f"seed {s.id!r} fails the token checks whole: {why}")
            return
        self._check_density(s, ids)
        if s.continuation and tk.context is not None and not any(sev == "error" for _, sev, _ in
                                                                 odd_characters(s.continuation)):
            n = len(tk.encode([s.text + s.continuation])[0])
            if n > tk.context:
                self.add(self.seeds_name, s.line, self._column(s.line, "continuation", 0), "warning",
                         "seed-too-long", f"seed {s.id!r} with its continuation is {n} tokens, longer than the "
                         f"model's context of {tk.context}: the last grow steps are rejected")
        if s.parts is not None:
            self._check_markup(s, recipe, ids)
        if recipe is None:
            return
        if s.continuation and not (recipe.edit("grow")):
            self.add(self.seeds_name, s.line, self._column(s.line, "continuation", 0), "warning", "unused-markup",
                     f"seed {s.id!r} has a continuation, but recipe {recipe.name!r} has no `edit grow "
                     "continuation`: it is never revealed")
        if self.opts.expand and not self.has_error(s.line):  # errors first: they change what it expands to
            self._check_expansion(s, recipe)

    def _check_density(self, s: Seed, ids: list[int]) -> None:
        """A note for a seed the tokenizer spells in small pieces (more than MAX_TOKENS_PER_CHAR
        tokens a character): its words cost several tokens each, so word-level edits rarely
        fit the step budget. SmolLM2 spells Russian at 0.73-0.84 tokens a character, English
        and code at 0.18-0.50; Gemma 3 270M spells the same Russian at 0.25-0.46."""
        if not s.text or len(ids) / len(s.text) <= MAX_TOKENS_PER_CHAR:
            return
        from .model import GEMMA_INSTALL, GEMMA_NAME

        hint = "" if self.opts.model == GEMMA_NAME else (
            f"a multilingual reference model spells it in fewer tokens: --model {GEMMA_NAME} ({GEMMA_INSTALL})")
        self.add(self.seeds_name, s.line, None, "note", "token-density",
                 f"seed {s.id!r} is {len(ids)} tokens for {len(s.text)} characters "
                 f"({len(ids) / len(s.text):.2f} a character) under {self.tk.name}: its words are several tokens "
                 "each, so word-level edits rarely fit the step budget", hint)

    def _check_markup(self, s: Seed, recipe: Recipe | None, root_ids: list[int]) -> None:
        """Alternatives (tokenization, step size, repeats) and markup the recipe never uses."""
        tk = self.tk
        obj = self._line_object(s.line) or {}
        markup = obj.get("markup")
        if not isinstance(markup, str):
            return
        pos = markup_positions(markup)  # it parsed once already, in read_seeds

        def col(index: int) -> int | None:
            return self._column(s.line, "markup", index)

        alts = [(i, p) for i, p in enumerate(s.parts) if isinstance(p, Alt)]
        limit = designer_limit(recipe, "substitute") if recipe is not None else None
        for (i, alt), starts in zip(alts, pos["alternatives"]):
            before, after = render_original(s.parts[:i]), render_original(s.parts[i + 1:])
            orig_n = len(tk.encode([alt.options[0]])[0]) if alt.options[0] else 0
            seen: dict[str, int] = {alt.options[0]: 0}
            for j, option in enumerate(alt.options[1:], start=1):
                where, length = starts[j] if j < len(starts) else starts[0]
                ctx = _underline(markup, where, length)
                if option in seen:
                    self.add(self.seeds_name, s.line, col(where), "warning", "alt-duplicate",
                             f"alternative {option!r} repeats option {seen[option] + 1} of the same {{…|…}}",
                             context=ctx)
                    continue
                seen[option] = j
                if any(sev == "error" for _, sev, _ in odd_characters(option)):
                    continue  # reported with the seed's characters
                text = before + option + after
                ids = tk.encode([text])[0]
                c = Candidate(text, ids, tk.decode([ids])[0], root_ids, "substitute")
                align(c)
                why = check_in_vocab(c, tk, recipe) or check_round_trip(c, tk, recipe)
                if why:
                    self.add(self.seeds_name, s.line, col(where), "error", "alt-tokens",
                             f"alternative {option!r} tokenizes badly: {why}; every swap to it is rejected",
                             "write it without that text", ctx)
                    continue
                if recipe is not None and recipe.edit("swap_alternatives") and c.distance > limit:
                    n = len(tk.encode([option])[0])
                    self.add(self.seeds_name, s.line, col(where), "warning", "alt-step",
                             f"swap {alt.options[0]!r}→{option!r} moves {c.distance} tokens ({alt.options[0]!r} is "
                             f"{orig_n}, {option!r} {n} on their own), over the step budget {limit} of stage "
                             "substitute: the swap alone is rejected by the step check",
                             f"an alternative closer in tokens, or `step tokens <= {c.distance}` (or `allow "
                             f"designer <= {c.distance}`, which counts against `jumps`) in the recipe", ctx)
        if recipe is None:
            return
        if recipe.edit("reorder"):
            self._check_swaps(s, recipe, root_ids, markup, pos["swappable"])
        drop = recipe.edit("drop")
        if drop and "optional" in drop.args:
            self._check_drops(s, markup, pos["optional"])
        unused = []
        if alts and not recipe.edit("swap_alternatives"):
            unused.append(("alternatives {…|…} are never swapped", "edit swap alternatives",
                           pos["alternatives"][0][0][0] - 1 if pos["alternatives"] else 0))
        drop = recipe.edit("drop")
        if any(isinstance(p, Opt) for p in s.parts) and not (drop and "optional" in drop.args):
            unused.append(("optional spans {?…} are never dropped", "edit drop optional",
                           pos["optional"][0] if pos["optional"] else 0))
        if any(isinstance(p, Swap) for p in s.parts) and not recipe.edit("reorder"):
            unused.append(("swappable spans {~…} never trade places", "edit reorder",
                           pos["swappable"][0] if pos["swappable"] else 0))
        for what, edit, index in unused:
            self.add(self.seeds_name, s.line, col(index), "warning", "unused-markup",
                     f"{what}: recipe {recipe.name!r} has no `{edit}`", f"add `{edit}` to the recipe",
                     _underline(markup, index))

    def _check_swaps(self, s: Seed, recipe: Recipe, root_ids: list[int], markup: str, starts: list[int]) -> None:
        """Each pair of swappable spans {~…} whose swap alone moves more tokens than the
        reorder step budget (or `allow designer`): the step check rejects it, as with
        alternatives (alt-step)."""
        tk = self.tk
        limit = designer_limit(recipe, "reorder")
        spans = [i for i, p in enumerate(s.parts) if isinstance(p, Swap)]
        for n, i in enumerate(spans):
            for j in spans[n + 1:]:
                a, b = s.parts[i].text, s.parts[j].text
                parts = list(s.parts)
                parts[i], parts[j] = Swap(b), Swap(a)
                text = render_original(parts)
                if any(sev == "error" for _, sev, _ in odd_characters(text)):
                    continue  # reported with the seed's characters
                ids = tk.encode([text])[0]
                c = Candidate(text, ids, tk.decode([ids])[0], root_ids, "reorder")
                align(c)
                if c.distance > limit:
                    where = starts[n] if n < len(starts) else 0
                    self.add(self.seeds_name, s.line, self._column(s.line, "markup", where), "warning", "swap-step",
                             f"swap {a!r}↔{b!r} moves {c.distance} tokens, over the step budget {limit} of stage "
                             "reorder: the pair is rejected by the step check",
                             f"spans closer in tokens, or `allow designer <= {c.distance}` (which counts against "
                             "`jumps`) in the recipe", _underline(markup, where, 2))

    def _check_drops(self, s: Seed, markup: str, starts: list[int]) -> None:
        """Each optional span whose drop leaves a double space or a space before punctuation
        that the seed did not have (expansion closes the spaces around a dropped span, so
        this names what that could not mend)."""
        from .edits.base import Doc, body, spacing_faults

        doc = Doc(s.id, list(s.parts))
        before = spacing_faults(body(doc, doc.initial))
        for k, where in zip(range(len(doc.opts)), starts):
            after = spacing_faults(body(doc, dataclasses.replace(doc.initial, omit=frozenset({k}))))
            new = [name for name in after if after[name] > before[name]]
            if new:
                self.add(self.seeds_name, s.line, self._column(s.line, "markup", where), "warning", "opt-space",
                         f"dropping {{?{doc.opts[k].text}}} leaves {' and '.join(new)}",
                         "put the span's spaces inside it: `word{? span} word`", _underline(markup, where, 2))

    def _expandable(self, recipe: Recipe) -> Recipe:
        """The recipe without the wrap templates that cannot render (reported already), so that
        the rest of it can still be expanded."""
        def good(name: str) -> bool:
            path = next((Path(d) / name for d in recipe.template_dirs if (Path(d) / name).is_file()), None)
            return path is not None and str(path.resolve()) not in self.bad_templates

        edits = []
        for e in recipe.edits:
            if e.kind == "wrap":
                keep = tuple(a for a in e.args if good(a))
                if not keep:
                    continue
                e = dataclasses.replace(e, args=keep, positions=())
            edits.append(e)
        return dataclasses.replace(recipe, edits=tuple(edits))

    def _check_expansion(self, s: Seed, recipe: Recipe) -> None:
        from .expand import Expander

        if not hasattr(self, "_expander"):
            self._expander = Expander(self.tk, seed=self.opts.seed, variants=self.opts.variants)
        try:
            result = self._expander.expand(s, self._expandable(recipe))
        except Exception:  # noqa: BLE001 (a template that fails for this seed only: reported with the templates)
            plain = dataclasses.replace(recipe, edits=tuple(e for e in recipe.edits if e.kind != "wrap"))
            result = self._expander.expand(s, plain)
        if not result.kept:
            detail = result.rejects[0].detail if result.rejects else "no variant"
            self.add(self.seeds_name, s.line, None, "error", "seed-tokens", f"seed {s.id!r}: {detail}")
            return
        cap = self.opts.variants or recipe.variants
        want = min(self.opts.min_variants or recipe.repeat, cap)
        n = len(result.kept)
        if n >= want:
            return
        rejected = Counter({k.split(":", 1)[1]: v for k, v in result.counts.items() if k.startswith("rejected:")})
        kinds = Counter(v.kinds[-1] for v in result.kept[1:])
        why = f"{result.counts['made']} made"
        if rejected:
            why += ", rejected by " + ", ".join(f"{k} {v}" for k, v in rejected.most_common())
        if kinds:
            why += "; kept by edit: " + ", ".join(f"{k} {v}" for k, v in kinds.most_common())
        skipped = [e.kind for e in recipe.edits if e.kind in ("swap_model", "grow_model")]
        model = f" (without the model's {', '.join(skipped)})" if skipped else ""
        source = "--min-variants" if self.opts.min_variants else f"the recipe's `repeat {recipe.repeat}`"
        self.add(self.seeds_name, s.line, None, "warning", "few-variants",
                 f"seed {s.id!r} expands to {n} variant{'s' if n != 1 else ''} (the seed included) with recipe "
                 f"{recipe.name!r}{model}, fewer than {want} ({source}): {why}",
                 "give it more to vary: alternatives {a|b}, optional spans {?…}, swappable spans {~…}, "
                 "anchors [[…]], or a continuation")


def designer_limit(recipe: Recipe, stage: str) -> int:
    """The most tokens a designer-written edit of this stage may move: the stage's step
    limit, or the recipe's `allow designer` when that is larger."""
    return max(recipe.step_limit(stage), recipe.designer or 0)
