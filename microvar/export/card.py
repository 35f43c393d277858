"""The dataset card: README.md beside the data, which the Hugging Face Hub shows as the
dataset's page. Its YAML front matter is what the Hub reads (license, tags, task, size,
``configs`` naming the data files, ``dataset_info`` with the features exactly as ``datasets``
writes them); its body, rendered from ``templates/card.md.j2``, says what the curriculum is,
how it was made (recipes, reference model, budgets), what it holds (stage, phase and
volatility histograms, rejects, columns) and how to train on it without shuffling it.

``write_card`` reads everything from the folder it writes into: a ``save_to_disk`` directory
(``microvar expand``'s OUT) or a folder of parquet shards (``microvar push``), with
``manifest.json`` and ``rejects.jsonl`` beside the data; a missing manifest or rejects file
only leaves their sections out.

Over 400 lines: the card's front matter and body sections, one small function each over one
``_Data``; the statistics themselves come from ``stats.py``, shared with the report."""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import MicrovarError
from .dataset import format_of
from .mapped import MappedArrow
from .stats import codes, distinct, histogram, iter_rejects, number, phase_counts, rejects, stage_counts, volatility

ARROW_FILES = [{"split": "train", "path": "data-*.arrow"}]            # a save_to_disk directory
PARQUET_FILES = [{"split": "train", "path": "data/train-*.parquet"}]  # the folder push uploads
TAGS = ["microvar", "curriculum", "synthetic", "microvariants", "lora"]
MAIN_METRICS = ("surprisal", "surprisal_max", "ripple_kl", "ripple_kl_max", "delta_nll", "top1")
SHOW_GAPS = 10
SHOW_SEEDS = 20
SHOW_REASONS = 12
HIST_BINS = 8
BAR = 30

# https://huggingface.co/docs/hub/repositories-licenses: ids the Hub accepts in `license`;
# anything else becomes `license: other` with `license_name`.
HUB_LICENSES = frozenset((
    "apache-2.0", "mit", "openrail", "bigscience-openrail-m", "creativeml-openrail-m", "bigscience-bloom-rail-1.0",
    "bigcode-openrail-m", "afl-3.0", "artistic-2.0", "bsl-1.0", "bsd", "bsd-2-clause", "bsd-3-clause",
    "bsd-3-clause-clear", "c-uda", "cc", "cc0-1.0", "cc-by-2.0", "cc-by-2.5", "cc-by-3.0", "cc-by-4.0",
    "cc-by-sa-3.0", "cc-by-sa-4.0", "cc-by-nc-2.0", "cc-by-nc-3.0", "cc-by-nc-4.0", "cc-by-nd-4.0",
    "cc-by-nc-nd-3.0", "cc-by-nc-nd-4.0", "cc-by-nc-sa-2.0", "cc-by-nc-sa-3.0", "cc-by-nc-sa-4.0",
    "cdla-sharing-1.0", "cdla-permissive-1.0", "cdla-permissive-2.0", "wtfpl", "ecl-2.0", "epl-1.0", "epl-2.0",
    "etalab-2.0", "eupl-1.1", "eupl-1.2", "agpl-3.0", "gfdl", "gpl", "gpl-2.0", "gpl-3.0", "lgpl", "lgpl-2.1",
    "lgpl-3.0", "isc", "h-research", "intel-research", "lppl-1.3c", "ms-pl", "apple-ascl", "apple-amlr", "mpl-2.0",
    "odc-by", "odbl", "openrail++", "osl-3.0", "postgresql", "ofl-1.1", "ncsa", "unlicense", "zlib", "pddl",
    "lgpl-lr", "deepfloyd-if-license", "llama2", "llama3", "llama3.1", "llama3.2", "llama3.3", "llama4", "gemma",
    "unknown", "other",
))

