"""Find the shipped grammars, templates and recipes.

In a wheel they live inside the package (hatch force-include); in a source checkout they
sit at the top level beside the package. Both are tried, the installed location first.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

from .errors import MicrovarError


@functools.cache
def data_dir(kind: str) -> Path:
    """Directory of shipped ``grammars``, ``templates``, ``recipes`` or ``prompts``."""
    packaged = resources.files("microvar") / kind
    if packaged.is_dir():
        return Path(str(packaged))
    checkout = Path(__file__).resolve().parent.parent / kind
    if checkout.is_dir():
        return checkout
    raise MicrovarError(f"microvar is installed without its {kind}/ folder (looked in {packaged} and {checkout})")


def read_text(kind: str, name: str) -> str:
    return (data_dir(kind) / name).read_text(encoding="utf-8")
