"""`microvar report`: one self-contained HTML page, checked as text and rendered in headless
Chromium (skipped, with the reason, where no Chromium is installed)."""

from __future__ import annotations

import html as htmllib
import json
import re
import shutil
import struct
import subprocess

import pytest
from click.testing import CliRunner

from microvar.cli import main

SEEDS = [
    {"id": "ru", "markup": "[[Привет]], {мир|свет}."},
    {"id": "zh-emoji", "text": "你好 🙂 ok", "continuation": " fine"},
    {"id": "code", "markup": "if a < b:\n    x = {1|2} & 3"},
    {"id": "multi", "markup": "Line [[one]].\nLine {two|2}."},
]
OUTSIDE = re.compile(r"""(?:\b(?:src|href|action|poster)\s*=\s*["']?\s*(?:https?:)?//)|(?:url\(\s*["']?\s*(?:https?:)?//)""",
                     re.IGNORECASE)


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def built(tmp_path_factory, tk):
    """A scored dataset (with --drift) from a tiny random Llama, and an unscored one in the
    messages format."""
    from transformers import LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("report")
    model = root / "tiny-llama"
    tk.hf.save_pretrained(str(model))
    config = LlamaConfig(vocab_size=tk.vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=40)
    LlamaForCausalLM(config).save_pretrained(str(model))
    seeds = root / "seeds.jsonl"
    seeds.write_text("\n".join(json.dumps(s, ensure_ascii=False) for s in SEEDS) + "\n", encoding="utf-8")
    scored, plain = root / "scored", root / "plain"
    r = run("expand", seeds, "-o", scored, "--model", model, "--variants", 6, "--drift", "-q")
    assert r.exit_code == 0, r.output
    r = run("expand", seeds, "-o", plain, "--model", "none", "--variants", 6, "--format", "messages", "-q")
    assert r.exit_code == 0, r.output
    return {"root": root, "model": model, "seeds": seeds, "scored": scored, "plain": plain}


@pytest.fixture(scope="module")
def page(built):
    out = built["root"] / "report.html"
    r = run("report", built["scored"], "-o", out)   # the model named in the manifest
    assert r.exit_code == 0, r.output
    assert "report: 4 of 4 seeds" in r.stderr
    return out


def _spans_text(row_html: str) -> str:
    """The text a row's token spans spell, whitespace markers undone."""
    parts = re.findall(r'<span class="t [^"]*"[^>]*>(.*?)</span>', row_html, re.DOTALL)
    text = "".join(htmllib.unescape(p) for p in parts)
    return text.replace("⏎\n", "\n").replace("⇥\t", "\t").replace("·", " ")


def test_page_is_self_contained_and_complete(page, built):
    html = page.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in html
    assert not OUTSIDE.search(html), OUTSIDE.search(html).group(0)
    assert "http://" not in html and "https://" not in html and "//cdn" not in html
    assert not re.search(r"<(?:link|img|iframe|object|embed)\b", html)          # nothing fetched at all
    assert not re.search(r"<script[^>]*\bsrc=", html)
    # text in any script renders as written, escaped only where HTML needs it
    assert "Привет" in html and "你好" in html and "🙂" in html
    assert "if a &lt; b:" in html and "if a < b:" not in html   # escaped in markup, \u003c in the JSON
    assert html.count('<details class="seed"') == len(SEEDS)
    for s in SEEDS:
        assert f'<span class="sid">{s["id"]}</span>' in html
    spans = re.findall(r'<span class="t b\d[^"]*" title="[^"]+   p ([0-9.e+-]+)(?: \(joint, \d tokens\))? · ranks? [\d, ]+">',
                       html)
    assert len(spans) > 50 and all(0 <= float(p) <= 1 for p in spans)
    assert 'aria-label="histogram of ripple_kl"' in html and 'aria-label="histogram of drift_layer"' in html
    assert 'id="rejects"' in html and 'id="gaps"' in html


