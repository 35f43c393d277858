"""Seed x recipe -> token-safe variants. Breadth-first over edit depth, a seeded RNG for
every choice, each candidate checked against its parent with the reference tokenizer;
kept ones become parents of the next depth, rejected ones go to the rejects with a reason."""

from __future__ import annotations

import hashlib
import random
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field
from itertools import islice

from jinja2 import TemplateError

from ..dsl.markup import Lit, Swap
from ..dsl.recipe import Recipe
from .designer import Ledger, is_designer_move, step_reason
from .edits import EDITS, Doc, State, render, stage_of
from .edits.base import closing, in_style, line_break
from .fluency import MAX_TOKENS_PER_CHAR, ContinuationStats, SubstitutionStats, fragment_rate, sentence_of
from .propose import ReorderRule, propose
from .reorder import DEFAULT_MARGIN, ReorderStats, is_code, prose_ranges

SUBSTITUTE_MARGIN = 1.0   # nats: a model substitution may cost its sentence at most this much
from .seeds import Seed
from .tokens import Candidate, RefTokenizer, align, run_checks
from .words import glues, word_ends

# Composition order: a variant built from several edits takes its parent as the variant
# without its *smallest* edit, so bigger edits are applied first and the last step is cheap.
APPLY_RANK = {"identity": 0, "wrap": 1, "drop": 2, "tail": 3, "mark": 4, "grow": 5, "grow_model": 5,
              "reorder": 6, "swap_alternatives": 7, "swap_model": 7}


@dataclass
class Variant:
    seed_id: str
    variant_id: str
    parent_id: str
    text: str
    edits: list[str]
    kinds: list[str]
    stage: str
    depth: int
    n_tokens: int
    step_tokens: int
    marker_tokens: int
    distance: int                       # raw token edit distance to the parent (markers not collapsed)
    ids: list[int] = field(repr=False)
    state: State = field(repr=False)
    volatility: dict | None = None      # filled by the scorer; None when not scored


@dataclass
class Reject:
    seed_id: str
    text: str
    check: str
    detail: str
    variant_id: str = ""
    parent_id: str = ""
    edits: list[str] = field(default_factory=list)
    limit: str | None = None          # the budget line a variant broke ("surprisal <= 6"), with
    value: float | None = None        # the variant's value of that metric
    volatility: dict | None = None    # every metric of a variant rejected by the budget

    def to_json(self) -> dict:
        return {"seed_id": self.seed_id, "text": self.text, "check": self.check, "detail": self.detail,
                "variant_id": self.variant_id, "parent_id": self.parent_id, "edits": self.edits,
                "limit": self.limit, "value": self.value, "volatility": self.volatility}


@dataclass
class SeedResult:
    seed_id: str
    kept: list[Variant]
    rejects: list[Reject]
    counts: Counter
    capped: bool = False
    ledger: Ledger | None = None      # the designer's edits and what became of them
    held_out: list[Variant] = field(default_factory=list)   # kept, then set aside by --holdout

    def unused_edits(self, recipe: Recipe, cap: int) -> list[dict]:
        """The designer edits no kept variant carries, with what removed each (see designer.py)."""
        if self.ledger is None:
            return []
        kept = {v.variant_id for v in self.kept}
        held = {v.variant_id for v in self.held_out}
        return self.ledger.unused(self.seed_id, kept, self.rejects, recipe, cap, self.capped, held)


def variant_id(seed_id: str, text: str) -> str:
    return hashlib.sha1(f"{seed_id}\x00{text}".encode()).hexdigest()[:16]


