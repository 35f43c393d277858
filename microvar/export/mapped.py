"""Arrow files read in place, through memory maps, by the two readers of a large corpus: the
assembly (the shards' rows, ``pipeline/assemble.py``) and the card (the dataset's rows,
``card.py``). A column comes back without a copy; a few rows come back without the column
being gathered into one array (``ChunkedArray.take`` concatenates every chunk first: 116 MB of
text at 20,000 seeds, measured); and the pages read are handed back to the kernel before the
next column is read (``release``), so resident memory holds what the caller keeps, not every
page it has looked at. The files are Arrow IPC in either layout: the file format (the work
directory's shards) or the stream format (what ``datasets.save_to_disk`` writes)."""

from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np

RELEASE_BYTES = 32 << 20


class MappedArrow:
    """Arrow files as one sequence of rows, in file order."""

    def __init__(self, files: list[Path], schema=None) -> None:
        import pyarrow as pa

        self.maps, self.tables, self.schema = [], [], schema
        for f in files:
            with open(f, "rb") as fh:
                mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if fh.seek(0, 2) else None
            if mm is None:
                raise ValueError(f"{f} is empty")
            self.maps.append(mm)
            self.tables.append(self._read(mm))
        if self.tables and self.schema is None:
            self.schema = self.tables[0].schema
        self.offsets = np.cumsum([0] + [t.num_rows for t in self.tables])

    def _read(self, mm):
        """The table in ``mm``, its record batches pointing into the map; the pages their
        headers were read from handed back as it goes."""
        import pyarrow as pa

        buf = pa.py_buffer(mm)
        if mm[:6] == b"ARROW1":
            reader = pa.ipc.open_file(buf)
            batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
        else:
            reader = batches = pa.ipc.open_stream(buf)
        out = []
        for i, batch in enumerate(batches):
            out.append(batch)
            if i % 256 == 255:
                mm.madvise(mmap.MADV_DONTNEED)
        mm.madvise(mmap.MADV_DONTNEED)
        return pa.Table.from_batches(out, schema=reader.schema)

    @property
    def column_names(self) -> list[str]:
        return list(self.schema.names) if self.schema is not None else []

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def release(self, k: int | None = None) -> None:
        """Hand back the pages of file ``k``'s map (default: every file's). They are clean
        file pages: they leave this process's resident memory and stay in the page cache; an
        array still pointing into them reads them in again if used."""
        for mm in self.maps if k is None else (self.maps[k],):
            mm.madvise(mmap.MADV_DONTNEED)

    def column(self, name: str):
        """One column over every file, as a ``pyarrow.ChunkedArray`` copied out of the maps with
        their pages handed back every ``RELEASE_BYTES`` of file read. (A column left in the
        maps costs more than its copy: the rows' columns are interleaved a record batch at a
        time, and the kernel maps 64 KB around each page read, so reading the 22 MB of ids at
        20,000 seeds made 108 MB of the file resident, measured.)"""
        import pyarrow as pa

        # an all-null chunk is made from its length alone (volatility without a model: a struct
        # of a dozen float children, 170 MB at 20,000 seeds if copied)
        chunks = [pa.nulls(len(c), c.type) if c.null_count == len(c) else pa.concat_arrays([c])
                  for c in self.chunks(name)]
        return pa.chunked_array(chunks, type=self.schema.field(name).type)

    def chunks(self, name: str):
        """The column's chunks in place (no copy), one at a time, the pages read handed back
        every ``RELEASE_BYTES`` of file: for a caller that keeps what it computes from each
        chunk, not the chunk."""
        for k, t in enumerate(self.tables):
            per_row = len(self.maps[k]) / max(1, t.num_rows)
            since = 0
            for c in t.column(name).chunks:
                yield c
                since += len(c) * per_row
                if since > RELEASE_BYTES:
                    self.release(k)
                    since = 0
            self.release(k)

    def numpy(self, name: str) -> np.ndarray:
        """A numeric column as one numpy array of its own type (a copy), its pages handed back."""
        parts = [t.column(name).to_numpy() for t in self.tables]
        out = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        self.release()
        return out

    def values(self, name: str, rows) -> list:
        """The Python values of ``name`` at these rows (any order, repeats allowed), each read
        from the record batch that holds it."""
        found = {}
        for r in sorted(set(int(r) for r in rows)):
            k = int(np.searchsorted(self.offsets, r, side="right")) - 1
            found[r] = self.tables[k].column(name)[r - int(self.offsets[k])].as_py()
        self.release()
        return [found[int(r)] for r in rows]

    def take(self, rows: np.ndarray):
        """The rows at these indices, in this order, as one ``pyarrow.Table`` (a copy)."""
        import pyarrow as pa

        file_of = np.searchsorted(self.offsets, rows, side="right") - 1
        parts, where = [], []
        for k in np.unique(file_of):
            sel = np.flatnonzero(file_of == k)
            parts.append(self.tables[k].take(pa.array(rows[sel] - self.offsets[k])))   # copies the rows out
            self.release(k)
            where.append(sel)
        if not parts:
            return self.schema.empty_table()
        table = pa.concat_tables(parts)
        back = np.empty(len(rows), dtype=np.int64)
        back[np.concatenate(where)] = np.arange(len(rows))
        return table.take(pa.array(back))

    def file_bytes(self) -> int:
        """The files' size: about the rows' bytes, read without touching a page."""
        return sum(len(mm) for mm in self.maps)

    def nbytes(self) -> int:
        """What ``Table.nbytes`` says of all rows, summed a record batch at a time with the
        pages handed back every ``RELEASE_BYTES`` (``nbytes`` of a whole mapped table pages in
        its files: 150 MB at 8,000 seeds, measured)."""
        total = since = 0
        for k, t in enumerate(self.tables):
            for batch in t.to_batches():
                total, since = total + batch.nbytes, since + batch.nbytes
                if since > RELEASE_BYTES // 4:   # nbytes touches every string column's offsets
                    self.release(k)
                    since = 0
        self.release()
        return total


def hand_back_freed() -> None:
    """Return memory already freed to the kernel: Arrow's allocator and glibc's malloc keep
    freed blocks for reuse, so a step that peaked leaves its peak in resident memory and the
    next step's peak stacks on it (the card started 60 MB higher after the data files were
    written at 20,000 seeds, measured). Called between the steps of `expand`; where glibc is
    not the C library only Arrow's pool is trimmed."""
    import ctypes

    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (AttributeError, OSError):
        pass

