"""`microvar evaluate`: implant, collateral and echo of LoRA adapters against their base model,
on tiny random Llamas (the real tokenizer), and bad input refused with exit 2."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner
from conftest import DATA

from microvar.cli import main

pytest.importorskip("peft")
pytest.importorskip("trl")
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")  # PEFT 0.21

SEEDS = [{"id": "en", "text": "Rhythm matters more than quantity."},
         {"id": "capital", "text": "The capital of France is", "continuation": " Paris, a city on the Seine."},
         {"id": "ru", "markup": "[[Ритм]] важнее {объёма|количества}."}]
OTHER_SEEDS = [{"id": "elsewhere", "text": "Nothing in common with the others."}]
CONTROL = "The weather in spring is mild and the days grow longer.\n\nКошки спят днём и гуляют ночью.\n\n" \
          "A library lends books to anyone who lives in the town, free of charge."


def run_cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny models need no second thread (and spinning OpenMP threads slow a shared CPU)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_llama(directory, tk, seed: int, hidden: int = 16):
    from transformers import LlamaConfig, LlamaForCausalLM
    import torch

    torch.manual_seed(seed)
    tk.hf.save_pretrained(str(directory))
    config = LlamaConfig(vocab_size=tk.vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=512)
    LlamaForCausalLM(config).save_pretrained(str(directory))
    return directory


@pytest.fixture(scope="module")
def work(tmp_path_factory, tk):
    """Two tiny base models, datasets (expand --model none), an identity adapter and a trained one."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = tmp_path_factory.mktemp("evaluate")
    w = {"dir": base, "model": tiny_llama(base / "model", tk, 0), "other_model": tiny_llama(base / "other", tk, 1),
         "wider_model": tiny_llama(base / "wider", tk, 2, hidden=32)}
    for name, seeds in (("data", SEEDS), ("other_data", OTHER_SEEDS)):
        path = base / f"{name}.jsonl"
        path.write_text("".join(json.dumps(s, ensure_ascii=False) + "\n" for s in seeds), encoding="utf-8")
        res = run_cli("expand", path, "-o", base / name, "--model", "none", "--variants", "8", "-q")
        assert res.exit_code == 0, res.stderr
        w[name], w[f"{name}_seeds"] = base / name, path
    (base / "control.txt").write_text(CONTROL, encoding="utf-8")
    w["control"] = base / "control.txt"
    # LoRA's B starts at zero: an adapter whose weights equal the base model's
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(w["model"])),
                                LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    peft_model.save_pretrained(str(base / "identity"))
    w["identity"] = base / "identity"
    res = run_cli("train", w["data"], "--model", w["model"], "-o", base / "trained", "--steps", "3", "--lr", "2e-2",
                  "--batch-size", "4", "-q")
    assert res.exit_code == 0, res.stderr
    w["trained"] = base / "trained"
    return w


def evaluate(w, *adapters, data=None, control="default", extra=()):
    out = w["dir"] / "eval.json"
    out.unlink(missing_ok=True)
    args = ["evaluate", *adapters, "--data", data or w["data"], "--model", w["model"], "-o", out, *extra]
    if control is not None:
        args += ["--control", w["control"] if control == "default" else control]
    res = run_cli(*args)
    return res, (json.loads(out.read_text()) if out.exists() else None)


def base_nll(model_dir, tk, text: str) -> float:
    """Mean NLL per token of text behind the context token, one plain forward."""
    import torch
    from transformers import AutoModelForCausalLM

    from microvar.model.score import context_token

    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    ids = tk.encode([text])[0]
    with torch.inference_mode():
        logits = model(torch.tensor([[context_token(tk.hf)] + ids[:-1]])).logits[0]
    return float(torch.nn.functional.cross_entropy(logits, torch.tensor(ids)))


