"""Model-guided proposals: what the reference model says about a seed before it is edited.

One forward per seed gives, at every position, the model's next-token distribution. From
it: how surprising each word is (the most surprising words become anchors: they are what
needs a bridge), the most probable in-vocabulary alternatives for a word (``swap model top
K``), and a greedy continuation (``grow model``)."""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass

import torch

from ..expand.words import GLUE, STOPWORDS, glues, word_ends
from .score import _batches, cache_kwarg, common_prefix, context_token, log_softmax_in_place, pad_batch

_LETTERS = re.compile(r"^[^\W\d_]+$")
MIN_LOGP = -7.0   # alternatives the model gives under ~0.1% are noise, not microvariants
MIN_STEM = 4   # another ending only for a stem this long: "спи|т" -> "спи|цы" is another word
MAX_CONTINUE = 0.5   # a candidate after which the model expects more of the word is a piece, not a word
# nats a substitution may add to the rest of the text; measured under Gemma 3: new endings
# (подоконнике->подоконнику) -0.1..0.3, "тёплом подоконнике"->"полу подоконнике" 3.2
MAX_RIPPLE_NLL = 2.0
LOGITS_BUDGET = 1 << 26   # floats of logits per batch (256 MB: 256 rows of Gemma 3's 262k vocabulary)
WORD_START_MARKS = ("Ġ", "▁")   # GPT-2 byte-level and SentencePiece spellings of "a space, then"


def common_suffix(a: list[int], b: list[int], limit: int) -> int:
    """How many tokens a and b share at their ends, at most limit."""
    k = 0
    while k < limit and a[-1 - k] == b[-1 - k]:
        k += 1
    return k


@dataclass
class Probe:
    text: str
    ids: list[int]
    offsets: list[tuple[int, int]]
    logp: torch.Tensor          # [n+1, V]: row k predicts token k; row n the token after the text
    cache: object = None        # the forward's KV cache, until a continuation extends it

    def tokens_in(self, start: int, end: int) -> list[int]:
        """Indices of the tokens overlapping characters start..end-1."""
        return [k for k, (a, b) in enumerate(self.offsets) if a < end and b > start]


