"""Drift paths to dataset rows: each seed's path as rows, repeated until the seed is shown
often enough, phases in order, seeds merged by the schedule, the training columns filled in."""

from __future__ import annotations

from ..curriculum import DEFAULT_SCHEDULE, repeats_for, schedule
from ..dsl.recipe import Recipe
from ..export.dataset import META_COLUMNS, training_fields
from .options import Options
from .summary import Summary

def path_rows(path, recipe: Recipe) -> list[dict]:
    """A seed's path as row dicts, before repeats, schedule and format."""
    texts = {v.variant_id: v.text for v in path.rows}
    seed_text = path.rows[0].text
    rows = []
    for k, (v, dist, budget) in enumerate(zip(path.rows, path.distances, path.budgets)):
        level, phase = recipe.route_of(v.stage)
        rows.append({"seed_id": v.seed_id, "variant_id": v.variant_id, "parent_id": v.parent_id, "text": v.text,
                     "parent_text": texts.get(v.parent_id, seed_text), "seed_text": seed_text, "edits": v.edits,
                     "stage": v.stage, "depth": v.depth, "n_tokens": v.n_tokens, "step_tokens": v.step_tokens,
                     "marker_tokens": v.marker_tokens, "recipe": recipe.name, "lora_level": level, "phase": phase,
                     "volatility": v.volatility, "step": k, "distance": dist, "budget": budget,
                     "presentations": recipe.repeat})
    return rows


def held_row(v, seed_text: str) -> dict:
    """A variant set aside by --holdout, as a line of holdout.jsonl."""
    return {"seed_id": v.seed_id, "variant_id": v.variant_id, "parent_id": v.parent_id, "text": v.text,
            "seed_text": seed_text, "edits": v.edits, "stage": v.stage, "depth": v.depth, "n_tokens": v.n_tokens,
            "volatility": v.volatility}


def assemble(paths: list[list[dict]], opts: Options, default: Recipe, summary: Summary) -> list[dict]:
    """Paths -> the dataset's rows: phases in ascending order; within a phase each seed's rows
    of that phase, its path repeated until the seed is presented often enough, merged across
    seeds by the schedule."""
    how = opts.schedule or default.schedule or DEFAULT_SCHEDULE
    phases = sorted({r["phase"] for path in paths for r in path})
    ordered: list[tuple[int, dict]] = []
    for phase in phases:
        sequences = []
        for path in paths:
            segment = [r for r in path if r["phase"] == phase]
            if segment:
                reps = repeats_for(len(path), opts.presentations or path[0]["presentations"])
                sequences.append([(rep, r) for rep in range(reps) for r in segment])
        ordered.extend(schedule(sequences, how))
    rows = []
    last_step: dict[str, int] = {}
    cur = summary.curriculum
    shown = opts.presentations or min((path[0]["presentations"] for path in paths), default=0)
    cur.update(schedule=how, rows=len(ordered), phases=phases, restarts=0, presentations=shown,
               presentations_from="--presentations" if opts.presentations else "recipe repeat")
    for i, (rep, r) in enumerate(ordered):
        prev = last_step.get(r["seed_id"])
        if prev is not None and r["step"] != prev + 1:
            cur["restarts"] += 1  # the start of a repeated path, not a step of it
        last_step[r["seed_id"]] = r["step"]
        prompt = r["parent_text"] if opts.prompt_from == "parent" else r["seed_text"]
        row = {c: r[c] for c in META_COLUMNS if c in r}
        row.update(order=i, repeat=rep, **training_fields(opts.format, r, prompt, opts.separator))
        rows.append(row)
        summary.stage_rows[r["stage"]] += 1
    return rows