def test_token_spans_spell_each_row_exactly(page, built):
    """Every character of a row's text is in exactly one span: the field is the text."""
    from datasets import load_from_disk

    from microvar.export.dataset import variant_text

    html = page.read_text(encoding="utf-8")
    ds = load_from_disk(str(built["scored"]))
    texts = {variant_text(r) for r in ds}
    rows = re.findall(r'<div class="toks">(.*?)</div>', html, re.DOTALL)
    assert rows
    for row in rows:
        assert _spans_text(row) in texts
    assert any("\n" in _spans_text(row) for row in rows)        # the multi-line seed, line breaks kept


def test_row_data_for_the_charts(page):
    html = page.read_text(encoding="utf-8")
    blobs = re.findall(r'<script type="application/json" class="seed-data">(.*?)</script>', html, re.DOTALL)
    assert len(blobs) == len(SEEDS)
    rows = [r for b in blobs for r in json.loads(b)["rows"]]
    assert rows[0]["root"] is True
    children = [r for r in rows if not r["root"]]
    assert children
    for r in children:
        assert len(r["kl"]) == len(r["toks"])
        assert all(x is None or x >= 0 for x in r["kl"])
        if "drift" in r:
            assert len(r["drift"]) == 3 and r["drift_from"].startswith("the dataset")   # made with --drift


def test_unscored_and_no_model(built):
    out = built["root"] / "plain.html"
    r = run("report", built["plain"], "-o", out, "--model", "none")
    assert r.exit_code == 0, r.output
    html = out.read_text(encoding="utf-8")
    assert "was not scored" in html and "No token fields" in html
    assert 'aria-label="histogram of' not in html and html.count('<details class="seed"') == len(SEEDS)
    assert "Привет" in html
    # an unscored dataset still gets token fields from a model
    out2 = built["root"] / "plain-fields.html"
    r = run("report", built["plain"], "-o", out2, "--model", built["model"])
    assert r.exit_code == 0, r.output
    html2 = out2.read_text(encoding="utf-8")
    assert re.search(r'<span class="t b\d', html2)
    rows = [r for b in re.findall(r'class="seed-data">(.*?)</script>', html2, re.DOTALL) for r in json.loads(b)["rows"]]
    computed = [r for r in rows if "drift" in r]
    assert computed and all(r["drift_from"] == "computed here" and len(r["drift"]) == 3 for r in computed)


def test_limits_are_said(built):
    out = built["root"] / "limited.html"
    r = run("report", built["scored"], "-o", out, "--seeds", "ru,mul*", "--rows-per-seed", 2)
    assert r.exit_code == 0, r.output
    html = out.read_text(encoding="utf-8")
    assert html.count('<details class="seed"') == 2
    assert "2 of 4 seeds are shown (--seeds ru,mul*)" in html
    assert "--rows-per-seed 2" in html and "of this path not shown" in html
    assert html.count('<div class="row"') == 4
    r = run("report", built["scored"], "-o", out, "--seeds", "nope")
    assert r.exit_code == 2 and "no seed matches" in r.stderr


def test_long_paths_show_every_stage():
    from microvar.tools.report import sample_path

    stages = ["identity"] + ["mark"] * 30 + ["tail"] * 3 + ["wrap"] * 10 + ["grow"] * 6
    picked = sample_path(stages, 10)
    assert len(picked) == 10 and picked == sorted(picked) and picked[0] == 0
    assert {stages[k] for k in picked} == {"identity", "mark", "tail", "wrap", "grow"}
    assert sum(stages[k] == "mark" for k in picked) > sum(stages[k] == "grow" for k in picked)
    assert sample_path(stages[:5], 10) == [0, 1, 2, 3, 4]
    assert sample_path(["a", "b", "a", "b"], 2) == [0, 1]
    # a bridge back to an earlier stage does not start a run of its own
    assert sample_path(["a", "b", "b", "a", "b", "c"], 3, [False, False, False, True, False, False]) == [0, 1, 5]


