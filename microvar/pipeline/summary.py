"""The counts of an expand run: what each shard adds up, what the CLI prints at the end, and
the counts the manifest records."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields, is_dataclass

from ..dsl.recipe import Recipe
from ..expand.designer import summary_line
from ..expand.expander import SeedResult
from ..expand.fluency import ContinuationStats, SubstitutionStats
from ..expand.reorder import ReorderStats
from ..model.budget import BudgetStats
from .options import HOLDOUT_FILE

_SUMMED = ("seconds", "texts", "computed_tokens", "total_tokens")



SHOW_GAPS = 20     # gap lines in the summary; all of them are in manifest.json
SHOW_ROOT_ONLY = 10   # seeds that kept no variant, named in the summary; manifest.json: up to 1,000

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
    kept_per_seed: list = field(default_factory=list)
    root_only: list = field(default_factory=list)   # ids of seeds no variant of which was kept
    scored: bool = False
    budget: BudgetStats = field(default_factory=BudgetStats)
    scoring: dict = field(default_factory=dict)
    path_steps: int = 0
    path_within: int = 0
    bridged: int = 0
    gaps: list = field(default_factory=list)
    stage_rows: Counter = field(default_factory=Counter)
    curriculum: dict = field(default_factory=dict)
    resumed: tuple[int, int] = (0, 0)     # shards found finished, of all
    reorder: ReorderStats = field(default_factory=ReorderStats)
    substitution: SubstitutionStats = field(default_factory=SubstitutionStats)
    continuation: ContinuationStats = field(default_factory=ContinuationStats)
    designer_edits: int = 0               # edits the seeds' markup wrote ({a|b}, {?…}, {~…} pairs)
    unused_edits: list = field(default_factory=list)   # those no kept variant carries, with the reason
    held_out: int = 0                     # variants set aside by --holdout (holdout.jsonl)
    held_out_seeds: int = 0

    @property
    def min_kept(self) -> int:
        return min(self.kept_per_seed, default=0)

    def add_path(self, path) -> None:
        self.path_steps += len(path.rows) - 1
        self.path_within += path.within
        self.bridged += path.bridged
        self.gaps.extend(g.to_json() for g in path.gaps)

    def merge(self, o: Summary) -> None:
        """Add a shard's counts to these."""
        for k in ("made", "kept", "duplicates", "capped_seeds", "within_step", "raw_within", "steps",
                  "seeds_rejected", "path_steps", "path_within", "bridged", "held_out", "held_out_seeds"):
            setattr(self, k, getattr(self, k) + getattr(o, k))
        self.rejected.update(o.rejected)
        self.reorder.merge(o.reorder)
        self.substitution.merge(o.substitution)
        self.continuation.merge(o.continuation)
        self.kept_per_seed.extend(o.kept_per_seed)
        self.root_only.extend(o.root_only)
        self.gaps.extend(o.gaps)
        self.designer_edits += o.designer_edits
        self.unused_edits.extend(o.unused_edits)
        for k, xs in o.budget.values.items():
            self.budget.values[k].extend(xs)
        self.budget.removed.update(o.budget.removed)
        self.budget.cascaded += o.budget.cascaded
        self.budget.drift_layers.update(o.budget.drift_layers)
        for k, v in o.scoring.items():
            self.scoring[k] = self.scoring.get(k, 0) + v if k in _SUMMED else v

    def state(self) -> dict:
        """Every field as JSON-able values (how a shard's counts are kept in the work directory)."""
        out = _plain(self)
        out["budget"]["drift_layers"] = [[k, n] for k, n in self.budget.drift_layers.items()]  # int keys
        return out

    @classmethod
    def from_state(cls, state: dict) -> Summary:
        s = cls()
        layers = state["budget"]["drift_layers"]
        state = {**state, "budget": {**state["budget"], "drift_layers": {}}}
        for f in fields(s):
            if f.name not in state:   # a count added since the shard was written: left at zero
                continue
            v, blank = state[f.name], getattr(s, f.name)
            if isinstance(blank, Counter):
                v = Counter(v)
            elif isinstance(blank, tuple):
                v = tuple(v)
            elif is_dataclass(blank):
                v = type(blank)(**{k: Counter(x) if isinstance(getattr(blank, k), Counter) else x
                                   for k, x in v.items()})
            setattr(s, f.name, v)
        s.budget.drift_layers = Counter({k: n for k, n in layers})
        return s

    def lines(self) -> list[str]:
        share = f"{100 * self.within_step / self.steps:.1f}%" if self.steps else "n/a"
        raw = f"{100 * self.raw_within / self.steps:.1f}%" if self.steps else "n/a"
        out = [f"resumed: {self.resumed[0]} of {self.resumed[1]} shards were already finished"] \
            if self.resumed[0] else []
        out += [f"seeds: {self.seeds} ({self.seeds_rejected} rejected whole)",
               f"variants: {self.made} made, {self.kept} kept (incl. one unchanged root per seed), "
               f"{self.duplicates} duplicate texts merged, {self.capped_seeds} seeds reached the cap",
               f"steps within the step budget: {share} of {self.steps} parent->child steps "
               f"(a marker counts as one step; raw token distance within budget: {raw}); "
               f"fewest kept for a seed: {self.min_kept}"]
        if self.root_only:
            shown = ", ".join(self.root_only[:SHOW_ROOT_ONLY])
            more = f" and {len(self.root_only) - SHOW_ROOT_ONLY} more (manifest.json)" \
                if len(self.root_only) > SHOW_ROOT_ONLY else ""
            out.append(f"{len(self.root_only)} seeds kept no variant, only the seed itself, presented as it is: "
                       f"{shown}{more} (rejects.jsonl says what removed their variants)")
        if self.rejected:
            out.append("rejected by check: " + ", ".join(f"{k} {v}" for k, v in self.rejected.most_common()))
        out.extend(x for x in (self.reorder.line(), self.substitution.line(), self.continuation.line()) if x)
        if self.scored:
            sc = self.scoring
            rate = sc["total_tokens"] / sc["seconds"] if sc.get("seconds") else 0.0
            out.append(f"scored {sc['texts']} texts on {sc['device']} ({sc['dtype']}): expanded and scored in "
                       f"{sc['seconds']:.1f} s, {rate:.0f} tokens/s; {sc['computed_tokens']} of "
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
        unused = summary_line(self.unused_edits, self.designer_edits)
        if unused:
            out.append(unused)
        if self.held_out:
            out.append(f"held out: {self.held_out} variants of {self.held_out_seeds} seeds, not in the curriculum "
                       f"({HOLDOUT_FILE}, for microvar evaluate)")
        out.extend(self.curriculum_lines(SHOW_GAPS))
        return out

    def curriculum_lines(self, show_gaps: int | None = None) -> list[str]:
        cur = self.curriculum
        if not cur:
            return []
        share = f"{100 * self.path_within / self.path_steps:.1f}%" if self.path_steps else "n/a"
        out = [f"curriculum: {cur['rows']} rows, schedule {cur['schedule']}, phases "
               f"{', '.join(map(str, cur['phases']))}; each seed presented at least {cur['presentations']} times "
               f"({cur['presentations_from']}; {cur['restarts']} restarts of a repeated path)",
               f"drift paths: {self.path_within} of {self.path_steps} consecutive same-seed steps within the step "
               f"budget ({share}); {self.bridged} rows shown again as bridges; {len(self.gaps)} gaps"]
        if self.stage_rows:
            out.append("rows by stage: " + ", ".join(f"{k} {v}" for k, v in self.stage_rows.items()))
        gaps = self.gaps if show_gaps is None else self.gaps[:show_gaps]
        for g in gaps:
            out.append(f"  gap: seed {g['seed_id']}: {g['from']} -> {g['to']}, {g['tokens']} tokens "
                       f"(budget {g['budget']})")
        if len(gaps) < len(self.gaps):
            out.append(f"  ... {len(self.gaps) - len(gaps)} more gaps in manifest.json")
        return out

    def to_json(self) -> dict:
        return {"seeds": self.seeds, "seeds_rejected": self.seeds_rejected, "variants_made": self.made,
                "kept": self.kept, "duplicates": self.duplicates, "rejected_by_check": dict(self.rejected),
                "capped_seeds": self.capped_seeds, "steps_within_budget": self.within_step,
                "raw_steps_within_budget": self.raw_within, "steps": self.steps, "min_kept_per_seed": self.min_kept,
                "seeds_without_variants": len(self.root_only), "seeds_without_variants_ids": self.root_only[:1000],
                "budget_removed": dict(self.budget.removed), "budget_removed_with_parent": self.budget.cascaded,
                "reorder_rule": self.reorder.to_json(),
                "model_substitutions": self.substitution.to_json(),
                "model_continuations": self.continuation.to_json(), "designer_edits": self.designer_edits,
                "designer_edits_unused": len(self.unused_edits)}

    def curriculum_json(self) -> dict:
        share = self.path_within / self.path_steps if self.path_steps else None
        return {**self.curriculum, "stages": dict(self.stage_rows), "steps": self.path_steps,
                "within_step": self.path_within, "within_step_share": share, "bridged_rows": self.bridged,
                "gaps": self.gaps}


def _plain(v):
    """Dataclasses, Counters and tuples as plain dicts and lists (``dataclasses.asdict`` would
    rebuild a Counter from its items, counting the pairs)."""
    if is_dataclass(v):
        return {f.name: _plain(getattr(v, f.name)) for f in fields(v)}
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def account(summary: Summary, result: SeedResult, recipe: Recipe) -> None:
    summary.made += result.counts["made"]
    summary.kept += len(result.kept)
    summary.duplicates += result.counts["duplicate"]
    summary.capped_seeds += result.capped
    summary.kept_per_seed.append(len(result.kept))
    if len(result.kept) <= 1 < recipe.variants:   # asked for variants, got none (naive's 1: as meant)
        summary.root_only.append(result.seed_id)
    for key, n in result.counts.items():
        if key.startswith("rejected:"):
            summary.rejected[key.split(":", 1)[1]] += n
    for v in result.kept:
        if v.parent_id:
            summary.steps += 1
            summary.within_step += v.step_tokens <= recipe.step
            summary.raw_within += v.distance <= recipe.step
