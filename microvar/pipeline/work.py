"""The work directory of an expand run: finished shards kept beside OUT, so that ``--resume``
redoes only what was not finished, and the fingerprint a resumed run must match."""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
from pathlib import Path

from .. import __version__
from ..dsl.recipe import Recipe
from ..errors import MicrovarError
from ..expand.tokens import RefTokenizer
from .options import Options

log = logging.getLogger(__name__)

def fingerprint(opts: Options, sf, used: list[Recipe], tk: RefTokenizer, ref) -> dict:
    """What decides the shards' contents; a resumed run must match it."""
    return {"seeds": sf.sha256, "recipes": sorted(r.hash for r in used), "tokenizer": tk.sha256,
            "model": (ref.sha256 or ref.name) if (ref and opts.score) else None,
            "options": {"model": opts.model, "tokenizer": opts.tokenizer, "variants": opts.variants,
                        "seed": opts.seed, "skip_invalid": opts.skip_invalid, "split_long": opts.split_long,
                        "score": opts.score, "dtype": opts.dtype, "device": opts.device,
                        "batch_tokens": opts.batch_tokens, "drift": opts.drift,
                        "drift_threshold": opts.drift_threshold, "budget": [str(x) for x in opts.budget],
                        "shard_seeds": opts.shard_seeds, "bridges": opts.bridges, "holdout": opts.holdout},
            "microvar": __version__}


class Work:
    """Finished shards of an expand run, kept beside OUT until OUT is written, so that
    ``--resume`` after a crash or ``kill -9`` redoes only the unfinished shard."""

    def __init__(self, out: Path, fingerprint: dict, resume: bool, overwrite: bool) -> None:
        self.dir = out.parent / f".{out.name}.partial"
        job = self.dir / "job.json"
        if self.dir.exists():
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
                raise MicrovarError(f"cannot resume: the unfinished run in {self.dir} used different "
                                    f"{', '.join(differ)}; run again with the same inputs and options, "
                                    "or with --overwrite to start over")
            if not resume:
                if not overwrite:
                    raise MicrovarError(f"{self.dir} holds an unfinished run for {out}: pass --resume to "
                                        "continue it, or --overwrite to start over")
                shutil.rmtree(self.dir)
            elif before is None:
                shutil.rmtree(self.dir)  # killed before it wrote anything: nothing to resume
        elif resume:
            log.warning("nothing to resume for %s: starting from the beginning", out)
        self.dir.mkdir(exist_ok=True)
        tmp = job.with_suffix(".tmp")
        tmp.write_text(json.dumps(fingerprint, indent=1), encoding="utf-8")
        os.replace(tmp, job)

    def _shard(self, k: int) -> Path:
        return self.dir / f"shard-{k:06d}.pkl"

    def done(self, n: int) -> set[int]:
        return {k for k in range(n) if self._shard(k).is_file()}

    def save(self, k: int, payload: dict) -> None:
        tmp = self._shard(k).with_suffix(".tmp")
        with tmp.open("wb") as f:
            pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._shard(k))

    def load(self, k: int) -> dict:
        with self._shard(k).open("rb") as f:
            return pickle.load(f)

    def finish(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
