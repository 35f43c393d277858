"""Model-guided proposals: what the reference model says about a seed before it is edited.

One forward per seed gives, at every position, the model's next-token distribution. From
it: how surprising each word is (the most surprising words become anchors: they are what
needs a bridge), the most probable in-vocabulary alternatives for a word (``swap model top
K``), and a greedy continuation (``grow model``)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from .score import cache_kwarg, context_token, pad_batch

_LETTERS = re.compile(r"^[^\W\d_]+$")
MIN_LOGP = -7.0   # alternatives the model gives under ~0.1% are noise, not microvariants
_WORD_START = re.compile(r"^ [^\W\d_]+$")


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
        self._probe: Probe | None = None

    @torch.inference_mode()
    def probe(self, text: str) -> Probe:
        if self._probe is not None and self._probe.text == text:
            return self._probe
        ids, offsets = self.tk.encode_offsets(text)
        x = torch.tensor([[self.ctx] + ids], device=self.device)
        out = self.model(input_ids=x, use_cache=True)
        logp = torch.log_softmax(out.logits[0].float(), -1)
        self._probe = Probe(text, ids, offsets, logp, getattr(out, "cache", None) or out.past_key_values)
        return self._probe

    @torch.inference_mode()
    def nll(self, texts: list[str], batch_tokens: int = 1024) -> list[float]:
        """Total NLL (nats) of each text behind the context token, in batches of about
        batch_tokens positions (logits over a 262k vocabulary are 1 MB a position)."""
        encoded = self.tk.encode(texts)
        order = sorted(range(len(texts)), key=lambda k: len(encoded[k]))
        out = [0.0] * len(texts)
        while order:
            width = len(encoded[order[0]]) + 1
            take = max(1, batch_tokens // max(width, len(encoded[order[-1]]) + 1))
            group, order = order[-take:], order[:-take]
            ids, mask, lengths = pad_batch([[self.ctx] + encoded[k] for k in group])
            logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
            logits = logits[:, :-1].float()
            target = ids[:, 1:, None].to(self.device)
            tok = logits.gather(-1, target)[..., 0] - torch.logsumexp(logits, -1)
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
        """Up to k words the model would rather see at start..end: a whole word in one token
        in place of the word, or, for a word spelled in several tokens, another last token
        (another ending). Most probable first; never the word itself."""
        ks = probe.tokens_in(start, end)
        # the word's first token starts with it, or with the space before it
        if not ks or (probe.offsets[ks[0]][0] != start and probe.text[start - 1:start] != " "):
            return []
        word = probe.text[start:end]
        spaced = start > 0 and probe.text[start - 1] == " "
        first, last = ks[0], ks[-1]
        scored: dict[str, float] = {}
        # a token starting at `first` includes the leading space when the word has one
        if probe.offsets[first][0] in (start, start - 1):
            row = probe.logp[first]
            for lp, tid in zip(*row.topk(8 * k)):
                if lp < MIN_LOGP:
                    break
                piece = self.tk.hf.decode([int(tid)])
                if (spaced and _WORD_START.match(piece)) or (not spaced and start == 0 and _LETTERS.match(piece)):
                    alt = piece[1:] if spaced else piece
                    if alt.lower() != word.lower():
                        scored.setdefault(alt, float(lp))
        if last > first and probe.offsets[last][1] == end:
            head = probe.text[start:probe.offsets[last][0]]
            if head and not head.endswith(" "):
                row = probe.logp[last]
                for lp, tid in zip(*row.topk(8 * k)):
                    if lp < MIN_LOGP:
                        break
                    piece = self.tk.hf.decode([int(tid)])
                    if _LETTERS.match(piece):
                        alt = head + piece
                        if alt.lower() != word.lower():
                            scored.setdefault(alt, float(lp))
        return [w for w, _ in sorted(scored.items(), key=lambda x: -x[1])[:k]]

    @torch.inference_mode()
    def continuation(self, text: str, n_tokens: int = 8) -> str:
        """The model's greedy continuation of text, up to n_tokens, cut at a special token
        and to whole characters."""
        probe = self.probe(text)
        if probe.cache is None:  # an earlier continuation consumed it
            self._probe = None
            probe = self.probe(text)
        ids, cache, probe.cache = list(probe.ids), probe.cache, None  # decoding appends to the cache
        logits = probe.logp[-1]   # the probe's forward already predicts the first new token
        new: list[int] = []
        for _ in range(n_tokens):
            tid = int(logits.argmax())
            if tid in self.tk.special_ids:
                break
            new.append(tid)
            if len(new) == n_tokens:
                break
            out = self.model(input_ids=torch.tensor([[tid]], device=self.device), use_cache=True,
                             **{self._cache_arg: cache})
            cache = getattr(out, "cache", None) or out.past_key_values
            logits = out.logits[0, -1]
        full = self.tk.decode([ids + new])[0]
        base = self.tk.decode([ids])[0]
        if not full.startswith(base):
            return ""
        cont = full[len(base):]
        return cont.split("\ufffd", 1)[0].rstrip("\n") if cont else ""
