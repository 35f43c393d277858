"""`microvar preview`: one seed's variants as expand makes them, in curriculum order (the
seed's drift path), each with its token diff against its parent, step tokens, volatility and
place in the path, then the rejected ones with the reason. Rendered with rich: coloured on a
terminal, plain text (diff marks ``[-old-]`` ``{+new+}`` and token boundaries ``▏`` kept) when
piped."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path

from rapidfuzz.distance import Levenshtein

from ..dsl.recipe import PAIR_METRICS, Limit, Recipe
from ..errors import MicrovarError

BOUNDARY = "▏"


@dataclass
class PreviewOptions:
    seeds: str
    seed_id: str
    recipes: list[str] = field(default_factory=list)
    model: str | None = None
    tokenizer: str | None = None
    score: bool = True
    device: str = "auto"
    budget: tuple[Limit, ...] = ()
    variants: int | None = None
    seed: int = 0
    bridges: int = 2


@dataclass
class Row:
    """A variant as shown: kept (with its place in the path) or rejected."""
    variant_id: str
    parent_id: str
    text: str
    edits: list[str]
    diff: list[tuple[str, list[str]]]       # (equal|delete|insert, token pieces)
    stage: str = ""
    depth: int = 0
    n_tokens: int = 0
    step_tokens: int | None = None
    marker_tokens: int = 0
    distance: int | None = None             # raw token edit distance to the parent
    volatility: dict | None = None
    step: int | None = None                 # place in the drift path
    path_distance: int | None = None        # step distance from the row before it in the path
    path_budget: int | None = None
    bridge: bool = False                    # shown again to bridge to the next row
    level: str = ""
    phase: int | None = None
    check: str | None = None                # rejected: by which check, and why
    detail: str = ""
    limit: str | None = None
    value: float | None = None

    def to_json(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k != "diff"}
        out["diff"] = [{"op": op, "tokens": pieces} for op, pieces in self.diff]
        return out


@dataclass
class Preview:
    seed_id: str
    where: str                 # FILE:LINE of the seed
    seed_text: str
    recipe: Recipe
    tokenizer: str
    model: str | None          # None: not scored
    path: list[Row]
    rejects: list[Row]
    made: int
    capped: bool
    repeats: int
    gaps: int
    bridged: int

    def to_json(self, rejects: bool = True) -> dict:
        return {"seed_id": self.seed_id, "where": self.where, "text": self.seed_text, "recipe": self.recipe.name,
                "recipe_source": self.recipe.source, "tokenizer": self.tokenizer, "model": self.model,
                "scored": self.model is not None, "made": self.made, "capped": self.capped,
                "kept": len({r.variant_id for r in self.path}), "rejected": len(self.rejects),
                "path_rows": len(self.path), "path_repeats": self.repeats, "gaps": self.gaps,
                "bridged": self.bridged, "path": [r.to_json() for r in self.path],
                "rejects": [r.to_json() for r in self.rejects] if rejects else None}


# ---------------------------------------------------------------- token diff


def token_spans(tk, text: str, ids: list[int]) -> list[int]:
    """Character boundaries of the tokens: token k covers text[b[k]:b[k+1]]. A character
    spelled in several byte-level tokens belongs to the last of them (the others are empty)."""
    enc_ids, offsets = tk.encode_offsets(text)
    if enc_ids != ids or not ids:
        return [0] * len(ids) + [len(text)]
    bounds = [0]
    for start, _ in offsets[1:]:
        bounds.append(min(max(bounds[-1], start), len(text)))
    bounds.append(len(text))
    return bounds


def token_diff(tk, old_text: str, old_ids: list[int], new_text: str, new_ids: list[int]) -> list[tuple[str, list[str]]]:
    """The diff of token ids (as the step checks count it) as runs of token pieces:
    ("equal" | "delete" | "insert", [piece, ...])."""
    ob, nb = token_spans(tk, old_text, old_ids), token_spans(tk, new_text, new_ids)

    def pieces(text: str, b: list[int], lo: int, hi: int) -> list[str]:
        return [text[b[k]:b[k + 1]] for k in range(lo, hi) if b[k + 1] > b[k]]

    out: list[tuple[str, list[str]]] = []
    for op in Levenshtein.opcodes(old_ids, new_ids):
        if op.tag == "equal":
            run = [("equal", pieces(new_text, nb, op.dest_start, op.dest_end))]
        else:
            run = [("delete", pieces(old_text, ob, op.src_start, op.src_end)),
                   ("insert", pieces(new_text, nb, op.dest_start, op.dest_end))]
        for tag, p in run:
            if not p:
                continue
            # one change reads as one block: what went, then what came
            if tag == "delete" and out and out[-1][0] == "insert" and len(out) > 1 and out[-2][0] == "delete":
                out[-2][1].extend(p)
            elif tag == "delete" and out and out[-1][0] == "insert":
                out.insert(len(out) - 1, (tag, p))
            elif out and out[-1][0] == tag:
                out[-1][1].extend(p)
            else:
                out.append((tag, p))
    return out


# ---------------------------------------------------------------- building


def build_preview(opts: PreviewOptions) -> Preview:
    """Expand (and score, unless --model none) one seed the way ``microvar expand`` does."""
    from ..curriculum import StepMeasure, drift_path, repeats_for
    from ..expand.expander import trim_shares
    from ..expand.seeds import read_seeds
    from ..model.budget import BudgetStats, apply_budget, combine
    from ..model.load import load_tokenizer
    from ..pipeline.inputs import choose_recipes, load_reference, make_expander
    from ..pipeline.options import Options
    from ..pipeline.scoring import scored
    from ..pipeline.summary import Summary

    sf = read_seeds(opts.seeds, skip_invalid=True)
    seed = next((s for s in sf.seeds if s.id == opts.seed_id), None)
    if seed is None:
        bad = next((b for b in sf.bad if b.seed_id == opts.seed_id), None)
        if bad is not None:
            raise bad.error
        ids = [s.id for s in sf.seeds]
        near = difflib.get_close_matches(opts.seed_id, ids, n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(map(repr, near))}?" if near else \
            f"; ids in the file: {', '.join(map(repr, ids[:10]))}{' …' if len(ids) > 10 else ''}"
        raise MicrovarError(f"{sf.name}: no seed with id {opts.seed_id!r}{hint}")
    seeds_dir = Path(opts.seeds).parent if opts.seeds != "-" else None
    default, by_ref = choose_recipes([seed], list(opts.recipes), seeds_dir)
    recipe = by_ref[seed.recipe] if seed.recipe else default
    popts = Options(opts.seeds, Path("."), list(opts.recipes), opts.model, opts.tokenizer, opts.variants, opts.seed,
                    progress=False, score=opts.score, device=opts.device, budget=opts.budget, bridges=opts.bridges)
    tk, _ = load_tokenizer(popts.model, popts.tokenizer)
    lm = load_reference(popts, tk) if opts.score else None
    expander = make_expander(popts, tk, lm)
    result = expander.expand(seed, recipe)
    made = result.counts["made"]
    every = {v.variant_id: v for v in result.kept}      # before the budget removes any
    if lm is not None and result.kept:
        for _ in scored(iter([(seed, recipe, result)]), lm, tk, popts, Summary()):
            pass
        apply_budget(result, combine(recipe.budget, opts.budget), BudgetStats())
    trim_shares(result, recipe)

    def diff_to(parent_id: str, text: str, ids: list[int]) -> list[tuple[str, list[str]]]:
        parent = every.get(parent_id)
        if parent is None:
            return token_diff(tk, text, ids, text, ids)
        return token_diff(tk, parent.text, parent.ids, text, ids)

    rows: list[Row] = []
    gaps = bridged = repeats = 0
    if result.kept:
        path = drift_path(result.kept, recipe, StepMeasure.of(recipe, expander.marker_cost), opts.bridges)
        gaps, bridged, repeats = len(path.gaps), path.bridged, repeats_for(len(path.rows), recipe.repeat)
        seen: set[str] = set()
        for k, (v, dist, budget) in enumerate(zip(path.rows, path.distances, path.budgets)):
            level, phase = recipe.route_of(v.stage)
            again = v.variant_id in seen
            seen.add(v.variant_id)
            rows.append(Row(v.variant_id, v.parent_id, v.text, v.edits, [] if again else diff_to(v.parent_id, v.text, v.ids),
                            v.stage, v.depth, v.n_tokens, v.step_tokens if v.parent_id else None, v.marker_tokens,
                            v.distance if v.parent_id else None, v.volatility, k, dist if k else None,
                            budget if k else None, again, level, phase))
    rejects = []
    for r in result.rejects:
        ids = tk.encode([r.text])[0]
        rejects.append(Row(r.variant_id, r.parent_id, r.text, r.edits, diff_to(r.parent_id, r.text, ids),
                           n_tokens=len(ids), volatility=r.volatility, check=r.check, detail=r.detail,
                           limit=r.limit, value=r.value))
    return Preview(seed.id, f"{sf.name}:{seed.line}", seed.text, recipe, tk.name, lm.name if lm else None, rows,
                   rejects, made, result.capped, repeats, gaps, bridged)


# ---------------------------------------------------------------- rendering


def _visible(piece: str) -> str:
    return piece.replace("\n", "↵\n").replace("\t", "⇥\t")


def diff_text(diff: list[tuple[str, list[str]]], boundaries: bool = True):
    """A rich Text of a token diff: unchanged dim, deleted red and struck ``[-…-]``, inserted
    green ``{+…+}``; a thin bar between tokens."""
    from rich.text import Text

    styles = {"equal": "dim", "delete": "bold red strike", "insert": "bold green"}
    marks = {"equal": ("", ""), "delete": ("[-", "-]"), "insert": ("{+", "+}")}
    out = Text()
    for n, (op, pieces) in enumerate(diff):
        if n and boundaries and not (op == "insert" and diff[n - 1][0] == "delete") \
                and not diff[n - 1][1][-1].endswith("\n"):
            out.append(BOUNDARY, "dim")
        left, right = marks[op]
        out.append(left, "red" if op == "delete" else "green" if op == "insert" else "")
        for k, piece in enumerate(pieces):
            if k and boundaries and not pieces[k - 1].endswith("\n"):
                out.append(BOUNDARY, "dim")
            out.append(_visible(piece), styles[op])
        out.append(right, "red" if op == "delete" else "green" if op == "insert" else "")
    return out


def _metrics(m: dict, root: bool = False, child_of_root: bool = False, indent: int = 0):
    """The volatility metrics as a small table: a row against the parent, one against the
    seed (one row when they are the same), then the counts."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    if root:
        return Text(" " * indent + f"nll {m['nll']:.3f} (the seed: its other metrics are against itself)", "cyan")
    table = Table(box=None, show_edge=False, pad_edge=False, padding=(0, 2, 0, 0), header_style="cyan")
    table.add_column(" " * indent)
    for k in PAIR_METRICS:
        table.add_column(k, justify="right", style="cyan")
    rows = [("vs parent (the seed)", "")] if child_of_root else [("vs parent", ""), ("vs seed", "seed_")]
    for label, prefix in rows:
        table.add_row(" " * indent + label, *(f"{m[prefix + k]:+.3f}" if k == "delta_nll" else f"{m[prefix + k]:.3f}"
                                              for k in PAIR_METRICS))
    extra = f"nll {m['nll']:.3f} · new_tokens {m.get('new_tokens')} · aligned_tokens {m.get('aligned_tokens')}"
    if m.get("drift_layer") is not None:
        extra += f" · drift_layer {m['drift_layer']}"
    return Group(table, Text(" " * indent + extra, "cyan"))


