"""The curriculum: drift paths within a seed, presentations, phases and schedules across seeds,
and the training formats, on real expansions of the shipped examples (--model none: fast)."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict

import pytest
from conftest import DATA
from datasets import load_from_disk

from microvar.curriculum import StepMeasure, drift_path, repeats_for, schedule, volatility_key
from microvar.dsl.recipe import load_recipe
from microvar.expand.edits.base import closing
from microvar.expand.expander import Expander
from microvar.expand.seeds import read_seeds
from microvar.export.dataset import variant_text
from microvar.pipeline.summary import SHOW_GAPS


@pytest.fixture(scope="module")
def expanded(tk):
    recipe = load_recipe("default")
    ex = Expander(tk)
    markers = list(recipe.markers) + [closing(m) for m in recipe.markers]
    measure = StepMeasure(markers, ex.marker_cost)
    return recipe, measure, [ex.expand(s, recipe) for s in read_seeds(str(DATA / "seeds.jsonl")).seeds]


def test_step_measure_is_the_expansions_step(expanded):
    recipe, measure, results = expanded
    for r in results:
        by_id = {v.variant_id: v for v in r.kept}
        for v in r.kept[1:]:
            assert measure(by_id[v.parent_id], v) == v.step_tokens, v.text


@pytest.mark.parametrize("bridges", [0, 2])
def test_drift_path_walks_every_variant_in_stage_order(expanded, bridges):
    recipe, measure, results = expanded
    within = steps = 0
    for r in results:
        path = drift_path(r.kept, recipe, measure, bridges)
        assert path.rows[0] is r.kept[0]
        assert {v.variant_id for v in path.rows} == {v.variant_id for v in r.kept}
        assert len(path.rows) == len(r.kept) + path.bridged
        if not bridges:
            assert path.bridged == 0
        shown = set()
        last_new_stage = 0
        for k, v in enumerate(path.rows):
            if v.variant_id not in shown:
                assert not v.parent_id or v.parent_id in shown, "a parent comes before its child"
                rank = recipe.stages.index(v.stage)
                assert rank >= last_new_stage, "new variants come stage by stage"
                last_new_stage = rank
                shown.add(v.variant_id)
            if k:
                assert path.distances[k] == measure(path.rows[k - 1], v)
        over = [(path.rows[k - 1].variant_id, path.rows[k].variant_id) for k in range(1, len(path.rows))
                if path.distances[k] > path.budgets[k]]
        assert over == [(g.from_id, g.to_id) for g in path.gaps], "every step over the budget is a gap"
        within += path.within
        steps += len(path.rows) - 1
    assert within / steps >= (0.85 if bridges == 0 else 0.95)


def test_lower_volatility_first_within_a_stage_when_all_steps_are_near(tk):
    """With a step budget nothing exceeds, the path inside each stage is in volatility order
    (unscored: depth, then step size)."""
    from microvar.dsl.recipe import parse_recipe

    recipe = parse_recipe("edit identity\nedit mark anchors with markers as prefix\nedit swap alternatives\n"
                          "compose up to 2\nstep tokens <= 100\n")
    ex = Expander(tk)
    result = ex.expand(_markup_seed("[[Ритм]] важнее {объёма|количества}, [[rhythm]] {beats|wins}."), recipe)
    measure = StepMeasure(list(recipe.markers), ex.marker_cost)
    path = drift_path(result.kept, recipe, measure, 0)
    assert not path.gaps
    for stage in recipe.stages:
        keys = [volatility_key(v) for v in path.rows if v.stage == stage]
        # a child may wait for its parent; otherwise lower first
        assert sum(a > b for a, b in zip(keys, keys[1:])) <= len(keys) // 3, stage


def _markup_seed(markup: str):
    from microvar.dsl.markup import parse_markup, render_original
    from microvar.expand.seeds import Seed

    parts = parse_markup(markup)
    return Seed("s", render_original(parts), parts, file="<test>", line=1)


def test_repeats_and_schedules():
    assert repeats_for(10, 24) == 3 and repeats_for(24, 24) == 1 and repeats_for(64, 24) == 1
    a, b, c = ["a0", "a1", "a2", "a3"], ["b0", "b1"], ["c0"]
    assert schedule([a, b, c], "blocked") == a + b + c
    assert schedule([a, b, c], "interleaved") == ["a0", "b0", "c0", "a1", "b1", "a2", "a3"]
    spaced = schedule([a, b, c], "spaced")
    assert sorted(spaced) == sorted(a + b + c)
    assert spaced.index("b1") > spaced.index("a2") - 1 and spaced.index("c0") in range(2, 5), spaced
    for seq in (a, b, c):  # each seed's own order is kept
        assert [x for x in spaced if x in seq] == seq
    with pytest.raises(ValueError):
        schedule([a], "random")


def _expand(cli, tmp_path, *args, name="out"):
    out = tmp_path / name
    res = cli("expand", DATA / "seeds.jsonl", "-o", out, "--model", "none", *args)
    assert res.exit_code == 0, res.stderr
    return out, res


def test_examples_curriculum_summary_manifest_and_columns(cli, tmp_path):
    out, res = _expand(cli, tmp_path, "--format", "prompt-completion")
    m = re.search(r"drift paths: (\d+) of (\d+) consecutive same-seed steps within the step budget "
                  r"\(([\d.]+)%\).*?(\d+) gaps", res.stderr)
    assert m, res.stderr
    within, steps, share, n_gaps = int(m[1]), int(m[2]), float(m[3]), int(m[4])
    assert share >= 90.0 and within / steps == pytest.approx(share / 100, abs=1e-3)
    manifest = json.loads((out / "manifest.json").read_text())
    cur = manifest["curriculum"]
    assert cur["steps"] == steps and cur["within_step"] == within and len(cur["gaps"]) == n_gaps
    for g in cur["gaps"][:SHOW_GAPS]:  # the first gaps are listed in the summary too
        assert f"gap: seed {g['seed_id']}: {g['from']} -> {g['to']}, {g['tokens']} tokens" in res.stderr
    assert all(g["tokens"] > g["budget"] for g in cur["gaps"])
    assert (f"... {n_gaps - SHOW_GAPS} more gaps in manifest.json" in res.stderr) == (n_gaps > SHOW_GAPS)
    assert cur["schedule"] == "blocked" and manifest["export"]["format"] == "prompt-completion"

    ds = load_from_disk(str(out))
    assert ds["order"] == list(range(len(ds)))
    assert {"prompt", "completion"} <= set(ds.column_names) and "text" not in ds.column_names
    rows = ds.to_list()
    by_id = {r["variant_id"]: r for r in rows}
    # phases one after another; within a phase, one seed after another (blocked), path order kept
    assert [r["phase"] for r in rows] == sorted(r["phase"] for r in rows)
    seen_seeds = defaultdict(list)
    for r in rows:
        seen_seeds[r["phase"]].append(r["seed_id"])
        assert r["completion"] == variant_text(r)
        parent = by_id.get(r["parent_id"])
        source = parent["completion"] if parent else r["completion"]
        assert r["prompt"] == (source if source.endswith("\n") else source + "\n")
    for phase, seeds in seen_seeds.items():
        runs = [s for k, s in enumerate(seeds) if k == 0 or seeds[k - 1] != s]
        assert len(runs) == len(set(runs)), f"phase {phase}: seeds are blocked"
    last = {}
    for r in rows:
        if r["seed_id"] in last:
            assert r["step"] == last[r["seed_id"]] + 1, "a seed's rows follow its path"
        last[r["seed_id"]] = r["step"]
    per_seed = Counter(r["seed_id"] for r in rows)
    assert min(per_seed.values()) >= 24
    assert sum(cur["stages"].values()) == len(ds)


def test_presentations_repeat_short_paths(cli, tmp_path):
    out, res = _expand(cli, tmp_path, "--variants", "6", "--presentations", "20", "--schedule", "interleaved")
    ds = load_from_disk(str(out))
    per_seed = Counter(ds["seed_id"])
    assert min(per_seed.values()) >= 20
    rows = ds.to_list()
    for seed in per_seed:
        mine = [r for r in rows if r["seed_id"] == seed]
        reps = max(r["repeat"] for r in mine) + 1
        assert reps == repeats_for(len({(r["step"]) for r in mine}), 20)
        for phase in {r["phase"] for r in mine}:
            seg = [(r["repeat"], r["step"]) for r in mine if r["phase"] == phase]
            assert seg == sorted(seg), "each repeat walks the path again, in order"
    # interleaved: within a phase, consecutive rows come from different seeds while several remain
    first_phase = [r["seed_id"] for r in rows if r["phase"] == rows[0]["phase"]]
    assert first_phase[: len(per_seed)] == list(dict.fromkeys(first_phase))[: len(per_seed)]
    assert json.loads((out / "manifest.json").read_text())["curriculum"]["schedule"] == "interleaved"


def test_schedule_from_recipe_and_spaced_spreads_seeds(cli, tmp_path):
    out, _ = _expand(cli, tmp_path, "--recipe", DATA / "example.recipe", "--variants", "12")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["curriculum"]["schedule"] == "spaced"  # the example recipe's
    ds = load_from_disk(str(out))
    rows = [r for r in ds.to_list() if r["phase"] == 1]
    n = len(rows)
    for seed in {r["seed_id"] for r in rows}:
        pos = [i for i, r in enumerate(rows) if r["seed_id"] == seed]
        if len(pos) >= 3:  # a seed's rows are spread over the phase, not bunched
            assert pos[0] < n / 2 and pos[-1] > n / 2, (seed, pos, n)


@pytest.mark.parametrize("fmt", ["text", "messages"])
def test_formats(cli, tmp_path, fmt):
    out, _ = _expand(cli, tmp_path, "--variants", "6", "--format", fmt, "--prompt", "seed")
    ds = load_from_disk(str(out))
    if fmt == "text":
        assert "text" in ds.column_names and not {"prompt", "completion", "messages"} & set(ds.column_names)
    else:
        assert "messages" in ds.column_names and "text" not in ds.column_names
        roots = {r["seed_id"]: variant_text(r) for r in ds.to_list() if not r["parent_id"]}
        for r in ds.to_list():
            user, assistant = r["messages"]
            assert user == {"role": "user", "content": roots[r["seed_id"]]}  # --prompt seed
            assert assistant["role"] == "assistant"


def test_messages_with_a_chat_template_from_templates(cli, tmp_path, tk):
    out, _ = _expand(cli, tmp_path, "--variants", "4", "--format", "messages", "--chat-template", "chat_plain.jinja")
    template = (out / "chat_template.jinja").read_text()
    assert json.loads((out / "manifest.json").read_text())["export"]["chat_template"] == "chat_template.jinja"
    row = load_from_disk(str(out))[1]
    text = tk.hf.apply_chat_template(row["messages"], chat_template=template, tokenize=False)
    assert text.startswith("<|user|>\n") and text.endswith(tk.hf.eos_token + "\n")


def test_bad_chat_template_and_option_mix_exit_2(cli, tmp_path):
    bad = tmp_path / "bad.jinja"
    bad.write_text("{% for m in messages %}{{ m.content }")
    for args, words in [(["--format", "messages", "--chat-template", bad], "cannot render"),
                        (["--format", "messages", "--chat-template", "nope.jinja"], "no such file"),
                        (["--chat-template", "chat_plain.jinja"], "--format messages")]:
        res = cli("expand", DATA / "seeds.jsonl", "-o", tmp_path / "o", "--model", "none", *args)
        assert res.exit_code == 2 and words in res.stderr, res.stderr
        assert not (tmp_path / "o").exists()


def test_default_format_is_text(cli, tmp_path):
    """Each variant as text by default: benchmarks/bench_evidence.py measured that the
    prompt-completion pairs implant nothing (README: Does it work?)."""
    out, _ = _expand(cli, tmp_path, "--variants", "6")
    ds = load_from_disk(str(out))
    assert ds.column_names[0] == "text" and not {"prompt", "completion", "messages"} & set(ds.column_names)
    assert json.loads((out / "manifest.json").read_text())["export"]["format"] == "text"
