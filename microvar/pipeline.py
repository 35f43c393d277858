"""`microvar expand` as a library call: read seeds, choose recipes, expand, export.
The CLI wires arguments to this; tests and notebooks can call it directly."""

from __future__ import annotations

import logging
import platform
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from . import __version__
from .budget import BudgetStats, apply_budget, combine, volatility_record
from .errors import InputError, InputErrors, MicrovarError
from .expand import Expander, Reject, SeedResult
from .export import check_target, staging, write_dataset, write_json, write_jsonl
from .recipe import Limit, Recipe, load_recipe
from .seeds import Seed, read_seeds
from .tokens import RefTokenizer, load_tokenizer, same_tokenizer

log = logging.getLogger(__name__)
MODEL_EDITS = ("swap_model", "grow_model")


@dataclass
class Options:
    seeds: str
    out: Path
    recipes: list[str] = field(default_factory=list)
    model: str | None = None
    tokenizer: str | None = None
    variants: int | None = None
    seed: int = 0
    skip_invalid: bool = False
    overwrite: bool = False
    split_long: bool = False
    progress: bool = True
    score: bool = True                 # False: --model none (expansion only)
    device: str = "auto"
    dtype: str = "auto"
    batch_tokens: int | None = None    # None: 2048 on CPU, 16384 on a GPU
    drift: bool = False
    drift_threshold: float = 0.1
    budget: tuple[Limit, ...] = ()     # command-line limits over the recipes' budgets


@dataclass
class Summary:
    seeds: int = 0
    seeds_rejected: int = 0
    made: int = 0
    kept: int = 0
    duplicates: int = 0
    rejected: Counter = field(default_factory=Counter)
    capped_seeds: int = 0
    within_step: int = 0
    raw_within: int = 0
    steps: int = 0
    min_kept: int = 0
    scored: bool = False
    budget: BudgetStats = field(default_factory=BudgetStats)
    scoring: dict = field(default_factory=dict)

    def lines(self) -> list[str]:
        share = f"{100 * self.within_step / self.steps:.1f}%" if self.steps else "n/a"
        raw = f"{100 * self.raw_within / self.steps:.1f}%" if self.steps else "n/a"
        out = [f"seeds: {self.seeds} ({self.seeds_rejected} rejected whole)",
               f"variants: {self.made} made, {self.kept} kept (incl. one unchanged root per seed), "
               f"{self.duplicates} duplicate texts merged, {self.capped_seeds} seeds reached the cap",
               f"steps within the step budget: {share} of {self.steps} parent->child steps "
               f"(a marker counts as one step; raw token distance within budget: {raw}); "
               f"fewest kept for a seed: {self.min_kept}"]
        if self.rejected:
            out.append("rejected by check: " + ", ".join(f"{k} {v}" for k, v in self.rejected.most_common()))
        if self.scored:
            sc = self.scoring
            out.append(f"scored {sc['texts']} texts on {sc['device']} ({sc['dtype']}): expanded and scored in "
                       f"{sc['seconds']:.1f} s, {sc['tokens_per_s']:.0f} tokens/s; {sc['computed_tokens']} of "
                       f"{sc['total_tokens']} positions computed (shared prefixes reused)")
            dist = self.budget.distribution()
            if dist:
                out.append(f"volatility of {dist['surprisal']['n']} variants against their parents "
                           "(p10 / p50 / p90 / max):")
                for k in ("surprisal", "surprisal_max", "ripple_kl", "ripple_kl_max", "delta_nll", "top1"):
                    d = dist[k]
                    out.append(f"  {k:<14} {d['p10']:8.3f} {d['p50']:8.3f} {d['p90']:8.3f} {d['max']:8.3f}")
            if self.budget.removed or self.budget.cascaded:
                out.append("budget removed: " + ", ".join(f"{k}: {v}" for k, v in self.budget.removed.most_common())
                           + f"; {self.budget.cascaded} more with a removed parent"
                           + " (a variant over several limits counts under each)")
        else:
            out.append("volatility: not scored (--model none)")
        return out

    def to_json(self) -> dict:
        return {"seeds": self.seeds, "seeds_rejected": self.seeds_rejected, "variants_made": self.made,
                "kept": self.kept, "duplicates": self.duplicates, "rejected_by_check": dict(self.rejected),
                "capped_seeds": self.capped_seeds, "steps_within_budget": self.within_step,
                "raw_steps_within_budget": self.raw_within, "steps": self.steps, "min_kept_per_seed": self.min_kept,
                "budget_removed": dict(self.budget.removed), "budget_removed_with_parent": self.budget.cascaded}


