"""`microvar split`: one dataset per LoRA level or phase, rows kept in curriculum order."""

from __future__ import annotations

from pathlib import Path

from ..errors import MicrovarError
from ..export.dataset import quiet_datasets, staging, write_json

def split_dataset(out: Path, by: str, target: Path | None = None, overwrite: bool = False) -> dict[str, int]:
    """One dataset per value of ``by`` (lora_level or phase) under TARGET/<value>, rows in
    their curriculum order; a split.json beside them says what was split and how many rows
    each part holds."""
    from datasets import load_from_disk

    if not (out / "dataset_info.json").is_file() and not (out / "state.json").is_file():
        raise MicrovarError(f"{out}: not a dataset written by microvar expand")
    quiet_datasets()
    ds = load_from_disk(str(out))
    if by not in ds.column_names:
        raise MicrovarError(f"{out} has no column {by!r}")
    target = target or out.parent / f"{out.name}-by-{by}"
    column = ds[by]
    rows_of: dict = {}
    for i, x in enumerate(column):
        rows_of.setdefault(x, []).append(i)
    counts: dict[str, int] = {}
    with staging(target, overwrite) as tmp:
        for value in sorted(rows_of, key=lambda x: (isinstance(x, str), x)):
            part = ds.select(rows_of[value])
            part.save_to_disk(str(tmp / str(value)))
            counts[str(value)] = len(part)
        write_json(tmp / "split.json", {"source": str(out), "by": by, "parts": counts})
    return counts
