"""One CLI language: one name per option across subcommands (old names still work, hidden),
-q wherever a command prints, progress lines off a terminal, every recipe error at once."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

import microvar.progress
from microvar.cli import main
from microvar.progress import LineProgress

SEEDS = [{"id": "en", "text": "Rhythm matters more than quantity."},
         {"id": "ru", "text": "Мышление не равно генерации текста."}]
WRITERS = ["expand", "probe", "report", "split", "push", "train", "evaluate"]
OLD_NAMES = {"expand": "--out", "probe": "--out", "split": "--to", "push": "--to-dir"}


def _help(command: str) -> str:
    return CliRunner().invoke(main, [command, "--help"], terminal_width=200).stdout


@pytest.mark.parametrize("command", WRITERS)
def test_every_writer_shows_one_output_option(command):
    text = _help(command)
    assert "-o, --output" in text
    assert not re.search(r"--(out|to|to-dir)\b", text), text


def test_old_names_work_but_are_hidden(cli, write_seeds, tmp_path):
    out = tmp_path / "out"
    res = cli("expand", write_seeds(SEEDS), "--out", out, "--model", "none", "--variants", "4", "-q")
    assert res.exit_code == 0 and "seeds:" not in res.stderr
    assert cli("split", out, "--by", "phase", "--to", tmp_path / "parts", "-q").exit_code == 0
    assert (tmp_path / "parts" / "split.json").is_file()
    assert cli("push", out, "--to-dir", tmp_path / "hub", "-q").exit_code == 0
    assert (tmp_path / "hub" / "README.md").is_file()
    missing = cli("expand", write_seeds(SEEDS))
    assert missing.exit_code == 2 and "'-o' / '--output'" in missing.stderr and "--out'" not in missing.stderr


def test_split_and_push_are_quiet_and_leak_no_datasets_bars(cli, write_seeds, tmp_path):
    out = tmp_path / "out"
    assert cli("expand", write_seeds(SEEDS), "-o", out, "--model", "none", "--variants", "4", "-q").exit_code == 0
    loud = cli("split", out, "--by", "phase", "-o", tmp_path / "a")
    assert loud.exit_code == 0 and "rows" in loud.stderr and "Saving the dataset" not in loud.stderr
    quiet = cli("split", out, "--by", "phase", "-o", tmp_path / "b", "-q")
    assert quiet.exit_code == 0 and quiet.stderr == "" and quiet.stdout == ""
    pushed = cli("push", out, "-o", tmp_path / "hub")
    assert pushed.exit_code == 0 and "parquet shard" in pushed.stderr and "Creating parquet" not in pushed.stderr
    assert cli("push", out, "-o", tmp_path / "hub2", "-q").stderr == ""


def test_lint_and_preview_json_and_their_old_spelling(cli, write_seeds):
    seeds = write_seeds(SEEDS)
    new = cli("lint", seeds, "--json", "--no-expand", "--model", "none")
    old = cli("lint", seeds, "--format", "json", "--no-expand", "--model", "none")
    assert new.exit_code == old.exit_code and json.loads(new.stdout) == json.loads(old.stdout)
    assert "--format" not in _help("lint") and "--format" not in _help("preview") and "--json" in _help("preview")
    shown = cli("preview", seeds, "--id", "en", "--model", "none", "--json")
    assert shown.exit_code == 0 and json.loads(shown.stdout)["seed_id"] == "en"


def test_separator_default_is_shown_escaped():
    text = _help("expand")
    assert "[default: \\n, a newline]" in text and "[default: \n" not in text


def test_batch_tokens_has_one_default_rule():
    from microvar.model.score import default_batch_tokens

    for command in ("expand", "probe", "report"):
        assert "2048 on CPU, 16384 on CUDA" in _help(command)
    assert default_batch_tokens("cpu", 49152, rows=2) == 1024   # evaluate: the same bytes as before
    assert "1024 on CPU" in _help("evaluate")


def test_progress_lines_when_not_a_terminal():
    now = [0.0]
    bar = LineProgress(14, desc="expanding", unit="seed", every=30, clock=lambda: now[0])
    lines = []
    for _ in range(14):
        now[0] += 13
        before = bar.last
        bar.update(1)
        if bar.last != before:
            lines.append(bar.line(bar.last))
    assert lines[0] == "expanding: 3/14 seeds (21%), 4.62 seeds/min, about 2 min 23 s left"
    assert len(lines) == 4   # every 30 s, none once all are done (the summary follows)


def test_expand_prints_progress_lines_off_a_terminal(cli, write_seeds, tmp_path, monkeypatch):
    monkeypatch.setattr(microvar.progress, "EVERY", 0.0)
    seeds = write_seeds(SEEDS + [{"id": "x", "text": "One more line."}])
    res = cli("expand", seeds, "-o", tmp_path / "out", "--model", "none", "--variants", "4")
    assert res.exit_code == 0
    assert re.search(r"^expanding: 1/3 seeds \(33%\), [\d.]+ seeds/min, about .* left$", res.stderr, re.M)
    quiet = cli("expand", seeds, "-o", tmp_path / "q", "--model", "none", "--variants", "4", "-q")
    assert "expanding:" not in quiet.stderr and "seeds:" not in quiet.stderr


def test_expand_reports_every_recipe_error_at_once(cli, write_seeds, tmp_path):
    one = tmp_path / "one.recipe"
    one.write_text("recipe one\nedit bogus\nvariants 0\nedit identity\n")
    two = tmp_path / "two.recipe"
    two.write_text("recipe two\ncompose up to two\n")
    res = cli("expand", write_seeds(SEEDS), "-o", tmp_path / "out", "--recipe", one, "--recipe", two)
    assert res.exit_code == 2 and not (tmp_path / "out").exists()
    where = re.findall(r"^(\S+\.recipe:\d+:\d+): ", res.stderr, re.M)
    assert where == [f"{one}:2:6", f"{one}:3:10", f"{two}:2:15"]


# ------------------------------------------------------------- the README's printed summary

ROOT = Path(__file__).resolve().parent.parent


def _readme_summary() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("`expand` prints a progress bar", 1)[1].split("```\n", 2)[1]
    return block.splitlines()


FREE_TEXT = ("rejected by check:", "reorder rule:", "model substitutions:", "model continuations:", "budget removed:",
             "designer edits unused:", "rows by stage:")


def _shape(line: str) -> str:
    """What the code decides about a summary line: its words, with numbers, ids and seed names
    masked; for the lines whose items depend on the data, only their start."""
    for start in FREE_TEXT:
        if line.startswith(start):
            return start
    line = re.sub(r"\b[0-9a-f]{16}\b", "ID", line)
    line = re.sub(r"seed [\w#-]+:", "seed S:", line)
    return re.sub(r"(?<=\S) +", " ", re.sub(r"-?\d+(\.\d+)?", "N", line))   # %8.3f columns: widths vary


def test_readme_summary_has_the_shape_expand_prints(tmp_path):
    """The README shows command 1's summary: the real model, ~6 min, so its numbers are
    refreshed by hand from a real run. Here every line of it (but the elision) must be a line
    the current code prints, in the code's order: the unscored lines from a --model none run
    of the same seeds, the scored ones from the same summary with stand-in scores."""
    from microvar.pipeline.options import Options
    from microvar.pipeline.run import run_expand

    summary = run_expand(Options(str(ROOT / "data" / "seeds.jsonl"), tmp_path / "out", score=False,
                                 progress=False))
    summary.scored = True
    summary.scoring.update(texts=1, device="cpu", dtype="float32", seconds=1.0, total_tokens=2, computed_tokens=1)
    for xs in summary.budget.values.values():
        xs.extend([0.0, 1.0])
    summary.budget.removed["surprisal <= 2.5x"] += 1
    summary.substitution.proposed = summary.substitution.words = 1
    summary.continuation.fragments = 1
    shapes = [_shape(line) for line in summary.lines() + ["wrote out"]]
    at = 0
    for line in _readme_summary():
        if line.startswith("  … "):
            continue   # the README's elision of further gap lines
        while at < len(shapes) and shapes[at] != _shape(line):
            at += 1
        assert at < len(shapes), f"the README shows a line expand does not print (here): {line!r}"