COLUMN_NOTES = {
    "prompt": "the variant's parent (or its seed), then the separator",
    "completion": "the variant: what the model learns to write",
    "text": "the variant",
    "messages": "a user turn (the parent or the seed) and an assistant turn (the variant)",
    "order": "position in the curriculum, 0..n-1: train in this order",
    "repeat": "which presentation of its seed's path (0, 1, ...)",
    "step": "position in its seed's drift path",
    "seed_id": "the seed the variant comes from",
    "variant_id": "stable id: first 16 hex digits of SHA-1(seed_id, text)",
    "parent_id": "the variant it was made from (empty for the unchanged seed)",
    "edits": "the edits from the seed, readable (`swap:a→b`, `mark:[ANCHOR]@word`, ...)",
    "stage": "the latest stage among its edits",
    "depth": "number of edits",
    "n_tokens": "tokens with the reference tokenizer",
    "step_tokens": "token edit distance to the parent (a marker counts as one)",
    "marker_tokens": "token cost of the markers this step inserted",
    "recipe": "the recipe that made it",
    "lora_level": "the LoRA level its stage routes to",
    "phase": "the training phase of that level (rows are in ascending phase order)",
    "volatility": "how much the variant disturbs the reference model, against its parent and its seed "
                  "(null when not scored)",
}


def write_card(directory: Path, data_files: list[dict] | None = None, license: str | None = None,
               repo_id: str | None = None) -> Path:
    """Write ``directory/README.md`` from the dataset, manifest.json and rejects.jsonl in
    ``directory``. ``data_files`` are the ``configs`` entries (``[{"split", "path"}]``, paths
    relative to the folder) and say where the rows are: default, the arrow files of a
    ``save_to_disk`` directory, else the parquet shards under ``data/``. ``license`` (an id)
    wins over the one in the manifest; ``repo_id`` goes into the loading snippet."""
    directory = Path(directory)
    card = build_card(directory, data_files, license, repo_id)
    path = directory / "README.md"
    card.save(path)
    return path


def build_card(directory: Path, data_files: list[dict] | None = None, license: str | None = None,
               repo_id: str | None = None):
    """The card as a ``huggingface_hub.DatasetCard`` (not written)."""
    import jinja2
    from huggingface_hub import DatasetCard

    from ..resources import data_dir

    data = _Data.open(Path(directory), data_files)
    manifest = _read_manifest(data.directory)
    license_id = license or (manifest.get("export") or {}).get("license")
    card_data = _card_data(data, manifest, license_id)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(data_dir("templates"))), undefined=jinja2.ChainableUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, autoescape=False)
    template = env.get_template("card.md.j2")
    text = template.render(card_data=card_data.to_yaml(), **_context(data, manifest, license_id, repo_id))
    return DatasetCard(text)


# ---------------------------------------------------------------------------- front matter

def hub_license(license_id: str | None) -> dict:
    """``license`` (and ``license_name`` for one the Hub does not list) for the front matter;
    nothing when no license was given (the Hub accepts a card without one)."""
    if not license_id or not license_id.strip():
        return {}
    lid = license_id.strip().lower()
    if lid in HUB_LICENSES:
        return {"license": lid}
    name = re.sub(r"[^a-z0-9.+-]+", "-", lid).strip("-") or "custom"
    return {"license": "other", "license_name": name}


def size_category(n: int) -> str:
    """The Hub's size bucket for ``n`` rows."""
    if n < 1000:
        return "n<1K"
    bounds = ["1K", "10K", "100K", "1M", "10M", "100M", "1B", "10B", "100B", "1T"]
    for lo, hi in itertools.pairwise(bounds):
        if n < _count(hi):
            return f"{lo}<n<{hi}"
    return "n>1T"


