"""The scoring step: expanded seeds in, the same seeds out with volatility on every kept
variant, measured by the reference model window by window."""

from __future__ import annotations

from ..expand.tokens import RefTokenizer
from ..model.budget import volatility_record
from .options import Options
from .summary import Summary

def scored(expanded, lm, tk: RefTokenizer, opts: Options, summary: Summary):
    """Expanded seeds with volatility on every kept variant, streamed window by window."""
    import time

    from ..model.score import Group, Item, Scorer, context_token, default_batch_tokens

    batch_tokens = opts.batch_tokens or default_batch_tokens(lm.device, tk.vocab_size)
    ctx = context_token(tk.hf)
    scorer = Scorer(lm.model, ctx, batch_tokens=batch_tokens, drift=opts.drift, drift_threshold=opts.drift_threshold,
                    ripple_window=opts.ripple_window, seed_context=not opts.own_context,
                    runs_apart=opts.runs_apart,
                    max_memory=opts.max_memory * 2**30 if opts.max_memory else None)
    groups = (Group(s.id, r.kept[0].ids if r.kept else [],
                    [Item(v.variant_id, v.ids, v.parent_id or None) for v in r.kept], (s, recipe, r))
              for s, recipe, r in expanded)
    start = time.perf_counter()
    texts = 0
    for g, metrics in scorer.score(groups):
        s, recipe, result = g.payload
        for v in result.kept:
            v.volatility = volatility_record(metrics[v.variant_id], opts.drift)
        texts += len(result.kept)
        yield s, recipe, result
    sc = summary.scoring
    sc["seconds"] = sc.get("seconds", 0.0) + time.perf_counter() - start
    for key, n in (("texts", texts), ("computed_tokens", scorer.computed_tokens),
                   ("total_tokens", scorer.total_tokens)):
        sc[key] = sc.get(key, 0) + n
    sc.update(batch_tokens=batch_tokens, context_token=tk.hf.convert_ids_to_tokens(ctx), drift=opts.drift,
              drift_threshold=opts.drift_threshold if opts.drift else None,
              ripple_window=opts.ripple_window, max_memory=opts.max_memory, max_rows_kept=scorer.max_rows_kept,
              packed_rows=scorer.packed, seed_context=scorer.zoned,
              runs_apart=scorer.runs_apart if scorer.zoned else None)
