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
from .errors import InputError, InputErrors
from .expand import Expander, Reject, SeedResult
from .export import check_target, staging, write_dataset, write_json, write_jsonl
from .recipe import Recipe, load_recipe
from .seeds import Seed, read_seeds
from .tokens import RefTokenizer, load_tokenizer

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
        return out

    def to_json(self) -> dict:
        return {"seeds": self.seeds, "seeds_rejected": self.seeds_rejected, "variants_made": self.made,
                "kept": self.kept, "duplicates": self.duplicates, "rejected_by_check": dict(self.rejected),
                "capped_seeds": self.capped_seeds, "steps_within_budget": self.within_step,
                "raw_steps_within_budget": self.raw_within, "steps": self.steps, "min_kept_per_seed": self.min_kept}


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
    expander = Expander(tk, seed=opts.seed, variants=opts.variants)
    used = list({id(r): r for r in [default, *recipes.values()]}.values())  # each recipe once
    needs_model = sorted({e.kind for r in used for e in r.edits if e.kind in MODEL_EDITS})
    if needs_model:
        log.warning("skipping %s: these edits need the reference model's predictions, "
                    "which this version does not compute yet", ", ".join(needs_model))

    seeds: list[Seed] = []
    for s in sf.seeds:
        pieces = split_long(s, tk, int(tk.context * 0.9)) if opts.split_long and tk.context else None
        seeds.extend(pieces or [s])

    summary = Summary(seeds=len(seeds))
    rows: list[dict] = []
    rejects: list[dict] = [Reject(b.seed_id, b.raw, "input", b.error.render()).to_json() for b in sf.bad]
    summary.rejected.update({"input": len(sf.bad)} if sf.bad else {})
    summary.seeds_rejected += len(sf.bad)
    kept_counts = []
    bar = tqdm(seeds, desc="expanding", unit="seed", disable=not opts.progress, leave=False)
    for s in bar:
        recipe = recipes[s.recipe] if s.recipe else default
        result = expander.expand(s, recipe)
        _account(summary, result, recipe)
        if not result.kept:
            summary.seeds_rejected += 1
        kept_counts.append(len(result.kept))
        rejects.extend(r.to_json() for r in result.rejects)
        for v in _curriculum(result, recipe):
            rows.append({"order": len(rows), "seed_id": v.seed_id, "variant_id": v.variant_id,
                         "parent_id": v.parent_id, "text": v.text, "edits": v.edits, "stage": v.stage,
                         "depth": v.depth, "n_tokens": v.n_tokens, "step_tokens": v.step_tokens,
                         "marker_tokens": v.marker_tokens, "recipe": recipe.name})
    summary.min_kept = min(kept_counts, default=0)
    manifest = _manifest(opts, sf, used, default, tk, ref, summary)
    manifest["skipped_edits"] = needs_model
    with staging(opts.out, opts.overwrite) as tmp:
        write_dataset(tmp, rows)
        write_jsonl(tmp / "rejects.jsonl", rejects)
        write_json(tmp / "manifest.json", manifest)
    return summary


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


def _manifest(opts: Options, sf, used: list[Recipe], default: Recipe, tk: RefTokenizer, ref, summary) -> dict:
    return {
        "inputs": {"seeds": sf.name, "sha256": sf.sha256, "warnings": sf.warnings},
        "recipes": {r.name: {"source": r.source, "sha256": r.hash, "text": r.text} for r in used},
        "default_recipe": default.name,
        "tokenizer": {"name": tk.name, "sha256": tk.sha256, "vocab_size": tk.vocab_size, "context": tk.context},
        "model": {"name": ref.name if ref else None, "gguf_sha256": ref.sha256 if ref else None,
                  "scored": False, "note": "volatility scoring is not part of this run"},
        "seed": opts.seed,
        "variants_cap": opts.variants,
        "split_long": opts.split_long,
        "versions": _versions(),
        "counts": summary.to_json(),
    }