def choose_recipes(seeds: list[Seed], refs: list[str], seeds_dir: Path | None) -> tuple[Recipe, dict[str, Recipe]]:
    """The default recipe (first --recipe, else the shipped one) and every recipe a seed names."""
    loaded = [load_recipe(r) for r in refs] or [load_recipe("default")]
    by_ref: dict[str, Recipe] = {}
    for ref, recipe in zip(refs, loaded):
        by_ref[ref] = by_ref[recipe.name] = recipe
    errors = []
    for s in seeds:
        if s.recipe and s.recipe not in by_ref:
            try:
                by_ref[s.recipe] = load_recipe(s.recipe, seeds_dir)
            except InputError as e:
                if e.file == s.recipe and e.line is None:
                    errors.append(InputError(s.file, s.line, f"recipe {s.recipe!r}: {e.message}"))
                else:
                    errors.append(e)
    if errors:
        raise InputErrors(errors)
    return loaded[0], by_ref


_SPLIT_AT = re.compile(r"(?<=\n)|(?<=[.!?…。])\s+")


def split_long(seed: Seed, tk: RefTokenizer, limit: int) -> list[Seed] | None:
    """Pieces of a plain-text seed that each fit ``limit`` tokens, cut at lines then sentences."""
    if seed.parts is not None or len(tk.encode([seed.text])[0]) <= limit:
        return None
    units = [u for u in _SPLIT_AT.split(seed.text) if u]
    pieces, current = [], ""
    for unit in units:
        joined = current + (" " if current and not current.endswith("\n") else "") + unit
        if current and len(tk.encode([joined])[0]) > limit:
            pieces.append(current)
            current = unit
        else:
            current = joined
    pieces.append(current)
    return [Seed(f"{seed.id}#{k}", p.strip("\n") or p, None, None, seed.recipe, seed.meta, seed.file, seed.line)
            for k, p in enumerate(pieces, start=1)]


