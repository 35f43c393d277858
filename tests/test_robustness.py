"""Inputs nobody planned for: random Unicode text and markup through the whole expander.
Nothing may crash, every kept variant must be token-safe, every seed accounted for."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from microvar.dsl.markup import MarkupSyntaxError, parse_markup, render_original
from microvar.dsl.recipe import load_recipe
from microvar.expand.expander import Expander
from microvar.expand.seeds import Seed

DEFAULT = load_recipe("default")
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=80)
PIECES = st.lists(st.one_of(
    st.sampled_from(["Мышление", " не ", "равно", "token", " ", "\n", "🙂", "你好", "def f(x):", "\t", ".", ", ", "→"]),
    st.builds(lambda t: "[[" + t + "]]", st.sampled_from(["якорь", "anchor", "🙂 x"])),
    st.builds(lambda a, b: "{" + a + "|" + b + "}", st.sampled_from(["a", "один", "🙂"]), st.sampled_from(["b", "два", "x y"])),
    st.builds(lambda t: "{?" + t + "}", st.sampled_from([" maybe", ", может"])),
    st.just("{~left} and {~right}"),
), min_size=1, max_size=10)


def assert_token_safe(tk, result, seed_text: str) -> None:
    assert result.kept or result.rejects, "a seed vanished"
    ids = {v.variant_id for v in result.kept}
    for v in result.kept:
        enc = tk.encode([v.text])[0]
        assert tk.decode([enc])[0] == v.text
        assert not set(enc) & tk.special_ids or v.parent_id == ""
        assert v.parent_id == "" or v.parent_id in ids
    if result.kept:
        assert result.kept[0].text == seed_text


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=TEXT, cont=st.one_of(st.none(), TEXT))
def test_any_plain_text(tk, text, cont):
    if not text.strip():
        return
    seed = Seed("s", text, None, continuation=cont)
    assert_token_safe(tk, Expander(tk, seed=1).expand(seed, DEFAULT), text)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pieces=PIECES)
def test_any_markup(tk, pieces):
    markup = "".join(pieces)
    try:
        parts = parse_markup(markup)
    except MarkupSyntaxError:
        return
    text = render_original(parts)
    if not text.strip():
        return
    assert_token_safe(tk, Expander(tk, seed=2).expand(Seed("m", text, parts), DEFAULT), text)


def test_awkward_seeds_through_the_cli(cli, write_seeds, tmp_path):
    seeds = [
        {"id": "one-char", "text": "a"},
        {"id": "emoji-only", "text": "🙂🙂🙂"},
        {"id": "cjk", "text": "我们的模型学习语言。它一步一步地学习。"},
        {"id": "spaces", "text": "  leading and trailing  "},
        {"id": "tabs-code", "text": "if x:\n\treturn {\"a\": [1, 2]}\n"},
        {"id": "crlf-inside", "text": "line one\r\nline two"},
        {"id": "rtl", "text": "שלום עולם, hello world."},
        {"id": "zero-width", "text": "zero\u200bwidth joiner\u200d text"},
        {"id": "special", "text": "ends with <|endoftext|>"},
        {"id": "long-line", "text": "word " * 2000},
    ]
    out = tmp_path / "out"
    res = cli("expand", write_seeds(seeds), "-o", out, "--variants", "12")
    assert res.exit_code == 0, res.stderr
    from datasets import load_from_disk

    kept = set(load_from_disk(str(out))["seed_id"])
    rejected = {json.loads(line)["seed_id"] for line in (out / "rejects.jsonl").read_text().splitlines()}
    assert {s["id"] for s in seeds} <= kept | rejected
    assert "special" not in kept  # a special token spelled in a seed is refused


def test_lone_surrogate_is_a_bad_line_and_a_failing_template_a_reject(cli, write_seeds, tmp_path):
    bad = write_seeds(['{"id": "a", "text": "bad \\ud800 here"}', '{"id": "b", "text": "fine"}'])
    res = cli("expand", bad, "-o", tmp_path / "o", "--model", "none")
    assert res.exit_code == 2 and f"{bad}:1: 'text' has a lone surrogate" in res.stderr
    (tmp_path / "m.j2").write_text("{{ meta.lang }}: {{ text }}\n")
    (tmp_path / "r.recipe").write_text('edit identity\nedit wrap "m.j2"\nallow wrap <= 12\n')
    seeds = write_seeds([{"id": "x", "text": "Hello there.", "meta": {"lang": "en"}},
                         {"id": "y", "text": "No meta here."}], name="ok.jsonl")
    res = cli("expand", seeds, "--recipe", tmp_path / "r.recipe", "-o", tmp_path / "o", "--model", "none")
    assert res.exit_code == 0, res.stderr
    rejects = [json.loads(line) for line in (tmp_path / "o" / "rejects.jsonl").read_text().splitlines()]
    assert [(r["seed_id"], r["check"], r["edits"]) for r in rejects] == [("y", "template", ["wrap:m"])]
    assert "has no attribute 'lang'" in rejects[0]["detail"]


def test_every_seed_rejected_still_gives_a_dataset_that_loads(cli, write_seeds, tmp_path):
    from datasets import load_from_disk

    seeds = write_seeds([{"id": "special", "text": "ends with <|endoftext|>"}])
    res = cli("expand", seeds, "-o", tmp_path / "o", "--model", "none")
    assert res.exit_code == 0, res.stderr
    assert len(load_from_disk(str(tmp_path / "o"))) == 0
    rejects = [json.loads(line) for line in (tmp_path / "o" / "rejects.jsonl").read_text().splitlines()]
    assert [r["seed_id"] for r in rejects] == ["special"]
    assert cli("split", tmp_path / "o", "--by", "phase").exit_code == 0
