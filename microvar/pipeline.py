"""`microvar expand` as a library call: read seeds, choose recipes, expand, export.
The CLI wires arguments to this; tests and notebooks can call it directly."""

from __future__ import annotations

import json
import logging
import os
import pickle
import platform
import re
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__
from .budget import BudgetStats, apply_budget, combine, volatility_record
from .card import write_card
from .curriculum import DEFAULT_SCHEDULE, StepMeasure, drift_path, repeats_for, schedule
from .designer import summary_line
from .errors import InputError, InputErrors, MicrovarError
from .expand import Expander, Reject, SeedResult, hold_out, trim_shares
from .export import (
    META_COLUMNS,
    check_target,
    quiet_datasets,
    staging,
    training_fields,
    write_dataset,
    write_json,
    write_jsonl,
)
from .recipe import Limit, Recipe, load_recipe
from .fluency import SubstitutionStats
from .progress import progress
from .reorder import ReorderStats
from .resources import data_dir
from .seeds import Seed, read_seeds
from .tokens import RefTokenizer, load_tokenizer, same_tokenizer

log = logging.getLogger(__name__)
MODEL_EDITS = ("swap_model", "grow_model")
HOLDOUT_FILE = "holdout.jsonl"


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
    progress: bool = True              # a bar on a terminal, else a line every 30 s (progress.py)
    score: bool = True                 # False: --model none (expansion only)
    device: str = "auto"
    dtype: str = "auto"
    batch_tokens: int | None = None    # None: 2048 on CPU, 16384 on a GPU (fewer for a big vocabulary)
    drift: bool = False
    drift_threshold: float = 0.1
    budget: tuple[Limit, ...] = ()     # command-line limits over the recipes' budgets
    format: str = "prompt-completion"  # prompt-completion, text or messages (TRL's dataset formats)
    prompt_from: str = "parent"        # the prompt of a pair: the variant's parent, or its seed
    separator: str = "\n"              # ends the prompt (prompt-completion)
    chat_template: str | None = None   # messages: a Jinja chat template file or name in templates/
    schedule: str | None = None        # None: the default recipe's, else blocked
    presentations: int | None = None   # None: each recipe's `repeat`
    resume: bool = False
    shard_seeds: int = 32              # seeds per finished shard (what --resume keeps)
    license: str | None = None         # for the dataset card; None: the default recipe's
    bridges: int = 2                   # rows a drift path may step back through to stay within budget
    holdout: float = 0.0               # share of each seed's non-root variants set aside for evaluation


_SUMMED = ("seconds", "texts", "computed_tokens", "total_tokens")


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
        self.kept_per_seed.extend(o.kept_per_seed)
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
        if self.rejected:
            out.append("rejected by check: " + ", ".join(f"{k} {v}" for k, v in self.rejected.most_common()))
        out.extend(x for x in (self.reorder.line(), self.substitution.line()) if x)
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
        out.extend(self.curriculum_lines())
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
                "budget_removed": dict(self.budget.removed), "budget_removed_with_parent": self.budget.cascaded,
                "reorder_rule": self.reorder.to_json(),
                "model_substitutions": self.substitution.to_json(), "designer_edits": self.designer_edits,
                "designer_edits_unused": len(self.unused_edits)}

    def curriculum_json(self) -> dict:
        share = self.path_within / self.path_steps if self.path_steps else None
        return {**self.curriculum, "stages": dict(self.stage_rows), "steps": self.path_steps,
                "within_step": self.path_within, "within_step_share": share, "bridged_rows": self.bridged,
                "gaps": self.gaps}


def choose_recipes(seeds: list[Seed], refs: list[str], seeds_dir: Path | None) -> tuple[Recipe, dict[str, Recipe]]:
    """The default recipe (first --recipe, else the shipped one) and every recipe a seed names.
    Every error of every recipe is raised together, as lint lists them."""
    errors: list[InputError] = []
    loaded = [_load_recipe(r, None, errors) for r in refs] or [_load_recipe("default", None, errors)]
    by_ref: dict[str, Recipe] = {}
    for ref, recipe in zip(refs, loaded):
        if recipe is not None:
            by_ref[ref] = by_ref[recipe.name] = recipe
    failed = set(refs) - set(by_ref)
    for s in seeds:
        if s.recipe and s.recipe not in by_ref and s.recipe not in failed:
            missing: list[InputError] = []
            recipe = _load_recipe(s.recipe, seeds_dir, missing)
            if recipe is not None:
                by_ref[s.recipe] = recipe
            elif len(missing) == 1 and missing[0].file == s.recipe and missing[0].line is None:
                errors.append(InputError(s.file, s.line, f"recipe {s.recipe!r}: {missing[0].message}"))
            else:
                failed.add(s.recipe)   # its errors once, not once per seed that names it
                errors.extend(missing)
    if errors:
        raise InputErrors(errors)
    return loaded[0], by_ref


