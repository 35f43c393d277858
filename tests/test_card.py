"""The dataset card (README.md): front matter the Hub and `datasets` read back, and a body
with the curriculum, histograms, rejects and an in-order TRL snippet, for every format."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from datasets import Features, load_from_disk
from huggingface_hub import DatasetCard

from microvar.cli import main
from microvar.export.card import _cell, _fence, hub_license, size_category, write_card
from microvar.resources import read_text

SEEDS = [
    {"id": "ru", "text": "Мышление не равно генерации текста."},
    {"id": "ru-markup", "markup": "[[Мышление]] {не равно|не то же, что} генерации [[текста]]{?, и точка}."},
    {"id": "cjk", "text": "Токены 🙂 and tokens: 你好 means hello."},
    {"id": "en", "text": "Rhythm matters more than quantity.", "continuation": " Small steps, often."},
    "{not json",
]
RECIPE_NOTE = "# Рецепт для проверки карточки: 你好, мир"


pytestmark = pytest.mark.usefixtures("no_network")


def expand(tmp: Path, name: str, *args: str) -> Path:
    seeds = tmp / "seeds.jsonl"
    if not seeds.exists():
        seeds.write_text("\n".join(s if isinstance(s, str) else json.dumps(s, ensure_ascii=False) for s in SEEDS)
                         + "\n", encoding="utf-8")
        recipe = read_text("recipes", "default.recipe").replace("recipe default", "recipe ru-card", 1)
        (tmp / "ru.recipe").write_text(f"{RECIPE_NOTE}\n{recipe}license cc-by-4.0\n", encoding="utf-8")
    out = tmp / name
    res = CliRunner().invoke(main, ["expand", str(seeds), "-o", str(out), "--model", "none", "--variants", "8",
                                    "--recipe", str(tmp / "ru.recipe"), "--skip-invalid", "-q", *args],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.stderr
    return out


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("card")
    out = expand(tmp, "out", "--format", "prompt-completion")
    write_card(out)
    return tmp, out


def card_text(path: Path) -> str:
    return path.read_bytes().decode("utf-8")  # strict: the card is UTF-8


def test_front_matter_is_what_the_hub_and_datasets_read(made):
    _, out = made
    ds = load_from_disk(str(out))
    card = DatasetCard.load(out / "README.md")
    data = card.data.to_dict()
    assert data["license"] == "cc-by-4.0"  # the recipe's license line, through manifest.json
    assert data["task_categories"] == ["text-generation"]
    assert data["size_categories"] == [size_category(len(ds))]
    assert {"microvar", "curriculum", "synthetic"} <= set(data["tags"])
    assert data["configs"] == [{"config_name": "default", "data_files": [{"split": "train", "path": "data-*.arrow"}]}]
    info = data["dataset_info"]
    assert [f["name"] for f in info["features"]] == ds.column_names
    assert Features._from_yaml_list(info["features"]) == ds.features  # struct and list columns included
    assert info["splits"] == [{"name": "train", "num_bytes": info["dataset_size"], "num_examples": len(ds)}]
    # the dataset directory still loads as before
    assert load_from_disk(str(out)).to_list() == ds.to_list()


def test_body_histograms_rejects_and_in_order_snippet(made):
    _, out = made
    ds = load_from_disk(str(out))
    text = card_text(out / "README.md")
    body = DatasetCard.load(out / "README.md").text
    for stage, n in Counter(ds["stage"]).items():
        assert re.search(rf"^\| {re.escape(stage)} \| {n} \| [\d.]+% \| █*[▌▏]? \|$", body, re.MULTILINE), stage
    for phase, n in Counter(ds["phase"]).items():
        assert re.search(rf"^\| {phase} \| \w+ \| {n} \|$", body, re.MULTILINE)
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    checks = Counter(r["check"] for r in rejects)
    assert checks["input"] == 1  # the bad seed line
    for check, n in checks.items():
        assert f"| `{check}` | {n} |" in body
    assert f"Rejected in all: {len(rejects)} " in body
    # training in order: TRL with the sequential sampler, the right columns, microvar train
    assert 'train_sampling_strategy="sequential"' in body
    assert 'ds = ds.select_columns(["prompt", "completion"])' in body
    assert "SFTTrainer(" in body and "peft_config=LoraConfig(" in body and "SFTConfig(" in body
    assert 'load_from_disk("path/to/this/folder")' in body and "from datasets import load_from_disk" in body
    assert "microvar train path/to/this/folder --output adapter" in body
    assert "prompt-completion" in body and "followed by the separator" in body
    # curriculum, recipe text, volatility not scored
    assert "schedule: **blocked**" in body and "steps within the step budget:" in body
    assert "### `ru-card` (default)" in body and "recipe ru-card" in body
    assert "Not scored" in body
    # Russian, CJK and emoji come through as themselves
    assert "Мышление не равно генерации текста." in text and "你好" in text and "🙂" in text
    assert RECIPE_NOTE in text
    assert "\\u04" not in text  # not JSON-escaped
    assert "http" not in text  # no links, no images
    assert "![" not in text


def test_gaps_are_truncated_with_a_count(made):
    _, out = made
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    gaps = manifest["curriculum"]["gaps"]
    body = DatasetCard.load(out / "README.md").text
    shown = re.findall(r"^\| \S+ \| `[0-9a-f]{16}` \| `[0-9a-f]{16}` \| \d+ \| \d+ \|$", body, re.MULTILINE)
    assert len(shown) == min(len(gaps), 10)
    if len(gaps) > 10:
        assert f"… and {len(gaps) - 10} more in `manifest.json`" in body


@pytest.mark.parametrize("fmt,columns", [("text", ["text"]), ("messages", ["messages"])])
def test_other_formats(made, fmt, columns):
    tmp, _ = made
    extra = ["--chat-template", "chat_plain.jinja"] if fmt == "messages" else []
    out = expand(tmp, f"out-{fmt}", "--format", fmt, *extra)
    path = write_card(out, license="MIT")
    card = DatasetCard.load(path)
    ds = load_from_disk(str(out))
    assert card.data.license == "mit"
    assert [f["name"] for f in card.data.dataset_info["features"]] == ds.column_names
    assert f"ds = ds.select_columns({json.dumps(columns)})" in card.text
    assert 'train_sampling_strategy="sequential"' in card.text
    assert "Мышление" in card.text
    if fmt == "messages":
        assert "TRL's **conversational** format" in card.text
        assert 'chat_template_path="path/to/this/folder/chat_template.jinja"' in card.text
        assert "[user] " in card.text and "[assistant] " in card.text
    else:
        assert "TRL's **language modeling** format" in card.text and "chat_template" not in card.text


def with_volatility(src: Path, dst: Path) -> list[dict]:
    """A copy of a --model none dataset whose non-root rows carry made-up volatility (no model
    needed to test the histograms): each distinct variant gets its own values."""
    ds = load_from_disk(str(src))
    names = list(ds.features["volatility"])
    ids = sorted(set(ds["variant_id"]))

    def fill(row):
        if not row["parent_id"]:
            return {"volatility": None}
        k = ids.index(row["variant_id"])
        v = {n: None for n in names}
        v.update({n: float((k * 7 + j) % 11) / (3 if n == "top1" else 1) for j, n in enumerate(names)
                  if getattr(ds.features["volatility"][n], "dtype", None) == "float32"})
        v.update(new_tokens=1, aligned_tokens=3, drift=[])
        return {"volatility": v}

    ds.map(fill, features=ds.features).save_to_disk(str(dst))
    for name in ("manifest.json", "rejects.jsonl"):
        shutil.copyfile(src / name, dst / name)
    return load_from_disk(str(dst)).to_list()


def test_volatility_histograms(made):
    tmp, out = made
    rows = with_volatility(out, tmp / "scored")
    body = DatasetCard.load(write_card(tmp / "scored")).text
    distinct = {r["variant_id"]: r for r in rows if r["parent_id"]}
    assert f"Each metric over the {len(distinct)} distinct scored variants" in body
    for metric in ("surprisal", "ripple_kl", "delta_nll", "top1", "seed_ripple_kl", "nll"):
        section = body.split(f"#### `{metric}`\n", 1)[1].split("####", 1)[0]
        counts = [int(n) for n in re.findall(r"^\| [^|]+ \| (\d+) \| [\d.]+% \|", section, re.MULTILINE)]
        assert sum(counts) == len(distinct), metric
    assert "<details>" in body and "Not scored" not in body


def test_card_without_manifest_or_rejects(tmp_path):
    from datasets import Dataset

    Dataset.from_dict({"text": ["Ритм важнее объёма.", "你好"], "order": [0, 1]}).save_to_disk(str(tmp_path / "bare"))
    card = DatasetCard.load(write_card(tmp_path / "bare"))
    assert "license" not in card.data.to_dict()
    assert [f["name"] for f in card.data.dataset_info["features"]] == ["text", "order"]
    assert "No `rejects.jsonl` beside the data." in card.text and "Ритм важнее объёма." in card.text
    assert 'ds = ds.select_columns(["text"])' in card.text


def test_license_ids_and_size_buckets():
    assert hub_license(None) == {} and hub_license("  ") == {}
    assert hub_license("Apache-2.0") == {"license": "apache-2.0"}
    assert hub_license("CC-BY-SA-4.0") == {"license": "cc-by-sa-4.0"}
    assert hub_license("My Corp License v2") == {"license": "other", "license_name": "my-corp-license-v2"}
    assert [size_category(n) for n in (0, 999, 1000, 12_345, 2_000_000)] == [
        "n<1K", "n<1K", "1K<n<10K", "10K<n<100K", "1M<n<10M"]


def test_markdown_helpers():
    assert _fence("plain") == "```" and _fence("a ``` b ```` c") == "`````"
    assert _cell("a|b\nc <x>") == "a\\|b ⏎ c &lt;x&gt;"
