"""The `microvar` command: click wiring over the library, no logic here. Errors meant for
the user are caught once, here, and become exit code 2."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from . import __version__
from .errors import InputError, InputErrors, MicrovarError


class _Handled(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (InputError, InputErrors) as e:
            click.echo(str(e), err=True)  # already FILE:LINE: message
            sys.exit(2)
        except MicrovarError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)


@click.group(cls=_Handled)
@click.version_option(__version__, prog_name="microvar")
@click.option("-v", "--verbose", is_flag=True, help="Log what happens, to stderr.")
def main(verbose: bool) -> None:
    """Turn seed texts into microvariant curricula."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s", stream=sys.stderr,
                        force=True)  # each invocation logs to the stderr it has now


@main.command()
@click.argument("seeds", type=str)
@click.option("-o", "--out", "out", required=True, type=click.Path(path_type=Path), help="Output dataset directory.")
@click.option("--recipe", "recipes", multiple=True, help="Recipe file or shipped name; the first is the default. Repeatable.")
@click.option("--model", default=None, help="Reference model: a local HF model dir or .gguf (default: embedded "
              "SmolLM2-135M); 'none' expands without scoring.")
@click.option("--tokenizer", default=None, help="A tokenizer directory for the checks (with --model none, no model is needed).")
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda", "mps"]),
              help="Where the reference model runs; auto picks CUDA when present.")
@click.option("--dtype", default="auto", show_default=True, type=click.Choice(["auto", "float32", "bfloat16", "float16"]),
              help="auto: bfloat16 on CUDA, float32 elsewhere.")
@click.option("--batch-tokens", type=click.IntRange(min=16), default=None,
              help="Padded tokens per scoring batch [default: 2048 on CPU, 16384 on CUDA].")
@click.option("--budget", "budget", multiple=True, metavar="LIMITS",
              help="Volatility limits like 'ripple_kl<=0.3, top1>=0.9'; replace the recipe's on the same metric. Repeatable.")
@click.option("--drift", is_flag=True, help="Also find the first layer whose hidden states drift (slower).")
@click.option("--drift-threshold", type=click.FloatRange(min=0, min_open=True), default=0.1, show_default=True,
              help="Relative hidden-state change that counts as drift.")
@click.option("--variants", type=click.IntRange(min=1), default=None, help="Cap on variants per seed (default: the recipe's, 64).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed: same inputs and seed give the same dataset.")
@click.option("--skip-invalid", is_flag=True, help="Send bad seed lines to rejects.jsonl instead of stopping.")
@click.option("--split-long", is_flag=True, help="Split plain-text seeds longer than the model's context instead of rejecting them.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary.")
def expand(seeds, out, recipes, model, tokenizer, device, dtype, batch_tokens, budget, drift, drift_threshold, variants,
           seed, skip_invalid, split_long, overwrite, quiet):
    """Expand SEEDS (JSONL file, or - for stdin) into an Arrow dataset at OUT, each variant
    scored by the reference model and held to the volatility budget."""
    from .pipeline import Options, run_expand
    from .recipe import parse_limits

    score = model != "none"
    limits = []
    for text in budget:
        try:
            limits.extend(parse_limits(text))
        except ValueError as e:
            raise MicrovarError(f"--budget {text!r}: {e}") from None
    opts = Options(seeds, out, list(recipes), model if score else None, tokenizer, variants, seed, skip_invalid,
                   overwrite, split_long, progress=not quiet and sys.stderr.isatty(), score=score, device=device,
                   dtype=dtype, batch_tokens=batch_tokens, drift=drift, drift_threshold=drift_threshold,
                   budget=tuple(limits))
    summary = run_expand(opts)
    if not quiet:
        for line in summary.lines():
            click.echo(line, err=True)
        click.echo(f"wrote {out}", err=True)


@main.command()
@click.argument("out", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--by", type=click.Choice(["lora_level", "phase"]), required=True, help="Column to split on.")
@click.option("-o", "--to", "target", type=click.Path(path_type=Path), default=None,
              help="Directory for the parts [default: OUT-by-COLUMN].")
@click.option("--overwrite", is_flag=True, help="Replace the target if it exists.")
def split(out, by, target, overwrite):
    """Write one dataset per LoRA level or phase of OUT, rows in curriculum order."""
    from .pipeline import split_dataset

    counts = split_dataset(out, by, target, overwrite)
    click.echo(", ".join(f"{k}: {v} rows" for k, v in counts.items()), err=True)