def _load_recipe(ref: str, relative_to: Path | None, errors: list[InputError]) -> Recipe | None:
    try:
        return load_recipe(ref, relative_to)
    except InputErrors as e:
        errors.extend(e.errors)
    except InputError as e:
        errors.append(e)
    return None


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
    chat_template = _chat_template(opts, tk) if opts.format == "messages" else None
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

    work = Work(opts.out, _fingerprint(opts, sf, used, tk, ref), opts.resume, opts.overwrite)
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

        for s, recipe, result in (expanded() if lm is None else _scored(expanded(), lm, tk, opts, summary)):
            if lm is not None:
                apply_budget(result, budgets[id(recipe)], summary.budget)
            trim_shares(result, recipe)
            if opts.holdout:
                held.extend(_held_row(v, result.kept[0].text) for v in hold_out(result, opts.holdout, opts.seed))
                summary.held_out += len(result.held_out)
                summary.held_out_seeds += bool(result.held_out)
            _account(summary, result, recipe)
            summary.designer_edits += len(result.ledger.edits) if result.ledger else 0
            summary.unused_edits.extend(result.unused_edits(recipe, opts.variants or recipe.variants))
            rejects.extend(r.to_json() for r in result.rejects)
            if result.kept:
                path = drift_path(result.kept, recipe, measure(recipe), opts.bridges)
                summary.add_path(path)
                paths.append(_path_rows(path, recipe))
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
    rows = _assemble(paths, opts, default, summary)
    manifest = _manifest(opts, sf, used, default, tk, ref, summary, lm, budgets)
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


def _path_rows(path, recipe: Recipe) -> list[dict]:
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


def _held_row(v, seed_text: str) -> dict:
    """A variant set aside by --holdout, as a line of holdout.jsonl."""
    return {"seed_id": v.seed_id, "variant_id": v.variant_id, "parent_id": v.parent_id, "text": v.text,
            "seed_text": seed_text, "edits": v.edits, "stage": v.stage, "depth": v.depth, "n_tokens": v.n_tokens,
            "volatility": v.volatility}


def _assemble(paths: list[list[dict]], opts: Options, default: Recipe, summary: Summary) -> list[dict]:
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


def _chat_template(opts: Options, tk: RefTokenizer) -> str | None:
    """The chat template the messages format is meant for, checked by rendering a chat with it:
    --chat-template (a file, or a name in templates/), else the tokenizer's own."""
    sample = [{"role": "user", "content": "Ритм, not quantity."}, {"role": "assistant", "content": "Ритм."}]
    text = None
    if opts.chat_template:
        path = Path(opts.chat_template)
        if not path.is_file():
            path = data_dir("templates") / opts.chat_template
        if not path.is_file():
            raise MicrovarError(f"--chat-template {opts.chat_template}: no such file (also looked in "
                                f"{data_dir('templates')})")
        text = path.read_text(encoding="utf-8")
    elif not getattr(tk.hf, "chat_template", None):
        raise MicrovarError(f"--format messages: the tokenizer {tk.name} has no chat template; pass "
                            "--chat-template FILE (a Jinja chat template, e.g. chat_plain.jinja from templates/)")
    try:
        tk.hf.apply_chat_template(sample, chat_template=text, tokenize=False)
    except Exception as e:  # jinja2 errors of several kinds; all mean the template is unusable
        where = opts.chat_template or f"the chat template of {tk.name}"
        raise MicrovarError(f"{where}: cannot render a chat: {e}") from None
    return text


def _fingerprint(opts: Options, sf, used: list[Recipe], tk: RefTokenizer, ref) -> dict:
    """What decides the shards' contents; a resumed run must match it."""
    return {"seeds": sf.sha256, "recipes": sorted(r.hash for r in used), "tokenizer": tk.sha256,
            "model": (ref.sha256 or ref.name) if (ref and opts.score) else None,
            "options": {"model": opts.model, "tokenizer": opts.tokenizer, "variants": opts.variants,
                        "seed": opts.seed, "skip_invalid": opts.skip_invalid, "split_long": opts.split_long,
                        "score": opts.score, "dtype": opts.dtype, "device": opts.device,
                        "batch_tokens": opts.batch_tokens, "drift": opts.drift,
                        "drift_threshold": opts.drift_threshold, "budget": [str(x) for x in opts.budget],
                        "shard_seeds": opts.shard_seeds, "bridges": opts.bridges, "holdout": opts.holdout},
            "microvar": __version__}


