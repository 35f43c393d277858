"""Token-level view of text through the reference tokenizer, and the checks that keep
variants token-safe. A check returns None (pass) or a reason string (datatrove style)."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field

from rapidfuzz.distance import Levenshtein

from ..errors import MicrovarError

log = logging.getLogger(__name__)

_BYTE_TOKEN = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")
REPLACEMENT = "\ufffd"


class RefTokenizer:
    """Fast batched encode/decode plus what the checks need to know about the vocabulary."""

    def __init__(self, hf_tokenizer, name: str, context: int | None) -> None:
        self.hf = hf_tokenizer
        self.name = name
        self.context = context
        self.backend = getattr(hf_tokenizer, "backend_tokenizer", None)
        if self.backend is None:
            raise MicrovarError(f"tokenizer {name}: only fast (Rust) tokenizers are supported")
        vocab = self.backend.get_vocab(with_added_tokens=True)
        self.vocab_size = len(vocab)
        self.unk_id = hf_tokenizer.unk_token_id
        specials = set(hf_tokenizer.all_special_ids or [])
        # an unk token that is also the model's eos/bos (SmolLM2) is still an unknown in text
        self.special_ids = frozenset(specials)
        self.byte_fallback_ids = frozenset(i for t, i in vocab.items() if _BYTE_TOKEN.match(t))
        self.sha256 = hashlib.sha256(self.backend.to_str().encode()).hexdigest()

    def encode(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.backend.encode_batch(texts, add_special_tokens=False)]

    def encode_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        enc = self.backend.encode(text, add_special_tokens=False)
        return enc.ids, enc.offsets

    def decode(self, ids: list[list[int]]) -> list[str]:
        return self.backend.decode_batch(ids, skip_special_tokens=False)

    def tokens(self, ids: list[int]) -> list[str]:
        return [self.backend.id_to_token(i) for i in ids]


def same_tokenizer(a: RefTokenizer, b: RefTokenizer) -> str | None:
    """None when both split text into the same ids; else what differs."""
    if a.sha256 == b.sha256:
        return None
    va, vb = a.backend.get_vocab(with_added_tokens=True), b.backend.get_vocab(with_added_tokens=True)
    if va != vb:
        differ = sum(1 for t, i in va.items() if vb.get(t) != i) + sum(1 for t in vb if t not in va)
        return f"their vocabularies differ ({len(va)} vs {len(vb)} tokens, {differ} differ)"
    probe = ["Hello, world! Привет, мир. 你好 🙂", "def f(x):\n    return x * 2\n", "  spaced  out\ttabs"]
    if a.encode(probe) != b.encode(probe):
        return "they split the same text differently"
    return None


# ---------------------------------------------------------------- checks


@dataclass
class Candidate:
    """What the checks look at: a variant's tokens next to its parent's."""
    text: str
    ids: list[int]
    decoded: str
    parent_ids: list[int] | None          # None for the seed itself
    stage: str
    new_markers: tuple[str, ...] = ()     # markers this edit inserted
    anchors: tuple[str, ...] = ()
    distance: int = 0                     # token edit distance to the parent
    new_spans: list[tuple[int, int]] = field(default_factory=list)  # changed token ranges in ids
    marker_tokens: int = 0
    step_tokens: int = 0
    min_step: int = 0                     # the least this edit can move (one indivisible unit)
    allowance: int = 0                    # a designer edit's `allow designer` step (a counted jump)


def align(c: Candidate) -> None:
    """Fill distance and the new-material spans from a diff of token ids."""
    if c.parent_ids is None:
        c.distance, c.new_spans = 0, [(0, len(c.ids))]
        return
    dist, spans = 0, []
    for op in Levenshtein.opcodes(c.parent_ids, c.ids):
        if op.tag == "equal":
            continue
        dist += max(op.src_end - op.src_start, op.dest_end - op.dest_start)
        if op.dest_end > op.dest_start:
            spans.append((op.dest_start, op.dest_end))
    c.distance, c.new_spans = dist, spans


def check_round_trip(c: Candidate, tk: RefTokenizer, limits) -> str | None:
    if c.decoded != c.text:
        i = next((k for k, (a, b) in enumerate(zip(c.decoded, c.text)) if a != b), min(len(c.decoded), len(c.text)))
        return f"decode(encode(text)) differs at character {i}: {c.text[i:i + 12]!r} came back as {c.decoded[i:i + 12]!r}"
    return None


def check_in_vocab(c: Candidate, tk: RefTokenizer, limits) -> str | None:
    for start, end in c.new_spans:
        piece = c.ids[start:end]
        if tk.unk_id is not None and tk.unk_id in piece:
            return f"unknown token {tk.backend.id_to_token(tk.unk_id)!r} in the new material"
        special = [i for i in piece if i in tk.special_ids]
        if special:
            return f"special token {tk.backend.id_to_token(special[0])!r} in the text"
        fallback = [i for i in piece if i in tk.byte_fallback_ids]
        if fallback:
            return f"byte-fallback piece {tk.backend.id_to_token(fallback[0])!r} in the new material"
    if REPLACEMENT in c.decoded and REPLACEMENT not in c.text:
        return "broken character (U+FFFD) after decoding"
    return None


def check_context(c: Candidate, tk: RefTokenizer, limits) -> str | None:
    if tk.context is not None and len(c.ids) > tk.context:
        return f"{len(c.ids)} tokens > the model's context of {tk.context}"
    return None


def check_anchors(c: Candidate, tk: RefTokenizer, limits) -> str | None:
    lost = [a for a in c.anchors if a not in c.text]
    return f"anchor {lost[0]!r} was altered or removed" if lost else None


def check_marker_cost(c: Candidate, tk: RefTokenizer, limits) -> str | None:
    if c.new_markers and c.marker_tokens > limits.marker_tokens * len(c.new_markers):
        return (f"markers {' '.join(c.new_markers)} cost {c.marker_tokens} tokens > "
                f"allowance {limits.marker_tokens} per marker")
    return None


def step_budget(c: Candidate, limits) -> int:
    """The most tokens this candidate may move from its parent: its stage's limit, raised to
    one indivisible unit (grow) or to the designer allowance of a designer-written edit."""
    return max(limits.step_limit(c.stage), c.min_step, c.allowance)


def check_step(c: Candidate, tk: RefTokenizer, limits) -> str | None:
    if c.parent_ids is None:
        return None
    limit = step_budget(c, limits)
    if c.step_tokens > limit:
        return f"{c.step_tokens} tokens from its parent > step budget {limit} for stage {c.stage}"
    return None


# Order matters only for which reason is reported first.
CHECKS = {
    "in_vocab": check_in_vocab,
    "round_trip": check_round_trip,
    "context": check_context,
    "anchors": check_anchors,
    "marker_cost": check_marker_cost,
    "step": check_step,
}


def run_checks(c: Candidate, tk: RefTokenizer, limits) -> tuple[str, str] | None:
    """First failing (check, reason), or None when the candidate is token-safe."""
    for name, check in CHECKS.items():
        reason = check(c, tk, limits)
        if reason is not None:
            return name, reason
    return None
