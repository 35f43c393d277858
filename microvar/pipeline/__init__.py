"""`microvar expand` as steps: ``options`` (what a run is asked), ``inputs`` (recipes, long
seeds, chat template, expander, reference model), ``shard`` (one shard of seeds: expand,
``scoring``, budget, drift paths), ``engines`` (who runs the shards: this process, a process
pool, Ray Data actors), ``work`` (each finished shard as Arrow files, ``--resume``),
``assemble`` (the curriculum's order from integers, rows streamed from the shards),
``summary`` (the counts), ``manifest`` and ``run`` (the steps in order); ``split`` cuts a
finished dataset by LoRA level or phase."""

from .inputs import choose_recipes, load_reference, make_expander
from .options import Options
from .run import run_expand
from .split import split_dataset
from .summary import Summary

__all__ = ["Options", "Summary", "choose_recipes", "load_reference", "make_expander", "run_expand", "split_dataset"]
