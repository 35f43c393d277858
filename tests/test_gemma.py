"""Gemma 3 270M as the multilingual reference model (``--model gemma3-270m``): the package's
checksum guards the GGUF, a missing package names the install command, lint points Russian
seeds at the option, and (slow, loaded once for the module) the model reads Russian in few
tokens, is scored behind <bos>, and gives finite metrics and real word substitutions."""

from __future__ import annotations

import hashlib
import importlib.util
import math
import sys

import pytest
import torch

from microvar.errors import MicrovarError
from microvar.model import load as model_mod
from microvar.model.load import GEMMA_INSTALL, GEMMA_NAME, GEMMA_PACKAGE, resolve

RUSSIAN = "Мышление не равно генерации текста."
installed = importlib.util.find_spec(GEMMA_PACKAGE) is not None
needs_gemma = pytest.mark.skipif(not installed, reason=f"{GEMMA_PACKAGE} is not installed ({GEMMA_INSTALL})")


# ---------------------------------------------------------------- without the real model


@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    """A stand-in for the Gemma package whose assemble() gives a small file; returns a
    function that sets the checksum it ships."""
    pkg = tmp_path / "pkgs" / GEMMA_PACKAGE
    (pkg / "data").mkdir(parents=True)
    gguf = tmp_path / "gemma.gguf"
    gguf.write_bytes(b"GGUF not really a model")
    (pkg / "__init__.py").write_text(f"def assemble():\n    return {str(gguf)!r}\n")
    monkeypatch.setenv("MICROVAR_CACHE", str(tmp_path / "cache"))
    monkeypatch.syspath_prepend(str(tmp_path / "pkgs"))
    monkeypatch.delitem(sys.modules, GEMMA_PACKAGE, raising=False)

    def ship(digest: str) -> None:
        (pkg / "data" / "SHA256SUMS").write_text(f"{digest}  gemma-3-270m-q4_k_m.gguf\n")
    ship(hashlib.sha256(gguf.read_bytes()).hexdigest())
    yield ship
    sys.modules.pop(GEMMA_PACKAGE, None)  # the fake; monkeypatch then puts back a real one imported before


def test_a_file_that_does_not_match_the_shipped_checksum_is_refused(fake_package, cli, write_seeds):
    fake_package("0" * 64)
    with pytest.raises(MicrovarError, match=r"SHA-256 .* does not match the 0{64} shipped by"):
        resolve(GEMMA_NAME)
    result = cli("lint", write_seeds([{"id": "a", "text": RUSSIAN}]), "--model", GEMMA_NAME, "--no-expand")
    assert result.exit_code == 2
    assert "does not match" in result.stderr and GEMMA_INSTALL in result.stderr


def test_a_missing_package_names_the_install_command(monkeypatch, cli, write_seeds):
    monkeypatch.setattr(model_mod, "GEMMA_PACKAGE", "microvar_no_such_package")
    result = cli("lint", write_seeds([{"id": "a", "text": RUSSIAN}]), "--model", GEMMA_NAME, "--no-expand")
    assert result.exit_code == 2
    assert f"not installed: run `{GEMMA_INSTALL}`" in result.stderr


def test_lint_notes_a_seed_in_small_pieces_and_names_the_option(cli, write_seeds):
    seeds = write_seeds([{"id": "ru", "text": RUSSIAN}, {"id": "en", "text": "Thinking is not generating text."}])
    result = cli("lint", seeds, "--no-expand")
    assert result.exit_code == 0
    notes = [line for line in result.stdout.splitlines() if "[token-density]" in line]
    assert len(notes) == 1 and "'ru' is 27 tokens for 35 characters" in notes[0]
    assert f"--model {GEMMA_NAME}" in result.stdout


# ---------------------------------------------------------------- the real model (slow)


@pytest.fixture(scope="module")
def gemma():
    """(tokenizer, loaded model), once for the module."""
    from microvar.model.load import load_model, load_tokenizer

    if not installed:
        pytest.skip(f"{GEMMA_PACKAGE} is not installed ({GEMMA_INSTALL})")
    tk, ref = load_tokenizer(GEMMA_NAME)
    return tk, load_model(ref, device="cpu")