class Expander:
    """Expands seeds with one tokenizer; recipes are chosen per seed by the caller."""

    def __init__(self, tk: RefTokenizer, seed: int = 0, variants: int | None = None, advisor=None) -> None:
        self.tk, self.seed, self.cap_override, self.advisor = tk, seed, variants, advisor
        self._marker_cost: dict[str, int] = {}
        self.reorder_stats = ReorderStats()
        self.substitution_stats = SubstitutionStats()
        self.continuation_stats = ContinuationStats()

    def marker_cost(self, marker: str) -> int:
        if marker not in self._marker_cost:
            self._marker_cost[marker] = len(self.tk.encode([" " + marker])[0])
        return self._marker_cost[marker]

    def reorder_rule(self, seed: Seed, recipe: Recipe) -> ReorderRule | None:
        """Rule-proposed swaps: plain prose seeds only (a designer who wrote markup chose the
        edits, and {~...} spans say where order may change; code never reorders)."""
        spec = recipe.edit("reorder")
        if spec is None:
            return None
        self.reorder_stats.margin = spec.args[0] if spec.args else DEFAULT_MARGIN
        if seed.parts is not None:
            self.reorder_stats.skipped_markup += not any(isinstance(p, Swap) for p in seed.parts)
            return None
        if is_code(seed.meta):
            self.reorder_stats.skipped_code += 1
            return None
        return ReorderRule(self.reorder_stats.margin, self.reorder_stats)

    def make_doc(self, seed: Seed, recipe: Recipe, rng: random.Random) -> Doc:
        parts = list(seed.parts) if seed.parts is not None else [Lit(seed.text)]
        reorder = self.reorder_rule(seed, recipe)
        swap_model = recipe.edit("swap_model")
        model_swaps = swap_model.args[0] if swap_model and self.advisor else 0
        if swap_model is not None:
            self.substitution_stats.margin = swap_model.args[1] if len(swap_model.args) > 1 else SUBSTITUTE_MARGIN
        parts = propose(parts, recipe.anchors if recipe.edit("mark") else 0, 2 if reorder else 0, rng,
                        self.advisor, model_swaps, reorder=reorder, substitute=self.substitution_stats,
                        markers=tuple(recipe.markers))
        continuation, source = seed.continuation, "given"
        code = is_code(seed.meta) or not prose_ranges(seed.text)
        if not continuation and recipe.edit("grow_model") and self.advisor:
            continuation, source = self.model_continuation(seed.text, code), "model"
        doc = Doc(seed.id, parts, continuation, template_dirs=recipe.template_dirs, meta=seed.meta,
                  continuation_source=source)
        if continuation and (source == "model" or recipe.edit("grow")):
            _, offsets = self.tk.encode_offsets(seed.text + continuation)
            base = len(seed.text)
            starts = sorted(max(s - base, 0) for s, e in offsets if e > base)
            # words, not tokens, the model's continuation and the designer's alike (lines in
            # code): SmolLM2 spells Russian a letter or two per token, and a row that ends in
            # "Объё" or "Поэ" is no variant a designer would keep. Both end where they were cut
            # (closed): the model's at a word end (Advisor.continuation), the designer's where
            # the designer ended it.
            doc.grow_cuts = word_ends(continuation, code, closed=True)
            doc.grow_tokens = [bisect_left(starts, cut) for cut in doc.grow_cuts]  # tokens that show it
        return doc

    def model_continuation(self, text: str, code: bool) -> str | None:
        """The advisor's continuation of text, its line breaks in the seed's style (Windows
        text gets ``\r\n``); None where there is none, where it would go on inside the seed's
        last word or number (``glues``), or where the model spells the text in
        fragments: the words it cannot read whole, in the sentence the seed ends with and in
        the continuation, cost over ``MAX_TOKENS_PER_CHAR`` tokens a character
        (``fragment_rate``). Such a model continues Russian with non-words (SmolLM2: ``Кот спит
        на тёплом подоконнике.`` + `` Всётся``); the rule that turns its substitutions off
        turns its continuations off too (``ContinuationStats``)."""
        continuation = self.advisor.continuation(text, code=code)
        if not continuation or glues(text, continuation, code):   # "x=1" + "0": see Advisor.continuation
            return None
        continuation = in_style(continuation, line_break(text))
        full = text + continuation
        _, offsets = self.tk.encode_offsets(full)
        start, _ = sentence_of(text, max(len(text) - 1, 0), len(text))
        rate = fragment_rate(full, offsets, start, len(full))
        if rate is not None and rate > MAX_TOKENS_PER_CHAR:
            self.continuation_stats.fragments += 1
            return None
        self.continuation_stats.continued += 1
        return continuation

    def expand(self, seed: Seed, recipe: Recipe) -> SeedResult:
        rng = random.Random(f"{self.seed}:{seed.id}")
        cap = self.cap_override or recipe.variants
        counts: Counter = Counter()
        rejects: list[Reject] = []
        # The seed is checked before make_doc: the model-guided proposals and continuation
        # are forwards over the whole seed (an 8,400-token seed took 56 s and 4.8 GB of them
        # only to be rejected as too long), and they change neither the seed's text nor its
        # designer edits, so a seed that fails here fails the same way after them.
        plain = Doc(seed.id, list(seed.parts) if seed.parts is not None else [Lit(seed.text)], meta=seed.meta)
        text = render(plain, plain.initial)
        ids = self.tk.encode([text])[0]
        cand = Candidate(text, ids, self.tk.decode([ids])[0], None, "identity", anchors=tuple(plain.anchors))
        align(cand)
        failed = run_checks(cand, self.tk, recipe)
        if failed:
            counts[f"rejected:{failed[0]}"] += 1
            rejects.append(Reject(seed.id, text, failed[0], f"seed rejected: {failed[1]}"))
            return SeedResult(seed.id, [], rejects, counts, ledger=Ledger(plain))
        doc = self.make_doc(seed, recipe, rng)
        ledger = Ledger(doc)
        root_state = doc.initial
        assert render(doc, root_state) == text, "proposals only split the seed's literal text into parts"
        root = Variant(seed.id, variant_id(seed.id, text), "", text, ["identity"], ["identity"], "identity",
                       0, len(ids), 0, 0, 0, ids, root_state)
        kept = [root]
        by_state = {root_state: root}
        seen_states = {root_state}
        seen_texts = {text}
        frontier = [root]
        capped = False
        jumps, jump_quota = 0, cap * recipe.jumps // 100
        per_stage: Counter = Counter()
        stage_quota = {st: max(1, cap * pct // 100) for st, pct in recipe.share.items()}
        specs = [e for e in recipe.edits if e.kind != "identity"]
        for depth in range(1, recipe.compose + 1):
            generators = []
            for parent in frontier:
                floor = max((APPLY_RANK[k] for k in parent.kinds), default=0)
                for spec in specs:
                    if APPLY_RANK[spec.kind] >= floor:
                        generators.append((parent, iter(EDITS[spec.kind](doc, parent.state, spec.args, rng, recipe))))
            rng.shuffle(generators)
            moves = _round_robin(generators)
            next_frontier = []
            while len(kept) < cap:
                chunk = list(islice(moves, max(8, cap - len(kept))))
                if not chunk:
                    break
                entries = []
                for parent, chain in chunk:
                    bases = [parent.state]
                    for state, label, kind in chain:
                        if state not in seen_states:
                            seen_states.add(state)
                            try:
                                t = render(doc, state)
                            except TemplateError as e:  # strict undefined, or a template that fails
                                counts["made"] += 1
                                counts["rejected:template"] += 1
                                rejects.append(Reject(seed.id, "", "template", f"template {state.wrap}: {e}",
                                                      "", parent.variant_id, _extend(parent, label, kind)[0]))
                                continue
                            if t is None:
                                continue
                            if t in seen_texts:
                                counts["duplicate"] += 1
                                ledger.failed(bases[0], state, "its text equals another variant's")
                                continue
                            seen_texts.add(t)
                            entries.append((state, t, label, kind, list(bases)))
                        bases.insert(0, state)  # later chain steps prefer the nearest earlier one
                texts = [e[1] for e in entries]
                all_ids = self.tk.encode(texts)
                decoded = self.tk.decode(all_ids)
                for (state, t, label, kind, bases), ids, dec in zip(entries, all_ids, decoded):
                    if len(kept) >= cap:
                        capped = True
                        break
                    parent = next(by_state[b] for b in bases if b in by_state)
                    counts["made"] += 1
                    edits, kinds = _extend(parent, label, kind)
                    stage = max((stage_of(k) for k in kinds), key=recipe.stages.index)
                    c = self._candidate(t, ids, dec, parent, state, stage, doc, kind)
                    if recipe.designer is not None and is_designer_move(doc, parent.state, state):
                        c.allowance = recipe.designer
                    failed = run_checks(c, self.tk, recipe)
                    why = step_reason(c, recipe) if failed and failed[0] == "step" else None
                    vid = variant_id(seed.id, t)
                    if not failed and c.step_tokens > max(recipe.step, c.min_step):
                        if jumps >= jump_quota:
                            failed = ("step", f"{c.step_tokens} tokens from its parent: over the step budget "
                                              f"{recipe.step}, and this seed's share of jumps ({jump_quota}) is used")
                            why = (f"moves {c.step_tokens} tokens, over the step budget {recipe.step}: the seed's "
                                   f"{jump_quota} jumps (`jumps <= {recipe.jumps}%`) were used by other edits")
                        else:
                            jumps += 1
                    if not failed and per_stage[stage] >= stage_quota.get(stage, cap):
                        failed = ("share", f"{stage} variants are capped at {recipe.share[stage]}% of the "
                                           f"seed's {cap} (share {stage} <= {recipe.share[stage]}%)")
                    if failed:
                        counts[f"rejected:{failed[0]}"] += 1
                        rejects.append(Reject(seed.id, t, failed[0], failed[1], vid, parent.variant_id, edits))
                        ledger.failed(parent.state, state, why or f"rejected by the {failed[0]} check: {failed[1]}")
                        continue
                    v = Variant(seed.id, vid, parent.variant_id, t, edits, kinds, stage, depth, len(ids),
                                c.step_tokens, c.marker_tokens, c.distance, ids, state)
                    ledger.kept(vid, state)
                    kept.append(v)
                    per_stage[stage] += 1
                    by_state[state] = v
                    next_frontier.append(v)
            if len(kept) >= cap and next(moves, None) is not None:
                capped = True
            frontier = next_frontier
            if not frontier or len(kept) >= cap:
                break
        counts["kept"] = len(kept)
        return SeedResult(seed.id, kept, rejects, counts, capped, ledger)

    def _candidate(self, text, ids, decoded, parent: Variant, state: State, stage: str, doc: Doc,
                   kind: str) -> Candidate:
        old = set(parent.state.marks)
        new_markers: list[str] = []
        for m in state.marks:
            if m not in old:
                new_markers.append(m[1])
                if m[2] == "wrap":
                    new_markers.append(closing(m[1]))
        c = Candidate(text, ids, decoded, parent.ids, stage, tuple(new_markers), tuple(doc.anchors))
        align(c)
        if new_markers:
            c.marker_tokens = sum(self.marker_cost(m) for m in new_markers)
            # a marker is one step, whatever it costs in tokens; its cost is held to the allowance
            c.step_tokens = max(len(new_markers), c.distance - c.marker_tokens + len(new_markers))
        else:
            c.step_tokens = c.distance
        if kind in ("grow", "grow_model") and state.grow == parent.state.grow + 1:
            # one unit is the least a grow step can reveal, however many tokens it takes: a
            # whole word of the continuation (a line in code), which may pass the step budget
            # (a Russian word is 3-9 SmolLM2 tokens; cut inside it the row ends mid-word).
            # The tokens the seam re-spells come with it ("\n\n" is one token before "print"
            # follows, two after): without them the unit, and the chain after it, would be lost.
            before = doc.grow_tokens[parent.state.grow - 1] if parent.state.grow else 0
            c.min_step = max(doc.grow_tokens[state.grow - 1] - before, c.distance)
        return c


def trim_shares(result: SeedResult, recipe: Recipe) -> None:
    """Hold each capped stage to its share of the variants a seed keeps after the budget:
    the expander capped it against the variant cap; this trims the newest leaves of a stage
    still over its share of what was actually kept (never fewer than one of a stage)."""
    for stage, pct in recipe.share.items():
        while True:
            variants = result.kept[1:]
            mine = [v for v in variants if v.stage == stage]
            if len(mine) <= max(1, len(variants) * pct // 100):
                break
            parents = {v.parent_id for v in variants}
            leaf = next((v for v in reversed(mine) if v.variant_id not in parents), None)
            if leaf is None:
                break
            result.kept.remove(leaf)
            result.rejects.append(Reject(leaf.seed_id, leaf.text, "share",
                                         f"{stage} variants over {pct}% of the {len(variants)} this seed kept "
                                         f"(share {stage} <= {pct}%)", leaf.variant_id, leaf.parent_id, leaf.edits))
            result.counts["rejected:share"] += 1
            result.counts["kept"] = len(result.kept)


def hold_out(result: SeedResult, fraction: float, seed: int) -> None:
    """Move a seeded share of the seed's non-root variants out of its kept ones into
    ``result.held_out``, for evaluation on variants the adapter never saw. Only leaves are taken (a variant no other
    kept variant was made from), so every kept variant's parent stays in the curriculum; at
    least one non-root variant stays. Same seed and seed id, same choice."""
    n = len(result.kept) - 1
    want = min(int(fraction * n + 0.5), n - 1) if n >= 2 else 0
    rng = random.Random(f"holdout:{seed}:{result.seed_id}")
    while len(result.held_out) < want:
        parents = {v.parent_id for v in result.kept}
        leaf = rng.choice([v for v in result.kept[1:] if v.variant_id not in parents])
        result.kept.remove(leaf)
        result.held_out.append(leaf)
    result.counts["kept"] = len(result.kept)


def _extend(parent: Variant, label: str, kind: str) -> tuple[list[str], list[str]]:
    """Edits and kinds of a child; a further step of a grow chain replaces the chain's label."""
    if parent.kinds == ["identity"]:
        return [label], [kind]
    if kind == parent.kinds[-1] and kind in ("grow", "grow_model"):
        return parent.edits[:-1] + [label], parent.kinds
    return parent.edits + [label], parent.kinds + [kind]


def _round_robin(generators):
    """One move from each (parent, generator) in turn, so every edit kind gets its chance."""
    active = list(generators)
    while active:
        still = []
        for parent, gen in active:
            move = next(gen, None)
            if move is not None:
                still.append((parent, gen))
                yield parent, move
        active = still
