"""What an expand run is asked to do: the options the CLI fills in, and the names of the
files a run writes beside the dataset."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..dsl.recipe import Limit

MODEL_EDITS = ("swap_model", "grow_model")


HOLDOUT_FILE = "holdout.jsonl"


@dataclass
class Options:
    seeds: str
    out: Path
    recipes: list[str] = field(default_factory=list)
    model: str | None = None
    tokenizer: str | None = None
    variants: int | None = None
    seed: int = 0
    skip_invalid: bool = False
    overwrite: bool = False
    split_long: bool = False
    progress: bool = True              # a bar on a terminal, else a line every 30 s (progress.py)
    score: bool = True                 # False: --model none (expansion only)
    device: str = "auto"
    dtype: str = "auto"
    batch_tokens: int | None = None    # None: 2048 on CPU, 16384 on a GPU (fewer for a big vocabulary)
    drift: bool = False
    drift_threshold: float = 0.1
    ripple_window: int = 32            # tokens past a variant's last change its metrics cover (0: all); score.RIPPLE_WINDOW
    own_context: bool = False          # True: later changes measured in the variant's own text, not the seed's (zones.py)
    runs_apart: int = 128              # seed context: changes closer are one run, a run's rows its own this far; score.RUNS_APART
    max_memory: float | None = None    # GB: sizes the scoring window (None: 2 x batch tokens)
    budget: tuple[Limit, ...] = ()     # command-line limits over the recipes' budgets
    format: str = "text"               # text, prompt-completion or messages (TRL's dataset formats)
    prompt_from: str = "parent"        # the prompt of a pair: the variant's parent, or its seed
    separator: str = "\n"              # ends the prompt (prompt-completion)
    chat_template: str | None = None   # messages: a Jinja chat template file or name in templates/
    schedule: str | None = None        # None: the default recipe's, else blocked
    presentations: int | None = None   # None: each recipe's `repeat`
    resume: bool = False
    shard_seeds: int = 32              # seeds per finished shard (what --resume keeps)
    license: str | None = None         # for the dataset card; None: the default recipe's
    bridges: int = 2                   # rows a drift path may step back through to stay within budget
    holdout: float = 0.0               # share of each seed's non-root variants set aside for evaluation
    engine: str = "local"              # who runs the shards: this machine's processes, or Ray (engines.py)
    workers: int = 1                   # local: processes; ray: actors (each loads the model once)
    gpus_per_worker: float | None = None   # ray: None = 1 when the cluster has GPUs, else 0
    ray_address: str | None = None     # ray: an existing cluster ("auto", "ray://host:10001"); None starts one here
