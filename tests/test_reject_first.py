"""No work on what will be rejected: a seed the token checks reject whole (too long for the
model's context, a special token in its text) is rejected before the reference model reads
it, by the advisor (anchors by surprisal, swap model, grow model, reorder fluency) or by
the scorer. Counted calls, not timings."""

from __future__ import annotations

import copy
import json

from microvar.dsl.markup import parse_markup, render_original
from microvar.dsl.recipe import load_recipe
from microvar.expand.expander import Expander
from microvar.expand.seeds import Seed

SHORT = [{"id": "en", "text": "Rhythm matters more than quantity."},
         {"id": "ru", "markup": "[[Ритм]] важнее {объёма|количества}."}]
LONG = {"id": "long", "markup": "[[Rhythm]] matters {more|far more} than quantity. " + "word " * 60}


class RefusingAdvisor:
    """An advisor no seed may consult: any question to it fails the test."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def __getattr__(self, name: str):
        self.asked.append(name)
        raise AssertionError(f"the advisor was asked {name!r} about a seed that is rejected whole")


def _small_context(tk, context: int):
    small = copy.copy(tk)
    small.context = context
    return small


def test_expander_rejects_a_long_seed_before_asking_the_model(tk):
    parts = parse_markup(LONG["markup"])
    seed = Seed("long", render_original(parts), parts)
    recipe = load_recipe("default")              # every model-guided edit the tool has
    small = _small_context(tk, 40)
    advisor = RefusingAdvisor()
    res = Expander(small, seed=1, advisor=advisor).expand(seed, recipe)
    assert advisor.asked == []
    assert res.kept == [] and [r.check for r in res.rejects] == ["context"]
    assert res.rejects[0].detail.startswith("seed rejected: ") and "context of 40" in res.rejects[0].detail
    assert res.counts["rejected:context"] == 1
    # the same rejects and the same word on the designer's edits as without a model
    plain = Expander(small, seed=1).expand(seed, recipe)
    assert [r.to_json() for r in res.rejects] == [r.to_json() for r in plain.rejects]
    unused = res.unused_edits(recipe, 64)
    assert unused == plain.unused_edits(recipe, 64)
    assert {u["edit"] for u in unused} == {"more→far more"}
    assert all(u["reason"] == res.rejects[0].detail for u in unused)


def test_a_special_token_in_the_seed_is_also_rejected_first(tk):
    special = tk.hf.convert_ids_to_tokens(sorted(tk.special_ids)[0])
    seed = Seed("special", f"Rhythm {special} matters more than quantity.", None)
    advisor = RefusingAdvisor()
    res = Expander(tk, advisor=advisor).expand(seed, load_recipe("default"))
    assert advisor.asked == [] and res.kept == [] and res.rejects[0].check == "in_vocab"


def _record_forwards(monkeypatch) -> list[int]:
    """The positions of every forward of the tiny Llama (advisor and scorer alike)."""
    from transformers import LlamaForCausalLM

    lengths: list[int] = []
    forward = LlamaForCausalLM.forward

    def recorded(self, *args, input_ids=None, **kwargs):
        lengths.append(0 if input_ids is None else input_ids.shape[-1])
        return forward(self, *args, input_ids=input_ids, **kwargs)

    monkeypatch.setattr(LlamaForCausalLM, "forward", recorded)
    return lengths


def test_expand_never_runs_the_model_on_a_seed_over_its_context(cli, write_seeds, tmp_path, model_dir, monkeypatch):
    lengths = _record_forwards(monkeypatch)
    out = tmp_path / "long"
    res = cli("expand", write_seeds([LONG], name="long.jsonl"), "-o", out, "--model", model_dir, "--variants", "6")
    assert res.exit_code == 0, res.stderr
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert [(r["seed_id"], r["check"]) for r in rejects] == [("long", "context")]
    # the model reads nothing of the seed (over 40 tokens: any forward of it would be longer
    # than the context); what it may run is the scorer's own check of the model on a few
    # fixed tokens, done once per run (score.py, _split_model)
    assert all(n < 40 for n in lengths) and len(lengths) <= 1, lengths
    # the record is live: seeds that fit are read by the model (advisor and scorer)
    before = len(lengths)
    out = tmp_path / "short"
    res = cli("expand", write_seeds(SHORT + [LONG]), "-o", out, "--model", model_dir, "--variants", "6")
    assert res.exit_code == 0, res.stderr
    assert len(lengths) > before + 2