class Work:
    """Finished shards of an expand run, kept beside OUT until OUT is written, so that
    ``--resume`` after a crash or ``kill -9`` redoes only the unfinished shard."""

    def __init__(self, out: Path, fingerprint: dict, resume: bool, overwrite: bool) -> None:
        self.dir = out.parent / f".{out.name}.partial"
        job = self.dir / "job.json"
        if self.dir.exists():
            try:
                before = json.loads(job.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                before = None
            if resume and before is not None and before != fingerprint:
                differ = [k for k in fingerprint if before.get(k) != fingerprint[k]]
                if "options" in differ:
                    differ.remove("options")
                    differ += [f"--{k.replace('_', '-')}" for k, v in fingerprint["options"].items()
                               if before.get("options", {}).get(k) != v]
                raise MicrovarError(f"cannot resume: the unfinished run in {self.dir} used different "
                                    f"{', '.join(differ)}; run again with the same inputs and options, "
                                    "or with --overwrite to start over")
            if not resume:
                if not overwrite:
                    raise MicrovarError(f"{self.dir} holds an unfinished run for {out}: pass --resume to "
                                        "continue it, or --overwrite to start over")
                shutil.rmtree(self.dir)
            elif before is None:
                shutil.rmtree(self.dir)  # killed before it wrote anything: nothing to resume
        elif resume:
            log.warning("nothing to resume for %s: starting from the beginning", out)
        self.dir.mkdir(exist_ok=True)
        tmp = job.with_suffix(".tmp")
        tmp.write_text(json.dumps(fingerprint, indent=1), encoding="utf-8")
        os.replace(tmp, job)

    def _shard(self, k: int) -> Path:
        return self.dir / f"shard-{k:06d}.pkl"

    def done(self, n: int) -> set[int]:
        return {k for k in range(n) if self._shard(k).is_file()}

    def save(self, k: int, payload: dict) -> None:
        tmp = self._shard(k).with_suffix(".tmp")
        with tmp.open("wb") as f:
            pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._shard(k))

    def load(self, k: int) -> dict:
        with self._shard(k).open("rb") as f:
            return pickle.load(f)

    def finish(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def make_expander(opts: Options, tk: RefTokenizer, lm) -> Expander:
    """The expander of a run: model-guided edits when there is a reference model."""
    advisor = None
    if lm is not None:
        from .advisor import Advisor

        advisor = Advisor(lm, tk)
    return Expander(tk, seed=opts.seed, variants=opts.variants, advisor=advisor)


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

    from .score import Group, Item, Scorer, context_token, default_batch_tokens

    batch_tokens = opts.batch_tokens or default_batch_tokens(lm.device, tk.vocab_size)
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
    sc = summary.scoring
    sc["seconds"] = sc.get("seconds", 0.0) + time.perf_counter() - start
    for key, n in (("texts", texts), ("computed_tokens", scorer.computed_tokens),
                   ("total_tokens", scorer.total_tokens)):
        sc[key] = sc.get(key, 0) + n
    sc.update(batch_tokens=batch_tokens, context_token=tk.hf.convert_ids_to_tokens(ctx), drift=opts.drift,
              drift_threshold=opts.drift_threshold if opts.drift else None)


def _account(summary: Summary, result: SeedResult, recipe: Recipe) -> None:
    summary.made += result.counts["made"]
    summary.kept += len(result.kept)
    summary.duplicates += result.counts["duplicate"]
    summary.capped_seeds += result.capped
    summary.kept_per_seed.append(len(result.kept))
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
        "holdout": {"fraction": opts.holdout, "variants": summary.held_out, "seeds": summary.held_out_seeds,
                    "file": HOLDOUT_FILE} if opts.holdout else None,
        "versions": _versions(),
        "counts": summary.to_json(),
        "curriculum": summary.curriculum_json(),
        "export": {"format": opts.format, "prompt": opts.prompt_from if opts.format != "text" else None,
                   "separator": opts.separator if opts.format == "prompt-completion" else None,
                   "chat_template": "chat_template.jinja" if opts.format == "messages" and opts.chat_template
                   else None, "license": opts.license or default.license},
    }


def split_dataset(out: Path, by: str, target: Path | None = None, overwrite: bool = False) -> dict[str, int]:
    """One dataset per value of ``by`` (lora_level or phase) under TARGET/<value>, rows in
    their curriculum order; a split.json beside them says what was split and how many rows
    each part holds."""
    from datasets import load_from_disk

    if not (out / "dataset_info.json").is_file() and not (out / "state.json").is_file():
        raise MicrovarError(f"{out}: not a dataset written by microvar expand")
    quiet_datasets()
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
