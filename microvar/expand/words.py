"""Words as proposals see them: the word pattern, where no word may be picked (Markdown
code, a marker already in the text), the function words that make poor anchors and never
trade places (English and Russian), and where a grown continuation may end."""

import re
import unicodedata
from collections.abc import Iterable, Iterator

import regex

# joiners: a zero-width non-joiner, a zero-width joiner, a word joiner hold their neighbours together
JOINERS = "\u200c\u200d\u2060"

# A word, read in graphemes (``\X``: a letter with its combining marks, ``о́`` is one): it
# begins with a letter and ends with a letter or digit, and letters, digits, ``_ ' ’ -`` and
# joiners go between (``zero\u200dwidth`` is one word). The classes are those of ``re``'s
# ``[^\W\d_]``, ``\w`` and ``[^\W_]``, so text without marks or joiners splits as before.
WORD = regex.compile(r"(?=[\p{L}\p{Nl}\p{No}])\X"
                     r"(?:(?:(?=[\p{L}\p{N}_'’\-" + JOINERS + r"])\X)*(?=[\p{L}\p{N}])\X)?")


def words(text: str) -> list[tuple[int, int]]:
    """(start, end) of each word of text that a proposal may pick (an anchor, a swap): whole
    graphemes, so a marker never comes between a letter and its accent; a word that a joiner
    ties to what is before or after it (an emoji, a zero-width joiner, a letter) is not one."""
    spans = (m.span() for m in WORD.finditer(text))
    return [(s, e) for s, e in spans if not set(text[max(s - 1, 0):s] + text[e - 1:e + 1]) & set(JOINERS)]


FENCE = re.compile(r"^\s*(```|~~~)")     # a line that opens or closes a fenced block
BACKTICKS = re.compile(r"`[^`]*`?")      # a backtick span (an unclosed one runs to the line end)


def code_lines(text: str) -> Iterator[tuple[int, int, list[tuple[int, int]]]]:
    """Each line of text as (start, end, code): ``code`` the line's Markdown code, as
    character ranges: the whole line in a fenced block or on its fence line (an unclosed
    fence runs to the end of text), else its backtick spans."""
    pos, fenced = 0, False
    for line in text.split("\n"):
        start, pos = pos, pos + len(line) + 1
        end = start + len(line)
        if FENCE.match(line):
            fenced = not fenced
            yield start, end, [(start, end)]
        elif fenced:
            yield start, end, [(start, end)]
        else:
            yield start, end, [(start + m.start(), start + m.end()) for m in BACKTICKS.finditer(line)]


def code_spans(text: str) -> list[tuple[int, int]]:
    """Character ranges of text that are Markdown code (fenced blocks with their fence lines,
    backtick spans): no proposal picks a word there (nor does the reorder rule)."""
    return [span for _, _, code in code_lines(text) for span in code if span[1] > span[0]]


def marker_spans(text: str, markers: Iterable[tuple[str, str]]) -> list[tuple[int, int]]:
    """Character ranges where text already spells one of the markers, (opening, closing)
    pairs, and the word each already marks: the one after an opening marker, the one before
    a closing marker (only spaces between). A word inside a marker (``ANCHOR`` of
    ``[ANCHOR]``) is no word, and one marked again would stack two (``[ANCHOR] [SHIFT] здесь``)."""
    out = []
    for opening, close in markers:
        for marker, forward in ((opening, True), (close, False)):
            for m in re.finditer(re.escape(marker), text) if marker else ():
                a, b = m.span()
                if forward:
                    while b < len(text) and text[b] in " \t":
                        b += 1
                    b += 1                       # reaches into the word after it
                else:
                    while a > 0 and text[a - 1] in " \t":
                        a -= 1
                    a -= 1                       # reaches into the word before it
                out.append((max(a, 0), min(b, len(text))))
    return out


def outside(spans: list[tuple[int, int]], start: int, end: int) -> bool:
    """Characters start..end overlap none of spans."""
    return all(end <= a or start >= b for a, b in spans)