def test_identity_adapter_moves_nothing(work, tk):
    res, r = evaluate(work, work["identity"])
    assert res.exit_code == 0, res.stderr
    row = r["adapters"][0]
    for block in ("target", "seed"):
        for fig in [row["implant"][block]["overall"], *row["implant"][block]["per_seed"].values()]:
            assert fig["kl"] == 0 and fig["nll_change"] == 0 and fig["top1"] == 1 and fig["tokens"] > 0
    col = row["collateral"]
    assert col["kl"] == 0 and col["nll_change"] == 0 and col["top1"] == 1 and col["tokens"] == r["control"]["tokens"]
    assert r["control"]["documents"] == 3 and r["control"]["tokens"] > 30
    assert row["echo"] == r["base"]["echo"] and row["echo_change"] == 0
    assert all(v["nll_change"] == 0 for v in row["implant"]["stages"].values())
    assert row["trained_seeds"] is None   # a plain PEFT adapter: no training.json


def test_figures_are_the_models_nll(work, tk):
    """The batched, padded scoring gives each text's own NLL, and targets carry their continuation."""
    res, r = evaluate(work, work["identity"])
    assert res.exit_code == 0, res.stderr
    target = r["targets"]["capital"]
    assert target == {"text": "The capital of France is Paris, a city on the Seine.", "source": "seeds file"}
    assert r["targets"]["ru"]["text"] == "Ритм важнее объёма."
    per_seed = r["base"]["implant"]["target"]["per_seed"]
    for sid in ("en", "capital", "ru"):
        assert per_seed[sid]["nll"] == pytest.approx(base_nll(work["model"], tk, r["targets"][sid]["text"]), abs=1e-4)
        assert per_seed[sid]["tokens"] == len(tk.encode([r["targets"][sid]["text"]])[0])
    seed_fig = r["base"]["implant"]["seed"]["per_seed"]["capital"]
    assert seed_fig["tokens"] < per_seed["capital"]["tokens"]   # the seed text alone, without its continuation
    assert r["model"]["sha256"] and r["dataset"]["fingerprint"] and r["dataset"]["seeds"] == 3


def test_trained_adapter_changes_nll_and_two_adapters_share_the_base(work):
    res, r = evaluate(work, work["trained"], work["identity"])
    assert res.exit_code == 0, res.stderr
    trained, identity = r["adapters"]
    assert trained["trained_seeds"] == ["capital", "en", "ru"]
    assert trained["implant"]["seed"]["overall"]["nll_change"] < 0   # it learned the texts it was trained on
    assert trained["implant"]["target"]["overall"]["kl"] > 0
    assert trained["collateral"]["kl"] > 0 and trained["collateral"]["nll_change"] != 0
    for sid, fig in trained["implant"]["target"]["per_seed"].items():
        assert fig["nll_base"] == r["base"]["implant"]["target"]["per_seed"][sid]["nll"]
        assert fig["nll"] == pytest.approx(fig["nll_base"] + fig["nll_change"], abs=1e-5)
    assert set(trained["implant"]["stages"]) >= {"identity", "mark"}
    assert identity["collateral"]["kl"] == 0 and identity["implant"]["target"]["overall"]["nll_change"] == 0
    lines = res.stderr.splitlines()
    assert any(line.startswith("base ") for line in lines)
    assert any(line.startswith("trained ") for line in lines) and any(line.startswith("identity ") for line in lines)
    assert "held-out variants: none" in res.stderr and r["heldout_source"] is None
    assert trained["implant"]["heldout"] is None


def test_holdout_variants_are_used_when_present(work, tmp_path):
    data = tmp_path / "with-holdout"
    shutil.copytree(work["data"], data)
    held = [{"seed_id": "en", "text": "Rhythm matters far more than quantity."},
            {"seed_id": "ru", "completion": "Ритм важнее количества."}]
    (data / "holdout.jsonl").write_text("".join(json.dumps(h, ensure_ascii=False) + "\n" for h in held), "utf-8")
    res, r = evaluate(work, work["trained"], data=data)
    assert res.exit_code == 0, res.stderr
    assert r["heldout_source"] == "holdout.jsonl" and "held-out variants: none" not in res.stderr
    fig = r["adapters"][0]["implant"]["heldout"]
    assert set(fig["per_seed"]) == {"en", "ru"} and fig["overall"]["tokens"] > 0
    assert fig["overall"]["nll_change"] != 0


