"""Seed lines: reading the seeds file (bad lines, markup syntax, unknown fields, odd
characters, each at its column), a seed that already spells one of its recipe's markers,
and the checks of a seed against the tokenizer: longer than the model's context, failing
the token checks whole, spelled in small pieces, a continuation never revealed."""

from __future__ import annotations

import json
import logging
import re
import tempfile
import unicodedata
from collections.abc import Iterator
from pathlib import Path

from ...dsl.markup import MarkupSyntaxError, parse_markup
from ...errors import InputError
from ...expand.edits.base import closing
from ...expand.reorder import is_code, prose_ranges
from ...expand.seeds import Seed, read_seeds
from ...expand.tokens import Candidate, align, check_in_vocab, check_round_trip
from ...expand.words import word_ends
from .context import Context, SeedCase
from .positions import markup_index, underline
from .problems import Problem

MAX_TOKENS_PER_CHAR = 0.6  # above: a seed in small pieces (measured ranges: density)


# ---------------------------------------------------------------- reading


def read(ctx: Context) -> list[Seed]:
    """The seeds of ``ctx.opts.seeds`` (``-``: stdin); every bad line, unknown field and odd
    character becomes a problem."""
    path = ctx.opts.seeds
    if path == "-":
        import sys

        data = sys.stdin.buffer.read()
        with tempfile.NamedTemporaryFile(suffix=".jsonl", delete=False) as tmp:
            tmp.write(data)
        path = tmp.name
    else:
        data = Path(path).read_bytes() if Path(path).is_file() else b""
    ctx.raw_lines = [x.removesuffix(b"\r").decode("utf-8", "replace")
                     for x in data.removeprefix(b"\xef\xbb\xbf").split(b"\n")]
    quiet = logging.getLogger(read_seeds.__module__)
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # unknown fields become problems here, not log lines
    try:
        sf = read_seeds(path, skip_invalid=True)
    except InputError as e:
        if e.line is None:  # no such file, a directory: nothing to lint
            raise
        ctx.add(ctx.at(e.line, e.column, "error", "seed", e.message, context=e.context))
        return []
    finally:
        quiet.setLevel(level)
        if ctx.seeds_name == "<stdin>":
            Path(path).unlink(missing_ok=True)
    for w in sf.warnings:
        m = re.match(r"^.*:(\d+): warning: (.*)$", w, re.DOTALL)
        if m:
            ctx.add(ctx.at(int(m.group(1)), None, "warning", "seed-field", m.group(2)))
    for bad in sf.bad:
        ctx.add(_bad_line(ctx, bad.line, bad.raw, bad.error))
    for s in sf.seeds:
        s.file = ctx.seeds_name
        ctx.add_all(_characters(ctx, s))
    return sf.seeds


def _bad_line(ctx: Context, lineno: int, raw: str, err: InputError) -> Problem:
    """A line read_seeds set aside; for markup, the place of the syntax error in it."""
    try:
        obj = json.loads(raw)
    except ValueError:
        obj = None
    if isinstance(obj, dict) and isinstance(obj.get("markup"), str) and "text" not in obj:
        try:
            parse_markup(obj["markup"])
        except MarkupSyntaxError as e:
            index = markup_index(obj["markup"], e.line, e.column)
            where = f"markup line {e.line}, column {e.column}" if "\n" in obj["markup"] \
                else f"markup column {e.column}"
            return ctx.at(lineno, ctx.column(lineno, "markup", index), "error", "markup", f"{where}: {e.message}",
                          context=e.context)
    column = err.column
    m = re.search(r"\(column (\d+)\)$", err.message)
    if column is None and m:
        column = int(m.group(1))
    return ctx.at(lineno, column, "error", "seed", err.message, context=err.context)


def _characters(ctx: Context, s: Seed) -> Iterator[Problem]:
    key = "text" if s.parts is None else "markup"
    value = s.text
    if s.parts is not None:
        obj = ctx.line_object(s.line)
        value = obj.get("markup", s.text) if obj else s.text
    for field_name, text in ((key, value), ("continuation", s.continuation or "")):
        for index, severity, what in odd_characters(text):
            article = "an" if what[0] in "aeiou" else "a"
            yield ctx.at(s.line, ctx.column(s.line, field_name, index), severity, "character",
                         f"the {field_name} of seed {s.id!r} has {article} {what}", context=underline(text, index))


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


def untokenizable(text: str) -> bool:
    """Whether ``text`` holds a character the tokenizer cannot take (reported when read)."""
    return any(severity == "error" for _, severity, _ in odd_characters(text))


# ---------------------------------------------------------------- checks of a seed


