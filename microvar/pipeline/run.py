"""`microvar expand` as a library call: read seeds, choose recipes, expand, score, budget,
walk drift paths, assemble rows and export, shard by shard. The CLI wires arguments to
this; tests and notebooks can call it directly. Each step is a module of this package."""

from __future__ import annotations

import logging
from pathlib import Path

from ..curriculum import StepMeasure, drift_path
from ..dsl.recipe import Recipe
from ..expand.expander import Reject, hold_out, trim_shares
from ..expand.seeds import Seed, read_seeds
from ..export.card import write_card
from ..export.dataset import check_target, staging, write_dataset, write_json, write_jsonl
from ..model.budget import apply_budget, combine
from ..model.load import load_tokenizer
from ..progress import progress
from .assemble import assemble, held_row, path_rows
from .inputs import choose_recipes, load_reference, make_expander, read_chat_template, split_long
from .manifest import build_manifest
from .options import HOLDOUT_FILE, MODEL_EDITS, Options
from .scoring import scored
from .summary import Summary, account
from .work import Work, fingerprint

log = logging.getLogger(__name__)


def run_expand(opts: Options) -> Summary:
    check_target(opts.out, opts.overwrite)
    sf = read_seeds(opts.seeds, skip_invalid=opts.skip_invalid)
    seeds_dir = Path(opts.seeds).parent if opts.seeds != "-" else None
    default, recipes = choose_recipes(sf.seeds, opts.recipes, seeds_dir)
    tk, ref = load_tokenizer(opts.model, opts.tokenizer)
    chat_template = read_chat_template(opts, tk) if opts.format == "messages" else None
    lm = load_reference(opts, tk) if opts.score else None
    expander = make_expander(opts, tk, lm)
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

    work = Work(opts.out, fingerprint(opts, sf, used, tk, ref), opts.resume, opts.overwrite)
    shards = [seeds[i:i + opts.shard_seeds] for i in range(0, len(seeds), opts.shard_seeds)]
    done = work.done(len(shards))
    bar = progress(len(seeds), initial=sum(len(shards[k]) for k in done), unit="seed",
                   desc="expanding" if lm is None else "expanding+scoring", enabled=opts.progress)
    measures: dict[int, StepMeasure] = {}

    def measure(recipe: Recipe) -> StepMeasure:
        if id(recipe) not in measures:
            measures[id(recipe)] = StepMeasure.of(recipe, expander.marker_cost)
        return measures[id(recipe)]

    for k, chunk in enumerate(shards):
        if k in done:
            continue
        summary = Summary(seeds=len(chunk), scored=lm is not None)
        expander.reorder_stats, expander.substitution_stats = summary.reorder, summary.substitution
        rejects: list[dict] = []
        paths: list[list[dict]] = []
        held: list[dict] = []

        def expanded(chunk=chunk):
            for s in chunk:
                recipe = recipes[s.recipe] if s.recipe else default
                yield s, recipe, expander.expand(s, recipe)

        for s, recipe, result in (expanded() if lm is None else scored(expanded(), lm, tk, opts, summary)):
            if lm is not None:
                apply_budget(result, budgets[id(recipe)], summary.budget)
            trim_shares(result, recipe)
            if opts.holdout:
                hold_out(result, opts.holdout, opts.seed)
                held.extend(held_row(v, result.kept[0].text) for v in result.held_out)
                summary.held_out += len(result.held_out)
                summary.held_out_seeds += bool(result.held_out)
            account(summary, result, recipe)
            summary.designer_edits += len(result.ledger.edits) if result.ledger else 0
            summary.unused_edits.extend(result.unused_edits(recipe, opts.variants or recipe.variants))
            rejects.extend(r.to_json() for r in result.rejects)
            if result.kept:
                path = drift_path(result.kept, recipe, measure(recipe), opts.bridges)
                summary.add_path(path)
                paths.append(path_rows(path, recipe))
            else:
                summary.seeds_rejected += 1
            bar.update(1)
        work.save(k, {"summary": summary, "rejects": rejects, "paths": paths, "holdout": held})
    bar.close()

    summary = Summary(seeds=len(seeds), scored=lm is not None, resumed=(len(done), len(shards)))
    rejects = [Reject(b.seed_id, b.raw, "input", b.error.render()).to_json() for b in sf.bad]
    summary.rejected.update({"input": len(sf.bad)} if sf.bad else {})
    summary.seeds_rejected += len(sf.bad)
    paths, held = [], []
    for k in range(len(shards)):
        part = work.load(k)
        summary.merge(part["summary"])
        rejects.extend(part["rejects"])
        paths.extend(part["paths"])
        held.extend(part["holdout"])
    if lm is not None:
        summary.scoring.update(device=lm.device, dtype=str(lm.dtype).replace("torch.", ""))
    rows = assemble(paths, opts, default, summary)
    manifest = build_manifest(opts, sf, used, default, tk, ref, summary, lm, budgets)
    manifest["skipped_edits"] = needs_model
    manifest["unused_edits"] = summary.unused_edits
    with staging(opts.out, opts.overwrite) as tmp:
        write_dataset(tmp, rows, opts.format)
        write_jsonl(tmp / "rejects.jsonl", rejects)
        if opts.holdout:
            write_jsonl(tmp / HOLDOUT_FILE, held)
        if chat_template is not None:
            (tmp / "chat_template.jinja").write_text(chat_template, encoding="utf-8")
        write_json(tmp / "manifest.json", manifest)
        write_card(tmp)
    work.finish()
    return summary
