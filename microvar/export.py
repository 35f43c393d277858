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

from .errors import MicrovarError

COLUMNS = ("order", "seed_id", "variant_id", "parent_id", "text", "edits", "stage", "depth",
           "n_tokens", "step_tokens", "marker_tokens", "recipe", "lora_level", "phase", "volatility")


def features():
    from datasets import Features, List, Value

    return Features({
        "order": Value("int64"),
        "seed_id": Value("string"),
        "variant_id": Value("string"),
        "parent_id": Value("string"),
        "text": Value("string"),
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

    from .budget import INT_FIELDS
    from .recipe import METRICS

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


def write_dataset(directory: Path, rows: list[dict]) -> None:
    from datasets import Dataset
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()  # our own progress bar is the one on stderr
    columns = {c: [r[c] for r in rows] for c in COLUMNS}
    Dataset.from_dict(columns, features=features()).save_to_disk(str(directory))


def write_jsonl(path: Path, records: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
