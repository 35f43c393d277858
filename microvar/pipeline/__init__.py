"""`microvar expand` as steps: ``options`` (what a run is asked), ``inputs`` (recipes, long
seeds, chat template, expander, reference model), ``scoring`` (volatility for each seed's
variants), ``assemble`` (drift paths to ordered rows), ``summary`` (the counts), ``work``
(finished shards for ``--resume``), ``manifest`` and ``run`` (the loop that ties them);
``split`` cuts a finished dataset by LoRA level or phase."""

from .inputs import choose_recipes, load_reference, make_expander
from .options import Options
from .run import run_expand
from .split import split_dataset
from .summary import Summary

__all__ = ["Options", "Summary", "choose_recipes", "load_reference", "make_expander", "run_expand", "split_dataset"]