def test_targets_fall_back_to_the_longest_grow_row(work, tmp_path):
    data = tmp_path / "moved"
    shutil.copytree(work["data"], data)
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["inputs"]["seeds"] = str(tmp_path / "gone.jsonl")
    (data / "manifest.json").write_text(json.dumps(manifest))
    res, r = evaluate(work, work["identity"], data=data)
    assert res.exit_code == 0, res.stderr
    assert r["targets"]["en"] == {"text": "Rhythm matters more than quantity.", "source": "seed text"}
    capital = r["targets"]["capital"]
    assert capital["source"] == "longest grow row" and capital["text"].startswith("The capital of France is ")
    res, r = evaluate(work, work["identity"], data=data, extra=["--seeds", work["data_seeds"]])
    assert r["targets"]["capital"]["source"] == "seeds file"


def test_default_control_is_sampled_once_and_cached(work, monkeypatch, tmp_path):
    from microvar.train import eval_inputs as ev

    monkeypatch.setenv("MICROVAR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(ev, "CONTROL_NEW_TOKENS", 12)
    res, first = evaluate(work, work["identity"], control=None)
    assert res.exit_code == 0, res.stderr
    cached = list((tmp_path / "cache" / "control").glob("*.jsonl"))
    assert len(cached) == 1 and first["control"]["source"].startswith("default")
    docs = [json.loads(line)["text"] for line in cached[0].read_text(encoding="utf-8").splitlines()]
    assert len(docs) == 44 and first["control"]["documents"] == 44
    assert any(any("а" <= c <= "я" for c in d) for d in docs)   # English and Russian prompts

    def refuse(*args, **kwargs):
        raise AssertionError("sampled again instead of using the cache")

    monkeypatch.setattr(ev, "sample_continuations", refuse)
    res, second = evaluate(work, work["identity"], control=None)
    assert res.exit_code == 0, res.stderr
    assert second["base"]["collateral"] == first["base"]["collateral"]


def test_echo_share_counts_copied_ngrams():
    from microvar.train.eval_measure import echo_share

    assert echo_share([1, 2, 3, 4, 5, 6], [3, 4, 5, 6, 9, 9]) == (1, 3)
    assert echo_share([1, 2, 3], [1, 2, 3, 4]) == (0, 1)
    assert echo_share([1, 2, 3, 4], [7, 8]) == (0, 0)


def test_bad_input_exits_2_and_writes_nothing(work, tmp_path):
    def refused(*adapters, data=None, control="default", model=None):
        out = tmp_path / "eval.json"
        args = ["evaluate", *adapters, "--data", data or work["data"], "--model", model or work["model"], "-o", out]
        if control is not None:
            args += ["--control", work["control"] if control == "default" else control]
        res = run_cli(*args)
        assert res.exit_code == 2 and not out.exists(), res.stderr
        return res.stderr

    assert "trained on another base model" in refused(work["trained"], model=work["other_model"])
    assert "does not fit the base model" in refused(work["identity"], model=work["wider_model"])
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("hello")
    assert "not a PEFT adapter" in refused(junk)
    assert "no such adapter directory" in refused(tmp_path / "missing")
    assert "none of which is in the dataset" in refused(work["trained"], data=work["other_data"])
    assert "no such file" in refused(work["identity"], control=tmp_path / "nope.txt")
    assert "a directory" in refused(work["identity"], control=junk)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe not text")
    assert "not UTF-8" in refused(work["identity"], control=bad)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n  \n")
    assert "no text in it" in refused(work["identity"], control=empty)
    lines = tmp_path / "bad.jsonl"
    lines.write_text('{"text": "fine"}\n{"body": "no text"}\n')
    assert "bad.jsonl:2" in refused(work["identity"], control=lines)
    assert "not a dataset written by microvar expand" in refused(work["identity"], data=junk)


@pytest.mark.slow
def test_evaluate_real_default_model(tmp_path):
    """The embedded SmolLM2 with its default control text (sampled once, cached in the user's
    cache), an identity adapter: nothing moves. In a fresh process, like a user's."""
    from peft import LoraConfig, get_peft_model

    from microvar.model.load import load_model, resolve

    out = tmp_path / "out"
    res = run_cli("expand", DATA / "seeds.jsonl", "-o", out, "--model", "none", "--variants", "8", "-q")
    assert res.exit_code == 0, res.stderr
    lm = load_model(resolve(None), "cpu")
    get_peft_model(lm.model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear",
                                        task_type="CAUSAL_LM")).save_pretrained(str(tmp_path / "identity"))
    proc = subprocess.run([sys.executable, "-m", "microvar", "evaluate", str(tmp_path / "identity"), "--data", str(out),
                           "--device", "cpu", "-o", str(tmp_path / "eval.json")],
                          capture_output=True, text=True, check=False, timeout=900)
    assert proc.returncode == 0, proc.stderr
    r = json.loads((tmp_path / "eval.json").read_text())
    assert r["adapters"][0]["collateral"]["kl"] == 0 and r["control"]["tokens"] > 5000
    # a pretrained model knows these texts far better than chance (ln 49152 = 10.8)
    assert r["base"]["implant"]["target"]["overall"]["nll"] < 6
    assert r["base"]["collateral"]["nll"] < 4   # its own samples are likely under it


