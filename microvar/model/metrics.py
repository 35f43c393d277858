"""The metrics of one text against a reference (its parent, or its seed), from their rows:
surprisal of the new tokens, ripple KL, delta NLL, top-1 agreement and, with --drift, the
hidden-state drift per layer (score.py's docstring defines them). Rows come from anything
with ``rows(idx)``, ``states(idx)``, ``tok_logp`` and ``top``: a scored text (rows.Seq) or a
variant read through its zones (zones.ZSeq)."""

from __future__ import annotations

import torch

from .rows import Change

KL_ROWS = 128        # rows per block in the KL: three [rows, vocab] temporaries


def compare(ref, seq, ch: Change, window: int, *, drift: bool = False, threshold: float = 0.1,
            layers: int = 0, each: int = 0) -> dict:
    """``each`` > 0: over the tokens within the window of each run of changes, changes less
    than ``each`` tokens apart one run (Change.pairs)."""
    dev = seq.tok_logp.device
    out: dict = {"new_tokens": len(ch.new)}
    if ch.new:
        s = -seq.tok_logp[torch.tensor(ch.new, device=dev)]
        out["surprisal"], out["surprisal_max"] = float(s.mean()), float(s.max())
    else:
        out["surprisal"] = out["surprisal_max"] = 0.0
    ri, ci = ch.pairs(window, each)
    out["aligned_tokens"] = len(ci)
    if ci:
        i, j = torch.tensor(ri, device=dev), torch.tensor(ci, device=dev)
        kl = torch.cat([_kl(ref.rows(a), seq.rows(b)) for a, b in zip(i.split(KL_ROWS), j.split(KL_ROWS))])
        kl = kl.clamp_min(0)
        dn = ref.tok_logp[i] - seq.tok_logp[j]
        out["ripple_kl"], out["ripple_kl_max"] = float(kl.mean()), float(kl.max())
        out["delta_nll"] = float(dn.mean())
        out["top1"] = float((ref.top[i] == seq.top[j]).float().mean())
    else:
        out["ripple_kl"] = out["ripple_kl_max"] = out["delta_nll"] = 0.0
        out["top1"] = 1.0
    if drift:
        if ci:
            ha, hb = ref.states(i + 1), seq.states(j + 1)   # the aligned tokens themselves
            rel = (hb - ha).norm(dim=-1) / ha.norm(dim=-1).clamp_min(1e-6)
            curve = [float(x) for x in rel.mean(1)]
        else:
            curve = [0.0] * (layers + 1)
        out["drift"] = curve
        out["drift_layer"] = next((k for k, x in enumerate(curve) if k and x > threshold), None)
    return out


def nll(seed, seq, own_end: int) -> float:
    """The text's mean -log P per token: its own up to ``own_end``, the seed's at the aligned
    position past it (past the window the text is aligned with the seed's end)."""
    n = len(seq.ids)
    if not n:
        return 0.0
    own = seq.tok_logp[:own_end]
    if own_end >= n:
        return float(-own.mean())
    shift = len(seed.ids) - n
    rest = seed.tok_logp[own_end + shift:n + shift]
    return float(-(own.sum() + rest.sum()) / n)


def _kl(ref: torch.Tensor, seq: torch.Tensor) -> torch.Tensor:
    """KL(P_ref || P_seq) per row, from log-probabilities (views of kept rows: not modified)."""
    return torch.nn.functional.kl_div(seq, ref, reduction="none", log_target=True).sum(-1)
