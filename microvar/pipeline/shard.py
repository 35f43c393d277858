"""One shard of seeds through the per-seed steps: expand -> score -> budget -> shares ->
hold-out -> drift path. Both engines (``engines.py``: this process, a process pool, Ray
actors) call exactly :func:`run_shard`; what it returns is written to the work directory as
Arrow files (``work.py``) and the driver assembles the dataset from those alone."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..curriculum import StepMeasure, drift_path
from ..dsl.recipe import Recipe
from ..expand.expander import Expander, hold_out, trim_shares
from ..expand.seeds import Seed
from ..expand.tokens import RefTokenizer
from ..model.budget import apply_budget, combine
from ..model.load import load_tokenizer
from .assemble import held_row, path_rows
from .inputs import load_reference, make_expander
from .options import Options
from .scoring import scored
from .summary import Summary, account


@dataclass
class Job:
    """What every shard of a run needs, built once per process that runs shards: the driver,
    a pool worker or a Ray actor (each loads the tokenizer and the reference model once)."""
    opts: Options
    default: Recipe
    recipes: dict[str, Recipe]
    tk: RefTokenizer
    lm: object | None
    expander: Expander
    budgets: dict[int, tuple] = field(default_factory=dict)
    measures: dict[int, StepMeasure] = field(default_factory=dict)

    @classmethod
    def build(cls, opts: Options, default: Recipe, recipes: dict[str, Recipe], tk: RefTokenizer | None = None,
              lm=None) -> Job:
        tk = tk or load_tokenizer(opts.model, opts.tokenizer)[0]
        if lm is None and opts.score:
            lm = load_reference(opts, tk)
        job = cls(opts, default, recipes, tk, lm, make_expander(opts, tk, lm))
        job.budgets = {id(r): combine(r.budget, opts.budget) for r in job.used}
        return job

    @property
    def used(self) -> list[Recipe]:
        """Each recipe of the run once, the default first."""
        return list({id(r): r for r in [self.default, *self.recipes.values()]}.values())

    def recipe_of(self, seed: Seed) -> Recipe:
        return self.recipes[seed.recipe] if seed.recipe else self.default

    def measure(self, recipe: Recipe) -> StepMeasure:
        if id(recipe) not in self.measures:
            self.measures[id(recipe)] = StepMeasure.of(recipe, self.expander.marker_cost)
        return self.measures[id(recipe)]


@dataclass
class ShardResult:
    """A shard's part of the run: its seeds' path rows (each path's rows together, in seed
    order), one record per path, the rejects, the held-out variants and the counts."""
    rows: list[dict]
    paths: list[dict]
    rejects: list[dict]
    holdout: list[dict]
    summary: Summary


def run_shard(job: Job, seeds: list[Seed], tick=None) -> ShardResult:
    """The per-seed steps for one shard; ``tick`` is called once per finished seed."""
    opts, lm = job.opts, job.lm
    summary = Summary(seeds=len(seeds), scored=lm is not None)
    job.expander.reorder_stats, job.expander.substitution_stats = summary.reorder, summary.substitution
    job.expander.continuation_stats = summary.continuation
    out = ShardResult([], [], [], [], summary)

    def expanded():
        for s in seeds:
            recipe = job.recipe_of(s)
            yield s, recipe, job.expander.expand(s, recipe)

    for s, recipe, result in (expanded() if lm is None else scored(expanded(), lm, job.tk, opts, summary)):
        if lm is not None:
            apply_budget(result, job.budgets[id(recipe)], summary.budget)
        trim_shares(result, recipe)
        if opts.holdout:
            hold_out(result, opts.holdout, opts.seed)
            out.holdout.extend(held_row(v, result.kept[0].text) for v in result.held_out)
            summary.held_out += len(result.held_out)
            summary.held_out_seeds += bool(result.held_out)
        account(summary, result, recipe)
        summary.designer_edits += len(result.ledger.edits) if result.ledger else 0
        summary.unused_edits.extend(result.unused_edits(recipe, opts.variants or recipe.variants))
        out.rejects.extend(r.to_json() for r in result.rejects)
        if result.kept:
            path = drift_path(result.kept, recipe, job.measure(recipe), opts.bridges)
            summary.add_path(path)
            rows = path_rows(path, recipe)
            out.rows.extend(rows)
            out.paths.append({"seed_id": s.id, "rows": len(rows), "presentations": recipe.repeat})
        else:
            summary.seeds_rejected += 1
        if tick:
            tick()
    if lm is not None:
        summary.scoring.update(model=lm.name, device=lm.device, dtype=str(lm.dtype).replace("torch.", ""))
    return out
