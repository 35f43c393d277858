"""Words as proposals see them: the word pattern, the function words that make poor anchors
and never trade places (English and Russian), and where a grown continuation may end."""

import re
import unicodedata

WORD = re.compile(r"[^\W\d_][\w'’-]*[^\W_]|[^\W\d_]")

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


JOINERS = ".,'’-"   # between two word characters they make one word or number: 1.5, don't, well-made


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
    if continuation[0] in JOINERS:
        return code or (len(continuation) > 1 and _wordlike(continuation[1]))
    return _wordlike(continuation[0])
