"""One source of dataset statistics: the card (Markdown) and the report (HTML) of the same
dataset show the same rows, stages, phases and rejects by reason; the pieces on their own."""

from __future__ import annotations

import html
import json
import re

import numpy as np
import pytest
from huggingface_hub import DatasetCard

from microvar.export.card import write_card
from microvar.export.stats import histogram, reason, rejects

SEEDS = [
    {"id": "ru", "markup": "[[Мышление]] {не равно|не то же, что} генерации [[текста]]{?, и точка}."},
    {"id": "en", "text": "Rhythm matters more than quantity.", "continuation": " Small steps, often."},
    {"id": "code", "markup": "if a < b:\n    x = {1|2} & 3"},
    "{not json",
]

pytestmark = pytest.mark.usefixtures("no_network")


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    from click.testing import CliRunner

    from microvar.cli import main

    tmp = tmp_path_factory.mktemp("stats")
    seeds = tmp / "seeds.jsonl"
    seeds.write_text("\n".join(s if isinstance(s, str) else json.dumps(s, ensure_ascii=False) for s in SEEDS) + "\n",
                     encoding="utf-8")
    out = tmp / "out"
    for args in (["expand", seeds, "-o", out, "--model", "none", "--variants", "8", "--skip-invalid", "-q"],
                 ["report", out, "-o", tmp / "report.html", "--model", "none"]):
        r = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
        assert r.exit_code == 0, r.output
    card = DatasetCard.load(write_card(out)).text
    return card, (tmp / "report.html").read_text(encoding="utf-8")


def card_table(card: str, heading: str, columns: int) -> list[list[str]]:
    """The body rows of the first table after ``heading``, cells unescaped."""
    section = card.split(heading, 1)[1]
    rows = re.findall(r"^\|(.+)\|$", section.split("\n\n", 2)[1], re.MULTILINE)[2:]
    return [[html.unescape(c.strip()).replace("\\|", "|").strip("`") for c in re.split(r"(?<!\\)\|", row)][:columns]
            for row in rows]


def report_bars(page: str, heading: str) -> dict[str, int]:
    section = page.split(f"<h3>{heading}</h3>", 1)[1].split("</div>", 1)[0]
    found = re.findall(r'<span class="stage[^"]*">([^<]+)</span>.*?<span class="c">(\d+)', section, re.DOTALL)
    return {label: int(n) for label, n in found}


def test_card_and_report_show_the_same_counts(pages):
    card, page = pages
    rows = int(re.search(r"^\| rows \| (\d+) \|$", card, re.MULTILINE).group(1))
    assert f'<div class="v">{rows}</div><div class="k">rows</div>' in page
    stages = {s: int(n) for s, n, *_ in card_table(card, "### Rows by stage", 2)}
    assert stages and report_bars(page, "Stages") == stages and sum(stages.values()) == rows
    phases = {f"{p} · {level}": int(n) for p, level, n in card_table(card, "### Rows by phase", 3)}
    assert len(phases) > 1 and report_bars(page, "Phases") == phases
    by_reason = {(c, why): int(n) for c, why, n in card_table(card, "By reason", 3)}
    shown = {}
    for check, block in re.findall(r"<summary>(\S+) — \d+</summary>(.*?)</table>", page, re.DOTALL):
        for why, n in re.findall(r'<tr><td>(.*?)</td><td class="num">(\d+)</td>', block):
            shown[(check, html.unescape(why))] = int(n)
    assert {"input", "step"} <= {c for c, _ in by_reason} and shown == by_reason
    by_check = {c: int(n) for c, n, _ in card_table(card, "Rejected in all", 3)}
    assert by_check == {c: sum(n for (k, _), n in shown.items() if k == c) for c in by_check}


def test_reasons_fold_their_particulars():
    a = {"check": "step", "detail": "3 tokens from its parent 0123456789abcdef: 'x'"}
    b = {"check": "step", "detail": "5 tokens from its parent fedcba9876543210: «y»\nmore"}
    assert reason(a) == reason(b) == "N tokens from its parent …: ‘…’"
    bad_line = {"check": "input", "detail": "seeds.jsonl:7: malformed JSON (column 3)"}
    assert reason(bad_line) == "malformed JSON (column N)"
    assert reason({"check": "budget", "limit": "surprisal <= 6", "detail": "x"}) == "over the budget surprisal <= 6"
    assert reason({"check": "budget", "detail": "its parent 0123456789abcdef was removed (...)"}) == \
        "its parent was removed by the budget"
    summary = rejects([a, {"check": "share", "detail": "d"}, b])
    assert summary.total == 3 and [(c.check, c.count) for c in summary.checks] == [("step", 2), ("share", 1)]
    assert summary.checks[0].reasons[0].count == 2 and summary.checks[0].reasons[0].example is a


def test_histogram_bins_tails_and_constants():
    x = np.concatenate([np.linspace(0, 1, 98), [50.0, -50.0]])
    h = histogram(x, 8, 1, 99)
    assert len(h.counts) == 8 and h.below == 1 and h.above == 1 and sum(h.counts) + 2 == len(x) == h.n
    assert (h.lo, h.hi) == (-50.0, 50.0)
    full = histogram(x, 20)
    assert full.edges[0] == -50.0 and full.edges[-1] == 50.0 and full.below == full.above == 0
    same = histogram(np.full(5, 0.5), 8, 1, 99)
    assert same.counts == [5] and same.lo == same.hi == 0.5