def test_probe_page_in_the_report(built):
    m = built["root"] / "map.json"
    r = run("probe", built["seeds"], "-o", m, "--model", built["model"], "--variants", 6, "-q")
    assert r.exit_code == 0, r.output
    out = built["root"] / "with-map.html"
    r = run("report", built["scored"], "-o", out, "--probe", m)
    assert r.exit_code == 0, r.output
    html = out.read_text(encoding="utf-8")
    assert 'id="probe"' in html and 'href="#probe"' in html and "All seeds, by edit kind" in html
    bad = built["root"] / "bad.json"
    bad.write_text('{"schema": "other"}', encoding="utf-8")
    r = run("report", built["scored"], "-o", out, "--probe", bad)
    assert r.exit_code == 2 and "not a response map" in r.stderr


def test_not_a_dataset(tmp_path):
    r = run("report", tmp_path, "-o", tmp_path / "r.html")
    assert r.exit_code == 2 and "no manifest.json" in r.stderr


# ---------------------------------------------------------------- in a browser


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no headless Chromium installed (chromium, chromium-browser or google-chrome); .ci/run installs "
                "Debian's chromium")


def browse(page, tmp_path, *flags):
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
           "--no-default-browser-check", f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr",
           "--v=0", "--hide-scrollbars", "--virtual-time-budget=5000", *flags, page.as_uri()]
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=180)


def test_renders_in_chromium_without_errors(page, tmp_path):
    done = browse(page, tmp_path, "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    root = re.search(r"<html[^>]*>", dom).group(0)
    assert 'data-ready="1"' in root, "the page's script did not finish"
    assert "data-js-errors" not in root, re.search(r'<pre id="js-errors"[^>]*>(.*?)</pre>', dom, re.DOTALL).group(1)
    assert re.search(r'<pre id="js-errors" hidden=""></pre>', dom)
    charts = int(re.search(r'data-charts="(\d+)"', root).group(1))
    assert charts >= 1                                         # the open seed's charts were drawn on load
    assert re.search(r'<rect class="kl"', dom) and re.search(r'<polyline class="curve"', dom)
    console = [line for line in done.stderr.splitlines()
               if "CONSOLE" in line and re.search(r"error|uncaught|refused|blocked", line, re.IGNORECASE)]
    assert not console, console


def test_screenshot(page, tmp_path):
    shot = tmp_path / "report.png"
    done = browse(page, tmp_path, f"--screenshot={shot}", "--window-size=1280,2000")
    assert done.returncode == 0, done.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1280, 2000)
    assert len(data) > 30_000                                  # a page, not a blank sheet


def test_the_error_trap_sees_errors(page, tmp_path):
    """The check above would catch a broken script or an outside reference."""
    broken = tmp_path / "broken.html"
    extra = '<img src="https://example.invalid/x.png"><script>window.noSuchFunction();</script></body>'
    broken.write_text(page.read_text(encoding="utf-8").replace("</body>", extra), encoding="utf-8")
    dom = browse(broken, tmp_path, "--dump-dom").stdout
    root = re.search(r"<html[^>]*>", dom).group(0)
    errors = re.search(r'<pre id="js-errors"[^>]*>(.*?)</pre>', dom, re.DOTALL).group(1)
    assert "data-js-errors" in root
    assert "noSuchFunction" in errors and "example.invalid" in errors


def test_every_row_draws(page, tmp_path):
    """Open every seed and choose every row (what a reader does): each draws without an error."""
    clicking = tmp_path / "clicking.html"
    script = ("<script>document.querySelectorAll('details.seed').forEach(function (d) { d.open = true; });"
              "setTimeout(function () { document.querySelectorAll('.path .row').forEach(function (r) { r.click(); });"
              " document.documentElement.setAttribute('data-clicked', String("
              "document.querySelectorAll('.path .row').length)); }, 100);</script></body>")
    clicking.write_text(page.read_text(encoding="utf-8").replace("</body>", script), encoding="utf-8")
    dom = browse(clicking, tmp_path, "--dump-dom").stdout
    root = re.search(r"<html[^>]*>", dom).group(0)
    assert "data-js-errors" not in root, re.search(r'<pre id="js-errors"[^>]*>(.*?)</pre>', dom, re.DOTALL).group(1)
    clicked = int(re.search(r'data-clicked="(\d+)"', root).group(1))
    charts = int(re.search(r'data-charts="(\d+)"', root).group(1))
    assert clicked > len(SEEDS) and charts >= clicked        # every click drew (plus the default rows on open)
