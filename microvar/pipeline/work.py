"""The work directory of an expand run (``.OUT.partial`` beside OUT): each finished shard as
Arrow files and its counts as JSON (never pickle), what the driver assembles the dataset
from, what ``--resume`` keeps, and the fingerprint a resumed run must match. With
``--engine ray`` it must be on storage every node sees."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .. import __version__
from ..dsl.recipe import Recipe
from ..errors import MicrovarError
from ..expand.tokens import RefTokenizer
from .options import Options
from .shard import ShardResult
from .summary import Summary

DONE = "DONE"   # written last into a shard's directory

log = logging.getLogger(__name__)

def fingerprint(opts: Options, sf, used: list[Recipe], tk: RefTokenizer, ref) -> dict:
    """What decides the shards' contents; a resumed run must match it."""
    return {"seeds": sf.sha256, "recipes": sorted(r.hash for r in used), "tokenizer": tk.sha256,
            "model": (ref.sha256 or ref.name) if (ref and opts.score) else None,
            "options": {"model": opts.model, "tokenizer": opts.tokenizer, "variants": opts.variants,
                        "seed": opts.seed, "skip_invalid": opts.skip_invalid, "split_long": opts.split_long,
                        "score": opts.score, "dtype": opts.dtype, "device": opts.device,
                        "batch_tokens": opts.batch_tokens, "drift": opts.drift,
                        "drift_threshold": opts.drift_threshold, "ripple_window": opts.ripple_window,
                        "own_context": opts.own_context, "runs_apart": opts.runs_apart,
                        "max_memory": opts.max_memory, "budget": [str(x) for x in opts.budget],
                        "shard_seeds": opts.shard_seeds, "bridges": opts.bridges, "holdout": opts.holdout},
            "microvar": __version__}