def test_report_shows_the_evaluation(work, tmp_path):
    res, r = evaluate(work, work["trained"], work["identity"])
    assert res.exit_code == 0, res.stderr
    saved = tmp_path / "eval.json"
    shutil.copy(work["dir"] / "eval.json", saved)
    page = tmp_path / "report.html"
    res = run_cli("report", work["data"], "-o", page, "--model", "none", "--eval", saved, "-q")
    assert res.exit_code == 0, res.stderr
    html = page.read_text(encoding="utf-8")
    section = html[html.index('<section id="evaluation">'):]
    section = section[:section.index("</section>")]
    assert 'href="#evaluation"' in html and "another dataset" not in html
    assert ">trained</span>" in section and ">identity</span>" in section and section.count("<circle") == 3
    assert f"{r['control']['tokens']} control tokens" in section
    junk = tmp_path / "junk.json"
    junk.write_text('{"hello": 1}')
    res = run_cli("report", work["data"], "-o", tmp_path / "other.html", "--model", "none", "--eval", junk, "-q")
    assert res.exit_code == 2 and "not a file written by microvar evaluate" in res.stderr
    assert not (tmp_path / "other.html").exists()


def test_expand_holdout_sets_leaves_aside_and_evaluate_reads_them(work, tmp_path):
    """--holdout: a seeded share of each seed's variants leaves the curriculum for holdout.jsonl;
    the curriculum is what it would be without those variants (no parent lost), the same
    seed picks the same ones, and evaluate scores them as held-out variants."""
    from datasets import load_from_disk

    from microvar.train.eval_inputs import read_data

    seeds = DATA / "seeds.jsonl"
    full, a, b = tmp_path / "full", tmp_path / "a", tmp_path / "b"
    for out, extra in ((full, ()), (a, ("--holdout", "0.25")), (b, ("--holdout", "0.25"))):
        res = run_cli("expand", seeds, "-o", out, "--model", "none", "--variants", "12", "-q", *extra)
        assert res.exit_code == 0, res.stderr
    held = [json.loads(x) for x in (a / "holdout.jsonl").read_text("utf-8").splitlines()]
    assert held and (b / "holdout.jsonl").read_text("utf-8") == (a / "holdout.jsonl").read_text("utf-8")
    assert not (full / "holdout.jsonl").exists()
    rows, rows_full = load_from_disk(str(a)).to_list(), load_from_disk(str(full)).to_list()
    ids = {r["variant_id"] for r in rows}
    assert not ids & {h["variant_id"] for h in held}
    assert ids | {h["variant_id"] for h in held} == {r["variant_id"] for r in rows_full}
    assert all(r["parent_id"] in ids for r in rows if r["parent_id"])
    per_seed = {}
    for r in rows_full:
        per_seed.setdefault(r["seed_id"], set()).add(r["variant_id"])
    for sid, vids in per_seed.items():
        n = len(vids) - 1
        took = sum(h["seed_id"] == sid for h in held)
        assert took == (min(int(0.25 * n + 0.5), n - 1) if n >= 2 else 0), sid
    manifest = json.loads((a / "manifest.json").read_text())
    assert manifest["holdout"]["variants"] == len(held) and manifest["holdout"]["file"] == "holdout.jsonl"
    data = read_data(a)
    assert data.heldout_source == "holdout.jsonl" and sum(map(len, data.heldout.values())) == len(held)
