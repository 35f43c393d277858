"""Drift paths to the dataset, streamed: the curriculum's order (phases in order; within a
phase each seed's rows of that phase, its path repeated until the seed is shown often enough;
seeds merged by the schedule) is computed from integers alone (each path's length and
presentations, each row's phase and step); then the rows are gathered in that order from the
shards' memory-mapped Arrow files and written a bounded chunk at a time. Memory holds a few
integers per dataset row, never the rows."""

from __future__ import annotations

import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..curriculum import DEFAULT_SCHEDULE, SCHEDULES
from ..dsl.recipe import Recipe
from ..export.dataset import META_COLUMNS, features, quiet_datasets, training_fields
from ..export.mapped import MappedArrow
from ..export.stats import codes
from .options import Options
from .summary import Summary

CHUNK_BYTES = 4 << 20    # rows gathered and written at a time, in bytes of shard rows (as Python objects: ~10x)


def path_rows(path, recipe: Recipe) -> list[dict]:
    """A seed's path as row dicts, before repeats, schedule and format."""
    texts = {v.variant_id: v.text for v in path.rows}
    seed_text = path.rows[0].text
    rows = []
    for k, v in enumerate(path.rows):
        level, phase = recipe.route_of(v.stage)
        rows.append({"seed_id": v.seed_id, "variant_id": v.variant_id, "parent_id": v.parent_id, "text": v.text,
                     "parent_text": texts.get(v.parent_id, seed_text), "seed_text": seed_text, "edits": v.edits,
                     "stage": v.stage, "depth": v.depth, "n_tokens": v.n_tokens, "step_tokens": v.step_tokens,
                     "marker_tokens": v.marker_tokens, "recipe": recipe.name, "lora_level": level, "phase": phase,
                     "volatility": v.volatility, "step": k})
    return rows


def held_row(v, seed_text: str) -> dict:
    """A variant set aside by --holdout, as a line of holdout.jsonl."""
    return {"seed_id": v.seed_id, "variant_id": v.variant_id, "parent_id": v.parent_id, "text": v.text,
            "seed_text": seed_text, "edits": v.edits, "stage": v.stage, "depth": v.depth, "n_tokens": v.n_tokens,
            "volatility": v.volatility}


@dataclass
class Order:
    """The curriculum as integers: for each dataset row, the path row it shows (an index into
    all shards' rows, in shard order) and which presentation of its path it belongs to."""
    row: np.ndarray
    repeat: np.ndarray


