"""Volatility with the real default model and through the CLI: small edits disturb less than
big ones, budgets remove variants with their reasons, the column is filled (or null with
--model none), a foreign tokenizer is refused, and the model proposes edits."""

from __future__ import annotations

import json

import pytest
from datasets import load_from_disk

from microvar.model.score import Group, Item, Scorer, context_token

SEEDS = [
    {"id": "cat", "text": "The cat sat on the mat because it was tired after the long day."},
    {"id": "ru", "text": "Модель учится на маленьких шагах, и ритм важнее, чем объём."},
]


@pytest.fixture(scope="module")
def lm(tk):
    from microvar.model.load import load_model, resolve

    return load_model(resolve(None), device="cpu")


def test_one_token_synonym_disturbs_less_than_a_new_clause(lm, tk):
    seed = "The cat sat on the mat because it was tired after the long day."
    variants = {"synonym": "The cat sat on the rug because it was tired after the long day.",
                "clause": "The cat sat on the mat because the stock market collapsed after the long day."}
    ids = {k: tk.encode([v])[0] for k, v in variants.items()}
    seed_ids = tk.encode([seed])[0]
    assert sum(a != b for a, b in zip(seed_ids, ids["synonym"])) == 1 and len(seed_ids) == len(ids["synonym"])
    group = Group("s", seed_ids, [Item("root", seed_ids)] + [Item(k, v, "root") for k, v in ids.items()])
    m = dict(next(iter(Scorer(lm.model, context_token(tk.hf)).score([group])))[1])
    syn, clause = m["synonym"], m["clause"]
    assert syn["new_tokens"] == 1 and clause["new_tokens"] > 1
    assert syn["ripple_kl"] < clause["ripple_kl"] and syn["ripple_kl_max"] < clause["ripple_kl_max"]
    assert syn["surprisal_max"] < clause["surprisal_max"]
    assert syn["delta_nll"] < clause["delta_nll"] and syn["top1"] > clause["top1"]
    assert m["root"]["ripple_kl"] == 0 and m["root"]["top1"] == 1


@pytest.fixture(scope="module")
def budgeted(tmp_path_factory, tk):
    from click.testing import CliRunner

    from microvar.cli import main

    d = tmp_path_factory.mktemp("budget")
    seeds = d / "seeds.jsonl"
    seeds.write_text("".join(json.dumps(s, ensure_ascii=False) + "\n" for s in SEEDS), encoding="utf-8")
    runs = {}
    for name, extra in {"free": [], "tight": ["--budget", "ripple_kl<=0.3", "--budget", "top1>=0.7"]}.items():
        out = d / name
        res = CliRunner().invoke(main, ["expand", str(seeds), "-o", str(out), "--variants", "20", *extra],
                                 catch_exceptions=False)
        assert res.exit_code == 0, res.stderr
        runs[name] = (out, res)
    return runs


