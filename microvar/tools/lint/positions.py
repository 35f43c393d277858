"""Where things are, for `microvar lint` to point at them: columns in a JSONL line (escapes
followed), spans in a seed's markup, and the caret lines shown under a problem."""

from __future__ import annotations

import json


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


def underline(text: str, index: int, length: int = 1) -> str:
    """The line of ``text`` holding ``index``, with carets under ``length`` characters."""
    start = text.rfind("\n", 0, index) + 1
    end = text.find("\n", index)
    end = len(text) if end < 0 else end
    length = max(1, min(length, end - index))
    return f"    {text[start:end]}\n    {' ' * (index - start)}{'^' * length}"


def markup_index(markup: str, line: int, column: int) -> int:
    lines = markup.split("\n")
    return sum(len(x) + 1 for x in lines[:line - 1]) + column - 1


def markup_positions(markup: str) -> dict[str, list]:
    """Where the markup's spans are (indices in the markup string, escapes included), in the
    order of the parsed parts: per alternatives the (start, length) of each option; per
    optional or swappable span the index of its ``{?`` / ``{~``."""
    from lark import Tree

    from ...dsl.markup import _parser

    out: dict[str, list] = {"alternatives": [], "optional": [], "swappable": []}
    for node in _parser().parse(markup).children:
        if isinstance(node, Tree) and node.data in out:
            if node.data == "alternatives":
                out["alternatives"].append([(tok.start_pos, len(tok)) for tok in node.children])
            else:
                out[node.data].append(node.children[0].start_pos - 2)
    return out
