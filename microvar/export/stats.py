"""Dataset statistics, computed in one place for the two pages that show them: the dataset
card (``card.py``, Markdown) and ``microvar report`` (``report.py``, HTML). Rows by stage and
by phase, rejects grouped by check and reason, the volatility metrics of the distinct scored
variants with their histograms, and how numbers are written. Each page renders them its own
way (Markdown bars, SVG), so both say the same about the same dataset.

The rows come as columns: anything with ``column_names`` and ``column(name)`` returning a
pyarrow array (a ``pyarrow.Table``, or the card's reader of parquet shards)."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_STAGES_LINE = re.compile(r"^\s*stages\s+(.+)$", re.MULTILINE)
_HEX_ID = re.compile(r"\b[0-9a-f]{16}\b")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"|«[^»]*»")
_NUMBER = re.compile(r"(?<![A-Za-z_])-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


# ---------------------------------------------------------------- rows by stage and phase


@dataclass
class StageCount:
    stage: str
    rows: int         # repeats and bridges included
    variants: int     # distinct variants


@dataclass
class PhaseCount:
    phase: int
    level: str | None
    rows: int


def chunks(table, name: str):
    """The column's chunks, one at a time: from ``table.chunks(name)`` where the table has it
    (the card's reader of mapped files: each chunk read in place, the pages handed back as it
    goes, no copy of the column), else ``table.column(name)``'s."""
    reader = getattr(table, "chunks", None)
    if callable(reader):
        return reader(name)
    col = table.column(name)
    return getattr(col, "chunks", [col])


def codes(table, name: str) -> tuple[list, np.ndarray]:
    """A column as (its distinct values in the order rows first show them, each row's index
    into them): counting over a million rows without a Python object per row, a chunk at a
    time."""
    import pyarrow.compute as pc

    if name not in table.column_names:
        return [], np.zeros(0, dtype=np.int32)
    index: dict = {}                            # value -> code, in the order rows first show them
    parts = [np.zeros(0, dtype=np.int32)]
    for c in chunks(table, name):
        d = pc.dictionary_encode(c, null_encoding="encode")
        local = np.asarray([index.setdefault(v, len(index)) for v in d.dictionary.to_pylist()], dtype=np.int32)
        parts.append(local[np.asarray(d.indices.to_numpy(zero_copy_only=False), dtype=np.int64)])
    return list(index), np.concatenate(parts)


def first_rows(table, name: str) -> np.ndarray:
    """The index of the first row of each distinct value of ``name``."""
    return np.unique(keys(table, name), return_index=True)[1]


def distinct(table, name: str) -> int:
    """How many distinct values ``name`` holds (0 without the column)."""
    if name not in table.column_names:
        return 0
    k = keys(table, name)
    k.sort()                                    # in place: np.unique would sort a copy
    return int(len(k) and 1 + np.count_nonzero(k[1:] != k[:-1]))


_HEX = np.full(256, 255, dtype=np.uint8)
_HEX[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10, dtype=np.uint8)
_HEX[np.frombuffer(b"abcdef", np.uint8)] = np.arange(10, 16, dtype=np.uint8)


def keys(table, name: str) -> np.ndarray:
    """Each row's value of ``name`` as an integer, equal where the values are equal. microvar's
    ids (16 hex digits) are read as the 64-bit numbers they spell: 8 bytes a row, however many
    distinct ids there are; any other column falls back to ``codes``."""
    import pyarrow as pa

    if name not in table.column_names:
        return np.zeros(0, dtype=np.uint64)
    parts = []
    for chunk in chunks(table, name):
        if not pa.types.is_string(chunk.type) or chunk.null_count:
            return codes(table, name)[1]
        offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int32)[chunk.offset:chunk.offset + len(chunk) + 1]
        if len(chunk) and not (np.all(np.diff(offsets) == 16)):
            return codes(table, name)[1]
        raw = np.frombuffer(chunk.buffers()[2], dtype=np.uint8)[offsets[0]:offsets[-1]] if len(chunk) else \
            np.zeros(0, dtype=np.uint8)
        digits = _HEX[raw].reshape(-1, 16)
        if (digits == 255).any():
            return codes(table, name)[1]
        value = np.zeros(len(digits), dtype=np.uint64)
        for k in range(16):
            value = (value << np.uint64(4)) | digits[:, k].astype(np.uint64)
        parts.append(value)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)


