"""How `microvar evaluate` measures: every adapter loaded into one PEFT model over the base,
texts scored behind the scorer's context token in right-padded batches (each batch once
with the adapters disabled, the base, and once per adapter, so KL needs no stored
distributions), and greedy continuations for the echo measure."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import MicrovarError

if TYPE_CHECKING:
    from .eval_inputs import Adapter

ECHO_PROMPTS = 12                   # control documents whose openings become echo prompts


ECHO_PROMPT_TOKENS = 48


ECHO_NEW_TOKENS = 24


NGRAM = 4


def load_adapters(lm, adapters: list[Adapter]):
    """One PEFT model over the base holding every adapter (named a0, a1, ...); MicrovarError
    when an adapter's weights do not fit the base model."""
    import warnings

    from peft import PeftModel

    model = None
    for i, a in enumerate(adapters):
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
                if model is None:
                    model = PeftModel.from_pretrained(lm.model, str(a.path), adapter_name=f"a{i}")
                    result = None
                else:
                    result = model.load_adapter(str(a.path), adapter_name=f"a{i}")
        except (RuntimeError, ValueError, KeyError, OSError) as e:
            raise MicrovarError(f"{a.path}: does not fit the base model {lm.name}: {_first_line(e)}") from None
        unexpected = [k for k in getattr(result, "unexpected_keys", None) or [] if "lora_" in k]
        if unexpected:
            raise MicrovarError(f"{a.path}: does not fit the base model {lm.name}: weights for modules it lacks "
                                f"({unexpected[0]}, ...)")
    model.eval()
    return model


@dataclass
class Sums:
    """Token sums over some texts, for the base and each adapter."""
    tokens: int = 0
    nll_base: float = 0.0
    nll: list[float] = field(default_factory=list)
    kl: list[float] = field(default_factory=list)
    agree: list[float] = field(default_factory=list)

    def add(self, other: Sums) -> None:
        if not self.nll:
            k = len(other.nll)
            self.nll, self.kl, self.agree = [0.0] * k, [0.0] * k, [0.0] * k
        self.tokens += other.tokens
        self.nll_base += other.nll_base
        for i in range(len(other.nll)):
            self.nll[i] += other.nll[i]
            self.kl[i] += other.kl[i]
            self.agree[i] += other.agree[i]

    def base_figures(self) -> dict:
        return {"tokens": self.tokens, "nll": _r(self.nll_base / self.tokens) if self.tokens else None}

    def figures(self, a: int) -> dict:
        """Means per token for adapter a: NLL under base and adapter, change, KL, top-1 agreement."""
        if not self.tokens:
            return {"tokens": 0, "nll_base": None, "nll": None, "nll_change": None, "kl": None, "top1": None}
        n = self.tokens
        return {"tokens": n, "nll_base": _r(self.nll_base / n), "nll": _r(self.nll[a] / n),
                "nll_change": _r((self.nll[a] - self.nll_base) / n), "kl": _r(self.kl[a] / n),
                "top1": _r(self.agree[a] / n)}


