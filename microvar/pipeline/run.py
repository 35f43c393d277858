"""`microvar expand` as a library call: read and check the inputs, run the unfinished shards
on the chosen engine (each shard: expand, score, budget, drift paths, written to the work
directory as Arrow), then assemble the dataset from the work directory in bounded memory and
write it with its rejects, manifest and card. The CLI wires arguments to this; tests and
notebooks can call it directly."""

from __future__ import annotations

import logging
from pathlib import Path

from ..expand.expander import Reject
from ..errors import InputError, InputErrors
from ..expand.seeds import BadLine, Seed, read_seeds
from ..export.card import write_card
from ..export.dataset import check_target, staging, write_json, write_jsonl
from ..export.mapped import hand_back_freed
from ..model.budget import combine
from ..model.load import load_tokenizer
from ..progress import progress
from .assemble import ShardRows, write_curriculum
from .engines import import_ray, run_local, run_ray
from .inputs import choose_recipes, read_chat_template, split_long
from .manifest import build_manifest
from .options import HOLDOUT_FILE, MODEL_EDITS, Options
from .shard import Job
from .summary import Summary
from .work import Work, fingerprint

log = logging.getLogger(__name__)


def run_expand(opts: Options) -> Summary:
    check_target(opts.out, opts.overwrite)
    sf = read_seeds(opts.seeds, skip_invalid=True)    # every bad line, raised below with the recipes'
    seeds_dir = Path(opts.seeds).parent if opts.seeds != "-" else None
    unreadable: dict[str, InputError] = {}             # seeds whose own recipe cannot be read
    default, recipes = choose_recipes(sf.seeds, opts.recipes, seeds_dir, unreadable)
    if unreadable:
        raw = _raw_lines(opts.seeds, {s.line for s in sf.seeds if s.id in unreadable})
        sf.bad += [BadLine(s.file, s.line, s.id, raw.get(s.line, s.text), unreadable[s.id])
                   for s in sf.seeds if s.id in unreadable]
        sf.bad.sort(key=lambda b: b.line)
        sf.seeds = [s for s in sf.seeds if s.id not in unreadable]
    if sf.bad and not opts.skip_invalid:
        raise InputErrors([b.error for b in sf.bad])
    if opts.engine == "ray":
        import_ray()   # before anything is loaded or written
    tk, ref = load_tokenizer(opts.model, opts.tokenizer)
    chat_template = read_chat_template(opts, tk) if opts.format == "messages" else None
    # the local engine's own process loads the model now, so that a model that does not fit the
    # tokenizer stops the run before the work directory exists
    job = Job.build(opts, default, recipes, tk) if opts.engine == "local" and opts.workers <= 1 else None
    used = list({id(r): r for r in [default, *recipes.values()]}.values())  # each recipe once
    budgets = {id(r): combine(r.budget, opts.budget) for r in used}
    needs_model = sorted({e.kind for r in used for e in r.edits if e.kind in MODEL_EDITS}) if not opts.score else []
    if needs_model:
        log.warning("skipping %s: these edits need the reference model's predictions (--model none)",
                    ", ".join(needs_model))

    seeds: list[Seed] = []
    for s in sf.seeds:
        pieces = split_long(s, tk, int(tk.context * 0.9)) if opts.split_long and tk.context else None
        seeds.extend(pieces or [s])
    work = Work.open(opts.out, fingerprint(opts, sf, used, tk, ref), opts.resume, opts.overwrite)
    shards = [seeds[i:i + opts.shard_seeds] for i in range(0, len(seeds), opts.shard_seeds)]
    done = work.done(len(shards))
    todo = [(k, chunk) for k, chunk in enumerate(shards) if k not in done]
    bar = progress(len(seeds), initial=sum(len(shards[k]) for k in done), unit="seed",
                   desc="expanding+scoring" if opts.score else "expanding", enabled=opts.progress)
    spec = (opts, default, recipes)
    try:
        if opts.engine == "ray":
            engine = run_ray(spec, todo, work, bar.update)
        else:
            engine = run_local(job, spec, todo, work, bar.update)
    except BaseException:
        if not work.done(len(shards)):
            work.finish()     # nothing finished: nothing to resume, nothing left behind
        raise
    finally:
        bar.close()

    summary = Summary(seeds=len(seeds), scored=opts.score, resumed=(len(done), len(shards)))
    input_rejects = [Reject(b.seed_id, b.raw, "input", b.error.render()).to_json() for b in sf.bad]
    summary.rejected.update({"input": len(sf.bad)} if sf.bad else {})
    summary.seeds_rejected += len(sf.bad)
    for k in range(len(shards)):
        summary.merge(work.summary(k))
    import pyarrow as pa

    rows = ShardRows([work.file(k, "rows") for k in range(len(shards))])
    paths = pa.concat_tables([work.table(k, "paths") for k in range(len(shards))]) if shards else \
        pa.table({"rows": pa.array([], pa.int32()), "presentations": pa.array([], pa.int32())})
    hand_back_freed()    # each step below peaks on its own, not on what the one before left
    with staging(opts.out, opts.overwrite) as tmp:
        write_curriculum(tmp, rows, paths, opts, default, summary, scratch=work.dir)
        hand_back_freed()
        _write_records(tmp / "rejects.jsonl", input_rejects, work, len(shards), "rejects")
        if opts.holdout:
            _write_records(tmp / HOLDOUT_FILE, [], work, len(shards), "holdout")
        if chat_template is not None:
            (tmp / "chat_template.jinja").write_text(chat_template, encoding="utf-8")
        manifest = build_manifest(opts, sf, used, default, tk, ref, summary, budgets)
        manifest["skipped_edits"] = needs_model
        manifest["unused_edits"] = summary.unused_edits
        manifest["engine"] = engine
        write_json(tmp / "manifest.json", manifest)
        hand_back_freed()
        write_card(tmp)
    del rows, paths       # the memory-mapped shard files, before their directory goes
    work.finish()
    return summary


def _raw_lines(path: str, wanted: set[int]) -> dict[int, str]:
    """Lines ``wanted`` of the seed file as they were (a rejected seed's text, as for the other
    bad lines); from stdin, read once, there is nothing to go back to."""
    if path == "-":
        return {}
    out = {}
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            if n in wanted:
                out[n] = raw.rstrip(b"\n").removesuffix(b"\r").decode("utf-8", "replace").removeprefix("\ufeff")
    return out


def _write_records(path: Path, first: list[dict], work: Work, n: int, name: str) -> None:
    """``first``, then every shard's records of ``name``, as JSON lines, streamed."""
    import json

    with path.open("w", encoding="utf-8") as f:
        for r in first:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
        for k in range(n):
            for r in work.records(k, name):
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