# Frequent function words that make poor anchors (English and Russian).
STOPWORDS = frozenset("""
a an the and or but if then else of in on at to for from by with without into onto over under
is are was were be been being this that these those it its as not no yes do does did have has had
will would can could should may might must there their they them he she we you your our his her
what which who whom whose when where why how all any each some such than too very just also only
и в во на не что это как но а с со к ко по из за от до для о об же ли бы то так или ни да
его её ее их он она оно они мы вы ты я был была было были быть есть при без под над
""".split())  # noqa: SIM905 (a word list reads better as text)

# a reordered negation flips the meaning: "не равно" -> "равно не"
NEGATIONS = frozenset("не ни нет not no never nor".split())

# prepositions: a phrase ends before one ("cats and dogs in the yard")
PREPOSITIONS = frozenset("""
in on at to for from by with without into onto over under about after before between through
в во на по для с со к ко из от до о об при без под над про через между
""".split())  # noqa: SIM905


def _cjk(ch: str) -> bool:
    """A character of a script written without spaces (Chinese, Japanese kana, their
    punctuation and fullwidth forms): each is the smallest piece a row may end after."""
    o = ord(ch)
    return (0x3000 <= o <= 0x30FF or 0x3400 <= o <= 0x4DBF or 0x4E00 <= o <= 0x9FFF or 0xF900 <= o <= 0xFAFF
            or 0xFF00 <= o <= 0xFFEF or 0x20000 <= o <= 0x2FFFF)


def _holds_on(ch: str) -> bool:
    """ch belongs to what comes before it: a combining mark, a joiner, a variation selector
    or an emoji modifier (part of one visible character), a modifier letter (the Japanese
    long vowel mark) or closing punctuation (a comma, a full stop, a closing bracket)."""
    cat = unicodedata.category(ch)
    return cat[0] == "M" or cat in ("Cf", "Lm", "Sk", "Pe", "Pf", "Po")


def word_ends(text: str, code: bool = False, closed: bool = False) -> list[int]:
    """Character offsets in text (a continuation) where a row may end, ascending: after whole
    words. Prose: after a word or punctuation that whitespace follows (so a leading newline
    goes with the first word), and between two characters of a script without spaces (CJK);
    never before a mark, modifier or closing punctuation, nor after an opening bracket.
    Code: at line ends outside any bracket the text opened (``print(add(`` is no end). The
    end of text counts only when closed (nothing follows it): else whether its last word is
    whole is unknown."""
    ends, depth = [], 0
    for i, prev in enumerate(text):
        if code:
            depth += (prev in "([{") - (prev in ")]}")
        nxt = text[i + 1] if i + 1 < len(text) else None
        if prev.isspace() or (nxt is None and not closed):
            continue
        if code:
            if depth <= 0 and (nxt is None or nxt in "\r\n"):
                ends.append(i + 1)
        elif nxt is None or nxt.isspace():
            ends.append(i + 1)
        elif (_cjk(prev) or _cjk(nxt)) and not _holds_on(nxt) and unicodedata.category(prev) not in ("Ps", "Pi"):
            ends.append(i + 1)
    return ends


def _wordlike(ch: str) -> bool:
    """A character that belongs to a word or a number: a letter, a digit, ``_``, a combining mark."""
    return ch.isalnum() or ch == "_" or unicodedata.category(ch)[0] == "M"


GLUE = ".,'’-"   # between two word characters they make one word or number: 1.5, don't, well-made
# (not ``JOINERS`` above, the invisible ones a word is read through)


def glues(text: str, continuation: str | None = None, code: bool = False) -> bool:
    """text ends in a word or a number and the continuation (any, when None) goes on inside
    it: a word character first, or a joiner and then one (in code a joiner alone: ``x=1.`` is
    a float, ``obj.`` an attribute). A continuation must start at a boundary, or it changes
    the seed's last word: SmolLM2 continued ``x=1`` with ``0`` (``x=10``), and with that
    refused, with ``.5``, and then with ``.``."""
    if not text or not _wordlike(text[-1]):
        return False
    if continuation is None:
        return True
    if not continuation:
        return False
    if continuation[0] in GLUE:
        return code or (len(continuation) > 1 and _wordlike(continuation[1]))
    return _wordlike(continuation[0])