def test_budget_removes_variants_with_reasons(budgeted):
    out, res = budgeted["tight"]
    rejects = [json.loads(x) for x in (out / "rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    over = [r for r in rejects if r["check"] == "budget" and r["limit"]]
    assert over, "the budget removed nothing"
    for r in over:
        metric, op, value = r["limit"].split()
        assert r["value"] == pytest.approx(r["volatility"][metric])
        if value.endswith("x"):   # the default recipe's limits, relative to the seed's own NLL
            assert "the seed's own NLL is" in r["detail"]
            continue
        assert (r["value"] > float(value)) if op == "<=" else (r["value"] < float(value))
        assert metric in r["detail"] and r["limit"] in r["detail"]
    rows = load_from_disk(str(out)).to_list()
    ids = {r["variant_id"] for r in rows}
    for r in rows:
        v = r["volatility"]
        assert v is not None
        if r["parent_id"]:
            assert v["ripple_kl"] <= 0.3 + 1e-6 and v["top1"] >= 0.7 - 1e-6
            assert r["parent_id"] in ids
    cascaded = [r for r in rejects if r["check"] == "budget" and not r["limit"]]
    assert all("its parent" in r["detail"] for r in cascaded)
    assert "budget removed: " in res.stderr and "ripple_kl <= 0.3" in res.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["scored"] and manifest["model"]["budget_overrides"] == ["ripple_kl <= 0.3", "top1 >= 0.7"]
    assert manifest["model"]["seed_context"]["on"] is True and manifest["model"]["seed_context"]["runs_apart"] == 128
    assert "seed's context" in manifest["model"]["seed_context"]["definition"]
    free = set(load_from_disk(str(budgeted["free"][0]))["variant_id"])  # distinct variants (rows repeat)
    assert len(free) > len(ids)
    assert len(ids) + len([r for r in rejects if r["check"] == "budget"]) <= len(free) + 20


def test_summary_shows_distributions(budgeted):
    _, res = budgeted["free"]
    for k in ("surprisal", "ripple_kl", "delta_nll", "top1"):
        assert f"  {k} " in res.stderr
    assert "positions computed" in res.stderr


def test_model_none_leaves_volatility_null(cli, write_seeds, tmp_path):
    out = tmp_path / "out"
    res = cli("expand", write_seeds(SEEDS), "-o", out, "--variants", "6", "--model", "none")
    assert res.exit_code == 0, res.stderr
    assert all(r["volatility"] is None for r in load_from_disk(str(out)).to_list())
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["scored"] is False and "--model none" in manifest["model"]["note"]
    assert "not scored" in res.stderr


def test_bad_budget_and_foreign_tokenizer_exit_2(cli, write_seeds, tmp_path):
    res = cli("expand", write_seeds(SEEDS), "-o", tmp_path / "a", "--budget", "wobble<=1")
    assert res.exit_code == 2 and "unknown metric 'wobble'" in res.stderr
    res = cli("expand", write_seeds(SEEDS), "-o", tmp_path / "a", "--budget", "top1 = 1")
    assert res.exit_code == 2 and "--budget" in res.stderr
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel()
    raw.train_from_iterator(["the cat sat on the mat"] * 10, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>"]))
    d = tmp_path / "foreign"
    PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>").save_pretrained(str(d))
    res = cli("expand", write_seeds(SEEDS), "-o", tmp_path / "b", "--tokenizer", d)
    assert res.exit_code == 2 and "is not the tokenizer of --model" in res.stderr
    assert not (tmp_path / "b").exists()


def test_drift_layer_through_the_cli(cli, write_seeds, tmp_path, tk):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=tk.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                         num_attention_heads=2, num_key_value_heads=2, initializer_range=0.2)
    model_dir = tmp_path / "tiny"
    LlamaForCausalLM(config).save_pretrained(str(model_dir))
    tk.hf.save_pretrained(str(model_dir))
    out = tmp_path / "out"
    res = cli("expand", write_seeds(SEEDS), "-o", out, "--model", model_dir, "--drift", "--drift-threshold", "0.01",
              "--variants", "8")
    assert res.exit_code == 0, res.stderr
    rows = [r for r in load_from_disk(str(out)).to_list() if r["parent_id"]]
    assert rows and all(len(r["volatility"]["drift"]) == 4 for r in rows)
    layers = [r["volatility"]["drift_layer"] for r in rows if r["volatility"]["aligned_tokens"]]
    assert layers and all(x is None or 1 <= x <= 3 for x in layers) and any(x is not None for x in layers)


def test_model_proposes_substitutions_and_continuations(lm, tk):
    from microvar.dsl.recipe import parse_recipe
    from microvar.expand.expander import Expander
    from microvar.expand.seeds import Seed
    from microvar.model.advisor import Advisor

    recipe = parse_recipe("recipe m\nanchors 2\nedit identity\nedit mark anchors with markers\n"
                          "markers \"[ANCHOR]\" max 8 tokens\nedit swap model top 3\nedit grow model 1..2 tokens\n"
                          "variants 40\nstep tokens <= 3\n", "m.recipe")
    advisor = Advisor(lm, tk)
    res = Expander(tk, advisor=advisor).expand(Seed("cat", SEEDS[0]["text"], None), recipe)
    kinds = {k for v in res.kept for k in v.kinds}
    assert {"swap_model", "grow_model", "mark"} <= kinds
    for v in res.kept:
        if v.kinds == ["swap_model"]:
            old, new = v.edits[0].split(":", 1)[1].split("→")
            assert new.isalpha() and new.lower() != old.lower() and new in v.text
        if v.kinds == ["grow_model"]:
            assert v.text.startswith(SEEDS[0]["text"]) and len(v.text) > len(SEEDS[0]["text"])
    # anchors are the words the model finds most surprising, not the longest ones
    probe = advisor.probe(SEEDS[0]["text"])
    marked = {e.split("@", 1)[1] for v in res.kept for e in v.edits if e.startswith("mark:")}
    words = {w: advisor.surprisal(probe, SEEDS[0]["text"].index(w), SEEDS[0]["text"].index(w) + len(w))
             for w in ("tired", "because", "long")}
    assert marked and all(advisor.surprisal(probe, SEEDS[0]["text"].index(w), SEEDS[0]["text"].index(w) + len(w))
                          >= min(words.values()) for w in marked)


def test_default_recipe_gives_every_edit_kind_and_a_relative_budget(budgeted):
    """With the reference model, the default recipe gives a plain English seed model-guided
    substitutions and continuations, and its relative budget removes variants, saying why."""
    out, res = budgeted["free"]
    rows = load_from_disk(str(out)).to_list()
    stages = {r["stage"] for r in rows if r["seed_id"] == "cat"}
    assert {"mark", "substitute", "grow"} <= stages
    kinds = {e.split(":")[0] for r in rows if r["seed_id"] == "cat" for e in r["edits"]}
    assert "swap" in kinds and "grow_model" in kinds
    assert "model substitutions: " in res.stderr
    rejects = [json.loads(x) for x in (out / "rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    relative = [r for r in rejects if r["check"] == "budget" and r["limit"] and r["limit"].endswith("x")]
    assert relative, "the default budget removed nothing"
    for r in relative:
        assert "the seed's own NLL is" in r["detail"]
    # the marks may not crowd out the rest: at most 40% of a seed's variants
    for sid in ("cat", "ru"):
        variants = {r["variant_id"]: r["stage"] for r in rows if r["seed_id"] == sid and r["parent_id"]}
        assert sum(s == "mark" for s in variants.values()) <= max(1, len(variants) * 40 // 100)
