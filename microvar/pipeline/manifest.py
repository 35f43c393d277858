"""manifest.json: the inputs, recipes, tokenizer, model, options, versions and counts of a run,
enough to tell what made a dataset and to repeat it."""

from __future__ import annotations

import platform

from .. import __version__
from ..dsl.recipe import Recipe
from ..expand.tokens import RefTokenizer
from .options import HOLDOUT_FILE, Options

RIPPLE_DEFINITION = ("a variant's metrics against a reference (parent or seed) cover its tokens from the first "
                     "differing position f to `tokens` tokens past its last changed position (a deletion counts "
                     "at the token after it); 0: to the end of the text. Positions past it are not computed; "
                     "nll takes the seed's log-probability at the aligned position there.")
SEED_CONTEXT_DEFINITION = ("with a window, each run of changes (changes less than `runs_apart` tokens apart are "
                           "one run) is measured in the seed's context: the variant's rows are the seed's at the "
                           "aligned position, except from a run's first change to `runs_apart` tokens past its "
                           "last, where they are the model's for the seed with that run alone; the pair metrics "
                           "cover the unchanged tokens within the ripple window past each run, nll is the mean "
                           "over the variant's rows so read. The same as in the variant's own text where its "
                           "changes are less than `runs_apart` apart and nothing is read further past them.")


def versions() -> dict:
    import datasets
    import pyarrow
    import tokenizers
    import transformers

    return {"microvar": __version__, "python": platform.python_version(), "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__, "datasets": datasets.__version__, "pyarrow": pyarrow.__version__}


def build_manifest(opts: Options, sf, used: list[Recipe], default: Recipe, tk: RefTokenizer, ref, summary,
                   budgets: dict) -> dict:
    if not opts.score:
        model = {"name": ref.name if ref else None, "gguf_sha256": ref.sha256 if ref else None, "scored": False,
                 "note": "--model none: variants were not scored; the volatility column is null"}
    else:
        sc = summary.scoring
        model = {"name": sc.get("model") or (ref.name if ref else opts.model), "gguf_sha256": ref.sha256 if ref else None, "scored": True,
                 "device": sc.get("device"), "dtype": sc.get("dtype"), "batch_tokens": sc.get("batch_tokens"),
                 "context_token": sc.get("context_token"), "drift": opts.drift,
                 "drift_threshold": opts.drift_threshold if opts.drift else None,
                 "ripple_window": {"tokens": opts.ripple_window, "definition": RIPPLE_DEFINITION},
                 "max_memory_gb": opts.max_memory, "max_rows_kept": sc.get("max_rows_kept"),
                 "packed_rows": sc.get("packed_rows"),
                 "seed_context": {"on": sc.get("seed_context"), "runs_apart": sc.get("runs_apart"),
                                  "definition": SEED_CONTEXT_DEFINITION},
                 "budget_overrides": [str(x) for x in opts.budget],
                 "budgets": {r.name: [str(x) for x in budgets[id(r)]] for r in used},
                 "volatility": summary.budget.distribution(),
                 "drift_layers": {str(k): v for k, v in sorted(summary.budget.drift_layers.items(), key=str)}
                 if opts.drift else None,
                 "positions": {"total": sc.get("total_tokens", 0), "computed": sc.get("computed_tokens", 0)}}
    return {
        "inputs": {"seeds": sf.name, "sha256": sf.sha256, "warnings": sf.warnings},
        "recipes": {r.name: {"source": r.source, "sha256": r.hash, "text": r.text} for r in used},
        "default_recipe": default.name,
        "tokenizer": {"name": tk.name, "sha256": tk.sha256, "vocab_size": tk.vocab_size, "context": tk.context},
        "model": model,
        "seed": opts.seed,
        "variants_cap": opts.variants,
        "split_long": opts.split_long,
        "holdout": {"fraction": opts.holdout, "variants": summary.held_out, "seeds": summary.held_out_seeds,
                    "file": HOLDOUT_FILE} if opts.holdout else None,
        "versions": versions(),
        "counts": summary.to_json(),
        "curriculum": summary.curriculum_json(),
        "export": {"format": opts.format, "prompt": opts.prompt_from if opts.format != "text" else None,
                   "separator": opts.separator if opts.format == "prompt-completion" else None,
                   "chat_template": "chat_template.jinja" if opts.format == "messages" and opts.chat_template
                   else None, "license": opts.license or default.license},
    }
