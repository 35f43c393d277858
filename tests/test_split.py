"""LoRA routing columns from the recipe's route lines, and `microvar split` by level or phase."""

from __future__ import annotations

import json

from datasets import load_from_disk

from microvar.dsl.recipe import load_recipe, parse_recipe

SEEDS = [{"id": "en", "text": "Rhythm matters more than quantity.", "continuation": " Small steps, often."},
         {"id": "ru", "text": "Мышление не равно генерации текста."}]


def test_route_of_defaults_and_recipe_lines():
    r = load_recipe("default")
    assert r.route_of("identity") == ("foundation", 1) and r.route_of("wrap") == ("domain", 2)
    assert r.route_of("grow") == ("context", 3)
    custom = parse_recipe("recipe c\nedit identity\nroute grow -> late phase 7; mark -> early\n", "c.recipe")
    assert custom.route_of("grow") == ("late", 7) and custom.route_of("mark") == ("early", 1)
    assert custom.route_of("reorder") == ("domain", 2)


def test_split_by_level_and_phase_keeps_order(cli, write_seeds, tmp_path):
    out = tmp_path / "out"
    assert cli("expand", write_seeds(SEEDS), "-o", out, "--model", "none", "--variants", "20").exit_code == 0
    rows = load_from_disk(str(out)).to_list()
    recipe = load_recipe("default")
    assert all((r["lora_level"], r["phase"]) == recipe.route_of(r["stage"]) for r in rows)
    for by in ("lora_level", "phase"):
        res = cli("split", out, "--by", by)
        assert res.exit_code == 0, res.stderr
        target = tmp_path / f"out-by-{by}"
        info = json.loads((target / "split.json").read_text())
        assert sum(info["parts"].values()) == len(rows)
        for value, n in info["parts"].items():
            part = load_from_disk(str(target / value)).to_list()
            want = [r for r in rows if str(r[by]) == value]
            assert part == want and len(part) == n
            assert [r["order"] for r in part] == sorted(r["order"] for r in part)
    assert cli("split", out, "--by", "phase").exit_code == 2  # exists: refused without --overwrite
    assert cli("split", out, "--by", "phase", "--overwrite").exit_code == 0
    assert cli("split", tmp_path, "--by", "phase").exit_code == 2  # not a dataset
