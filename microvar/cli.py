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
@click.option("--format", "fmt", type=click.Choice(["prompt-completion", "text", "messages"]),
              default="prompt-completion", show_default=True,
              help="Training columns, in TRL's dataset formats: prompt/completion pairs, text, or chat messages.")
@click.option("--prompt", "prompt_from", type=click.Choice(["parent", "seed"]), default="parent", show_default=True,
              help="What a pair's prompt (or user turn) is: the variant's parent, or its seed.")
@click.option("--separator", default="\n", show_default=True,
              help="Appended to the prompt (prompt-completion); backslash escapes like \\n are understood.")
@click.option("--chat-template", default=None, metavar="FILE",
              help="messages: a Jinja chat template (a file, or a name in templates/) [default: the tokenizer's].")
@click.option("--schedule", type=click.Choice(["blocked", "interleaved", "spaced"]), default=None,
              help="How seeds share the run [default: the recipe's schedule, else blocked].")
@click.option("--presentations", type=click.IntRange(min=1), default=None,
              help="Least rows per seed; a shorter path is repeated [default: the recipe's repeat, 24].")
@click.option("--bridges", type=click.IntRange(min=0), default=2, show_default=True,
              help="Rows a drift path may step back through (shown again) to keep each step within the step budget.")
@click.option("--license", "license_", default=None, help="License id for the dataset card [default: the recipe's].")
@click.option("--resume", is_flag=True, help="Continue an interrupted run of the same command from its finished shards.")
@click.option("--shard-seeds", type=click.IntRange(min=1), default=32, show_default=True,
              help="Seeds per shard: finished shards survive a crash and --resume keeps them.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists (and discard an unfinished run).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary.")
def expand(seeds, out, recipes, model, tokenizer, device, dtype, batch_tokens, budget, drift, drift_threshold, variants,
           seed, skip_invalid, split_long, fmt, prompt_from, separator, chat_template, schedule, presentations,
           bridges, license_, resume, shard_seeds, overwrite, quiet):
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
                   budget=tuple(limits), format=fmt, prompt_from=prompt_from,
                   separator=separator.encode("latin-1", "backslashreplace").decode("unicode_escape"),
                   chat_template=chat_template, schedule=schedule, presentations=presentations, license=license_, bridges=bridges,
                   resume=resume, shard_seeds=shard_seeds)
    if fmt != "messages" and chat_template:
        raise MicrovarError("--chat-template is for --format messages")
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


@main.command()
@click.argument("out", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.argument("repo_id", required=False)
@click.option("--private", is_flag=True, help="Create the Hub repo private (an existing repo keeps its visibility).")
@click.option("--token", default=None, help="Hugging Face token with write access [default: HF_TOKEN, else the "
              "`hf auth login` token].")
@click.option("--revision", default=None, metavar="BRANCH", help="Push to this branch (created if missing).")
@click.option("--to-dir", "to_dir", type=click.Path(path_type=Path), default=None,
              help="Write the Hub-ready folder here instead of uploading it.")
@click.option("--license", "license_", default=None, metavar="ID",
              help="License id for the card [default: the one OUT was made with].")
@click.option("--overwrite", is_flag=True, help="Replace --to-dir if it exists, or the files of a Hub repo that has some.")
def push(out, repo_id, private, token, revision, to_dir, license_, overwrite):
    """Upload the dataset OUT to the Hub dataset repo REPO_ID (or write it to --to-dir):
    parquet shards in curriculum order plus a dataset card, in one commit."""
    from .hub import push as push_to_hub
    from .hub import to_dir as write_dir

    if (repo_id is None) == (to_dir is None):
        raise MicrovarError("give exactly one of REPO_ID (upload to the Hub) or --to-dir DIR (a local folder)")
    if to_dir is not None:
        if private or token or revision:
            raise MicrovarError("--private, --token and --revision are for uploading to REPO_ID, not --to-dir")
        folder = write_dir(out, to_dir, overwrite=overwrite, license=license_)
        click.echo(f"wrote {folder.path}: {folder.rows} rows in {folder.shards} parquet shard(s) and README.md",
                   err=True)
        return
    url = push_to_hub(out, repo_id, private=private, token=token, revision=revision, license=license_,
                      overwrite=overwrite)
    click.echo(f"pushed {out} to {url}", err=True)
    click.echo(url)


@main.command()
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--model", default=None, help="Base model: a local HF model dir or .gguf (default: embedded SmolLM2-135M).")
@click.option("-o", "--output", "output", required=True, type=click.Path(path_type=Path),
              help="Adapter directory to write.")
@click.option("--level", default=None, help="Train only rows of this lora_level.")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Optimizer steps per phase [default: one pass over the phase's rows].")
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True, help="Rows per step.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=2e-4, show_default=True,
              help="Learning rate (constant).")
@click.option("--lora-r", type=click.IntRange(min=1), default=8, show_default=True, help="LoRA rank (alpha = 2r).")
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda", "mps"]),
              help="Where to train; auto picks CUDA when present (bf16 there, fp32 elsewhere).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (LoRA initialisation).")
@click.option("--overwrite", is_flag=True, help="Replace the adapter directory if it exists.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary.")
def train(out, model, output, level, steps, batch_size, lr, lora_r, device, seed, overwrite, quiet):
    """Train a LoRA adapter on the dataset OUT in curriculum order: phases ascending, each
    phase's rows in their order (needs `pip install 'microvar[train]'`)."""
    from .train import train as run_train

    report = run_train(out, model, output, level, steps, batch_size=batch_size, lr=lr, lora_r=lora_r,
                       device=device, overwrite=overwrite, seed=seed, progress=not quiet and sys.stderr.isatty())
    if not quiet:
        for line in report.lines():
            click.echo(line, err=True)
        click.echo(f"wrote {output}", err=True)
