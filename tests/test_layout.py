"""The layout keeps its promises: imports flow one way (the import-linter contracts in
pyproject.toml), the names the README shows and the old flat module names still import as
the same objects, and no module grows past about 400 lines without saying why."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

import microvar

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "microvar"
LONG = 400


def test_imports_flow_one_way():
    pytest.importorskip("importlinter")
    run = subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports; "
                          "sys.exit(lint_imports(no_cache=True, no_logo=True))"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr


def _resolve(dotted: str):
    """The object a dotted path names: the longest importable module, then attributes."""
    parts = dotted.split(".")
    for k in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:k]))
        except ModuleNotFoundError:
            continue
        for name in parts[k:]:
            obj = getattr(obj, name)
        return obj
    raise ModuleNotFoundError(dotted)


def test_readme_paths_import():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    paths = set(re.findall(r"\bmicrovar(?:\.[A-Za-z_]\w*)+", readme))
    assert "microvar.export.variant_text" in paths
    for dotted in sorted(paths):
        assert _resolve(dotted) is not None, dotted
    from microvar.export.dataset import variant_text
    assert microvar.export.variant_text is variant_text


@pytest.mark.parametrize("old", sorted(microvar.MOVED))
def test_old_module_names_are_the_moved_modules(old):
    new = importlib.import_module(f"microvar.{microvar.MOVED[old]}")
    assert importlib.import_module(f"microvar.{old}") is new
    assert getattr(microvar, old) is new
    assert new.__spec__.name == new.__name__ == f"microvar.{microvar.MOVED[old]}"


def test_old_names_reach_submodules_and_monkeypatching_patches_one_module(monkeypatch):
    import microvar.edits.base as old_base
    import microvar.expand.edits.base as base
    import microvar.model.score as score
    from microvar import score as old_score

    assert old_base is base and old_score is score
    monkeypatch.setattr(old_score, "default_batch_tokens", lambda *a, **k: 7)
    assert score.default_batch_tokens() == 7
    from microvar.lint import LintOptions
    from microvar.tools.lint import LintOptions as new

    assert LintOptions is new


def test_old_names_that_became_packages_keep_their_main_names():
    from microvar.expand.expander import Expander, trim_shares
    from microvar.model.load import load_model, resolve
    from microvar.pipeline.options import Options
    from microvar.pipeline.run import run_expand
    from microvar.train.lora import train

    assert (microvar.expand.Expander, microvar.expand.trim_shares) == (Expander, trim_shares)
    assert (microvar.model.load_model, microvar.model.resolve) == (load_model, resolve)
    assert (microvar.pipeline.Options, microvar.pipeline.run_expand) == (Options, run_expand)
    assert microvar.train.train is train


def _modules():
    return sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_module_says_what_it_is_for_and_why_when_long(path):
    text = path.read_text(encoding="utf-8")
    doc = ast.get_docstring(ast.parse(text))
    assert doc, f"{path.name} has no module docstring"
    if text.count("\n") > LONG:
        assert re.search(rf"Over {LONG} lines: \S", doc), f"{path.name} is over {LONG} lines without a reason"