def too_long(ctx: Context, case: SeedCase) -> Iterator[Problem]:
    s, tk = case.seed, ctx.tk
    if tk.context is not None and len(case.ids) > tk.context:
        how = "run expand with --split-long (cuts it at lines and sentences)" if s.parts is None \
            else "split the markup into several seeds (--split-long splits plain-text seeds only)"
        yield ctx.at(s.line, None, "error", "seed-too-long",
                     f"seed {s.id!r} is {len(case.ids)} tokens, longer than the model's context of {tk.context} "
                     f"({tk.name}): it is rejected whole", how)


def token_checks(ctx: Context, case: SeedCase) -> Iterator[Problem]:
    s, tk = case.seed, ctx.tk
    root = Candidate(s.text, case.ids, tk.decode([case.ids])[0], None, "identity")
    align(root)
    why = check_in_vocab(root, tk, case.recipe) or check_round_trip(root, tk, case.recipe)
    if why:
        yield ctx.at(s.line, None, "error", "seed-tokens", f"seed {s.id!r} fails the token checks whole: {why}")


def density(ctx: Context, case: SeedCase) -> Iterator[Problem]:
    """A note for a seed the tokenizer spells in small pieces (more than MAX_TOKENS_PER_CHAR
    tokens a character): its words cost several tokens each, so word-level edits rarely
    fit the step budget. SmolLM2 spells Russian at 0.73-0.84 tokens a character, English
    and code at 0.18-0.50; Gemma 3 270M spells the same Russian at 0.25-0.46."""
    s, n = case.seed, len(case.ids)
    if not s.text or n / len(s.text) <= MAX_TOKENS_PER_CHAR:
        return
    from ...model.load import GEMMA_INSTALL, GEMMA_NAME

    hint = "" if ctx.opts.model == GEMMA_NAME else (
        f"a multilingual reference model spells it in fewer tokens: --model {GEMMA_NAME} ({GEMMA_INSTALL})")
    yield ctx.at(s.line, None, "note", "token-density",
                 f"seed {s.id!r} is {n} tokens for {len(s.text)} characters ({n / len(s.text):.2f} a character) "
                 f"under {ctx.tk.name}: its words are several tokens each, so word-level edits rarely fit the step "
                 "budget", hint)


def marker_text(ctx: Context, case: SeedCase) -> Iterator[Problem]:
    """A warning for each of the recipe's markers (or closing forms) the seed's text or
    continuation already spells: the model cannot tell it from a marker ``mark`` inserts,
    and ``mark`` leaves the word inside it and the word it marks alone."""
    s, recipe = case.seed, case.recipe
    if recipe is None:
        return
    key = "text" if s.parts is None else "markup"
    written = case.markup if case.markup is not None else s.text
    continuation = s.continuation or ""
    for field_name, text, value in ((key, s.text, written), ("continuation", continuation, continuation)):
        for marker in dict.fromkeys(m for opening in recipe.markers for m in (opening, closing(opening))):
            if marker and marker in text:
                index = value.find(marker)
                yield ctx.at(s.line, ctx.column(s.line, field_name, index) if index >= 0 else None, "warning",
                             "marker-text",
                             f"the {field_name} of seed {s.id!r} holds {marker!r}, a marker of recipe "
                             f"{recipe.name!r}: the model cannot tell it from a marker `mark` inserts",
                             "reword the seed, or give the recipe markers the seeds do not spell (`markers ...`)",
                             context=underline(value, index, len(marker)) if index >= 0 else "")


def continuation_too_long(ctx: Context, case: SeedCase) -> Iterator[Problem]:
    s, tk = case.seed, ctx.tk
    if not s.continuation or tk.context is None or untokenizable(s.continuation):
        return
    n = len(tk.encode([s.text + s.continuation])[0])
    if n > tk.context:
        yield ctx.at(s.line, ctx.column(s.line, "continuation", 0), "warning", "seed-too-long",
                     f"seed {s.id!r} with its continuation is {n} tokens, longer than the model's context of "
                     f"{tk.context}: the last grow steps are rejected")


def unused_continuation(ctx: Context, case: SeedCase) -> Iterator[Problem]:
    s, recipe = case.seed, case.recipe
    if recipe is None or not s.continuation:
        return
    if not recipe.edit("grow"):
        yield ctx.at(s.line, ctx.column(s.line, "continuation", 0), "warning", "unused-markup",
                     f"seed {s.id!r} has a continuation, but recipe {recipe.name!r} has no `edit grow "
                     "continuation`: it is never revealed")
    elif not word_ends(s.continuation, is_code(s.meta) or not prose_ranges(s.text), closed=True):
        # grow reveals whole words, whole lines in code: a line left inside an open bracket is no row
        yield ctx.at(s.line, ctx.column(s.line, "continuation", 0), "warning", "unused-markup",
                     f"seed {s.id!r}: its continuation (code) ends no line outside the brackets it opens, and "
                     "`grow` reveals code in whole lines: it is never revealed")
