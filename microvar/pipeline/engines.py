"""Who runs the shards. Every engine calls :func:`shard.run_shard` on a :class:`shard.Job`
built once per process and writes each result into the work directory (``Work.save``); the
driver assembles the dataset from the work directory alone.

- ``local``: this process (``--workers 1``), or a pool of ``--workers N`` processes, torch's
  threads divided between them.
- ``ray``: Ray Data ``map_batches`` over the unfinished shards with a pool of actors, each
  loading the tokenizer and reference model once; Ray restarts an actor that dies and runs
  its shard again (a shard is written whole or not at all, so a retry cannot mix attempts).

Volatility is float arithmetic: two runs give the same bits when each worker runs torch with
the same number of threads (``threads_per_worker`` in the manifest's ``engine``); with another
count the sums over the vocabulary are added in another order and metrics differ in the last
bits (about 1e-7 relative)."""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Callable

from ..dsl.recipe import Recipe
from ..errors import MicrovarError
from ..expand.seeds import Seed
from .options import Options
from .shard import Job, run_shard
from .work import Work

log = logging.getLogger(__name__)

ENGINES = ("local", "ray")


def run_local(job: Job | None, spec: tuple[Options, Recipe, dict], todo: list[tuple[int, list[Seed]]],
              work: Work, tick: Callable[[int], None]) -> dict:
    """Shards in this process with ``job``, or, for ``--workers N`` > 1, in N processes;
    returns what the manifest records about the engine."""
    import torch

    opts = spec[0]
    if opts.workers <= 1:
        for k, seeds in todo:
            work.save(k, run_shard(job, seeds, tick=lambda: tick(1)))
        return {"name": "local", "workers": 1, "threads_per_worker": torch.get_num_threads()}
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    threads = max(1, torch.get_num_threads() // opts.workers)
    with ProcessPoolExecutor(opts.workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_pool_init, initargs=(spec, str(work.dir), threads)) as pool:
        futures = {pool.submit(_pool_shard, k, seeds): len(seeds) for k, seeds in todo}
        for f in as_completed(futures):
            f.result()
            tick(futures[f])
    return {"name": "local", "workers": opts.workers, "threads_per_worker": threads}


_worker: dict = {}


def _pool_init(spec: tuple, work_dir: str, threads: int) -> None:
    _worker.update(spec=spec, work=Work(work_dir), threads=threads, job=None)


def _pool_shard(k: int, seeds: list[Seed]) -> int:
    if _worker["job"] is None:      # built on the first shard, so that its errors reach the driver
        _set_threads(_worker["threads"])
        _worker["job"] = Job.build(*_worker["spec"])
    _worker["work"].save(k, run_shard(_worker["job"], seeds))
    return k


def _set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


# ---------------------------------------------------------------------------- Ray

class ShardActor:
    """A Ray Data actor: builds its Job (tokenizer, reference model) on its first batch and
    runs whole shards; each batch is one shard, ``{"shard": [k], "seeds": [pickled seeds]}``."""

    def __init__(self, spec: tuple, work_dir: str, threads: int) -> None:
        self.spec, self.work, self.threads, self.job = spec, Work(work_dir), threads, None

    def __call__(self, batch: dict) -> dict:
        if self.job is None:
            _set_threads(self.threads)
            self.job = Job.build(*self.spec)
        done = []
        for k, blob in zip(batch["shard"], batch["seeds"]):
            self.work.save(int(k), run_shard(self.job, pickle.loads(blob)))
            done.append(int(k))
        return {"shard": done}


def run_ray(spec: tuple[Options, Recipe, dict], todo: list[tuple[int, list[Seed]]], work: Work,
            tick: Callable[[int], None]) -> dict:
    """Shards on Ray Data actors; returns what the manifest records about the cluster."""
    ray = import_ray()
    opts = spec[0]
    started = not ray.is_initialized()
    verbose = logging.getLogger().isEnabledFor(logging.INFO)
    if not verbose:   # Ray's own notes (bars off, execution finished, ...); its errors still raise
        logging.getLogger("ray.data").setLevel(logging.ERROR)
    if started:
        ray.init(address=opts.ray_address, include_dashboard=False, logging_level=logging.WARNING,
                 log_to_driver=verbose)
    try:
        resources = ray.cluster_resources()
        gpus = opts.gpus_per_worker if opts.gpus_per_worker is not None else \
            (1 if resources.get("GPU", 0) >= 1 and opts.device in ("auto", "cuda") else 0)
        cpus = max(1, int(resources.get("CPU", 1) // opts.workers))
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False        # microvar's own progress line counts seeds
        ctx.print_on_execution_start = False
        sizes = dict((k, len(seeds)) for k, seeds in todo)
        items = [{"shard": k, "seeds": pickle.dumps(seeds, protocol=pickle.HIGHEST_PROTOCOL)} for k, seeds in todo]
        ds = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
        pool = ray.data.ActorPoolStrategy(size=max(1, min(opts.workers, len(todo))))
        ds = ds.map_batches(ShardActor, batch_size=1, compute=pool, num_cpus=cpus, num_gpus=gpus,
                            fn_constructor_kwargs={"spec": spec, "work_dir": str(work.dir), "threads": cpus})
        # Ray Data's actor pools restart a dead actor and retry its task (max_restarts and
        # max_task_retries default to -1 there): a shard whose actor was killed runs again
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                for k in batch["shard"]:
                    tick(sizes[int(k)])
        except Exception as e:   # a MicrovarError raised in an actor comes back wrapped
            cause = _microvar_cause(e)
            if cause is not None:
                raise cause from None
            raise
        return {"name": "ray", "ray": ray.__version__, "address": opts.ray_address or "local",
                "workers": opts.workers, "threads_per_worker": cpus, "gpus_per_worker": gpus,
                "nodes": len([n for n in ray.nodes() if n.get("Alive")])}
    finally:
        if started:
            ray.shutdown()


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise MicrovarError("--engine ray needs Ray Data: pip install 'microvar[ray]'") from None
    return ray


def _microvar_cause(e: BaseException) -> MicrovarError | None:
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, MicrovarError):
            return e
        seen.add(id(e))
        e = getattr(e, "cause", None) or e.__cause__ or e.__context__
    return None