def _n(k: int, word: str) -> str:
    return f"{k} {word}{'' if k == 1 else 's'}"


def print_preview(pv: Preview, console=None, width: int | None = None, rejects: bool = True) -> None:
    from rich.console import Console
    from rich.rule import Rule
    from rich.text import Text

    if console is None:
        console = Console(width=width, highlight=False)
        if width is None and not console.is_terminal:
            console.width, console.soft_wrap = 100, True  # piped: a line per line, for grep and less
    kept = len({r.variant_id for r in pv.path})
    scored = f"scored by {pv.model}" if pv.model else "not scored (--model none)"
    head = Text()
    head.append(f"seed {pv.seed_id}", "bold")
    head.append(f"  ({pv.where})  recipe {pv.recipe.name} ({pv.recipe.source})  {scored}\n")
    if not pv.path:
        head.append(f"tokenizer {pv.tokenizer}: the seed itself is rejected (below)")
    else:
        head.append(f"tokenizer {pv.tokenizer}: {pv.made} variants made; {kept} kept (the seed included), "
                    f"{len(pv.rejects)} rejected{' (the cap was reached)' if pv.capped else ''}; drift path of "
                    f"{_n(len(pv.path), 'row')} ({_n(pv.bridged, 'bridge')}, {_n(pv.gaps, 'gap')}), shown "
                    f"{pv.repeats}× to reach repeat {pv.recipe.repeat}")
    console.print(head)
    console.print(Text(pv.seed_text))
    console.print(Text("diff against the parent: [-deleted-] {+inserted+}, unchanged dim, ▏ between tokens", "dim"))
    n = len(pv.path)
    root = pv.path[0].variant_id if pv.path else None
    for r in pv.path:
        where = f"step {r.step}/{n - 1}" if n > 1 else "step 0"
        if r.bridge:
            console.print(Text(f"{where} · again {r.variant_id} ({r.stage}): a bridge back, to keep the next step "
                               f"within budget ({r.path_distance} tokens from the row before)", "dim"))
            continue
        console.print(Rule(Text(f"{where} · {r.stage} · {r.level} phase {r.phase}", "bold cyan"), align="left"))
        info = Text()
        info.append(f"id {r.variant_id}")
        info.append(f"  parent {r.parent_id}" if r.parent_id else "  the seed (root)")
        info.append(f"  edits {', '.join(r.edits)}")
        console.print(info)
        console.print(diff_text(r.diff))
        if r.parent_id:
            steps = Text(f"step tokens {r.step_tokens} (raw distance {r.distance}")
            steps.append(f", markers {r.marker_tokens} tokens" if r.marker_tokens else "")
            steps.append(f") · {r.n_tokens} tokens · depth {r.depth}")
            gap = r.path_distance is not None and r.path_budget is not None and r.path_distance > r.path_budget
            steps.append(f" · path: {r.path_distance} from the row before (budget {r.path_budget})",
                         "bold yellow" if gap else "")
            if gap:
                steps.append(" GAP", "bold yellow")
            console.print(steps)
        else:
            console.print(Text(f"{r.n_tokens} tokens"))
        if r.volatility:
            console.print(_metrics(r.volatility, not r.parent_id, r.parent_id == root))
        console.print(Text("kept", "bold green"))
    if not rejects or not pv.rejects:
        return
    console.print(Rule(Text(f"rejected ({len(pv.rejects)})", "bold red"), align="left"))
    for r in pv.rejects:
        head = Text()
        head.append(f"✗ {r.check}", "bold red")
        head.append(f": {r.detail}")
        console.print(head)
        info = Text(f"  id {r.variant_id}  parent {r.parent_id}  edits {', '.join(r.edits)}" if r.variant_id
                    else "  the seed itself", "dim")
        console.print(info)
        for line in diff_text(r.diff).split("\n"):
            console.print(Text("  ").append_text(line))
        if r.volatility:
            console.print(_metrics(r.volatility, False, r.parent_id == root, indent=2))
