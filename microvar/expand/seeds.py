"""Read and validate seeds from JSONL (a path or '-' for stdin). Every problem names
FILE:LINE; with ``skip_invalid`` bad lines become rejects instead of errors."""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..dsl.markup import MarkupSyntaxError, Part, parse_markup, render_original
from ..errors import InputError, InputErrors

log = logging.getLogger(__name__)

FIELDS = {"id", "text", "markup", "continuation", "recipe", "meta"}


@dataclass
class Seed:
    id: str
    text: str                      # what the seed says (markup rendered with first options)
    parts: list[Part] | None       # parsed markup, or None for a literal text seed
    continuation: str | None = None
    recipe: str | None = None
    meta: dict = field(default_factory=dict)
    file: str = ""
    line: int = 0


@dataclass
class BadLine:
    """A line that could not become a seed; goes to the rejects under --skip-invalid."""
    file: str
    line: int
    seed_id: str
    raw: str
    error: InputError


@dataclass
class SeedFile:
    seeds: list[Seed]
    bad: list[BadLine]
    warnings: list[str]
    sha256: str
    name: str


def _read_bytes(path: str) -> tuple[bytes, str]:
    if path == "-":
        return sys.stdin.buffer.read(), "<stdin>"
    p = Path(path)
    if not p.exists():
        raise InputError(path, None, "no such file")
    if p.is_dir():
        raise InputError(path, None, "is a directory, expected a JSONL file of seeds")
    return p.read_bytes(), path


def read_seeds(path: str, skip_invalid: bool = False) -> SeedFile:
    """Parse a JSONL seed file. Raise InputErrors listing every bad line unless skip_invalid."""
    data, name = _read_bytes(path)
    digest = hashlib.sha256(data).hexdigest()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    seeds: list[Seed] = []
    bad: list[BadLine] = []
    warnings: list[str] = []
    first_line: dict[str, int] = {}
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        raw = raw.removesuffix(b"\r")
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            err = InputError(name, lineno, f"invalid UTF-8 ({e.reason} at byte {e.start} of the line)")
            bad.append(BadLine(name, lineno, f"line:{lineno}", raw.decode("utf-8", "replace"), err))
            continue
        try:
            seed = _parse_line(line, name, lineno, warnings)
        except InputError as err:
            bad.append(BadLine(name, lineno, _guess_id(line, lineno), line, err))
            continue
        if seed.id in first_line:
            err = InputError(name, lineno, f"duplicate id {seed.id!r} (first used on line {first_line[seed.id]})")
            bad.append(BadLine(name, lineno, seed.id, line, err))
            continue
        first_line[seed.id] = lineno
        seeds.append(seed)
    if not seeds and not bad:
        raise InputError(name, 1, "empty file: no seeds found (one JSON object per line expected)")
    if bad and not skip_invalid:
        raise InputErrors([b.error for b in bad])
    for w in warnings:
        log.warning(w)
    return SeedFile(seeds, bad, warnings, digest, name)


def _guess_id(line: str, lineno: int) -> str:
    try:
        obj = json.loads(line)
        if isinstance(obj, dict) and isinstance(obj.get("id"), str) and obj["id"]:
            return obj["id"]
    except ValueError:
        pass
    return f"line:{lineno}"


def _parse_line(line: str, name: str, lineno: int, warnings: list[str]) -> Seed:
    def fail(msg: str, column: int | None = None, context: str = "") -> InputError:
        return InputError(name, lineno, msg, column, context)

    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise fail(f"malformed JSON: {e.msg} (column {e.colno})") from None
    if not isinstance(obj, dict):
        raise fail(f"expected a JSON object, got {type(obj).__name__}")
    for key in obj:
        if key not in FIELDS:
            warnings.append(f"{name}:{lineno}: warning: unknown field {key!r} ignored "
                            f"(known: {', '.join(sorted(FIELDS))})")
    sid = obj.get("id")
    if sid is None:
        raise fail("missing 'id'")
    if not isinstance(sid, str) or not sid.strip():
        raise fail(f"'id' must be a non-empty string, got {json.dumps(sid, ensure_ascii=False)}")
    has_text, has_markup = "text" in obj, "markup" in obj
    if has_text and has_markup:
        raise fail("give exactly one of 'text' or 'markup', not both")
    if not has_text and not has_markup:
        raise fail("missing 'text' or 'markup'")
    key = "text" if has_text else "markup"
    value = obj[key]
    if not isinstance(value, str):
        raise fail(f"{key!r} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise fail(f"{key!r} is empty")
    _check_unicode(fail, key, value)
    parts = None
    text = value
    if has_markup:
        try:
            parts = parse_markup(value)
        except MarkupSyntaxError as e:
            raise fail(f"markup line {e.line}, column {e.column}: {e.message}", None, e.context) from None
        text = render_original(parts)
    cont = obj.get("continuation")
    if cont is not None and (not isinstance(cont, str) or not cont):
        raise fail("'continuation' must be a non-empty string")
    if cont is not None:
        _check_unicode(fail, "continuation", cont)
    recipe = obj.get("recipe")
    if recipe is not None and (not isinstance(recipe, str) or not recipe.strip()):
        raise fail("'recipe' must be a non-empty string (a recipe name or file)")
    meta = obj.get("meta", {})
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise fail("'meta' must be a JSON object")
    return Seed(sid, text, parts, cont, recipe, meta, name, lineno)


def _check_unicode(fail, key: str, value: str) -> None:
    """JSON can spell a lone surrogate (\\ud800) that is not text: no tokenizer takes it."""
    for i, ch in enumerate(value):
        if "\ud800" <= ch <= "\udfff":
            raise fail(f"{key!r} has a lone surrogate \\u{ord(ch):04x} at character {i}: not valid Unicode text")