def stage_counts(table, manifest: dict) -> list[StageCount]:
    """Rows and distinct variants per stage, in the recipe's stage order."""
    names, stage = codes(table, "stage")
    rows = np.bincount(stage, minlength=len(names))
    variants = np.bincount(stage[first_rows(table, "variant_id")], minlength=len(names)) \
        if "variant_id" in table.column_names else rows
    at = {s: i for i, s in enumerate(names)}
    return [StageCount(s, int(rows[at[s]]), int(variants[at[s]])) for s in stage_order(names, manifest)]


def stage_order(found: list[str], manifest: dict) -> list[str]:
    """Stages in the order a recipe's ``stages`` line gives them, else as found."""
    for recipe in (manifest.get("recipes") or {}).values():
        m = _STAGES_LINE.search((recipe or {}).get("text") or "") if isinstance(recipe, dict) else None
        if m:
            order = [s.strip() for s in m.group(1).split("#")[0].split(">")]
            return [s for s in order if s in found] + [s for s in found if s not in order]
    return found


def phase_counts(table) -> list[PhaseCount]:
    """Rows per (phase, LoRA level), in the order the rows come (ascending phase)."""
    phases, phase = codes(table, "phase")
    levels, level = codes(table, "lora_level")
    if not levels:
        levels, level = [None], np.zeros_like(phase)
    key = phase * len(levels) + level
    found, first, n = np.unique(key, return_index=True, return_counts=True)
    return [PhaseCount(phases[k // len(levels)], levels[k % len(levels)], int(c))
            for k, c in sorted(zip(found.tolist(), n.tolist()), key=lambda kc: first[np.searchsorted(found, kc[0])])]


# ---------------------------------------------------------------- volatility


@dataclass
class Volatility:
    """The metrics of the distinct scored variants (the unchanged seeds, compared with
    themselves, left out)."""
    variants: int
    metrics: dict[str, np.ndarray]   # each float metric's finite values, by name
    drift_layers: Counter            # first drifting layer (None: never), over the variants with a curve


def volatility(table) -> Volatility | None:
    """``None`` when there is no volatility column or nothing in it was scored."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if "volatility" not in table.column_names:
        return None
    vol = table.column("volatility")
    if not pa.types.is_struct(vol.type) or vol.null_count == len(vol):
        return None
    keep = _scored_variants(table, vol)

    def field(name: str) -> np.ndarray:
        return np.asarray(pc.struct_field(vol, name).to_numpy(zero_copy_only=False), dtype=float)[keep]

    metrics = {}
    for f in vol.type:
        if pa.types.is_floating(f.type):
            x = field(f.name)
            metrics[f.name] = x[np.isfinite(x)]
    return Volatility(int(keep.sum()), metrics, _drift_layers(vol, keep))


def _scored_variants(table, vol) -> np.ndarray:
    """Which rows to measure: each variant's first row, not a seed's root, scored."""
    import pyarrow.compute as pc

    keep = np.zeros(len(vol), dtype=bool)
    if "variant_id" in table.column_names:
        keep[first_rows(table, "variant_id")] = True
    else:
        keep[:] = True
    if "parent_id" in table.column_names:
        has_parent = pc.fill_null(pc.greater(pc.utf8_length(table.column("parent_id")), 0), False)
        keep &= np.asarray(has_parent.to_numpy(zero_copy_only=False), dtype=bool)
    return keep & ~np.asarray(vol.is_null().to_numpy(zero_copy_only=False), dtype=bool)


def _drift_layers(vol, keep: np.ndarray) -> Counter:
    import pyarrow.compute as pc

    if "drift" not in {f.name for f in vol.type} or "drift_layer" not in {f.name for f in vol.type}:
        return Counter()
    curve = np.asarray(pc.struct_field(vol, "drift").is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    layers = pc.struct_field(vol, "drift_layer").to_pylist()
    return Counter(layer for layer, k in zip(layers, keep & curve) if k)


@dataclass
class Histogram:
    """Equal-width bins between ``floor`` and ``cap`` (percentiles, or the extremes), and how
    many values fall beyond them: volatility is heavy-tailed, and a few jumps would squeeze
    the rest into one bin. One bin, ``lo`` to ``hi``, when every value is the same."""
    n: int
    lo: float
    hi: float
    mean: float
    p10: float
    p50: float
    p90: float
    edges: list[float]
    counts: list[int]
    below: int = 0
    above: int = 0


def histogram(x: np.ndarray, bins: int, low: float = 0, high: float = 100) -> Histogram:
    """``x`` (finite, not empty) in ``bins`` bins between its ``low``-th and ``high``-th
    percentile; a percentile that does not fall strictly inside the range gives way to the
    extreme."""
    lo, hi = float(x.min()), float(x.max())
    p10, p50, p90 = (float(v) for v in np.percentile(x, [10, 50, 90]))
    summary = dict(n=len(x), lo=lo, hi=hi, mean=float(x.mean()), p10=p10, p50=p50, p90=p90)
    if lo == hi:
        return Histogram(**summary, edges=[lo, hi], counts=[len(x)])
    floor, cap = float(np.percentile(x, low)), float(np.percentile(x, high))
    if not lo < floor < cap:
        floor = lo
    if not floor < cap < hi:
        cap = hi
    edges = np.linspace(floor, cap, bins + 1)
    counts, _ = np.histogram(x[(x >= floor) & (x <= cap)], bins=edges)
    return Histogram(**summary, edges=[float(e) for e in edges], counts=[int(c) for c in counts],
                     below=int((x < floor).sum()), above=int((x > cap).sum()))


# ---------------------------------------------------------------- rejects


@dataclass
class ReasonCount:
    check: str
    reason: str
    count: int
    example: dict      # the first record with this reason


@dataclass
class CheckCount:
    check: str
    count: int
    example: dict      # the first record of this check
    reasons: list[ReasonCount]   # most common first


@dataclass
class Rejects:
    total: int
    checks: list[CheckCount]     # most rejected first
    reasons: list[ReasonCount]   # over all checks, most common first


def read_rejects(directory: Path) -> list[dict] | None:
    """The records of ``directory/rejects.jsonl`` (lines that are not JSON objects skipped);
    ``None`` when there is no such file."""
    records = iter_rejects(directory)
    return None if records is None else list(records)


def iter_rejects(directory: Path):
    """``read_rejects`` a line at a time (a large run has millions); ``None`` when there is
    no such file."""
    path = Path(directory) / "rejects.jsonl"
    if not path.is_file():
        return None

    def records():
        with path.open(encoding="utf-8") as f:   # not splitlines(): a text may hold U+2028
            for line in f:
                try:
                    record = json.loads(line) if line.strip() else None
                except ValueError:
                    continue
                if isinstance(record, dict):
                    yield record
    return records()


def check_of(record: dict) -> str:
    return str(record.get("check") or "?")


def reason(record: dict) -> str:
    """A reject's reason with its particulars (ids, quoted text, numbers, the input's
    FILE:LINE) folded, so that rejects for the same reason group together."""
    detail = str(record.get("detail") or "")
    if record.get("check") == "budget":
        if record.get("limit"):
            return f"over the budget {record['limit']}"
        if detail.startswith("its parent"):
            return "its parent was removed by the budget"
    if record.get("check") == "input":
        detail = detail.split(": ", 1)[-1]
    first = detail.splitlines()[0] if detail else ""
    return _NUMBER.sub("N", _QUOTED.sub("‘…’", _HEX_ID.sub("…", first)))


def rejects(records) -> Rejects:
    """The rejects grouped by check, and by reason within a check (one pass: ``records`` may
    be a stream)."""
    pairs: Counter = Counter()
    checks: Counter = Counter()
    example: dict[tuple[str, str], dict] = {}
    first: dict[str, dict] = {}
    for r in records:
        c = check_of(r)
        key = (c, reason(r))
        pairs[key] += 1
        checks[c] += 1
        example.setdefault(key, r)
        first.setdefault(c, r)
    reasons = [ReasonCount(c, why, n, example[(c, why)]) for (c, why), n in pairs.most_common()]
    return Rejects(sum(checks.values()), [CheckCount(c, n, first[c], [x for x in reasons if x.check == c])
                                          for c, n in checks.most_common()], reasons)


# ---------------------------------------------------------------- numbers


def number(x) -> str:
    """A number for a table cell: up to three decimals, three significant digits when very
    large or very small; empty for None."""
    if x is None:
        return ""
    x = float(x)
    if math.isnan(x):
        return "nan"
    if x == 0:
        return "0"
    if abs(x) >= 1000 or abs(x) < 0.001:
        return f"{x:.3g}"
    return f"{x:.3f}".rstrip("0").rstrip(".")


def short_number(x) -> str:
    """A number for a chart's axis or a bar's tooltip, where room is short: integers as
    they are, floats in two or three significant digits; a dash for None."""
    if x is None:
        return "–"
    if isinstance(x, int | np.integer):
        return str(int(x))
    x = float(x)
    if not math.isfinite(x):
        return str(x)
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    if abs(x) >= 0.01:
        return f"{x:.3f}"
    return f"{x:.1e}"