def _count(s: str) -> int:
    return int(s[:-1]) * {"K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}[s[-1]]


def _card_data(data: _Data, manifest: dict, license_id: str | None):
    from datasets.info import DatasetInfo, DatasetInfosDict
    from datasets.splits import SplitDict, SplitInfo
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCardData

    card_data = DatasetCardData(
        **hub_license(license_id),
        pretty_name=_title(manifest, data),
        tags=list(TAGS),
        task_categories=["text-generation"],
        size_categories=[size_category(data.num_rows)],
    )
    splits = SplitDict()
    splits.add(SplitInfo(name="train", num_bytes=data.num_bytes, num_examples=data.num_rows))
    info = DatasetInfo(features=data.features, splits=splits, download_size=data.download_size,
                       dataset_size=data.num_bytes)
    # the two calls datasets' push_to_hub makes, so the YAML is the one the Hub expects
    DatasetInfosDict({"default": info}).to_dataset_card_data(card_data)
    MetadataConfigs({"default": {"data_files": data.data_files}}).to_dataset_card_data(card_data)
    return card_data


def _title(manifest: dict, data: _Data) -> str:
    seeds = (manifest.get("counts") or {}).get("seeds")
    seeds = seeds if seeds is not None else data.distinct("seed_id")
    if not seeds:
        return f"microvar curriculum: {data.num_rows} rows"
    return f"microvar curriculum: {seeds} seeds, {data.num_rows} rows"


# ---------------------------------------------------------------------------- the data

@dataclass
class _Data:
    """The rows a card describes, read column by column (memory-mapped or from parquet)."""
    directory: Path
    data_files: list[dict]
    features: object
    num_rows: int
    num_bytes: int
    download_size: int
    _read: object = None                    # name -> pyarrow ChunkedArray (parquet: read once, kept)
    _mapped: MappedArrow | None = None      # a save_to_disk directory's files, read in place each time
    _columns: dict = field(default_factory=dict)

    @classmethod
    def open(cls, directory: Path, data_files: list[dict] | None) -> _Data:
        if not directory.is_dir():
            raise MicrovarError(f"{directory} is not a directory")
        if (directory / "state.json").is_file() and (data_files is None or data_files == ARROW_FILES):
            return cls._from_disk(directory)
        if data_files is None:
            data_files = PARQUET_FILES
        files = sorted({f for entry in data_files for pattern in _patterns(entry)
                        for f in directory.glob(pattern) if f.is_file()})
        if not files:
            raise MicrovarError(f"{directory}: no dataset here (no state.json of save_to_disk, no files matching "
                                f"{', '.join(p for e in data_files for p in _patterns(e))})")
        if any(f.suffix != ".parquet" for f in files):
            raise MicrovarError(f"{directory}: the card reads parquet files or a save_to_disk directory, not "
                                f"{next(f.name for f in files if f.suffix != '.parquet')}")
        return cls._from_parquet(directory, data_files, files)

    @classmethod
    def _from_disk(cls, directory: Path) -> _Data:
        """A ``save_to_disk`` directory, read in place: its features from dataset_info.json, its
        files from state.json (what ``load_from_disk`` reads, without the pages it touches)."""
        from datasets import Features

        try:
            state = json.loads((directory / "state.json").read_text(encoding="utf-8"))
            info = json.loads((directory / "dataset_info.json").read_text(encoding="utf-8"))
            features = Features.from_dict(info["features"])
            files = [directory / f["filename"] for f in state.get("_data_files") or []]
            rows = MappedArrow(files, features.arrow_schema)
        except (FileNotFoundError, ValueError, KeyError, TypeError, OSError) as e:
            raise MicrovarError(f"{directory}: cannot read the dataset: {e}") from None
        return cls(directory, ARROW_FILES, features, len(rows), rows.nbytes(), rows.file_bytes(), _mapped=rows)

    @classmethod
    def _from_parquet(cls, directory: Path, data_files: list[dict], files: list[Path]) -> _Data:
        import pyarrow as pa
        import pyarrow.parquet as pq
        from datasets import Features

        metas = [pq.ParquetFile(f).metadata for f in files]
        features = Features.from_arrow_schema(pq.read_schema(files[0]))
        num_bytes = sum(m.row_group(i).total_byte_size for m in metas for i in range(m.num_row_groups))

        def read(name):
            return pa.chunked_array([c for f in files for c in pq.read_table(f, columns=[name]).column(0).chunks],
                                    type=features.arrow_schema.field(name).type)

        return cls(directory, data_files, features, sum(m.num_rows for m in metas), num_bytes,
                   sum(f.stat().st_size for f in files), read)

    @property
    def column_names(self) -> list[str]:
        return list(self.features)

    def column(self, name: str):
        if self._mapped is not None:    # copied out each time with its pages handed back: nothing kept
            return self._mapped.column(name)
        if name not in self._columns:
            self._columns[name] = self._read(name)
        return self._columns[name]

    def chunks(self, name: str):
        """The column a chunk at a time (``stats.chunks``): in place from mapped files."""
        return self._mapped.chunks(name) if self._mapped is not None else self.column(name).chunks

    def distinct(self, name: str) -> int:
        return distinct(self, name)

    def take(self, name: str, rows: list[int]) -> list:
        """The values of ``name`` at these rows (a few: the whole column is not read)."""
        import pyarrow as pa

        if self._mapped is not None:
            return self._mapped.values(name, rows)
        return self.column(name).take(pa.array(rows, type=pa.int64())).to_pylist()

    def head(self, n: int) -> list[dict]:
        first = list(range(min(n, self.num_rows)))
        cols = {c: self.take(c, first) for c in self.column_names}
        return [{c: cols[c][i] for c in cols} for i in range(min(n, self.num_rows))]


def load_saved(directory: Path):
    """The ``Dataset`` a ``save_to_disk`` directory holds, also when it has no rows (then
    ``datasets`` writes no arrow file and cannot load it back: rebuilt empty from its features)."""
    from datasets import Dataset, Features, load_from_disk

    directory = Path(directory)
    try:
        state = json.loads((directory / "state.json").read_text(encoding="utf-8"))
        if not state.get("_data_files"):
            info = json.loads((directory / "dataset_info.json").read_text(encoding="utf-8"))
            features = Features.from_dict(info["features"])
            return Dataset.from_dict({k: [] for k in features}, features=features)
        ds = load_from_disk(str(directory))
    except (FileNotFoundError, ValueError, KeyError, TypeError, OSError) as e:
        raise MicrovarError(f"{directory}: cannot read the dataset: {e}") from None
    if not hasattr(ds, "features"):
        raise MicrovarError(f"{directory} holds a DatasetDict; microvar writes a single Dataset")
    return ds


def _patterns(entry: dict | str) -> list[str]:
    if isinstance(entry, str):
        return [entry]
    path = entry["path"]
    return [path] if isinstance(path, str) else list(path)


def _read_manifest(directory: Path) -> dict:
    path = directory / "manifest.json"
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise MicrovarError(f"{path}: not valid JSON: {e}") from None
    return manifest if isinstance(manifest, dict) else {}


# ---------------------------------------------------------------------------- the body

def _context(data: _Data, manifest: dict, license_id: str | None, repo_id: str | None) -> dict:
    export = manifest.get("export") or {}
    names = data.column_names
    fmt = export.get("format") or format_of(names)
    training = {"prompt-completion": ["prompt", "completion"], "text": ["text"],
                "messages": ["messages"]}.get(fmt) or [c for c in ("prompt", "completion", "text", "messages")
                                                        if c in names]
    training = [c for c in training if c in names]
    counts = manifest.get("counts") or {}
    model = manifest.get("model") or {}
    lic = hub_license(license_id)
    chat_template = export.get("chat_template")
    if chat_template and not (data.directory / chat_template).is_file():
        chat_template = None
    return {
        "title": _title(manifest, data),
        "rows": data.num_rows,
        "seeds": counts.get("seeds", data.distinct("seed_id")),
        "seeds_rejected": counts.get("seeds_rejected"),
        "variants": data.distinct("variant_id"),
        "made": counts.get("variants_made"),
        "format": fmt,
        "training_columns": training,
        "prompt_from": export.get("prompt"),
        "separator": json.dumps(export["separator"], ensure_ascii=False) if export.get("separator") is not None
        else None,
        "chat_template": chat_template,
        "license": license_id.strip() if license_id and license_id.strip() else None,
        "license_other": lic.get("license") == "other",
        "load": _load_snippet(data, repo_id),
        "hub": data.data_files != ARROW_FILES,
        "repo_id": repo_id,
        "inputs": manifest.get("inputs") or {},
        "versions": manifest.get("versions") or {},
        "random_seed": manifest.get("seed"),
        "recipes": _recipes(manifest),
        "default_recipe": manifest.get("default_recipe"),
        "tokenizer": manifest.get("tokenizer") or {},
        "model": model,
        "budgets": _budgets(model, counts),
        "counts": counts,
        "step_share": _share(counts.get("steps_within_budget"), counts.get("steps")),
        "curriculum": _curriculum(manifest.get("curriculum")),
        "stages": _hist_rows([(s.stage, s.rows) for s in stage_counts(data, manifest)]),
        "phases": phase_counts(data),
        "per_seed": _per_seed(data),
        "seed_rows": _seed_rows(data, fmt),
        "volatility": _volatility(data, model),
        "has_volatility": "volatility" in data.features,
        "has_manifest": bool(manifest),
        "rejects": _rejects(iter_rejects(data.directory)),
        "columns": [{"name": c, "type": _type_name(data.features[c]), "note": COLUMN_NOTES.get(c, "")}
                    for c in names],
        "examples": _examples(data, training),
        "fence": _fence,
        "cell": _cell,
        "num": number,
    }


def _load_snippet(data: _Data, repo_id: str | None) -> list[str]:
    if data.data_files == ARROW_FILES:
        return ['ds = load_from_disk("path/to/this/folder")  # the folder microvar expand wrote']
    where = repo_id or "user/this-dataset"
    return [f'ds = load_dataset("{where}", split="train")',
            '# or a local copy: load_dataset("path/to/this/folder", split="train")']


def _share(part, whole) -> str | None:
    if part is None or not whole:
        return None
    return f"{100 * part / whole:.1f}%"


def _recipes(manifest: dict) -> list[dict]:
    out = []
    for name, r in (manifest.get("recipes") or {}).items():
        if not isinstance(r, dict):
            continue
        out.append({"name": name, "source": r.get("source"), "sha256": r.get("sha256"),
                    "text": (r.get("text") or "").rstrip("\n"),
                    "default": name == manifest.get("default_recipe")})
    return out


def _budgets(model: dict, counts: dict) -> dict:
    budgets = {k: list(v) for k, v in (model.get("budgets") or {}).items()}
    return {"per_recipe": budgets, "any": any(budgets.values()), "overrides": model.get("budget_overrides") or [],
            "removed": counts.get("budget_removed") or {},
            "removed_with_parent": counts.get("budget_removed_with_parent") or 0}


def _curriculum(cur) -> dict | None:
    if not isinstance(cur, dict) or not cur:
        return None
    gaps = cur.get("gaps") or []
    share = cur.get("within_step_share")
    return {"schedule": cur.get("schedule"), "presentations": cur.get("presentations"), "rows": cur.get("rows"),
            "phases": cur.get("phases"), "restarts": cur.get("restarts"), "steps": cur.get("steps"),
            "within_step": cur.get("within_step"),
            "share": f"{100 * share:.1f}%" if isinstance(share, (int, float)) else None,
            "gaps": gaps[:SHOW_GAPS], "more_gaps": max(0, len(gaps) - SHOW_GAPS), "n_gaps": len(gaps)}


def _bar(n: int, top: int) -> str:
    if not top or not n:
        return ""
    width = BAR * n / top
    full = int(width)
    return "█" * full + ("▌" if width - full >= 0.5 else ("▏" if full == 0 else ""))


def _hist_rows(counts: list[tuple[str, int]]) -> list[dict]:
    total = sum(v for _, v in counts)
    top = max((v for _, v in counts), default=0)
    return [{"label": str(k), "count": v, "share": f"{100 * v / total:.1f}%", "bar": _bar(v, top)} for k, v in counts]


def _per_seed(data: _Data) -> dict | None:
    names, seed = codes(data, "seed_id")
    if not names:
        return None
    rows = np.bincount(seed, minlength=len(names))
    return {"min": int(rows.min()), "max": int(rows.max()), "seeds": len(names)}


def _seed_rows(data: _Data, fmt: str | None) -> dict | None:
    """The first seeds in curriculum order: rows each, and the seed's own text (its root row)."""
    if "seed_id" not in data.features:
        return None
    column = {"prompt-completion": "completion", "text": "text", "messages": "messages"}.get(fmt or "")
    import pyarrow.compute as pc

    names, seed = codes(data, "seed_id")
    rows = np.bincount(seed, minlength=len(names))
    texts: dict = {}
    if column in data.features and "parent_id" in data.features:
        root = np.flatnonzero(~np.concatenate([np.zeros(0, dtype=bool)] + [
            np.asarray(pc.fill_null(pc.greater(pc.utf8_length(c), 0), False).to_numpy(zero_copy_only=False), dtype=bool)
            for c in data.chunks("parent_id")]))
        found, first = np.unique(seed[root], return_index=True)     # each seed's first root row
        shown_rows = sorted(root[first].tolist())[:SHOW_SEEDS]
        for i, value in zip(shown_rows, data.take(column, shown_rows)):
            texts[names[seed[i]]] = value[-1]["content"] if column == "messages" and value else value
    shown = names[:SHOW_SEEDS]
    return {"rows": [{"id": k, "rows": int(rows[i]), "text": texts.get(k, "")} for i, k in enumerate(shown)],
            "more": len(names) - len(shown)}


def _volatility(data: _Data, model: dict) -> dict | None:
    """Histograms of each float metric over the distinct scored variants; ``None`` when
    nothing was scored."""
    vol = volatility(data)
    if vol is None:
        return None
    metrics = [{"name": name, "n": len(x), "main": name in MAIN_METRICS, **_histogram(x)}
               for name, x in vol.metrics.items() if len(x)]
    if not metrics:
        return None
    return {"metrics": metrics, "variants": vol.variants, "device": model.get("device"), "dtype": model.get("dtype")}


def _histogram(x) -> dict:
    """A metric's summary and its bins as table rows: equal-width bins between the 1st and
    the 99th percentile, and one row for each tail beyond them."""
    h = histogram(x, HIST_BINS, 1, 99)
    stats = {"p10": number(h.p10), "p50": number(h.p50), "p90": number(h.p90), "min": number(h.lo),
             "max": number(h.hi), "mean": number(h.mean)}
    if h.lo == h.hi:
        return {"stats": stats, "bins": [{"label": f"= {number(h.lo)}", "count": h.n, "share": "100.0%",
                                          "bar": _bar(1, 1)}]}
    edges = h.edges
    labels = [f"[{number(a)}, {number(b)})" for a, b in itertools.pairwise(edges[:-1])] + [
        f"[{number(edges[-2])}, {number(edges[-1])}]"]
    pairs = list(zip(labels, h.counts))
    if h.below:
        pairs.insert(0, (f"< {number(edges[0])} (from {number(h.lo)})", h.below))
    if h.above:
        pairs.append((f"> {number(edges[-1])} (to {number(h.hi)})", h.above))
    top = max(c for _, c in pairs)
    return {"stats": stats, "bins": [{"label": lb, "count": c, "share": f"{100 * c / h.n:.1f}%",
                                      "bar": _bar(c, top)} for lb, c in pairs]}


def _rejects(records) -> dict | None:
    if records is None:
        return None
    summary = rejects(records)
    shown = summary.reasons[:SHOW_REASONS]
    return {"total": summary.total,
            "checks": [{"check": c.check, "count": c.count, "example": _clip(c.example.get("text") or "", 80)}
                       for c in summary.checks],
            "reasons": [{"check": r.check, "reason": r.reason, "count": r.count} for r in shown],
            "more_reasons": len(summary.reasons) - len(shown)}


def _examples(data: _Data, training: list[str]) -> list[str]:
    rows = data.head(3) if training else []
    out = []
    for row in rows:
        parts = []
        for c in training:
            value = row[c]
            if c == "messages" and isinstance(value, list):
                parts.extend(f"[{m.get('role')}] {m.get('content')}" for m in value)
            else:
                parts.append(f"[{c}] {value}")
        out.append("\n".join(parts))
    return out


def _type_name(feature) -> str:
    from datasets import LargeList, List, Sequence, Value

    if isinstance(feature, Value):
        return feature.dtype
    if isinstance(feature, (List, LargeList, Sequence)):
        inner = feature.feature
        return "list of " + ("{" + ", ".join(inner) + "}" if isinstance(inner, dict) else _type_name(inner))
    if isinstance(feature, dict):
        return f"struct of {len(feature)} fields"
    return type(feature).__name__


def _fence(text: str) -> str:
    """A code fence longer than any run of backticks in ``text``."""
    runs = [len(m) for m in re.findall(r"`+", text)]
    return "`" * max(3, max(runs, default=0) + 1)


def _cell(value, limit: int = 120) -> str:
    """Text safe inside a markdown table cell: one line, pipes escaped."""
    text = _clip(str(value), limit).replace("\\", "\\\\").replace("|", "\\|")
    return text.replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    text = " ⏎ ".join(text.splitlines()) if "\n" in text or "\r" in text else text
    return text if len(text) <= limit else text[:limit - 1] + "…"
