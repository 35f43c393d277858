"""microvar: microvariant curricula from seed texts.

The pipeline flows one way, and the folders show it: ``dsl`` (seed markup, recipes) ->
``expand`` (seeds to token-safe variants) -> ``model`` (the reference model scores them;
the budget keeps or rejects) -> ``curriculum`` (drift paths) -> ``pipeline`` (the steps of
``microvar expand``) -> ``export`` (Arrow dataset, card, Hub). ``train`` and ``tools`` work on
what export wrote; ``cli`` only wires them. The README's Architecture section draws it.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"

# Before the packages by stage, every module sat directly in microvar/. Their old names still
# import, as the same module objects (so monkeypatching through either name patches one
# module). Old names that became packages (expand, export, model, pipeline, train) are the
# packages now; each re-exports the old module's main names.
MOVED = {
    "markup": "dsl.markup", "recipe": "dsl.recipe",
    "seeds": "expand.seeds", "propose": "expand.propose", "tokens": "expand.tokens", "edits": "expand.edits",
    "reorder": "expand.reorder", "fluency": "expand.fluency", "words": "expand.words",
    "designer": "expand.designer",
    "score": "model.score", "field": "model.field", "advisor": "model.advisor", "budget": "model.budget",
    "card": "export.card", "hub": "export.hub", "stats": "export.stats",
    "evaluate": "train.evaluate",
    "lint": "tools.lint", "preview": "tools.preview", "probe": "tools.probe", "report": "tools.report",
}


def _moved(fullname: str) -> str | None:
    """The module's new name, for an old one (``microvar.score``, ``microvar.edits.base``)."""
    head, _, rest = fullname.partition(".")
    if head != __name__ or not rest:
        return None
    first, dot, tail = rest.partition(".")
    return f"{__name__}.{MOVED[first]}{dot}{tail}" if first in MOVED else None


class _OldNames(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports ``microvar.<old>`` as the module object of its new name."""

    def find_spec(self, fullname, path=None, target=None):
        new = _moved(fullname)
        return importlib.util.spec_from_loader(fullname, self) if new else None

    def create_module(self, spec):
        module = importlib.import_module(_moved(spec.name))
        self._spec = module.__spec__
        return module

    def exec_module(self, module):
        module.__spec__ = self._spec   # the import system set the old name's spec; keep the real one


if not any(isinstance(f, _OldNames) for f in sys.meta_path):
    sys.meta_path.insert(0, _OldNames())


def __getattr__(name: str):
    # ``microvar.score`` without ``import microvar.score`` first, as before when a sibling
    # module had imported it
    if name in MOVED:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
