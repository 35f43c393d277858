"""The built wheel carries its grammars, templates and recipes: install it into a fresh
venv and run `microvar expand` from outside the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from conftest import DATA, ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(dist), str(ROOT)], check=True)
    return next(dist.glob("microvar-*.whl"))


def test_wheel_contains_package_data(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for needed in ("microvar/grammars/markup.lark", "microvar/grammars/recipe.lark",
                   "microvar/templates/json_like.j2", "microvar/recipes/default.recipe",
                   "microvar/prompts/control.jsonl"):
        assert needed in names


def test_installed_wheel_expands_outside_the_checkout(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # The new venv gets microvar from the wheel; its dependencies come from the test's own
    # environment, added as a plain path (so that environment's editable hook is not loaded).
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True)
    work = tmp_path / "elsewhere"
    work.mkdir()
    shutil.copy(DATA / "seeds.jsonl", work / "seeds.jsonl")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    where = subprocess.run([str(python), "-c", "import microvar, sys; print(microvar.__file__)"],
                           cwd=work, env=env, check=True, capture_output=True, text=True).stdout
    assert str(site) in where, where
    run = subprocess.run([str(venv / "bin" / "microvar"), "expand", "seeds.jsonl", "-o", "out", "--variants", "8",
                          "--recipe", "default"], cwd=work, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    from datasets import load_from_disk

    assert len(load_from_disk(str(work / "out"))) > 0
