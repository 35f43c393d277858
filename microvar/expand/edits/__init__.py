"""Edit kinds. Each kind is a small function registered by name that, given a seed's
document and a variant's state, proposes next states: ``moves``. A move is a chain of
(state, label) steps; most chains have one step, ``grow`` reveals a continuation a word
or two at a time (lo..hi tokens, whole words) as a longer chain."""

from . import kinds  # noqa: F401  (registers the edit kinds)
from .base import EDITS, Doc, Move, State, edit, render, stage_of

__all__ = ["EDITS", "Doc", "Move", "State", "edit", "render", "stage_of"]
