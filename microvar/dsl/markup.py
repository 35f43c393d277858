"""Seed markup -> parts. The language lives in grammars/markup.lark; this turns its tree
into plain dataclasses and its errors into positioned messages."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from lark import Lark, Transformer, UnexpectedInput

from ..resources import read_text

_ESCAPE = re.compile(r"\\([\s\S])")


@dataclass(frozen=True)
class Lit:
    text: str


@dataclass(frozen=True)
class Anchor:
    text: str


@dataclass(frozen=True)
class Alt:
    options: tuple[str, ...]
    model: bool = False        # proposed by the reference model (swap model), not written in the markup


@dataclass(frozen=True)
class Opt:
    text: str


@dataclass(frozen=True)
class Swap:
    text: str
    group: int = 0


Part = Lit | Anchor | Alt | Opt | Swap


class MarkupSyntaxError(ValueError):
    """A markup error with a 1-based line and column inside the markup string."""

    def __init__(self, message: str, line: int, column: int, context: str) -> None:
        self.message, self.line, self.column, self.context = message, line, column, context
        super().__init__(f"line {line}, column {column}: {message}\n{context}")


def _unescape(s: str) -> str:
    return _ESCAPE.sub(r"\1", s)


class _ToParts(Transformer):
    def start(self, items):
        return merge_literals(items)

    def text(self, items):
        return Lit(_unescape(items[0]))

    def anchor(self, items):
        return Anchor(_unescape(items[0]))

    def alternatives(self, items):
        return Alt(tuple(_unescape(i) for i in items))

    def optional(self, items):
        return Opt(_unescape(items[0]))

    def swappable(self, items):
        return Swap(_unescape(items[0]))


@functools.cache
def _parser() -> Lark:
    return Lark(read_text("grammars", "markup.lark"), parser="lalr", propagate_positions=True)


# What the parser may expect, in words a seed author knows.
_NAMES = {
    "TEXT": "text", "ANCHOR_TEXT": "anchor text", "OPTION": "option text",
    "LSQB": "'[['", "RSQB": "']]'", "LBRACE": "'{'", "RBRACE": "'}'", "VBAR": "'|'",
    "__ANON_0": "'[['", "__ANON_1": "']]'", "$END": "end of markup",
}


def describe_expected(parser: Lark, names: set[str], extra: dict[str, str] | None = None) -> str:
    """Readable list of terminals a lark parser expected."""
    words = []
    for name in sorted(names):
        if extra and name in extra:
            words.append(extra[name])
            continue
        try:
            pattern = parser.get_terminal(name).pattern
            words.append(repr(pattern.value) if pattern.type == "str" else _NAMES.get(name, name))
        except KeyError:
            words.append(_NAMES.get(name, name))
    return ", ".join(dict.fromkeys(words))


def end_position(text: str) -> tuple[int, int]:
    """Line and column one past the end of ``text``."""
    return text.count("\n") + 1, len(text) - (text.rfind("\n") + 1) + 1


def caret_context(text: str, line: int, column: int) -> str:
    lines = text.split("\n")  # lark counts lines by \n only
    shown = lines[line - 1] if 0 < line <= len(lines) else ""
    return f"    {shown}\n    {' ' * (column - 1)}^"


def parse_markup(markup: str) -> list[Part]:
    """Parse seed markup into parts; raise MarkupSyntaxError with line/column on bad input."""
    parser = _parser()
    try:
        tree = parser.parse(markup)
    except UnexpectedInput as e:
        expected = getattr(e, "expected", None) or getattr(e, "allowed", None) or set()
        token = getattr(e, "token", None)
        if token is not None and token.type == "$END":
            found = "end of markup"
        elif token is not None:
            found = repr(_found(str(token), 20))
        else:
            pos = e.pos_in_stream or 0
            found = repr(_found(markup[pos:pos + 2], 1))
        hint = _hint(found, set(expected))
        msg = f"unexpected {found}; expected {describe_expected(parser, set(expected)) or 'nothing'}{hint}"
        line, column = e.line if e.line and e.line > 0 else 1, e.column if e.column and e.column > 0 else 1
        if token is not None and token.type == "$END":
            line, column = end_position(markup)
        raise MarkupSyntaxError(msg, line, column, caret_context(markup, line, column)) from None
    parts = _ToParts().transform(tree)
    check_parts(parts, markup)
    return parts


def _found(s: str, n: int) -> str:
    """What the parser met, as the author wrote it: a two-character marker, one markup
    character, or the start of the text."""
    if s[:2] in ("[[", "]]", "{?", "{~"):
        return s[:2]
    return s[:1] if s[:1] in "{}|" else s[:n]


_IN_ANCHOR = {"ANCHOR_TEXT", "__ANON_1"}   # what only an open [[ expects
_IN_BRACES = {"OPTION", "VBAR", "RBRACE"}           # what only an open {, {? or {~ expects


def _hint(found: str, expected: set[str]) -> str:
    """Why the markup cannot say that, and how to write it as text."""
    in_anchor = bool(expected) and expected <= _IN_ANCHOR
    in_braces = bool(expected & _IN_BRACES)
    if in_anchor and found == "'[['":
        return (" (anchors do not nest: close the first with ]] before opening another; write \\[\\[ "
                "for literal brackets)")
    if in_braces and found in ("'[['", "']]'"):
        return (" (an anchor cannot sit inside {…}: put the [[…]] outside the braces; write \\[\\[ or \\]\\] "
                "for literal brackets)")
    if found == "']]'" and not in_anchor:
        return " (no [[ is open: write \\]\\] for literal brackets)"
    if in_anchor and found in ("'{'", "'{?'", "'{~'"):
        return " ({…} cannot sit inside an anchor: put it outside the [[…]]; write \\{ for a literal brace)"
    if in_anchor and found in ("'}'", "'|'"):
        return " (write \\} or \\| for a literal character)"
    if in_braces and found in ("'{'", "'{?'", "'{~'"):
        return " ({…} spans do not nest: write \\{ for a literal brace)"
    if expected == {"VBAR"}:
        return " (alternatives need at least two options: {orig|alt})"
    if found in ("'}'", "'|'"):
        return " (an empty option? write \\| or \\} for a literal character)"
    return ""


def check_parts(parts: list[Part], markup: str) -> None:
    """Semantic rules the grammar cannot say."""
    for p in parts:
        if isinstance(p, Anchor) and not p.text.strip():
            m = re.search(r"\[\[(?:\\?\s)*\]\]", markup)
            line, col = _locate(markup, m.group(0) if m else "[[")
            raise MarkupSyntaxError("empty anchor [[ ]]", line, col, caret_context(markup, line, col))
    if sum(isinstance(p, Swap) for p in parts) == 1:
        line, col = _locate(markup, "{~")  # the lone swappable span
        raise MarkupSyntaxError("a single {~span} has nothing to swap with: mark at least two", line, col,
                                caret_context(markup, line, col))


def _locate(text: str, needle: str) -> tuple[int, int]:
    pos = text.find(needle)
    before = text[:pos]
    return before.count("\n") + 1, pos - (before.rfind("\n") + 1) + 1


def merge_literals(parts: list[Part]) -> list[Part]:
    out: list[Part] = []
    for p in parts:
        if isinstance(p, Lit) and out and isinstance(out[-1], Lit):
            out[-1] = Lit(out[-1].text + p.text)
        elif not (isinstance(p, Lit) and not p.text):
            out.append(p)
    return out


def render_original(parts: list[Part]) -> str:
    """The text the seed says: first alternative, optional spans kept, swaps in place."""
    out = []
    for p in parts:
        out.append(p.options[0] if isinstance(p, Alt) else p.text)
    return "".join(out)
