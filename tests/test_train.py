"""Training on exported datasets: TRL's SFTTrainer with a PEFT LoRA takes each export format
as it is saved and sees its rows in curriculum order; `microvar train` wraps that."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner
from conftest import DATA
from datasets import load_from_disk

from microvar.cli import main

pytest.importorskip("trl")
pytest.importorskip("peft")

FORMATS = ("prompt-completion", "text", "messages")
SEEDS = [{"id": "en", "markup": "Rhythm matters more than {quantity|volume}."},
         {"id": "code", "text": "def double(x):\n    return x * 2\n"},
         {"id": "ru", "markup": "[[Ритм]] важнее {объёма|количества}."}]
TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def run_cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model needs no second thread, and spinning OpenMP threads make every op many
    times slower when anything else runs on the CPU."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, tk):
    """A local model directory: the real tokenizer (with its chat template) and a tiny random Llama."""
    from transformers import LlamaConfig, LlamaForCausalLM

    d = tmp_path_factory.mktemp("model") / "tiny-llama"
    tk.hf.save_pretrained(str(d))
    config = LlamaConfig(vocab_size=tk.vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512)
    LlamaForCausalLM(config).save_pretrained(str(d))
    return d


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """`microvar expand --model none` output in each format, made once per module."""
    base = tmp_path_factory.mktemp("exported")
    seeds = base / "seeds.jsonl"
    seeds.write_text("".join(json.dumps(s, ensure_ascii=False) + "\n" for s in SEEDS), encoding="utf-8")
    (base / "chat.jinja").write_text(TEMPLATE, encoding="utf-8")
    made = {}
    for fmt in FORMATS + ("messages+template",):
        out = base / fmt
        extra = ["--chat-template", base / "chat.jinja"] if fmt.endswith("+template") else []
        res = run_cli("expand", seeds, "-o", out, "--model", "none", "--variants", "6",
                      "--format", fmt.split("+")[0], *extra, "-q")
        assert res.exit_code == 0, res.stderr
        made[fmt] = out
    return made


def files_of(path):
    return sorted((str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*"))


def variant_of(row: dict) -> str:
    if "completion" in row:
        return row["completion"]
    if "messages" in row:
        return row["messages"][-1]["content"]
    return row["text"]


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")  # PEFT 0.21 on transformers 5
@pytest.mark.parametrize("fmt", FORMATS)
def test_sft_trainer_takes_export_as_is_in_order(fmt, exported, tiny_model, tmp_path):
    """A plain load_from_disk, no conversion: SFTTrainer + LoRA trains a few steps on it, and
    the batches it trains on hold the rows in `order`, from 0, several rows per batch."""
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    out = tmp_path / "out"  # a copy: SFTTrainer's preprocessing writes cache-*.arrow files into a dataset
    shutil.copytree(exported[fmt], out)  # loaded plainly from disk (microvar train loads it keep_in_memory)
    ds = load_from_disk(str(out))
    assert ds["order"] == list(range(len(ds)))
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model))
    batch, steps = 3, 4
    args = SFTConfig(output_dir=str(tmp_path / "run"), per_device_train_batch_size=batch, max_steps=steps,
                     train_sampling_strategy="sequential", bf16=False, fp16=False, use_cpu=True,
                     activation_checkpointing=False, remove_unused_columns=False, dataloader_num_workers=0,
                     report_to="none", save_strategy="no", logging_steps=1, disable_tqdm=True, learning_rate=1e-2)
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tokenizer,
                         peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    assert len(trainer.train_dataset) == len(ds)
    seen: list[tuple[list[int], list[str]]] = []   # per batch built: orders, decoded training tokens
    inner = trainer.data_collator

    def collate(examples):
        seen.append(([e["order"] for e in examples],
                     [tokenizer.decode([t for t in e["labels"] if t != -100]) for e in examples]))
        return inner([{k: e[k] for k in ("input_ids", "labels")} for e in examples])

    trainer.data_collator = collate
    result = trainer.train()
    assert trainer.state.global_step == steps and math.isfinite(result.training_loss)
    trained = seen[:steps]  # the dataloader may build one batch ahead of the step that uses it
    orders = [o for b, _ in trained for o in b]
    assert all(len(b) == batch for b, _ in trained)
    assert orders == list(range(steps * batch))
    for b, texts in trained:  # each batch's tokens really are those rows' variants
        for o, text in zip(b, texts):
            assert variant_of(ds[o]) in text
    lora_b = [p for n, p in trainer.model.named_parameters() if "lora_B" in n]
    assert lora_b and any(torch.count_nonzero(p) for p in lora_b)  # B starts at zero: training moved it


def test_train_cli_writes_adapter_phases_ascending(exported, tiny_model, tmp_path):
    from peft import PeftConfig

    out, adapter = exported["prompt-completion"], tmp_path / "adapter"
    before = files_of(out)
    res = run_cli("train", out, "--model", tiny_model, "--output", adapter, "--steps", "2", "--batch-size", "2")
    assert res.exit_code == 0, res.stderr
    assert "phase 1" in res.stderr and f"wrote {adapter}" in res.stderr and res.stdout == ""
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    assert PeftConfig.from_pretrained(str(adapter)).r == 8
    manifest = json.loads((out / "manifest.json").read_text())
    assert json.loads((adapter / "manifest.json").read_text()) == manifest
    for name, r in manifest["recipes"].items():
        assert (adapter / "recipe" / f"{name}.recipe").read_text(encoding="utf-8") == r["text"]
    info = json.loads((adapter / "training.json").read_text())
    ds = load_from_disk(str(out))
    phases = sorted(set(ds["phase"]))
    assert [p["phase"] for p in info["phases"]] == phases and len(phases) > 1
    assert info["format"] == "prompt-completion" and info["model"] == str(tiny_model)
    for p in info["phases"]:
        rows = [r for r in ds.to_list() if r["phase"] == p["phase"]]
        assert p["steps"] == 2 and p["rows"] == len(rows) and p["in_order"]
        assert p["trained_rows"] == 2 * 2 and p["kept_rows"] == len(rows)   # 2 steps of 2 rows, not the phase
        assert p["first_order"] == rows[0]["order"] and p["loss"] is not None and math.isfinite(p["loss"])
        assert p["levels"] == sorted({r["lora_level"] for r in rows})
    assert info["seconds"] > 0 and info["steps_per_phase"] == 2
    assert files_of(out) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind
    again = run_cli("train", out, "--model", tiny_model, "--output", adapter, "--steps", "1")
    assert again.exit_code == 2 and "--overwrite" in again.stderr


def test_train_level_one_pass_by_default(exported, tiny_model, tmp_path):
    out, adapter = exported["text"], tmp_path / "adapter"
    ds = load_from_disk(str(out))
    level = "domain"
    rows = [r for r in ds.to_list() if r["lora_level"] == level]
    assert rows and len(rows) < len(ds)
    res = run_cli("train", out, "--model", tiny_model, "-o", adapter, "--level", level, "--batch-size", "4", "-q")
    assert res.exit_code == 0, res.stderr
    assert res.stderr == ""
    info = json.loads((adapter / "training.json").read_text())
    assert info["level"] == level and info["steps_per_phase"] is None
    assert sum(p["rows"] for p in info["phases"]) == len(rows)
    for p in info["phases"]:
        n = sum(r["phase"] == p["phase"] for r in rows)
        assert p["levels"] == [level] and p["steps"] == math.ceil(n / 4) and p["epochs"] == 1.0
        assert p["trained_rows"] == p["kept_rows"] == n   # one pass takes every row once
        assert p["in_order"] and p["last_order"] == max(r["order"] for r in rows if r["phase"] == p["phase"])


def test_train_messages_with_the_datasets_chat_template(exported, tiny_model, tmp_path):
    out, adapter = exported["messages+template"], tmp_path / "adapter"
    assert json.loads((out / "manifest.json").read_text())["export"]["chat_template"] == "chat_template.jinja"
    res = run_cli("train", out, "--model", tiny_model, "-o", adapter, "--steps", "1", "--level", "foundation")
    assert res.exit_code == 0, res.stderr
    assert (adapter / "chat_template.jinja").read_text(encoding="utf-8") == (out / "chat_template.jinja").read_text(
        encoding="utf-8")
    assert json.loads((adapter / "training.json").read_text())["format"] == "messages"


def test_train_messages_needs_a_chat_template(exported, tiny_model, tmp_path):
    bare = tmp_path / "bare-model"
    shutil.copytree(tiny_model, bare)
    (bare / "chat_template.jinja").unlink()
    cfg = json.loads((bare / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(cfg))
    res = run_cli("train", exported["messages"], "--model", bare, "-o", tmp_path / "adapter", "--steps", "1")
    assert res.exit_code == 2 and "no chat template" in res.stderr and not (tmp_path / "adapter").exists()


def test_train_errors_exit_2_and_write_nothing(exported, tiny_model, tmp_path, monkeypatch):
    out = exported["text"]
    adapter = tmp_path / "adapter"

    def refused(*args):
        res = run_cli("train", *args, "--model", tiny_model, "-o", adapter, "--steps", "1")
        assert res.exit_code == 2 and not adapter.exists()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
        return res.stderr

    err = refused(out, "--level", "nope")
    assert "--level nope" in err and ", ".join(sorted(set(load_from_disk(str(out))["lora_level"]))) in err
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("hello")
    assert "not a dataset written by microvar expand" in refused(junk)
    assert "no such dataset" in refused(tmp_path / "missing")
    plain = tmp_path / "plain"
    load_from_disk(str(out)).save_to_disk(str(plain))  # a dataset, but no manifest
    assert "not a dataset written by microvar expand" in refused(plain)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "text": ""}\n')
    empty = tmp_path / "empty"  # every seed rejected: a dataset of no rows
    assert run_cli("expand", bad, "-o", empty, "--model", "none", "--skip-invalid", "-q").exit_code == 0
    assert "nothing to train on" in refused(empty)
    assert "must not be the dataset directory" in run_cli("train", out, "--model", tiny_model, "-o", out / "a").stderr
    monkeypatch.setitem(sys.modules, "trl", None)  # as if TRL were not installed
    assert "pip install 'microvar[train]'" in refused(out)


@pytest.mark.slow
def test_train_real_default_model(cli, tmp_path):
    """The embedded SmolLM2 (no --model): two steps per phase on the shipped example seeds, in
    a fresh process like a user's (microvar train sets OMP_WAIT_POLICY before torch loads;
    here torch is long loaded, and spinning OpenMP threads on a busy CPU run many times slower)."""
    out, adapter = tmp_path / "out", tmp_path / "adapter"
    res = cli("expand", DATA / "seeds.jsonl", "-o", out, "--model", "none", "--variants", "8", "-q")
    assert res.exit_code == 0, res.stderr
    proc = subprocess.run([sys.executable, "-m", "microvar", "train", str(out), "-o", str(adapter), "--steps", "2",
                           "--device", "cpu"], capture_output=True, text=True, check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "phase 1" in proc.stderr and proc.stdout == ""
    info = json.loads((adapter / "training.json").read_text())
    assert info["model"].startswith("SmolLM2-135M") and info["device"] == "cpu"
    assert [p["phase"] for p in info["phases"]] == sorted(p["phase"] for p in info["phases"])
    # a pretrained model knows these texts far better than chance (ln 49152 = 10.8)
    assert all(p["steps"] == 2 and p["in_order"] and p["loss"] < 6 for p in info["phases"])
    assert (adapter / "adapter_model.safetensors").stat().st_size > 1_000_000
