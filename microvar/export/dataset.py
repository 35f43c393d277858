"""Rows -> an Arrow dataset directory with declared Features, plus rejects.jsonl and
manifest.json beside it. Everything is written into a temporary directory next to OUT and
renamed at the end, so OUT is either complete or absent."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import MicrovarError

FORMATS = ("prompt-completion", "text", "messages")
# the columns a trainer reads, in TRL's standard dataset formats (no conversion needed)
TRAINING_COLUMNS = {"prompt-completion": ("prompt", "completion"), "text": ("text",), "messages": ("messages",)}
META_COLUMNS = ("order", "repeat", "step", "seed_id", "variant_id", "parent_id", "edits", "stage", "depth",
                "n_tokens", "step_tokens", "marker_tokens", "recipe", "lora_level", "phase", "volatility")


def columns(fmt: str) -> tuple[str, ...]:
    return TRAINING_COLUMNS[fmt] + META_COLUMNS


def training_fields(fmt: str, row: dict, prompt_text: str, separator: str) -> dict:
    """The training columns of one row: the variant is the completion, the prompt is its
    parent (or its seed) followed by the separator."""
    if fmt == "prompt-completion":
        # a prompt that already ends with the separator keeps one: "\n\n" would be a single
        # token, and TRL needs the tokenized prompt to be a prefix of prompt + completion
        prompt = prompt_text if prompt_text.endswith(separator) else prompt_text + separator
        return {"prompt": prompt, "completion": row["text"]}
    if fmt == "text":
        return {"text": row["text"]}
    if fmt == "messages":
        return {"messages": [{"role": "user", "content": prompt_text},
                             {"role": "assistant", "content": row["text"]}]}
    raise ValueError(f"unknown format {fmt!r}")


def format_of(columns: list[str], manifest: dict | None = None) -> str | None:
    """The training format of a dataset: as its manifest says, else from its columns."""
    fmt = ((manifest or {}).get("export") or {}).get("format")
    if fmt in FORMATS:
        return fmt
    if "prompt" in columns and "completion" in columns:
        return "prompt-completion"
    if "messages" in columns:
        return "messages"
    if "text" in columns:
        return "text"
    return None


def variant_text(row: dict) -> str:
    """The variant's text from a row of any format."""
    if "text" in row:
        return row["text"]
    if "completion" in row:
        return row["completion"]
    return row["messages"][-1]["content"]


def features(fmt: str = "text"):
    from datasets import Features, List, Value

    training = {"prompt": Value("string"), "completion": Value("string"), "text": Value("string"),
                "messages": List({"role": Value("string"), "content": Value("string")})}
    return Features({c: training[c] for c in TRAINING_COLUMNS[fmt]} | {
        "order": Value("int64"),
        "repeat": Value("int32"),       # which presentation of its seed's path (0, 1, ...)
        "step": Value("int32"),         # position in its seed's path
        "seed_id": Value("string"),
        "variant_id": Value("string"),
        "parent_id": Value("string"),
        "edits": List(Value("string")),
        "stage": Value("string"),
        "depth": Value("int32"),
        "n_tokens": Value("int32"),
        "step_tokens": Value("int32"),
        "marker_tokens": Value("int32"),
        "recipe": Value("string"),
        "lora_level": Value("string"),   # from the recipe's route lines (default: by stage)
        "phase": Value("int32"),
        # null when the run did not score (--model none); fields in README "Volatility"
        "volatility": volatility_features(),
    })


def volatility_features() -> dict:
    from datasets import List, Value

    from ..dsl.recipe import METRICS
    from ..model.budget import INT_FIELDS

    fields = {k: Value("float32") for k in METRICS}
    fields.update({k: Value("int32") for k in INT_FIELDS})
    fields["drift"] = List(Value("float32"))
    return fields


def check_target(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise MicrovarError(f"{out} already exists; pass --overwrite to replace it")
    if not out.parent.exists():
        raise MicrovarError(f"{out.parent} does not exist")


@contextmanager
def staging(out: Path, overwrite: bool) -> Iterator[Path]:
    """A temporary directory beside OUT that becomes OUT only if the block succeeds."""
    check_target(out, overwrite)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; OUT should follow the umask
    try:
        yield tmp
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.rename(out, old)
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def quiet_datasets() -> None:
    """Turn off the datasets library's bars (one per shard saved or loaded): they say nothing
    the command's own progress and summary do not, and fill a log with carriage returns."""
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()


def write_dataset(directory: Path, rows: list[dict], fmt: str = "text") -> None:
    from datasets import Dataset

    quiet_datasets()
    data = {c: [r[c] for r in rows] for c in columns(fmt)}
    # one explicit shard when there are no rows: datasets writes no data file otherwise, and
    # cannot load the directory back (every seed rejected is a result, not an error)
    Dataset.from_dict(data, features=features(fmt)).save_to_disk(str(directory), num_shards=None if rows else 1)


def read_manifest(out: Path) -> dict:
    """OUT's manifest.json; MicrovarError when OUT is not what microvar expand writes."""
    path = Path(out) / "manifest.json"
    if not path.is_file():
        raise MicrovarError(f"{out}: not a dataset written by microvar expand (no manifest.json)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise MicrovarError(f"{path}: not valid JSON: {e}") from None


def write_jsonl(path: Path, records: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