@pytest.mark.slow
@needs_gemma
def test_the_option_loads_gemma(gemma):
    tk, lm = gemma
    assert lm.name.startswith("Gemma 3 270M") and lm.dtype == torch.float32
    assert lm.model.config.vocab_size == 262144 == tk.vocab_size
    assert abs(sum(p.numel() for p in lm.model.parameters()) / 1e6 - 268.1) < 0.5


@pytest.mark.slow
@needs_gemma
def test_russian_in_few_tokens_behind_bos(gemma):
    from microvar.model.score import context_token

    tk, _ = gemma
    assert len(tk.encode([RUSSIAN])[0]) == 9
    assert tk.hf.convert_ids_to_tokens(context_token(tk.hf)) == "<bos>"


@pytest.mark.slow
@needs_gemma
def test_scorer_metrics_are_finite_and_match_a_plain_forward(gemma):
    from microvar.model.score import Group, Item, Scorer, context_token

    tk, lm = gemma
    ctx = context_token(tk.hf)
    seed, *variants = tk.encode([RUSSIAN, "Мышление не равно генерации мысли.", "Мышление не равно генерации текста!"])
    group = Group("ru", seed, [Item("root", seed), Item("a", variants[0], "root"), Item("b", variants[1], "a")])
    metrics = next(iter(Scorer(lm.model, ctx).score([group])))[1]
    for key, m in metrics.items():
        assert all(math.isfinite(v) for v in m.values() if isinstance(v, float)), (key, m)
    with torch.inference_mode():  # the cached, suffix-only scoring gives what a whole forward gives
        x = torch.tensor([[ctx] + variants[1]])
        logp = torch.log_softmax(lm.model(x).logits[0, :-1].float(), -1)
        nll = float(-logp[torch.arange(len(variants[1])), variants[1]].mean())
    assert abs(metrics["b"]["nll"] - nll) < 1e-3
    assert metrics["a"]["surprisal"] > 0 and metrics["root"]["ripple_kl"] == 0


@pytest.mark.slow
@needs_gemma
def test_model_substitutions_are_whole_russian_words(gemma):
    from microvar.expand.propose import STOPWORDS
    from microvar.model.advisor import Advisor

    tk, lm = gemma
    advisor = Advisor(lm, tk)
    probe = advisor.probe(RUSSIAN)
    start = RUSSIAN.index("генерации")
    alts = advisor.alternatives(probe, start, start + len("генерации"), 5)
    assert alts, "no substitution for 'генерации'"
    for word in alts:
        assert word.isalpha() and all("а" <= c.lower() <= "я" or c in "ёЁ" for c in word), alts
        assert word.lower() not in STOPWORDS and word != "генерации"
    assert advisor.piece(tk.encode([" текста"])[0][0]) == (True, "текста")


# ---------------------------------------------------------------- the designer's Russian edits

DESIGNED = {"id": "lithography-ru", "markup": "Один или {два|пару} токена за раз,\nи {~ритм} важнее, чем {~объём}."}


@pytest.mark.slow
@needs_gemma
def test_russian_designer_edits_reach_the_dataset_under_gemma_and_are_listed_under_smollm2(cli, write_seeds,
                                                                                             tmp_path):
    import json

    from datasets import load_from_disk

    seeds = write_seeds([DESIGNED])
    runs = {}
    for name, model in (("gemma", ["--model", "gemma3-270m"]), ("smol", [])):
        out = tmp_path / name
        res = cli("expand", seeds, "-o", out, "--variants", "24", *model)
        assert res.exit_code == 0, res.stderr
        edits = {e for row in load_from_disk(str(out))["edits"] for e in row}
        unused = {u["edit"]: u["reason"] for u in json.loads((out / "manifest.json").read_text())["unused_edits"]}
        runs[name] = (edits, unused)
    edits, unused = runs["gemma"]
    assert any(e == "swap:два→пару" for e in edits) and "два→пару" not in unused
    # the swap moves " ритм" (1 token) against " объём" (2): over the step under either model,
    # and said so; it is used or listed, never silently lost
    assert ("reorder:ритм↔объём" in edits) != ("ритм↔объём" in unused)
    edits, unused = runs["smol"]
    assert "swap:два→пару" not in edits
    assert unused["два→пару"] == "moves 4 tokens, step budget 2 (stage substitute)"
    assert "step budget 2" in unused["ритм↔объём"]