class Work:
    """The work directory: finished shards, kept beside OUT until OUT is written, so that
    ``--resume`` after a crash or ``kill -9`` redoes only the unfinished shards. Engines'
    workers write into it with ``Work(directory).save``; the driver opens it with ``open``."""

    def __init__(self, directory: Path | str) -> None:
        self.dir = Path(directory)

    @classmethod
    def open(cls, out: Path, fingerprint: dict, resume: bool, overwrite: bool) -> Work:
        """The work directory of OUT, checked against an unfinished run found there."""
        work = cls(out.parent / f".{out.name}.partial")
        job = work.dir / "job.json"
        if work.dir.exists():
            try:
                before = json.loads(job.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                before = None
            if resume and before is not None and before != fingerprint:
                differ = [k for k in fingerprint if before.get(k) != fingerprint[k]]
                if "options" in differ:
                    differ.remove("options")
                    differ += [f"--{k.replace('_', '-')}" for k, v in fingerprint["options"].items()
                               if before.get("options", {}).get(k) != v]
                raise MicrovarError(f"cannot resume: the unfinished run in {work.dir} used different "
                                    f"{', '.join(differ)}; run again with the same inputs and options, "
                                    "or with --overwrite to start over")
            if not resume:
                if not overwrite:
                    raise MicrovarError(f"{work.dir} holds an unfinished run for {out}: pass --resume to "
                                        "continue it, or --overwrite to start over")
                shutil.rmtree(work.dir)
            elif before is None:
                shutil.rmtree(work.dir)  # killed before it wrote anything: nothing to resume
        elif resume:
            log.warning("nothing to resume for %s: starting from the beginning", out)
        work.dir.mkdir(exist_ok=True)
        tmp = job.with_suffix(".tmp")
        tmp.write_text(json.dumps(fingerprint, indent=1), encoding="utf-8")
        os.replace(tmp, job)
        return work

    def _shard(self, k: int) -> Path:
        return self.dir / f"shard-{k:06d}"

    def done(self, n: int) -> set[int]:
        return {k for k in range(n) if (self._shard(k) / DONE).is_file()}

    def save(self, k: int, result: ShardResult) -> None:
        """Write shard ``k``'s result as Arrow files (and its counts as JSON) into a fresh
        directory, then rename it into place: a shard is there whole or not at all, and a
        retried shard (a Ray task run again after its actor died) cannot mix two attempts."""
        target = self._shard(k)
        tmp = Path(tempfile.mkdtemp(dir=self.dir, prefix=f"{target.name}.tmp-"))
        _write(tmp / "rows.arrow", result.rows, rows_schema())
        _write(tmp / "paths.arrow", result.paths, PATHS_SCHEMA)
        _write(tmp / "rejects.arrow", result.rejects, REJECTS_SCHEMA)
        _write(tmp / "holdout.arrow", result.holdout, HOLDOUT_SCHEMA)
        _write_text(tmp / "summary.json", json.dumps(result.summary.state(), ensure_ascii=False))
        _write_text(tmp / DONE, "")
        try:
            os.rename(tmp, target)
        except OSError:           # another attempt at the same shard finished first: same content
            shutil.rmtree(tmp, ignore_errors=True)
            if not (target / DONE).is_file():
                raise

    def summary(self, k: int) -> Summary:
        return Summary.from_state(json.loads((self._shard(k) / "summary.json").read_text(encoding="utf-8")))

    def file(self, k: int, name: str) -> Path:
        """Shard ``k``'s Arrow file ``name``: rows, paths, rejects or holdout."""
        return self._shard(k) / f"{name}.arrow"

    def table(self, k: int, name: str):
        """Shard ``k``'s ``name`` as an Arrow table, read into memory (for the small ones)."""
        import pyarrow as pa

        with pa.OSFile(str(self.file(k, name))) as source:
            return pa.ipc.open_file(source).read_all()

    def records(self, k: int, name: str) -> Iterator[dict]:
        """Shard ``k``'s rejects or held-out variants as the dicts they were, a record batch at
        a time (read, not memory-mapped: the pages do not stay in this process)."""
        import pyarrow as pa

        with pa.OSFile(str(self.file(k, name))) as source:
            reader = pa.ipc.open_file(source)
            json_cols = [f.name for f in reader.schema if f.metadata and f.metadata.get(b"json")]
            for i in range(reader.num_record_batches):
                for r in reader.get_batch(i).to_pylist():
                    for c in json_cols:
                        r[c] = json.loads(r[c]) if r[c] is not None else None
                    yield r

    def finish(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------------------- shard files

def rows_schema():
    """A path row: the dataset's columns less ``order``/``repeat`` (set when assembled), plus
    the texts a prompt is made from."""
    import pyarrow as pa
    from datasets import Features, Value

    from ..export.dataset import features

    f = dict(features("text"))
    for c in ("order", "repeat"):
        del f[c]
    f.update(parent_text=Value("string"), seed_text=Value("string"))
    return Features(f).arrow_schema.remove_metadata()


def _json_field(name: str):
    """A column holding JSON text: a metric dict keeps its float64 values and keys exactly."""
    import pyarrow as pa

    return pa.field(name, pa.string(), metadata={"json": "1"})


def _schemas():
    import pyarrow as pa

    strings = pa.list_(pa.string())
    paths = pa.schema([("seed_id", pa.string()), ("rows", pa.int32()), ("presentations", pa.int32())])
    rejects = pa.schema([("seed_id", pa.string()), ("text", pa.string()), ("check", pa.string()),
                         ("detail", pa.string()), ("variant_id", pa.string()), ("parent_id", pa.string()),
                         ("edits", strings), ("limit", pa.string()), ("value", pa.float64()),
                         _json_field("volatility")])
    holdout = pa.schema([("seed_id", pa.string()), ("variant_id", pa.string()), ("parent_id", pa.string()),
                         ("text", pa.string()), ("seed_text", pa.string()), ("edits", strings),
                         ("stage", pa.string()), ("depth", pa.int64()), ("n_tokens", pa.int64()),
                         _json_field("volatility")])
    return paths, rejects, holdout


PATHS_SCHEMA, REJECTS_SCHEMA, HOLDOUT_SCHEMA = _schemas()


def _write(path: Path, records: list[dict], schema) -> None:
    import pyarrow as pa

    json_cols = [f.name for f in schema if f.metadata and f.metadata.get(b"json")]
    if json_cols:
        records = [{**r, **{c: None if r[c] is None else json.dumps(r[c]) for c in json_cols}} for r in records]
    table = pa.Table.from_pylist(records, schema=schema)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        writer.write_table(table)


def _write_text(path: Path, text: str) -> None:
    with path.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
