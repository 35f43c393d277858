"""What edits operate on: a seed's parts (Doc) and an immutable variant State, rendered
to text in one canonical order: body (alternatives, optional spans, swaps, marks) ->
drop last line -> grow continuation -> tail -> wrap."""

from __future__ import annotations

import functools
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from jinja2 import FileSystemLoader, StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from ...dsl.markup import Alt, Anchor, Lit, Opt, Part, Swap


@dataclass(frozen=True)
class State:
    alts: tuple[int, ...] = ()                        # chosen option per Alt part
    omit: frozenset[int] = frozenset()                # indices of Opt parts dropped
    order: tuple[int, ...] = ()                       # order[slot] = which Swap span sits in slot
    marks: tuple[tuple[int, str, str], ...] = ()      # (anchor number, marker, "prefix"|"wrap"), sorted
    drop_last: bool = False
    grow: int = 0                                     # continuation tokens revealed
    tail: str | None = None
    wrap: str | None = None


Move = list  # list[tuple[State, str, str]]: chain of (state, label, kind)


@dataclass
class Doc:
    """One seed ready for editing."""
    seed_id: str
    parts: list[Part]
    continuation: str | None = None
    grow_cuts: list[int] = field(default_factory=list)   # char ends of continuation units
    grow_tokens: list[int] = field(default_factory=list)  # tokens revealed through each unit
    template_dirs: tuple[str, ...] = ()
    meta: dict = field(default_factory=dict)
    continuation_source: str = "given"                    # or "model": the advisor's greedy continuation

    def __post_init__(self) -> None:
        self.anchors = [p.text for p in self.parts if isinstance(p, Anchor)]
        self.alts = [p for p in self.parts if isinstance(p, Alt)]
        self.opts = [p for p in self.parts if isinstance(p, Opt)]
        self.swaps = [p for p in self.parts if isinstance(p, Swap)]

    @property
    def initial(self) -> State:
        return State(alts=(0,) * len(self.alts), order=tuple(range(len(self.swaps))))


def closing(marker: str) -> str:
    """[ANCHOR] closes as [/ANCHOR]; a marker without brackets closes as itself."""
    m = re.fullmatch(r"\[(.+)\]", marker)
    return f"[/{m.group(1)}]" if m else marker


def mark_text(text: str, marker: str, mode: str) -> str:
    return f"{marker} {text}" if mode == "prefix" else f"{marker} {text} {closing(marker)}"


def body(doc: Doc, s: State) -> str:
    """The seed's text with the state's alternatives, dropped optional spans, swaps and marks;
    the spaces around a dropped span are closed up (see close_gaps)."""
    out: list[str] = []
    cuts: list[tuple[int, str]] = []   # (offset in the text, the dropped span)
    a = o = w = k = 0
    marks = {m[0]: m for m in s.marks}
    for p in doc.parts:
        if isinstance(p, Lit):
            out.append(p.text)
        elif isinstance(p, Anchor):
            m = marks.get(k)
            out.append(mark_text(p.text, m[1], m[2]) if m else p.text)
            k += 1
        elif isinstance(p, Alt):
            out.append(p.options[s.alts[a]])
            a += 1
        elif isinstance(p, Opt):
            if o in s.omit:
                cuts.append((sum(map(len, out)), p.text))
            else:
                out.append(p.text)
            o += 1
        else:
            out.append(doc.swaps[s.order[w]].text)
            w += 1
    return close_gaps("".join(out), cuts)


# what may not follow a space: closing punctuation (quotes can open as well as close: not here)
CLOSING = frozenset(",.;:!?…)]}»”%。，、！？；：」』）")


def _hspace(ch: str) -> bool:
    """A space within a line (space, tab, no-break space…), not a line break."""
    return ch.isspace() and ch not in "\n\r\f\v\x1c\x1d\x1e\x85\u2028\u2029"


def close_gaps(text: str, cuts: list[tuple[int, str]]) -> str:
    """Close up the spaces a dropped optional span leaves behind, at each cut only, so the
    rest of the text (a code seed's indentation, its alignment) stays as written:
    ``на {?тёплом} подоконнике`` -> ``на подоконнике`` (not a double space), ``спит {?тихо}.``
    -> ``спит.`` (no space before punctuation, a line break or the end), and a span that
    began a line takes the space after it along (``{?Итак,} кот`` -> ``кот``). ``cuts`` are
    (offset, dropped text); they are handled from the last, and an earlier cut inside
    spaces removed for a later one moves to where they were. A span that was a whole line
    (nothing but spaces around it on its line) takes its line along, spaces and one line
    break: ``a\n{?b}\nc`` -> ``a\nc``, not ``a\n\nc``."""
    bound = len(text)
    for at, dropped in sorted(cuts, reverse=True):
        at = min(at, bound)
        start = at
        while start > 0 and _hspace(text[start - 1]):
            start -= 1
        end = at
        while end < len(text) and _hspace(text[end]):
            end += 1
        line_start = start == 0 or text[start - 1] in "\n\r"
        line_end = end == len(text) or text[end] in "\n\r"
        if line_start and line_end and dropped.strip() and (start > 0 or end < len(text)):
            if end < len(text):                               # the line and the break after it
                end += 2 if text[end:end + 2] == "\r\n" else 1
            else:                                             # the last line: the break before it
                start -= 2 if text[start - 2:start] == "\r\n" else 1
            text, at = text[:start] + text[end:], start
            bound = at
            continue
        if start < at and end > at:                          # spaces on both sides: keep the first
            text, end = text[:at] + text[end:], at
        if start < at and not line_start and (end == len(text) or text[end] in CLOSING or text[end] in "\n\r"):
            text, at = text[:start] + text[end:], start      # nothing but the spaces before an end
        elif start == at < end and line_start and "\n" not in dropped and dropped[:1] and not dropped[0].isspace():
            text = text[:at] + text[end:]                     # the span began the line: its space goes too
        bound = at
    return text