def run_expand(opts: Options) -> Summary:
    check_target(opts.out, opts.overwrite)
    sf = read_seeds(opts.seeds, skip_invalid=opts.skip_invalid)
    seeds_dir = Path(opts.seeds).parent if opts.seeds != "-" else None
    default, recipes = choose_recipes(sf.seeds, opts.recipes, seeds_dir)
    tk, ref = load_tokenizer(opts.model, opts.tokenizer)
    lm = load_reference(opts, tk) if opts.score else None
    advisor = None
    if lm is not None:
        from .advisor import Advisor

        advisor = Advisor(lm, tk)
    expander = Expander(tk, seed=opts.seed, variants=opts.variants, advisor=advisor)
    used = list({id(r): r for r in [default, *recipes.values()]}.values())  # each recipe once
    budgets = {id(r): combine(r.budget, opts.budget) for r in used}
    needs_model = sorted({e.kind for r in used for e in r.edits if e.kind in MODEL_EDITS}) if lm is None else []
    if needs_model:
        log.warning("skipping %s: these edits need the reference model's predictions (--model none)",
                    ", ".join(needs_model))

    seeds: list[Seed] = []
    for s in sf.seeds:
        pieces = split_long(s, tk, int(tk.context * 0.9)) if opts.split_long and tk.context else None
        seeds.extend(pieces or [s])

    summary = Summary(seeds=len(seeds), scored=lm is not None)
    rows: list[dict] = []
    rejects: list[dict] = [Reject(b.seed_id, b.raw, "input", b.error.render()).to_json() for b in sf.bad]
    summary.rejected.update({"input": len(sf.bad)} if sf.bad else {})
    summary.seeds_rejected += len(sf.bad)
    kept_counts = []
    bar = tqdm(total=len(seeds), desc="expanding" if lm is None else "expanding+scoring", unit="seed",
               disable=not opts.progress, leave=False)

    def expanded():
        for s in seeds:
            recipe = recipes[s.recipe] if s.recipe else default
            yield s, recipe, expander.expand(s, recipe)

    for s, recipe, result in (expanded() if lm is None else _scored(expanded(), lm, tk, opts, summary)):
        if lm is not None:
            apply_budget(result, budgets[id(recipe)], summary.budget)
        _account(summary, result, recipe)
        if not result.kept:
            summary.seeds_rejected += 1
        kept_counts.append(len(result.kept))
        rejects.extend(r.to_json() for r in result.rejects)
        for v in _curriculum(result, recipe):
            level, phase = recipe.route_of(v.stage)
            rows.append({"lora_level": level, "phase": phase, "order": len(rows), "seed_id": v.seed_id, "variant_id": v.variant_id,
                         "parent_id": v.parent_id, "text": v.text, "edits": v.edits, "stage": v.stage,
                         "depth": v.depth, "n_tokens": v.n_tokens, "step_tokens": v.step_tokens,
                         "marker_tokens": v.marker_tokens, "recipe": recipe.name, "volatility": v.volatility})
        bar.update(1)
    bar.close()
    summary.min_kept = min(kept_counts, default=0)
    manifest = _manifest(opts, sf, used, default, tk, ref, summary, lm, budgets)
    manifest["skipped_edits"] = needs_model
    with staging(opts.out, opts.overwrite) as tmp:
        write_dataset(tmp, rows)
        write_jsonl(tmp / "rejects.jsonl", rejects)
        write_json(tmp / "manifest.json", manifest)
    return summary


def load_reference(opts: Options, tk: RefTokenizer):
    """The scoring model, refusing one whose tokenizer is not the one the checks used."""
    from .model import load_model, resolve

    ref = resolve(opts.model)
    if opts.tokenizer is not None:
        model_tk, _ = load_tokenizer(opts.model, None)
        why = same_tokenizer(tk, model_tk)
        if why:
            raise MicrovarError(f"--tokenizer {opts.tokenizer} is not the tokenizer of --model {ref.name}: {why}; "
                                "variants checked with one tokenizer cannot be scored by a model that reads "
                                "another (drop --tokenizer, or pass --model none)")
    lm = load_model(ref, opts.device, opts.dtype)
    n_embed = lm.model.get_input_embeddings().weight.shape[0]
    if tk.vocab_size > n_embed:
        raise MicrovarError(f"--model {ref.name}: the tokenizer has {tk.vocab_size} tokens but the model only "
                            f"{n_embed} embeddings; they do not belong together")
    return lm


def _scored(expanded, lm, tk: RefTokenizer, opts: Options, summary: Summary):
    """Expanded seeds with volatility on every kept variant, streamed window by window."""
    import time

    from .score import Group, Item, Scorer, context_token

    batch_tokens = opts.batch_tokens or (16384 if lm.device == "cuda" else 2048)
    ctx = context_token(tk.hf)
    scorer = Scorer(lm.model, ctx, batch_tokens=batch_tokens, drift=opts.drift, drift_threshold=opts.drift_threshold)
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
    seconds = time.perf_counter() - start
    summary.scoring = {"texts": texts, "device": lm.device, "dtype": str(lm.dtype).replace("torch.", ""),
                       "seconds": seconds, "computed_tokens": scorer.computed_tokens,
                       "total_tokens": scorer.total_tokens, "batch_tokens": batch_tokens,
                       "tokens_per_s": scorer.total_tokens / seconds if seconds else 0.0,
                       "context_token": tk.hf.convert_ids_to_tokens(ctx), "drift": opts.drift,
                       "drift_threshold": opts.drift_threshold if opts.drift else None}


