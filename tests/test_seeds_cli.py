"""Seed input through `microvar expand`: every bad line is reported as FILE:LINE with exit 2
and nothing written; --skip-invalid turns bad lines into rejects; encodings, stdin,
--overwrite and the output layout; and read_seeds as a library call."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest
from datasets import load_from_disk

from microvar.dsl.markup import Alt, Anchor, Opt, Swap
from microvar.expand.seeds import Seed, read_seeds

V = ("--variants", "8", "--format", "text", "--model", "none")   # reading seeds: no scoring needed
GOOD = [{"id": "en-1", "text": "The cat sat on the mat."},
        {"id": "ru-1", "text": "Мышление не равно генерации текста."}]
GOOD_LINES = [json.dumps(r, ensure_ascii=False) for r in GOOD]


def no_output(tmp_path) -> bool:
    return not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


def expand_ok(cli, src, out, *extra, input=None):
    r = cli("expand", src, "-o", out, *V, *extra, input=input)
    assert r.exit_code == 0, r.stderr
    return r


# (case id, file bytes, line of the error, words the message must contain)
BAD = [
    ("malformed-json", b'{"id": "a", "text": "Hi."}\n\n{"id": "b", "text": "Hi.",}\n', 3, "malformed JSON"),
    ("array", b'{"id": "a", "text": "Hi."}\n[1, 2]\n', 2, "expected a JSON object, got list"),
    ("string", b'"The cat sat."\n', 1, "expected a JSON object, got str"),
    ("duplicate-id", b'{"id": "a", "text": "Hi."}\n{"id": "b", "text": "Yo."}\n{"id": "a", "text": "Ho."}\n',
     3, "duplicate id 'a' (first used on line 1)"),
    ("missing-id", b'{"id": "a", "text": "Hi."}\n{"text": "Hello there."}\n', 2, "missing 'id'"),
    ("missing-text", b'{"id": "a", "text": "Hi."}\n{"id": "b", "meta": {}}\n', 2, "missing 'text' or 'markup'"),
    ("text-and-markup", b'{"id": "a", "text": "Hi.", "markup": "Hi."}\n', 1, "exactly one of 'text' or 'markup'"),
    ("number-text", b'{"id": "a", "text": "Hi."}\n{"id": "b", "text": 42}\n', 2, "'text' must be a string"),
    ("number-markup", b'{"id": "b", "markup": 4.5}\n', 1, "'markup' must be a string"),
    ("empty-text", b'{"id": "a", "text": "Hi."}\n{"id": "b", "text": ""}\n', 2, "'text' is empty"),
    ("blank-text", b'{"id": "a", "text": "Hi."}\n{"id": "b", "text": " \\t\\n "}\n', 2, "'text' is empty"),
    ("invalid-utf8", b'{"id": "a", "text": "Hi."}\n{"id": "b", "text": "caf\xe9 cr\xff"}\n', 2, "invalid UTF-8"),
    ("empty-file", b"", 1, "empty file"),
    ("blank-lines", b"\n  \n\t\n\n", 1, "empty file"),
]


@pytest.mark.parametrize("raw,line,words", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_input_exit_2_file_line_nothing_written(cli, write_seeds, tmp_path, raw, line, words):
    path = write_seeds(None, raw=raw)
    r = cli("expand", path, "-o", tmp_path / "out", *V)
    assert r.exit_code == 2
    assert r.stderr.startswith(f"{path}:{line}: "), r.stderr
    assert words in r.stderr.splitlines()[0]
    assert no_output(tmp_path)


def test_markup_syntax_error_has_position_and_caret(cli, write_seeds, tmp_path):
    path = write_seeds([GOOD[0], {"id": "m", "markup": "Hi {a|b"}])
    r = cli("expand", path, "-o", tmp_path / "out", *V)
    assert r.exit_code == 2
    lines = r.stderr.splitlines()
    assert lines[0].startswith(f"{path}:2: markup line 1, column 8: unexpected end of markup"), r.stderr
    assert lines[1] == "    Hi {a|b"
    assert lines[2] == "    " + " " * 7 + "^"  # one past the end: where the '}' is missing
    assert no_output(tmp_path)


def test_markup_error_on_second_markup_line(cli, write_seeds, tmp_path):
    path = write_seeds([{"id": "m", "markup": "One line.\nTwo {~z} here."}])
    r = cli("expand", path, "-o", tmp_path / "out", *V)
    assert r.exit_code == 2
    lines = r.stderr.splitlines()
    assert lines[0].startswith(f"{path}:1: markup line 2, column 5: "), r.stderr
    assert lines[1:3] == ["    Two {~z} here.", "        ^"]
    assert no_output(tmp_path)


def test_empty_anchor_error_points_at_the_anchor(cli, write_seeds, tmp_path):
    path = write_seeds([{"id": "m", "markup": "Hello [[ ]] world"}])
    r = cli("expand", path, "-o", tmp_path / "out", *V)
    assert r.exit_code == 2
    assert r.stderr.startswith(f"{path}:1: markup line 1, column 7: "), r.stderr
    assert r.stderr.splitlines()[2] == "    " + " " * 6 + "^"


def test_several_bad_lines_reported_together(cli, write_seeds, tmp_path):
    path = write_seeds([GOOD_LINES[0], "{not json", GOOD_LINES[1], '{"id": "x"}', "[]",
                        '{"id": "en-1", "text": "Again."}'])
    r = cli("expand", path, "-o", tmp_path / "out", *V)
    assert r.exit_code == 2
    starts = [ln.split(": ", 1)[0] for ln in r.stderr.splitlines()]
    assert starts == [f"{path}:{n}" for n in (2, 4, 5, 6)]
    assert no_output(tmp_path)


def test_unknown_field_is_a_warning_real_cli(write_seeds, tmp_path):
    """A real process: the warning goes to stderr, the run succeeds and writes OUT."""
    path = write_seeds([GOOD[0], {"id": "w", "text": "A dog ran.", "colour": "red"}])
    p = subprocess.run([sys.executable, "-m", "microvar", "expand", str(path), "-o", str(tmp_path / "out"), *V],
                       capture_output=True, text=True, env=os.environ | {"MICROVAR_CACHE": os.environ.get(
                           "MICROVAR_CACHE", "/tmp/mvcache")}, timeout=300)
    assert p.returncode == 0, p.stderr
    assert f"{path}:2: warning: unknown field 'colour'" in p.stderr
    assert set(load_from_disk(str(tmp_path / "out"))["seed_id"]) == {"en-1", "w"}
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text(encoding="utf-8"))
    assert any(w.startswith(f"{path}:2: warning") for w in manifest["inputs"]["warnings"])


def test_unknown_field_warning_in_process(cli, write_seeds, tmp_path):
    path = write_seeds([GOOD[0], {"id": "w", "text": "A dog ran.", "colour": "red"}])
    for name in ("out1", "out2"):
        r = expand_ok(cli, path, tmp_path / name)
        assert (tmp_path / name).is_dir()
        assert f"{path}:2: warning: unknown field 'colour'" in r.stderr


def test_skip_invalid_rejects_carry_the_same_messages(cli, write_seeds, tmp_path):
    rows = [GOOD_LINES[0], "{not json", '{"id": "no-text"}', GOOD_LINES[1], '{"id": "num", "text": 7}',
            '{"id": "empty", "text": "  "}', '{"id": "en-1", "text": "Dup."}', '{"id": "mk", "markup": "Hi {a|b"}',
            '"a string"', '{"id": "ok-mk", "markup": "[[Кот]] {сидел|лежал} на ковре."}',
            '{"id": "rec", "text": "Its recipe is missing.", "recipe": "nowhere.recipe"}']
    path = write_seeds(rows)
    strict = cli("expand", path, "-o", tmp_path / "out", *V)
    assert strict.exit_code == 2 and no_output(tmp_path)

    r = expand_ok(cli, path, tmp_path / "out", "--skip-invalid")
    out = tmp_path / "out"
    rejects = [json.loads(ln) for ln in (out / "rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    inputs = [x for x in rejects if x["check"] == "input"]
    bad_lines = [2, 3, 5, 6, 7, 8, 9, 11]   # 11: a seed's own recipe, listed in its place
    assert [x["detail"].split(": ", 1)[0] for x in inputs] == [f"{path}:{n}" for n in bad_lines]
    # exactly the messages the strict run printed
    assert "\n".join(x["detail"] for x in inputs) == strict.stderr.rstrip("\n")
    assert [x["text"] for x in inputs] == [rows[n - 1] for n in bad_lines]

    ds = load_from_disk(str(out))
    assert set(ds["seed_id"]) == {"en-1", "ru-1", "ok-mk"}
    for n in bad_lines:  # nothing lost: every id is in the dataset or the rejects
        obj = json.loads(rows[n - 1]) if rows[n - 1].startswith("{\"") else None
        sid = obj["id"] if isinstance(obj, dict) else f"line:{n}"
        assert sid in {x["seed_id"] for x in inputs}
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["counts"]["rejected_by_check"]["input"] == len(bad_lines)
    assert manifest["counts"]["seeds"] == 3
    assert manifest["counts"]["kept"] == len(set(ds["variant_id"]))
    assert not list(tmp_path.glob(".out.*"))


def test_skip_invalid_keeps_invalid_utf8_line_as_reject(cli, write_seeds, tmp_path):
    path = write_seeds(None, raw=GOOD_LINES[0].encode() + b'\n{"id": "b", "text": "caf\xe9"}\n')
    expand_ok(cli, path, tmp_path / "out", "--skip-invalid")
    rejects = [json.loads(ln) for ln in (tmp_path / "out" / "rejects.jsonl").read_text("utf-8").splitlines()]
    bad = [x for x in rejects if x["check"] == "input"]
    assert len(bad) == 1 and bad[0]["detail"].startswith(f"{path}:2: invalid UTF-8")
    assert set(load_from_disk(str(tmp_path / "out"))["seed_id"]) == {"en-1"}


@pytest.mark.parametrize("bom,eol", [(b"\xef\xbb\xbf", b"\n"), (b"", b"\r\n"), (b"\xef\xbb\xbf", b"\r\n")],
                         ids=["bom", "crlf", "bom-crlf"])
def test_bom_and_crlf_give_the_same_dataset(cli, write_seeds, tmp_path, bom, eol):
    lines = [ln.encode() for ln in [*GOOD_LINES, '{"id": "mk", "markup": "[[Кот]] {сидел|лежал} на ковре."}']]
    plain = write_seeds(None, raw=b"\n".join(lines) + b"\n", name="plain.jsonl")
    other = write_seeds(None, raw=bom + eol.join(lines) + eol, name="other.jsonl")
    expand_ok(cli, plain, tmp_path / "a")
    expand_ok(cli, other, tmp_path / "b")
    a, b = load_from_disk(str(tmp_path / "a")), load_from_disk(str(tmp_path / "b"))
    assert len(a) > 3
    assert a["text"] == b["text"] and a["seed_id"] == b["seed_id"]
    assert "\r" not in "".join(b["text"]) and "\ufeff" not in "".join(b["text"])
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["inputs"]["sha256"] == hashlib.sha256(other.read_bytes()).hexdigest()


def test_stdin(cli, write_seeds, tmp_path):
    data = ("\n".join(GOOD_LINES) + "\n").encode()
    file_run = write_seeds(GOOD)
    expand_ok(cli, file_run, tmp_path / "from_file")
    expand_ok(cli, "-", tmp_path / "out", input=data)
    ds = load_from_disk(str(tmp_path / "out"))
    assert ds["text"] == load_from_disk(str(tmp_path / "from_file"))["text"]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["inputs"]["seeds"] == "<stdin>"
    assert manifest["inputs"]["sha256"] == hashlib.sha256(data).hexdigest()


def test_stdin_bad_line_names_stdin(cli, tmp_path):
    r = cli("expand", "-", "-o", tmp_path / "out", *V, input=GOOD_LINES[0] + "\n{oops\n")
    assert r.exit_code == 2
    assert r.stderr.startswith("<stdin>:2: malformed JSON")
    assert no_output(tmp_path)


def test_existing_out_needs_overwrite(cli, write_seeds, tmp_path):
    path = write_seeds(GOOD)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    r = cli("expand", path, "-o", out, *V)
    assert r.exit_code == 2
    assert "already exists" in r.stderr and "--overwrite" in r.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    # bad seeds with --overwrite: still untouched
    bad = write_seeds(["{oops"], name="bad.jsonl")
    assert cli("expand", bad, "-o", out, *V, "--overwrite").exit_code == 2
    assert [p.name for p in out.iterdir()] == ["keep.txt"]

    expand_ok(cli, path, out, "--overwrite")
    assert not (out / "keep.txt").exists()
    assert set(load_from_disk(str(out))["seed_id"]) == {"en-1", "ru-1"}
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_output_layout_and_manifest(cli, write_seeds, tmp_path, tk):
    path = write_seeds([*GOOD, {"id": "mk", "markup": "[[Кот]] {сидел|лежал} на ковре{?, тихо}."}])
    out = tmp_path / "out"
    expand_ok(cli, path, out, "--seed", "5")
    ds = load_from_disk(str(out))
    assert set(ds["seed_id"]) == {"en-1", "ru-1", "mk"}
    assert {"seed_id", "variant_id", "text", "parent_id"} <= set(ds.column_names)
    roots = {s: t for s, t, p in zip(ds["seed_id"], ds["text"], ds["parent_id"]) if not p}
    assert roots["mk"] == "Кот сидел на ковре, тихо."
    for line in (out / "rejects.jsonl").read_text(encoding="utf-8").splitlines():
        assert {"seed_id", "check", "detail"} <= set(json.loads(line))
    m = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert m["inputs"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert m["seed"] == 5
    assert m["tokenizer"]["sha256"] == tk.sha256 and len(tk.sha256) == 64
    assert m["counts"]["seeds"] == 3 and m["counts"]["seeds_rejected"] == 0
    assert m["counts"]["kept"] == len(set(ds["variant_id"]))


def test_read_seeds_library(write_seeds):
    path = write_seeds([
        {"id": "t", "text": "Plain {a|b} [[not markup]].", "meta": {"src": "x"}, "continuation": " And more."},
        "",
        {"id": "m", "markup": "[[Мышление]] {не равно|не то же, что} генерации [[текста]]{?, и точка}."},
        {"id": "s", "markup": "{~Red} and {~blue} \\{braces\\}.", "recipe": "default"},
    ])
    sf = read_seeds(str(path))
    assert sf.bad == [] and sf.warnings == []
    assert sf.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    t, m, s = sf.seeds
    assert all(isinstance(x, Seed) for x in sf.seeds)
    assert [x.id for x in sf.seeds] == ["t", "m", "s"] and [x.line for x in sf.seeds] == [1, 3, 4]
    assert t.text == "Plain {a|b} [[not markup]]." and t.parts is None
    assert t.meta == {"src": "x"} and t.continuation == " And more." and t.file == str(path)
    assert m.text == "Мышление не равно генерации текста, и точка."
    assert Anchor("Мышление") in m.parts and Alt(("не равно", "не то же, что")) in m.parts
    assert Opt(", и точка") in m.parts
    assert s.text == "Red and blue {braces}." and s.recipe == "default"
    assert sum(isinstance(p, Swap) for p in s.parts) == 2


def test_read_seeds_skip_invalid_returns_bad_lines(write_seeds):
    path = write_seeds([GOOD_LINES[0], '{"id": "x", "text": ""}', "nope"])
    sf = read_seeds(str(path), skip_invalid=True)
    assert [x.id for x in sf.seeds] == ["en-1"]
    assert [(b.line, b.seed_id) for b in sf.bad] == [(2, "x"), (3, "line:3")]
    assert sf.bad[1].error.render().startswith(f"{path}:3: malformed JSON")