_FAULTS = {"a double space": re.compile(r"(?<=\S)[^\S\n\r]{2,}"),   # indentation is not one
           "a space before punctuation": re.compile(r"[^\S\n\r](?=[" + re.escape("".join(sorted(CLOSING))) + "])")}


def spacing_faults(text: str) -> Counter:
    """How many double spaces and spaces before closing punctuation a text holds: a drop that
    adds one (lint compares the text with and without each optional span) reads badly."""
    return Counter({name: len(rx.findall(text)) for name, rx in _FAULTS.items()})


_SENTENCE_END = re.compile(r"[.!?…]+[\"'»”)]*\s+|[。！？]+[」』”）]*\s*")


def drop_last_unit(text: str) -> tuple[str, str] | None:
    """Text without its last line, or its last sentence for one-line text; None if nothing to drop."""
    stripped = text.rstrip()
    if "\n" in stripped:
        head = stripped[: stripped.rfind("\n")].rstrip()
        return (head, "last_line") if head.strip() else None
    ends = [m.end() for m in _SENTENCE_END.finditer(stripped) if m.end() < len(stripped)]
    if not ends:
        return None
    head = stripped[: ends[-1]].rstrip()
    return (head, "last_sentence") if head.strip() else None


@functools.cache
def _environment(dirs: tuple[str, ...]) -> SandboxedEnvironment:
    env = SandboxedEnvironment(loader=FileSystemLoader(list(dirs)), undefined=StrictUndefined,
                               keep_trailing_newline=False, autoescape=False)
    env.filters["json"] = lambda v: json.dumps(v, ensure_ascii=False)
    return env


def render_template(name: str, dirs: tuple[str, ...], **values) -> str:
    return _environment(dirs).get_template(name).render(**values)


_BREAK = re.compile(r"\r\n|\r|\n")


def line_break(text: str) -> str:
    """The line break a text writes: ``\r\n`` (Windows) when most of its breaks are, ``\r``
    when it breaks lines with CR alone, else ``\n`` (also for text of one line)."""
    crlf = text.count("\r\n")
    lf, cr = text.count("\n") - crlf, text.count("\r") - crlf
    if crlf and crlf >= lf and crlf >= cr:
        return "\r\n"
    return "\r" if cr > lf else "\n"


def in_style(added: str, eol: str) -> str:
    """Text an edit adds with each of its line breaks written as ``eol``, the seed's own: a
    tail or a model continuation after Windows text breaks its lines with ``\r\n`` too."""
    return _BREAK.sub(eol, added) if eol != "\n" or "\r" in added else added


def before_tail(doc: Doc, s: State, text: str | None = None) -> str | None:
    """The text a tail goes after: body (``text``, when the caller has it) -> drop last line
    -> grow continuation (None when the state asks for something the seed cannot give)."""
    if text is None:
        text = body(doc, s)
    if s.drop_last:
        dropped = drop_last_unit(text)
        if dropped is None:
            return None
        text = dropped[0]
    if s.grow:
        text += doc.continuation[: doc.grow_cuts[s.grow - 1]]
    return text


def ends_with_tail(text: str, tail: str) -> bool:
    """The text already ends with the tail (``… → summary:``): appending it again would
    write ``→ summary: → summary:``."""
    return bool(tail.strip()) and text.rstrip().endswith(tail.strip())


def render(doc: Doc, s: State) -> str | None:
    """The variant's text, or None when the state asks for something the seed cannot give.
    What an edit adds breaks its lines the way the seed does (``line_break``)."""
    whole = body(doc, s)
    text = before_tail(doc, s, whole)
    if text is None:
        return None
    eol = line_break(whole) if s.tail is not None or s.wrap is not None else "\n"
    if s.tail is not None:
        text += (eol if _BREAK.search(text.strip()) else " ") + in_style(s.tail, eol)
    if s.wrap is not None:
        wrapped = render_template(s.wrap, doc.template_dirs, text=text, seed_id=doc.seed_id, meta=doc.meta)
        # the template's own line breaks in the seed's style, where the text's are all that style
        # (a seed that mixes them keeps the template's as written)
        if eol != "\n" and set(_BREAK.findall(text)) <= {eol}:
            wrapped = _BREAK.sub(eol, wrapped)
        text = wrapped
    return text


# ---------------------------------------------------------------- registry

EditFn = Callable[..., Iterable[Move]]  # (doc, state, args, rng, recipe) -> moves
EDITS: dict[str, EditFn] = {}
STAGE_OF_KIND = {"identity": "identity", "mark": "mark", "tail": "tail", "drop": "truncate",
                 "wrap": "wrap", "swap_alternatives": "substitute", "swap_model": "substitute",
                 "reorder": "reorder", "grow": "grow", "grow_model": "grow"}


def edit(kind: str) -> Callable[[EditFn], EditFn]:
    def register(fn: EditFn) -> EditFn:
        EDITS[kind] = fn
        return fn
    return register


def stage_of(kind: str) -> str:
    return STAGE_OF_KIND[kind]


def with_(s: State, **changes) -> State:
    return replace(s, **changes)