def _curriculum(result: SeedResult, recipe: Recipe):
    """For now: by stage in the recipe's order, then depth; a parent always precedes its child."""
    rank = {s: i for i, s in enumerate(recipe.stages)}
    return sorted(result.kept, key=lambda v: (rank[v.stage], v.depth))


def _account(summary: Summary, result: SeedResult, recipe: Recipe) -> None:
    summary.made += result.counts["made"]
    summary.kept += len(result.kept)
    summary.duplicates += result.counts["duplicate"]
    summary.capped_seeds += result.capped
    for key, n in result.counts.items():
        if key.startswith("rejected:"):
            summary.rejected[key.split(":", 1)[1]] += n
    for v in result.kept:
        if v.parent_id:
            summary.steps += 1
            summary.within_step += v.step_tokens <= recipe.step
            summary.raw_within += v.distance <= recipe.step


def _versions() -> dict:
    import datasets
    import pyarrow
    import tokenizers
    import transformers

    return {"microvar": __version__, "python": platform.python_version(), "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__, "datasets": datasets.__version__, "pyarrow": pyarrow.__version__}


def _manifest(opts: Options, sf, used: list[Recipe], default: Recipe, tk: RefTokenizer, ref, summary, lm,
              budgets: dict) -> dict:
    if lm is None:
        model = {"name": ref.name if ref else None, "gguf_sha256": ref.sha256 if ref else None, "scored": False,
                 "note": "--model none: variants were not scored; the volatility column is null"}
    else:
        sc = summary.scoring
        model = {"name": lm.name, "gguf_sha256": ref.sha256 if ref else None, "scored": True,
                 "device": sc["device"], "dtype": sc["dtype"], "batch_tokens": sc["batch_tokens"],
                 "context_token": sc["context_token"], "drift": sc["drift"], "drift_threshold": sc["drift_threshold"],
                 "budget_overrides": [str(x) for x in opts.budget],
                 "budgets": {r.name: [str(x) for x in budgets[id(r)]] for r in used},
                 "volatility": summary.budget.distribution(),
                 "drift_layers": {str(k): v for k, v in sorted(summary.budget.drift_layers.items(), key=str)}
                 if opts.drift else None,
                 "positions": {"total": sc["total_tokens"], "computed": sc["computed_tokens"]}}
    return {
        "inputs": {"seeds": sf.name, "sha256": sf.sha256, "warnings": sf.warnings},
        "recipes": {r.name: {"source": r.source, "sha256": r.hash, "text": r.text} for r in used},
        "default_recipe": default.name,
        "tokenizer": {"name": tk.name, "sha256": tk.sha256, "vocab_size": tk.vocab_size, "context": tk.context},
        "model": model,
        "seed": opts.seed,
        "variants_cap": opts.variants,
        "split_long": opts.split_long,
        "versions": _versions(),
        "counts": summary.to_json(),
    }


def split_dataset(out: Path, by: str, target: Path | None = None, overwrite: bool = False) -> dict[str, int]:
    """One dataset per value of ``by`` (lora_level or phase) under TARGET/<value>, rows in
    their curriculum order; a split.json beside them says what was split and how many rows
    each part holds."""
    from datasets import load_from_disk

    if not (out / "dataset_info.json").is_file() and not (out / "state.json").is_file():
        raise MicrovarError(f"{out}: not a dataset written by microvar expand")
    ds = load_from_disk(str(out))
    if by not in ds.column_names:
        raise MicrovarError(f"{out} has no column {by!r}")
    target = target or out.parent / f"{out.name}-by-{by}"
    column = ds[by]
    rows_of: dict = {}
    for i, x in enumerate(column):
        rows_of.setdefault(x, []).append(i)
    counts: dict[str, int] = {}
    with staging(target, overwrite) as tmp:
        for value in sorted(rows_of, key=lambda x: (isinstance(x, str), x)):
            part = ds.select(rows_of[value])
            part.save_to_disk(str(tmp / str(value)))
            counts[str(value)] = len(part)
        write_json(tmp / "split.json", {"source": str(out), "by": by, "parts": counts})
    return counts