def curriculum_order(path_rows_n: np.ndarray, presentations: np.ndarray, phase: np.ndarray, how: str) -> Order:
    """The order of the dataset's rows. ``path_rows_n[p]`` and ``presentations[p]`` describe
    path ``p`` (paths in seed order, each path's rows consecutive in ``phase``)."""
    if how not in SCHEDULES:
        raise ValueError(f"unknown schedule {how!r}; use {', '.join(SCHEDULES)}")
    i = _index_type(max(int(np.sum(path_rows_n, dtype=np.int64)), 1) * max(int(np.max(presentations, initial=1)), 1))
    path_rows_n = np.asarray(path_rows_n, dtype=i)
    # repeats_for: ceil(presentations / length), at least 1
    reps = np.maximum(1, -(-np.asarray(presentations, dtype=i) // np.maximum(path_rows_n, 1))).astype(i)
    path_of = np.repeat(np.arange(len(path_rows_n), dtype=i), path_rows_n)
    rows_out, reps_out = [], []
    for ph in np.unique(phase):
        idx = np.flatnonzero(phase == ph).astype(i)       # this phase's rows, path by path, in path order
        if not len(idx):
            continue
        seg_path = path_of[idx]
        starts = np.flatnonzero(np.r_[True, seg_path[1:] != seg_path[:-1]]).astype(i)
        del seg_path
        seg_len = np.diff(np.r_[starts, i(len(idx))]).astype(i)   # one segment (sequence) per path with rows here
        seq_len = seg_len * reps[path_of[idx[starts]]]
        seq = np.repeat(np.arange(len(starts), dtype=i), seq_len)
        k = np.arange(seq_len.sum(), dtype=i) - np.repeat((np.cumsum(seq_len) - seq_len).astype(i), seq_len)
        span = seg_len[seq]
        rep = k // span
        row = idx[starts[seq] + k % span]
        del idx, span
        if how == "interleaved":     # the k-th element of every sequence, then the (k+1)-th
            o = np.lexsort((seq, k))
        elif how == "spaced":        # each sequence spread evenly over the phase
            o = np.lexsort((k, seq, (k + 0.5) / seq_len[seq]))
        else:
            o = slice(None)
        del seq, k
        rows_out.append(row[o])
        reps_out.append(rep[o])
        del row, rep, o
    empty = np.zeros(0, dtype=i)
    return Order(np.concatenate(rows_out) if rows_out else empty, np.concatenate(reps_out) if reps_out else empty)


def _index_type(largest: int):
    """The narrowest integer type that counts to ``largest``: int32 for any corpus under two
    billion rows, half the memory of int64 per dataset row."""
    return np.int32 if largest < np.iinfo(np.int32).max else np.int64


class ShardRows(MappedArrow):
    """All shards' path rows as one sequence, read from their Arrow files in place: the pages
    a chunk touched leave this process's resident memory after the chunk, however large the
    corpus."""

    def gather(self, rows: np.ndarray) -> list[dict]:
        """The rows at these indices, in this order."""
        return self.take(rows).to_pylist()


def write_curriculum(directory: Path, shards: ShardRows, paths, opts: Options, default: Recipe, summary: Summary,
                     scratch: Path) -> None:
    """Order the shards' path rows into the curriculum and save it as the dataset in
    ``directory``; ``paths`` is the shards' per-path table (rows, presentations); ``scratch``
    holds the one intermediate Arrow file."""
    import pyarrow as pa
    from datasets.arrow_writer import OptimizedTypedSequence

    how = opts.schedule or default.schedule or DEFAULT_SCHEDULE
    n_rows = paths.column("rows").to_numpy().astype(np.int64) if paths.num_rows else np.zeros(0, dtype=np.int64)
    recipe_pres = paths.column("presentations").to_numpy() if paths.num_rows else n_rows
    pres = np.full_like(n_rows, opts.presentations) if opts.presentations else recipe_pres
    phase = shards.numpy("phase")
    order = curriculum_order(n_rows, pres, phase, how)
    phases = sorted(int(p) for p in np.unique(phase))
    del phase
    _count(order, shards, n_rows, phases, opts, how, recipe_pres, summary)

    feats = features(opts.format)
    schema = feats.arrow_schema
    chunk = max(256, int(CHUNK_BYTES // max(1, shards.file_bytes() // max(1, len(shards)))))

    def chunks():
        for start in range(0, len(order.row), chunk):
            batch = []
            reps = order.repeat[start:start + chunk].tolist()
            for i, (rep, r) in enumerate(zip(reps, shards.gather(order.row[start:start + chunk]))):
                prompt = r["parent_text"] if opts.prompt_from == "parent" else r["seed_text"]
                row = {c: r[c] for c in META_COLUMNS if c in r}
                row.update(order=start + i, repeat=rep, **training_fields(opts.format, r, prompt, opts.separator))
                batch.append(row)
            shards.release()
            # encoded as datasets encodes a column (Dataset.from_dict, ArrowWriter.write_batch)
            yield pa.Table.from_arrays([pa.array(OptimizedTypedSequence([r[c] for r in batch], type=feats[c], col=c))
                                        for c in feats], schema=schema)

    save_streamed(directory, feats, chunks(), scratch)


def save_streamed(directory: Path, feats, tables, scratch: Path) -> None:
    """What ``Dataset.save_to_disk`` writes for the rows of ``tables`` (Arrow tables of
    ``feats``' schema), without holding them: the rows go to one scratch file, then into the
    shards ``save_to_disk`` would make (one per 500 MB, rows split evenly), read back a batch
    at a time; ``dataset_info.json`` and ``state.json`` are those ``datasets`` writes for the
    same features, with the shards' names."""
    import json

    import pyarrow as pa
    from datasets import Dataset, config
    from datasets.arrow_writer import ArrowWriter, get_writer_batch_size_from_data_size
    from datasets.utils.py_utils import convert_file_size_to_int

    quiet_datasets()
    schema = feats.arrow_schema
    n, nbytes = 0, 0
    with tempfile.TemporaryDirectory(dir=scratch, prefix="assemble-") as tmp:
        path = Path(tmp) / "curriculum.arrow"
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
            for t in tables:
                writer.write_table(t)
                n, nbytes = n + t.num_rows, nbytes + t.nbytes
        # the empty dataset datasets saves gives dataset_info.json and state.json for these features
        Dataset.from_dict({c: [] for c in feats}, features=feats).save_to_disk(str(directory), num_shards=1)
        (directory / "data-00000-of-00001.arrow").unlink()
        shards = 1 if not n else min(n, int(nbytes / convert_file_size_to_int(config.MAX_SHARD_SIZE)) + 1)
        names = [f"data-{i:05d}-of-{shards:05d}.arrow" for i in range(shards)]
        sizes = [n // shards + (i < n % shards) for i in range(shards)]    # as Dataset.shard(contiguous=True)
        # record batches of the size save_to_disk writes, so the files are the bytes it would write
        batch_rows = config.DEFAULT_MAX_BATCH_SIZE if not nbytes else \
            min(config.DEFAULT_MAX_BATCH_SIZE, get_writer_batch_size_from_data_size(n, nbytes))
        with pa.OSFile(str(path), "rb") as source:
            rows = _rebatch(pa.ipc.open_stream(source), batch_rows)
            for name, size in zip(names, sizes):
                out = ArrowWriter(features=feats, path=str(directory / name), embed_local_files=True)
                for table in _take(rows, size, batch_rows):
                    out.write_table(table)
                out.finalize()
                out.close()
        state_file = directory / "state.json"
        state = json.loads(state_file.read_text(encoding="utf-8"))
        state["_data_files"] = [{"filename": name} for name in names]
        state_file.write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")


class _rebatch:
    """Record batches of a stream, served as slices of any length."""

    def __init__(self, reader, batch_rows: int) -> None:
        self.reader, self.pending = iter(reader), None

    def take(self, n: int):
        """Up to ``n`` rows as record batches (fewer only at the end of the stream)."""
        out = []
        while n:
            if self.pending is None or not self.pending.num_rows:
                self.pending = next(self.reader, None)
                if self.pending is None:
                    break
            part = self.pending.slice(0, min(n, self.pending.num_rows))
            self.pending = self.pending.slice(part.num_rows)
            out.append(part)
            n -= part.num_rows
        return out


def _take(rows: _rebatch, size: int, batch_rows: int):
    """``size`` rows as one-chunk tables of ``batch_rows`` rows (the last one shorter)."""
    import pyarrow as pa

    while size:
        got = rows.take(min(size, batch_rows))
        yield pa.Table.from_batches(got).combine_chunks()
        size -= sum(b.num_rows for b in got)


def _count(order: Order, shards: ShardRows, n_rows: np.ndarray, phases: list[int], opts: Options, how: str,
           recipe_pres, summary: Summary) -> None:
    """The curriculum's counts: rows, phases, restarts of a repeated path, rows by stage."""
    i = order.row.dtype                                       # int32 below two billion rows
    path_of = np.repeat(np.arange(len(n_rows), dtype=i), n_rows)[order.row]   # each dataset row's path
    by_path = np.argsort(path_of, kind="stable").astype(i)    # each path's rows in dataset order
    path_of = path_of[by_path]
    same = path_of[1:] == path_of[:-1]
    del path_of
    step = shards.numpy("step").astype(i)[order.row[by_path]]
    del by_path
    restarts = int(np.count_nonzero(same & (step[1:] != step[:-1] + 1)))
    del same, step
    stage_names, stage_codes = codes(shards, "stage")
    shown = stage_codes[order.row]
    del stage_codes
    counts = np.bincount(shown, minlength=len(stage_names))
    present, first = np.unique(shown, return_index=True)          # stages in the order rows first show them
    del shown
    summary.stage_rows = Counter({stage_names[c]: int(counts[c]) for c in present[np.argsort(first)]})
    shown_min = opts.presentations or (int(recipe_pres.min()) if len(recipe_pres) else 0)
    summary.curriculum.update(schedule=how, rows=len(order.row), phases=phases, restarts=restarts,
                              presentations=shown_min,
                              presentations_from="--presentations" if opts.presentations else "recipe repeat")
