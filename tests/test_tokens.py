"""Each token check, on the real reference tokenizer and on tiny tokenizers built here that
can fail in ways SmolLM2's byte-level BPE cannot (unknown pieces, lossy round trips, byte
fallback)."""

from __future__ import annotations

import json

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from microvar.dsl.markup import parse_markup, render_original
from microvar.dsl.recipe import parse_recipe
from microvar.expand.expander import Expander
from microvar.expand.seeds import Seed
from microvar.expand.tokens import RefTokenizer

RECIPE = """
edit identity
edit swap alternatives
edit mark anchors with markers as prefix
markers "[ANCHOR]" max 8 tokens
compose up to 1
"""


def markup_seed(sid: str, markup: str) -> Seed:
    parts = parse_markup(markup)
    return Seed(sid, render_original(parts), parts)


def wordpiece(context: int | None = 64) -> RefTokenizer:
    """Lower-casing WordPiece with a tiny vocabulary: lossy and full of [UNK]s."""
    vocab = {w: i for i, w in enumerate(["[UNK]", "[PAD]", "the", "cat", "dog", "sat", "on", "mat", ".", "a"])}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]")
    return RefTokenizer(hf, "tiny-wordpiece", context)


def byte_fallback_bpe() -> RefTokenizer:
    """A BPE that spells characters outside its vocabulary as <0xNN> byte tokens."""
    vocab = {"<unk>": 0, **{f"<0x{b:02X}>": 1 + b for b in range(256)}}
    for ch in "abcdefghijklmnopqrstuvwxyz .▁":
        vocab.setdefault(ch, len(vocab))
    tok = Tokenizer(models.BPE(vocab, [], unk_token="<unk>", byte_fallback=True))
    tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")
    return RefTokenizer(hf, "tiny-byte-fallback", 128)


def rejects_by_check(result) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in result.rejects:
        out.setdefault(r.check, []).append(r.detail)
    return out


def test_unknown_token_in_new_material_is_rejected():
    tk = wordpiece()
    res = Expander(tk).expand(markup_seed("s", "the cat sat on the {mat|sofa}."), parse_recipe(RECIPE))
    found = rejects_by_check(res)
    assert any("unknown token" in d for d in found["in_vocab"])
    assert all("sofa" not in v.text for v in res.kept)


def test_lossy_round_trip_is_rejected():
    tk = wordpiece()
    res = Expander(tk).expand(markup_seed("s", "the cat sat on the {mat|Mat}."), parse_recipe(RECIPE))
    assert any("differs at character" in d for d in rejects_by_check(res)["round_trip"])


def test_seed_that_does_not_round_trip_is_rejected_whole():
    res = Expander(wordpiece()).expand(Seed("s", "The cat sat.", None), parse_recipe(RECIPE))
    assert res.kept == [] and res.rejects[0].check == "round_trip" and "seed rejected" in res.rejects[0].detail


def test_byte_fallback_pieces_in_new_material_are_rejected():
    tk = byte_fallback_bpe()
    res = Expander(tk).expand(markup_seed("s", "a cat sat on a {mat|mät}."), parse_recipe(RECIPE))
    assert any("byte-fallback" in d for d in rejects_by_check(res)["in_vocab"])
    assert {v.text for v in res.kept} == {"a cat sat on a mat."} | {v.text for v in res.kept if "[" in v.text}


def test_special_token_spelled_in_text_is_rejected(tk):
    res = Expander(tk).expand(markup_seed("s", "Say {hello|<\\|im_start\\|>} now."), parse_recipe(RECIPE))
    assert any("special token" in d for d in rejects_by_check(res)["in_vocab"])


def test_context_check_rejects_long_seed():
    tk = wordpiece(context=5)
    res = Expander(tk).expand(Seed("s", "the cat sat on the mat.", None), parse_recipe(RECIPE))
    assert res.kept == [] and res.rejects[0].check == "context" and "> the model's context of 5" in res.rejects[0].detail


def test_step_budget_rejects_big_substitutions(tk):
    recipe = parse_recipe(RECIPE + "step tokens <= 2\njumps <= 0%\n")
    seed = markup_seed("s", "The cat {sat|rested quietly and peacefully for hours} on the mat.")
    res = Expander(tk).expand(seed, recipe)
    steps = rejects_by_check(res)["step"]
    assert steps and "> step budget 2" in steps[0]
    assert all(v.step_tokens <= 2 for v in res.kept)


def test_marker_counts_one_step_and_reports_its_cost(tk):
    res = Expander(tk).expand(markup_seed("s", "The [[cat]] sat."), parse_recipe(RECIPE))
    marked = [v for v in res.kept if v.edits == ["mark:[ANCHOR]@cat"]]
    assert len(marked) == 1
    cost = len(tk.encode([" [ANCHOR]"])[0])
    assert marked[0].marker_tokens == cost and cost > 2
    assert marked[0].step_tokens == 1 and marked[0].distance == cost


def test_marker_allowance_rejects_expensive_markers(tk):
    recipe = parse_recipe(RECIPE.replace('max 8 tokens', 'max 2 tokens'))
    res = Expander(tk).expand(markup_seed("s", "The [[cat]] sat."), recipe)
    assert any("allowance 2" in d for d in rejects_by_check(res)["marker_cost"])


def test_anchor_check_rejects_dropping_an_anchor(tk):
    recipe = parse_recipe("edit identity\nedit drop last_line\nallow truncate <= 50\n")
    res = Expander(tk).expand(markup_seed("s", "First line stays.\nThe [[anchor]] lives here."), recipe)
    assert any("anchor 'anchor'" in d for d in rejects_by_check(res)["anchors"])


def test_split_long_splits_plain_text_and_rejects_without_it(cli, write_seeds, tmp_path):
    sentence = "This sentence is one of many in a very long seed. "
    long_text = sentence * 1200  # about 13,000 tokens, past the 8,192 context
    seeds = write_seeds([{"id": "long", "text": long_text}, {"id": "short", "text": "Short and fine."}])
    out = tmp_path / "out"
    # expansion only: scoring two 7,000-token pieces costs minutes on CPU and is not the point here
    res = cli("expand", seeds, "-o", out, "--variants", "4", "--model", "none")
    assert res.exit_code == 0, res.stderr
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert any(r["seed_id"] == "long" and r["check"] == "context" for r in rejects)
    out2 = tmp_path / "out2"
    res = cli("expand", seeds, "-o", out2, "--variants", "4", "--split-long", "--model", "none")
    assert res.exit_code == 0, res.stderr
    from datasets import load_from_disk

    ids = set(load_from_disk(str(out2))["seed_id"])
    assert {"long#1", "long#2", "short"} <= ids