def measure(model, n_adapters: int, texts: list[list[int]], context_id: int, batch_tokens: int) -> list[Sums]:
    """Per text (token ids), the sums of NLL under the base and each adapter, KL(base || adapter)
    and top-1 agreement, over every token of the text predicted behind the context token."""
    import torch

    from ..model.score import _batches, pad_batch

    device = next(model.parameters()).device
    out = [Sums(nll=[0.0] * n_adapters, kl=[0.0] * n_adapters, agree=[0.0] * n_adapters) for _ in texts]
    order = sorted((i for i, t in enumerate(texts) if t), key=lambda i: len(texts[i]))
    for batch in _batches(order, lambda i: len(texts[i]) + 1, batch_tokens, 256):
        ids, mask, lengths = pad_batch([[context_id] + texts[i][:-1] for i in batch])
        target = torch.tensor([t for i in batch for t in texts[i]], device=device)
        real = torch.cat([torch.arange(n) + b * ids.shape[1] for b, n in enumerate(lengths)]).to(device)
        with torch.inference_mode():
            with model.disable_adapter():
                base = _logp(model, ids, mask, real)
            base_tok = base.gather(1, target[:, None]).squeeze(1)
            base_top = base.argmax(-1)
            probs = base.exp()
            neg_entropy = torch.einsum("ij,ij->i", probs, base)
            per_adapter = []
            for a in range(n_adapters):
                model.set_adapter(f"a{a}")
                logp = _logp(model, ids, mask, real)
                kl = (neg_entropy - torch.einsum("ij,ij->i", probs, logp)).clamp_min(0)
                per_adapter.append((-logp.gather(1, target[:, None]).squeeze(1), kl, (logp.argmax(-1) == base_top)))
                del logp
        for b, (i, part) in enumerate(zip(batch, _spans(lengths))):
            s = out[i]
            s.tokens = lengths[b]
            s.nll_base = float(-base_tok[part].sum())
            for a, (nll, kl, same) in enumerate(per_adapter):
                s.nll[a], s.kl[a], s.agree[a] = float(nll[part].sum()), float(kl[part].sum()), float(same[part].sum())
        del base, probs
    return out


def _logp(model, ids, mask, real):
    """Log-probabilities at the real (unpadded) positions of a right-padded batch."""
    import torch

    device = real.device
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits
    return torch.log_softmax(logits.reshape(-1, logits.shape[-1]).index_select(0, real).float(), -1)


def _spans(lengths: list[int]) -> list[slice]:
    spans, start = [], 0
    for n in lengths:
        spans.append(slice(start, start + n))
        start += n
    return spans


def generate(model, prompts: list[list[int]], new_tokens: int, stop_ids: set[int], *, sample: bool = False,
             top_p: float = 1.0) -> list[list[int]]:
    """Continuations of left-padded prompts (token ids), each cut at its first stop token."""
    import torch

    width = max(len(p) for p in prompts)
    pad = next(iter(stop_ids)) if stop_ids else 0
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    device = next(model.parameters()).device
    # every setting explicit: a model's generation_config may carry its own sampling defaults
    how = ({"do_sample": True, "top_p": top_p, "top_k": 0, "temperature": 1.0} if sample
           else {"do_sample": False, "top_p": None, "top_k": None, "temperature": None})
    with torch.inference_mode():
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=new_tokens,
                             pad_token_id=pad, eos_token_id=sorted(stop_ids) or None, **how)
    result = []
    for row in out[:, width:].tolist():
        cut = next((k for k, t in enumerate(row) if t in stop_ids), len(row))
        result.append(row[:cut])
    return result


def echo_share(prompt: list[int], continuation: list[int], n: int = NGRAM) -> tuple[int, int]:
    """(continuation n-grams found in the prompt, continuation n-grams)."""
    seen = {tuple(prompt[i:i + n]) for i in range(len(prompt) - n + 1)}
    grams = [tuple(continuation[i:i + n]) for i in range(len(continuation) - n + 1)]
    return sum(g in seen for g in grams), len(grams)


def measure_echo(model, n_adapters: int, prompts: list[list[int]], stop_ids: set[int]) -> list[dict]:
    """Echo of the base (first) and each adapter: greedy continuations of the prompts."""
    results = []
    for a in [None, *range(n_adapters)]:
        if a is None:
            with model.disable_adapter():
                cont = generate(model, prompts, ECHO_NEW_TOKENS, stop_ids)
        else:
            model.set_adapter(f"a{a}")
            cont = generate(model, prompts, ECHO_NEW_TOKENS, stop_ids)
        found = total = 0
        for p, c in zip(prompts, cont):
            f, t = echo_share(p, c)
            found, total = found + f, total + t
        results.append({"echo": _r(found / total) if total else 0.0, "ngrams": total})
    return results


def _stop_ids(tokenizer, context_id: int) -> set[int]:
    return {t for t in (context_id, tokenizer.eos_token_id) if t is not None}


def _r(x: float) -> float:
    return round(float(x), 6)


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
