"""The edit kinds the user named. Each proposes moves from a state; none touches an anchor's
text (anchors are separate parts, and only ``mark`` decorates them)."""

from __future__ import annotations

import random

from .base import Doc, State, before_tail, body, closing, drop_last_unit, edit, ends_with_tail, with_


@edit("identity")
def identity(doc: Doc, s: State, args: tuple, rng: random.Random, recipe):
    return []  # the seed itself is always the root variant


@edit("mark")
def mark(doc: Doc, s: State, args: tuple, rng: random.Random, recipe):
    modes = args or ("prefix",)
    marked = {m[0] for m in s.marks}
    for k, anchor in enumerate(doc.anchors):
        if k in marked:
            continue
        for marker in recipe.markers:
            for mode in modes:
                new = with_(s, marks=tuple(sorted(s.marks + ((k, marker, mode),))))
                label = f"mark:{marker}@{anchor}" if mode == "prefix" else f"mark:{marker}…{closing(marker)}@{anchor}"
                yield [(new, label, "mark")]


@edit("tail")
def tail(doc: Doc, s: State, args: tuple, rng: random.Random, recipe):
    if s.tail is not None or s.grow:
        return
    text = before_tail(doc, s)
    for t in args:
        if text is not None and ends_with_tail(text, t):   # a seed that ends "→ summary:" already
            continue
        yield [(with_(s, tail=t), f"tail:{t}", "tail")]


@edit("drop")
def drop(doc: Doc, s: State, args: tuple, rng: random.Random, recipe):
    if "last_line" in args and not s.drop_last and not s.grow and s.tail is None:
        dropped = drop_last_unit(body(doc, s))
        if dropped is not None:
            yield [(with_(s, drop_last=True), f"drop:{dropped[1]}", "drop")]
    if "optional" in args:
        for k, opt in enumerate(doc.opts):
            if k not in s.omit:
                yield [(with_(s, omit=s.omit | {k}), f"drop:optional@{opt.text.strip()}", "drop")]


@edit("wrap")
def wrap(doc: Doc, s: State, args: tuple, rng: random.Random, recipe):
    if s.wrap is not None:
        return
    for template in args:
        name = template.rsplit(".", 1)[0] if template.endswith(".j2") else template
        yield [(with_(s, wrap=template), f"wrap:{name}", "wrap")]


def _swaps(doc: Doc, s: State, model: bool, kind: str):
    for k, alt in enumerate(doc.alts):
        if alt.model != model:
            continue
        current = s.alts[k]
        for j, option in enumerate(alt.options):
            if j != current:
                alts = s.alts[:k] + (j,) + s.alts[k + 1:]
                yield [(with_(s, alts=alts), f"swap:{alt.options[current]}→{option}", kind)]


@edit("swap_alternatives")
def swap_alternatives(doc: Doc, s: State, args: tuple, rng: random.Random, recipe):
    """{orig|alt} written in the markup."""
    return _swaps(doc, s, False, "swap_alternatives")


@edit("reorder")
def reorder(doc: Doc, s: State, args: tuple, rng: random.Random, recipe):
    slots = range(len(doc.swaps))
    for i in slots:
        for j in slots:
            if i < j and doc.swaps[i].group == doc.swaps[j].group:
                order = list(s.order)
                order[i], order[j] = order[j], order[i]
                a, b = doc.swaps[s.order[i]].text, doc.swaps[s.order[j]].text
                yield [(with_(s, order=tuple(order)), f"reorder:{a}↔{b}", "reorder")]


@edit("grow")
def grow(doc: Doc, s: State, args: tuple, rng: random.Random, recipe):
    """Reveal the seed's given continuation lo..hi tokens at a time, in whole words."""
    if doc.continuation_source == "given":
        yield from _grow_chain(doc, s, args, rng, "grow")


@edit("grow_model")
def grow_model(doc: Doc, s: State, args: tuple, rng: random.Random, recipe):
    """Reveal the model's greedy continuation (seeds without one of their own) likewise."""
    if doc.continuation_source == "model":
        yield from _grow_chain(doc, s, args, rng, "grow_model")


def _grow_chain(doc: Doc, s: State, args: tuple, rng: random.Random, kind: str):
    """One chain, each step's parent the last. A unit is the smallest piece a row may end
    after: a whole word of the continuation, the seed's own or the model's (a line in code;
    ``Expander.make_doc``). A step takes whole units up to its lo..hi tokens, and more than hi
    only when one unit needs them."""
    if not doc.continuation or s.grow or s.tail is not None or s.drop_last or not doc.grow_cuts:
        return
    lo, hi = args
    cum = doc.grow_tokens
    chain, n = [], 0
    while n < len(cum):
        shown = cum[n - 1] if n else 0
        step = rng.randint(lo, hi)
        m = n + 1
        while m < len(cum) and cum[m] - shown <= step:
            m += 1
        chain.append((with_(s, grow=m), f"{'grow' if kind == 'grow' else 'grow_model'}:+{cum[m - 1]}", kind))
        n = m
    yield chain


@edit("swap_model")
def swap_model(doc: Doc, s: State, args: tuple, rng: random.Random, recipe):
    """A word replaced by one of the model's most probable alternatives at that position
    (proposed before expansion; nothing without a model)."""
    return _swaps(doc, s, True, "swap_model")