class Advisor:
    def __init__(self, lm, tk) -> None:
        self.model = lm.model
        self.device = lm.device
        self.tk = tk
        self.ctx = context_token(tk.hf)
        self._cache_arg = cache_kwarg(lm.model)
        self._keeps_logits = "logits_to_keep" in inspect.signature(lm.model.forward).parameters
        self._probe: Probe | None = None
        self._pieces: dict[int, tuple[bool, str]] = {}
        self._masks: dict | None = None

    @torch.inference_mode()
    def probe(self, text: str) -> Probe:
        if self._probe is not None and self._probe.text == text:
            return self._probe
        ids, offsets = self.tk.encode_offsets(text)
        x = torch.tensor([[self.ctx] + ids], device=self.device)
        out = self.model(input_ids=x, use_cache=True)
        logp = log_softmax_in_place(out.logits[0].float())
        self._probe = Probe(text, ids, offsets, logp, getattr(out, "cache", None) or out.past_key_values)
        return self._probe

    @torch.inference_mode()
    def nll(self, texts: list[str], batch_tokens: int = 1024) -> list[float]:
        """Total NLL (nats) of each text behind the context token, batched like the scorer
        (logits over a 262k vocabulary are 1 MB a position: hence the small budget)."""
        encoded = self.tk.encode(texts)
        order = sorted(range(len(texts)), key=lambda k: len(encoded[k]))
        out = [0.0] * len(texts)
        for group in _batches(order, lambda k: len(encoded[k]) + 1, batch_tokens, len(order)):
            ids, mask, lengths = pad_batch([[self.ctx] + encoded[k] for k in group])
            logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
            logp = log_softmax_in_place(logits[:, :-1].float().reshape(-1, logits.shape[-1]))
            tok = logp.gather(-1, ids[:, 1:].reshape(-1, 1).to(self.device)).view(len(group), -1)
            for b, k in enumerate(group):
                out[k] = float(-tok[b, :lengths[b] - 1].sum())
        return out

    def token_counts(self, texts: list[str]) -> list[int]:
        return [len(ids) for ids in self.tk.encode(texts)]

    def surprisal(self, probe: Probe, start: int, end: int) -> float:
        """Nats the model spends on the characters start..end-1 (their tokens, summed)."""
        ks = probe.tokens_in(start, end)
        return float(sum(-probe.logp[k, probe.ids[k]] for k in ks))

    def alternatives(self, probe: Probe, start: int, end: int, k: int) -> list[str]:
        """Up to k words the model would rather see at start..end, after which the rest of
        the text reads about as well as after the word itself (``ripple_cost`` <=
        MAX_RIPPLE_NLL), least disturbing first.

        Candidates come from the model's next-token rows: a whole word in one token in place
        of the word, or, for a word spelled in several tokens, another last token (another
        ending, after a stem of MIN_STEM letters or more). The rows see only the left
        context, so a candidate can be a word's first piece, or a common word that fits the
        left but not the right ("на полу подоконнике"); measuring the rest of the text after
        each candidate removes both. A content word is
        not replaced by a function word: that changes what the sentence says, not how."""
        word = probe.text[start:end]
        words = [w for w in self._candidates(probe, start, end, 3 * k)
                 if word.lower() in STOPWORDS or w.lower() not in STOPWORDS]
        if not words:
            return []
        texts = [probe.text[:start] + w + probe.text[end:] for w in words]
        costs = self.ripple_cost(probe, texts, [start + len(w) for w in words])
        fluent = sorted((c, i) for i, c in enumerate(costs) if c <= MAX_RIPPLE_NLL)
        return [words[i] for _, i in fluent[:k]]

    def _candidates(self, probe: Probe, start: int, end: int, n: int) -> list[str]:
        """Words from the model's rows at the word's first and last token (see alternatives),
        most probable first; never the word itself."""
        ks = probe.tokens_in(start, end)
        # the word's first token starts with it, or with the space before it
        if not ks or (probe.offsets[ks[0]][0] != start and probe.text[start - 1:start] != " "):
            return []
        word = probe.text[start:end]
        spaced = start > 0 and probe.text[start - 1] == " "
        first, last = ks[0], ks[-1]
        scored: dict[str, float] = {}
        # a token starting at `first` includes the leading space when the word has one
        if probe.offsets[first][0] in (start, start - 1) and (spaced or start == 0):
            for lp, tid in self._top(probe.logp[first], n):
                opens, letters = self.piece(tid)
                if opens == spaced and _LETTERS.match(letters) and letters.lower() != word.lower():
                    scored.setdefault(letters, lp)
        if last > first and probe.offsets[last][1] == end:
            head = probe.text[start:probe.offsets[last][0]]
            if len(head) >= MIN_STEM and not head.endswith(" "):
                for lp, tid in self._top(probe.logp[last], n):
                    opens, letters = self.piece(tid)
                    if not opens and _LETTERS.match(letters) and (head + letters).lower() != word.lower():
                        scored.setdefault(head + letters, lp)
        return [w for w, _ in sorted(scored.items(), key=lambda x: -x[1])[:n]]

    @staticmethod
    def _top(row: torch.Tensor, n: int) -> list[tuple[float, int]]:
        """The row's n most probable tokens above MIN_LOGP, as (log-probability, id)."""
        lps, ids = row.topk(n)
        return [(float(lp), int(t)) for lp, t in zip(lps, ids) if lp >= MIN_LOGP]

    def piece(self, tid: int) -> tuple[bool, str]:
        """(opens a word, its text without the word-start space) for one vocabulary token.

        A word start is marked in the token's own spelling, ``Ġ`` in GPT-2 byte-level
        vocabularies (SmolLM2) and ``▁`` in SentencePiece ones (Gemma, Llama); decoding a lone
        token keeps that space in some tokenizers and drops it in others, so the mark, not
        the decoded text, says whether the token opens a word."""
        if tid not in self._pieces:
            raw = self.tk.backend.id_to_token(tid) or ""
            text = self.tk.hf.decode([tid])
            opens = raw[:1] in WORD_START_MARKS
            self._pieces[tid] = (opens, text[1:] if opens and text.startswith(" ") else text)
        return self._pieces[tid]

    @torch.inference_mode()
    def ripple_cost(self, probe: Probe, texts: list[str], word_ends: list[int]) -> list[float]:
        """For each text (the seed with one word changed, ending at character word_ends[i]):
        how many more nats the model spends on the seed's unchanged tail (the tokens after
        the change) than it does in the seed; infinite when the model expects the new word
        to go on (P(a piece continuing the word) > MAX_CONTINUE: a word's first piece, not a
        word). Only positions from the first changed token are computed, in batches whose
        logits stay under LOGITS_BUDGET floats."""
        encoded = self.tk.backend.encode_batch(texts, add_special_tokens=False)
        n = len(probe.ids)
        p = min(common_prefix(probe.ids, e.ids) for e in encoded)
        seed_nll = -probe.logp[torch.arange(n), probe.ids]
        continues = self._continues_word().to(probe.logp.device)
        order = sorted(range(len(texts)), key=lambda i: len(encoded[i].ids))
        costs = [0.0] * len(texts)
        rows = max(1, LOGITS_BUDGET // probe.logp.shape[-1])
        for batch in _batches(order, lambda i: len(encoded[i].ids) + 1 - p, rows, len(order)):
            ids, mask, _ = pad_batch([[self.ctx] + encoded[i].ids for i in batch])
            logp = self._logp_at(ids, mask, torch.arange(p, ids.shape[1]))  # row j predicts token p + j
            for b, i in enumerate(batch):
                e = encoded[i].ids
                after = next((j for j, (a, _) in enumerate(encoded[i].offsets) if a >= word_ends[i]), len(e))
                if after > 0 and encoded[i].offsets[after - 1][1] == word_ends[i] and \
                        float(logp[b, after - p].exp()[continues].sum()) > MAX_CONTINUE:
                    costs[i] = float("inf")
                    continue
                tail = common_suffix(probe.ids, e, max(0, min(n, len(e)) - common_prefix(probe.ids, e)))
                if tail:
                    target = torch.tensor(e[len(e) - tail:], device=logp.device)
                    nll = -logp[b, torch.arange(len(e) - tail - p, len(e) - p, device=logp.device), target]
                    costs[i] = float(nll.sum() - seed_nll[n - tail:].sum())
        return costs

    def _vocab_masks(self) -> dict:
        """Masks over the vocabulary, from one decoding of it (seconds for Gemma's 262k tokens),
        of tokens without a word-start mark whose text is part of a character or starts as
        asked: ``"continues"`` a letter first (the token continues a word); ``False``/``True``
        (prose/code) it would join the word or number before it (``glues``)."""
        if self._masks is None:
            vocab = self.tk.backend.get_vocab_size(with_added_tokens=True)
            texts = self.tk.backend.decode_batch([[i] for i in range(vocab)], skip_special_tokens=False)
            marks = [self.tk.backend.id_to_token(i) or "" for i in range(vocab)]
            size = self.model.config.vocab_size

            def mask(first) -> torch.Tensor:
                m = [k[:1] not in WORD_START_MARKS and (t[:1] == "\ufffd" or first(t)) for k, t in zip(marks, texts)]
                return torch.tensor(m + [False] * (size - vocab))[:size].to(self.device)   # once, not per call

            self._masks = {"continues": mask(lambda t: t[:1].isalpha()),
                           False: mask(lambda t: glues("a", t, False)), True: mask(lambda t: glues("a", t, True))}
        return self._masks

    def _continues_word(self) -> torch.Tensor:
        """Tokens that continue a word (no word-start mark, and a letter first, or part of a character)."""
        return self._vocab_masks()["continues"]

    def _logp_at(self, ids: torch.Tensor, mask: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Log-probabilities at the input positions ``keep`` only (the model's own
        ``logits_to_keep`` when it has one: a 262k-token head over every position is the cost)."""
        kwargs = {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device)}
        if self._keeps_logits:
            logits = self.model(**kwargs, logits_to_keep=keep.to(self.device)).logits
        else:
            logits = self.model(**kwargs).logits[:, keep.to(self.device)]
        return log_softmax_in_place(logits.float())

    @torch.inference_mode()
    def continuation(self, text: str, n_tokens: int = 8, code: bool = False) -> str:
        """The model's greedy continuation of text: n_tokens (fewer at a special token), in
        whole words (``word_ends``; whole lines in code). The word the window cuts may finish
        in up to n_tokens more (decoding goes on until its end is seen); one that does not is
        dropped, and a continuation without any word end is "". It starts at a boundary: after
        a seed ending in a word or number no token that goes on inside it (``glues``)."""
        probe = self.probe(text)
        if probe.cache is None:  # an earlier continuation consumed it
            self._probe = None
            probe = self.probe(text)
        ids, cache, probe.cache = list(probe.ids), probe.cache, None  # decoding appends to the cache
        logits = probe.logp[-1]   # the probe's forward already predicts the first new token
        joined = glues(text)   # it starts at a boundary: "x=1" + "0" is "x=10", another number
        banned = self._glue_tokens(code).to(logits.device) if joined else None
        base = self.tk.decode([ids])[0]
        new: list[int] = []
        ahead, window, closed = "", None, False   # closed: the model ended the text, its last word whole
        for _ in range(2 * n_tokens):
            if joined and not ahead.strip(GLUE):   # nor after a joiner: "x=1" + "." + "5"
                logits = logits.masked_fill(banned, float("-inf"))
            tid = int(logits.argmax())
            if tid in self.tk.special_ids:
                closed = True
                break
            new.append(tid)
            full = self.tk.decode([ids + new])[0]
            if not full.startswith(base):
                return ""
            ahead = full[len(base):]
            if len(new) == n_tokens:
                window = ahead.split("\ufffd", 1)[0]
            elif window is not None and any(e >= len(window) for e in word_ends(ahead, code)):
                break
            out = self.model(input_ids=torch.tensor([[tid]], device=self.device), use_cache=True,
                             **{self._cache_arg: cache})
            cache = getattr(out, "cache", None) or out.past_key_values
            logits = out.logits[0, -1]
        window = ahead if window is None else window
        ends = word_ends(ahead, code, closed)
        past = [e for e in ends if e >= len(window)]
        end = past[0] if past else max((e for e in ends if e <= len(window)), default=0)
        out = before_unopened_fence(text, ahead[:end])
        return "" if glues(text, out, code) else out

    def _glue_tokens(self, code: bool) -> torch.Tensor:
        """Tokens that would join the word or number before them (no word-start mark, and
        first a word character, a combining mark, part of a character, or a joiner: then a
        word character, or anything in code; see ``glues``)."""
        return self._vocab_masks()[code]


FENCE = "```"


def before_unopened_fence(text: str, continuation: str) -> str:
    """``continuation`` up to a Markdown code fence that ``text`` did not open, without the
    blank space before it. Seeing code or talk of code, a small model likes to close a block
    the seed never opened or to start one: SmolLM2 continued the examples' Python seed with
    "\n```" and a sentence about code with "\n\nHere is the code:\n\n```python", rows no
    designer would keep. A fence the text opened may be closed."""
    if text.count(FENCE) % 2 == 0 and FENCE in continuation:
        return continuation[:continuation.index(FENCE)].rstrip()
    return continuation

