"""The designer's own edits: each markup alternative (`{a|b}`), optional span (`{?…}`) and
swappable pair (`{~…}`) a seed's author wrote, and what became of it. A designer edit that
produced no kept variant must never vanish silently: the expander notes why each attempt
failed (step budget, anchors, duplicate text, cap), the pipeline adds the volatility budget,
and whatever is left unused is listed with its reason in the summary and the manifest."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..dsl.recipe import Recipe
from .edits.base import Doc, State
from .tokens import Candidate, step_budget

# the recipe edit each kind of designer edit needs, and the grammar words of that edit
NEEDS = {"alternative": ("swap_alternatives", "edit swap alternatives"),
         "optional": ("drop", "edit drop optional"),
         "swap": ("reorder", "edit reorder")}


def designer_swap(group: int) -> bool:
    """Swappable spans the designer wrote are group 0; rule-proposed pairs are numbered from 1
    (see propose.py), so only group 0 pairs are the designer's."""
    return group == 0


def features(doc: Doc, s: State) -> frozenset[tuple]:
    """The designer edits a state shows: ("alt", k, j) for designer alternative k set to its
    option j > 0, ("opt", k) for optional span k dropped, ("swap", i, j) for designer spans i
    and j that traded places. A move's own designer edits are its state's features that its
    parent's state lacks."""
    out: set[tuple] = set()
    for k, (alt, j) in enumerate(zip(doc.alts, s.alts)):
        if j and not alt.model:
            out.add(("alt", k, j))
    out.update(("opt", k) for k in s.omit)
    for i, j in enumerate(s.order):
        if i < j and s.order[j] == i and designer_swap(doc.swaps[i].group) and designer_swap(doc.swaps[j].group):
            out.add(("swap", i, j))
    return frozenset(out)


def is_designer_move(doc: Doc, parent: State, child: State) -> bool:
    """Whether a move changes a designer edit (sets, undoes or replaces one): such moves may
    use the recipe's `allow designer` allowance."""
    return features(doc, parent) != features(doc, child)


@dataclass
class DesignerEdit:
    """One edit the designer wrote, with the first reason an attempt at it failed and the
    variants that carried it when expansion ended."""
    key: tuple
    edit: str                 # readable: `малых→крошечных`, `{?тёплом}`, `ритм↔объём`
    kind: str                 # alternative, optional or swap
    reason: str | None = None
    carriers: list[str] = field(default_factory=list)   # ids of kept variants showing it

    def to_json(self, seed_id: str, reason: str) -> dict:
        """The manifest's `unused_edits` entry."""
        return {"seed_id": seed_id, "edit": self.edit, "kind": self.kind, "reason": reason}


def designer_edits(doc: Doc) -> list[DesignerEdit]:
    """Every designer edit of a seed, in markup order: each alternative option beyond the
    first, each optional span, each pair of designer swappable spans."""
    out = []
    for k, alt in enumerate(doc.alts):
        if not alt.model:
            out.extend(DesignerEdit(("alt", k, j), f"{alt.options[0]}→{option}", "alternative")
                       for j, option in enumerate(alt.options) if j)
    out.extend(DesignerEdit(("opt", k), f"{{?{opt.text}}}", "optional") for k, opt in enumerate(doc.opts))
    mine = [i for i, sw in enumerate(doc.swaps) if designer_swap(sw.group)]
    out.extend(DesignerEdit(("swap", i, j), f"{doc.swaps[i].text}↔{doc.swaps[j].text}", "swap")
               for n, i in enumerate(mine) for j in mine[n + 1:])
    return out


class Ledger:
    """Per seed: the designer edits and what happened to each attempt at them."""

    def __init__(self, doc: Doc) -> None:
        self.doc = doc
        self.edits = {e.key: e for e in designer_edits(doc)}

    def introduced(self, parent: State, child: State) -> list[DesignerEdit]:
        """The designer edits a move adds to its parent."""
        return [self.edits[k] for k in features(self.doc, child) - features(self.doc, parent) if k in self.edits]

    def failed(self, parent: State, child: State, reason: str) -> None:
        """An attempt at a move failed: its designer edits keep their first reason."""
        for e in self.introduced(parent, child):
            if e.reason is None:
                e.reason = reason

    def kept(self, variant_id: str, state: State) -> None:
        """A variant was kept: it carries every designer edit its state shows."""
        for k in features(self.doc, state):
            if k in self.edits:
                self.edits[k].carriers.append(variant_id)

    def unused(self, seed_id: str, kept_ids: set[str], rejects: list, recipe: Recipe, cap: int,
               capped: bool, held_ids: set[str] = frozenset()) -> list[dict]:
        """The designer edits no variant in ``kept_ids`` carries, each with what removed it:
        the volatility budget (when expansion kept it), else its first failed attempt, else
        the cap or a recipe without the edit; every edit of a seed rejected whole says so, and
        one carried only by variants set aside by --holdout says that."""
        budget = {r.variant_id: r.detail for r in rejects if r.check == "budget"}
        out = []
        for e in self.edits.values():
            if any(v in kept_ids for v in e.carriers):
                continue
            gone = next((budget[v] for v in e.carriers if v in budget), None)
            if not kept_ids:
                reason = rejects[0].detail if rejects else "the seed was rejected whole"
            elif gone is not None:
                reason = f"removed by the volatility budget ({gone})"
            elif any(v in held_ids for v in e.carriers):
                reason = "held out for evaluation (--holdout): its variants are in holdout.jsonl"
            elif e.reason is not None:
                reason = e.reason
            elif not _recipe_has(recipe, e.kind):
                reason = f"recipe {recipe.name!r} has no `{NEEDS[e.kind][1]}`"
            elif capped:
                reason = f"cap reached: the seed's {cap} variants were kept before it was tried"
            else:
                reason = "no kept variant carries it"
            out.append(e.to_json(seed_id, reason))
        return out


def _recipe_has(recipe: Recipe, kind: str) -> bool:
    """Whether the recipe has the edit that makes this kind of designer edit."""
    spec = recipe.edit(NEEDS[kind][0])
    return spec is not None and (kind != "optional" or "optional" in spec.args)


def step_reason(c: Candidate, recipe: Recipe) -> str:
    """Why a candidate failed the step check, in the designer's words, naming where its
    budget came from (its stage's step, or `allow designer`)."""
    limit = step_budget(c, recipe)
    source = "`allow designer`" if c.allowance and limit == c.allowance else f"stage {c.stage}"
    return f"moves {c.step_tokens} tokens, step budget {limit} ({source})"


def summary_line(unused: list[dict], written: int, shown: int = 3) -> str | None:
    """`designer edits unused: N of M (edit in seed: reason; …)`, or None when all were used."""
    if not unused:
        return None
    first = "; ".join(f"{u['edit']} in {u['seed_id']}: {u['reason']}" for u in unused[:shown])
    more = f"; … {len(unused) - shown} more in manifest.json" if len(unused) > shown else ""
    return f"designer edits unused: {len(unused)} of {written} ({first}{more})"
