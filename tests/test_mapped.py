"""The reader of Arrow files in place (export/mapped.py) gives what the same rows in memory
give, for both IPC layouts (the work directory's file format, save_to_disk's stream format),
several files and many record batches; all-null chunks come back as nulls of their type."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from microvar.export import stats
from microvar.export.mapped import MappedArrow


def _tables():
    rng = np.random.default_rng(0)
    out = []
    for f in range(3):
        n = 700 + 50 * f
        out.append(pa.table({
            "id": [f"{int(x):016x}" for x in rng.integers(0, 2**62, n)],
            "seed": [f"seed-{int(x)}" for x in rng.integers(0, 40, n)],
            "phase": pa.array(rng.integers(0, 3, n), pa.int32()),
            "text": ["слово " * int(k) + "🙂" for k in rng.integers(0, 9, n)],
            "vol": pa.array([None] * n, pa.struct([("a", pa.float64()), ("b", pa.list_(pa.float32()))])),
        }))
    return out


def _write(tmp_path, tables, layout):
    files = []
    for i, t in enumerate(tables):
        path = tmp_path / f"part-{i}.arrow"
        opener = pa.ipc.new_file if layout == "file" else pa.ipc.new_stream
        with pa.OSFile(str(path), "wb") as sink, opener(sink, t.schema) as w:
            for b in t.to_batches(max_chunksize=97):       # many record batches per file
                w.write_batch(b)
        files.append(path)
    return files


@pytest.mark.parametrize("layout", ["file", "stream"])
def test_mapped_files_read_as_the_rows_in_memory(tmp_path, layout):
    tables = _tables()
    whole = pa.concat_tables(tables)
    m = MappedArrow(_write(tmp_path, tables, layout))
    assert len(m) == whole.num_rows
    for name in whole.column_names:
        assert m.column(name).to_pylist() == whole.column(name).to_pylist()
        assert pa.chunked_array(list(m.chunks(name)), type=whole.schema.field(name).type).to_pylist() == \
            whole.column(name).to_pylist()
    assert m.numpy("phase").tolist() == whole.column("phase").to_pylist()
    rows = [5, 0, whole.num_rows - 1, 800, 5, 1500]
    assert m.values("text", rows) == [whole.column("text")[r].as_py() for r in rows]
    order = np.array([2100, 3, 700, 701, 0, 1449], dtype=np.int64)
    assert m.take(order).to_pylist() == whole.take(pa.array(order)).to_pylist()
    assert m.nbytes() == sum(b.nbytes for t in tables for b in t.to_batches(max_chunksize=97))
    assert m.file_bytes() == sum(f.stat().st_size for f in tmp_path.glob("part-*.arrow"))


def test_counts_from_mapped_chunks_equal_counts_in_memory(tmp_path):
    tables = _tables()
    whole = pa.concat_tables(tables)

    class Mapped:                                   # what the card hands stats.py: columns and chunks
        def __init__(self, m):
            self.m, self.column_names = m, whole.column_names
            self.column, self.chunks = m.column, m.chunks

    m = Mapped(MappedArrow(_write(tmp_path, tables, "stream")))
    for name in ("id", "seed", "phase"):
        names, codes = stats.codes(m, name)
        ref = whole.column(name).to_pylist()
        assert [names[c] for c in codes] == ref
        assert names == list(dict.fromkeys(ref))          # in the order rows first show them
        assert stats.distinct(m, name) == len(set(ref))
        assert sorted(stats.first_rows(m, name).tolist()) == sorted(ref.index(v) for v in set(ref))
    assert stats.volatility(m) is None                   # all null: nothing scored


def test_an_empty_set_of_files_has_no_rows():
    schema = pa.schema([("phase", pa.int32())])
    m = MappedArrow([], schema)
    assert len(m) == 0 and m.column("phase").to_pylist() == [] and m.numpy("phase").tolist() == []
