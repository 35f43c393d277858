"""The `microvar` command: click wiring over the library, no logic here. Errors meant for
the user are caught once, here, and become exit code 2.

Over 400 lines: one short function per subcommand with its options; split, the wiring the CLI
exists to show in one place would scatter."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from . import __version__
from .errors import InputError, InputErrors, MicrovarError

# Before anything imports torch (its OpenMP runtime reads this once, when it loads; nothing
# above does, the subcommands import it when they run): OpenMP threads that spin while they
# wait for each other burn the CPU share a busy machine leaves them: beside two busy processes
# on 2 cores scoring slowed 3.5x with libgomp's default (4.5x ACTIVE) where its fair share
# explains 2.2x, and 1.9x with passive waiting; on a quiet machine passive costs 12% (README:
# Scoring under load; benchmarks/bench_load.py, measured at b6265dc). A user's own setting stays.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


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


def _terminate_cleanly() -> None:
    """SIGTERM (what ``timeout``, ``kill`` and cluster schedulers send) as an exit that runs the
    same clean-up as Ctrl-C: staging and unfinished work directories go, finished shards stay
    for --resume. Without it the process dies where it stands and leaves them behind. Only in
    the main thread, and only over the default action (a host application's handler stays)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def exit_143(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)   # a second SIGTERM kills at once
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, exit_143)


def _budget_limits(texts: tuple[str, ...]) -> list:
    """--budget values (each 'METRIC<=X, ...') as limits; a bad one is the user's error."""
    from .dsl.recipe import parse_limits

    limits = []
    for text in texts:
        try:
            limits.extend(parse_limits(text))
        except ValueError as e:
            raise MicrovarError(f"--budget {text!r}: {e}") from None
    return limits


class _Option(click.Option):
    """An option whose ``old`` spellings still work but are left out of --help and of
    error messages, so every command shows one name for one meaning."""

    def __init__(self, *args, old: tuple[str, ...] = (), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.old = set(old)

    def _shown(self, method, ctx):
        every = self.opts
        self.opts = [o for o in every if o not in self.old]
        try:
            return method(ctx)
        finally:
            self.opts = every

    def get_help_record(self, ctx):
        return self._shown(super().get_help_record, ctx)

    def get_error_hint(self, ctx):
        return self._shown(super().get_error_hint, ctx)


def _output(dest: str, *old: str, help: str, **kwargs):
    """-o/--output on every command that writes something; ``old`` are the names it had."""
    return click.option("-o", "--output", *old, dest, cls=_Option, old=old, type=kwargs.pop("type", None)
                        or click.Path(path_type=Path), help=help, **kwargs)


def _quiet(help: str = "No progress bar or summary."):
    return click.option("-q", "--quiet", is_flag=True, help=help)


def _json():
    """--json on the commands that print a report a tool may read; --format text|json was its
    old spelling (--format means training columns in expand)."""
    def wrap(f):
        f = click.option("--format", "fmt", type=click.Choice(["text", "json"]), default=None, hidden=True)(f)
        return click.option("--json", "as_json", is_flag=True, help="Print one JSON object, for tools.")(f)
    return wrap


def _batch_tokens(default: str = "2048 on CPU, 16384 on CUDA, scaled down for vocabularies over 49k tokens: "
                  "384 and 3072 for Gemma 3"):
    """--batch-tokens, with one default rule (score.default_batch_tokens) for every command."""
    return click.option("--batch-tokens", type=click.IntRange(min=16), default=None,
                        help=f"Padded tokens per forward batch [default: {default}].")


def _report(lines: list[str], wrote: Path) -> None:
    for line in lines:
        click.echo(line, err=True)
    click.echo(f"wrote {wrote}", err=True)


@click.group(cls=_Handled)
@click.version_option(__version__, prog_name="microvar")
@click.option("-v", "--verbose", is_flag=True, help="Log what happens, to stderr.")
def main(verbose: bool) -> None:
    """Turn seed texts into microvariant curricula."""
    _terminate_cleanly()
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s", stream=sys.stderr,
                        force=True)  # each invocation logs to the stderr it has now


@main.command()
@click.argument("seeds", type=str)
@_output("out", "--out", required=True, help="Output dataset directory.")
@click.option("--recipe", "recipes", multiple=True, help="Recipe file or shipped name; the first is the default. Repeatable.")
@click.option("--model", default=None, help="Reference model: a local HF model dir or .gguf (default: embedded "
              "SmolLM2-135M); 'none' expands without scoring.")
@click.option("--tokenizer", default=None, help="A tokenizer directory for the checks (with --model none, no model is needed).")
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda", "mps"]),
              help="Where the reference model runs; auto picks CUDA when present.")
@click.option("--dtype", default="auto", show_default=True, type=click.Choice(["auto", "float32", "bfloat16", "float16"]),
              help="auto: bfloat16 on CUDA, float32 elsewhere.")
@_batch_tokens()
@click.option("--budget", "budget", multiple=True, metavar="LIMITS",
              help="Volatility limits like 'ripple_kl<=0.3, top1>=0.9'; replace the recipe's on the same metric. Repeatable.")
@click.option("--drift", is_flag=True, help="Also find the first layer whose hidden states drift (slower).")
@click.option("--drift-threshold", type=click.FloatRange(min=0, min_open=True), default=0.1, show_default=True,
              help="Relative hidden-state change that counts as drift.")
@click.option("--ripple-window", type=click.IntRange(min=0), default=32, show_default=True, metavar="W",
              help="Measure a variant W tokens past its last change (0: to the end of the text).")
@click.option("--own-context", is_flag=True,
              help="With a window, measure every change in the variant's own text, from its first change to W "
                   "past its last (slower where edits are far apart), not each in the seed's context.")
@click.option("--runs-apart", type=click.IntRange(min=1), default=128, show_default=True, metavar="R",
              help="Seed context: changes less than R tokens apart are measured together, each run's rows its own "
                   "up to R tokens past it (smaller: faster on long texts, further from the variant's own text).")
@click.option("--max-memory", type=click.FloatRange(min=0, min_open=True), default=None, metavar="GB",
              help="Size the scoring window so the run stays under GB (default: 2 x batch tokens a window).")
@click.option("--variants", type=click.IntRange(min=1), default=None, help="Cap on variants per seed (default: the recipe's, 64).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed: same inputs and seed give the same dataset.")
@click.option("--skip-invalid", is_flag=True, help="Send bad seed lines to rejects.jsonl instead of stopping.")
@click.option("--split-long", is_flag=True, help="Split plain-text seeds longer than the model's context instead of rejecting them.")
@click.option("--format", "fmt", type=click.Choice(["text", "prompt-completion", "messages"]),
              default="text", show_default=True,
              help="Training columns, in TRL's dataset formats: each variant as text (what implants the seeds; "
                   "README: Does it work?), parent->variant pairs, or chat messages.")
@click.option("--prompt", "prompt_from", type=click.Choice(["parent", "seed"]), default="parent", show_default=True,
              help="What a pair's prompt (or user turn) is: the variant's parent, or its seed.")
@click.option("--separator", default="\n",
              help="Appended to the prompt (prompt-completion); backslash escapes like \\t are understood "
              "[default: \\n, a newline].")
@click.option("--chat-template", default=None, metavar="FILE",
              help="messages: a Jinja chat template (a file, or a name in templates/) [default: the tokenizer's].")
@click.option("--schedule", type=click.Choice(["blocked", "interleaved", "spaced"]), default=None,
              help="How seeds share the run [default: the recipe's schedule, else blocked].")
@click.option("--presentations", type=click.IntRange(min=1), default=None,
              help="Least rows per seed; a shorter path is repeated [default: the recipe's repeat, 24].")
@click.option("--bridges", type=click.IntRange(min=0), default=2, show_default=True,
              help="Rows a drift path may step back through (shown again) to keep each step within the step budget.")
@click.option("--license", "license_", default=None, help="License id for the dataset card [default: the recipe's].")
@click.option("--holdout", type=click.FloatRange(min=0, max=1, max_open=True), default=0.0, metavar="FRACTION",
              help="Set this share of each seed's variants aside (seeded, leaves only) in OUT/holdout.jsonl, "
                   "not in the curriculum: held-out variants for microvar evaluate.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run of the same command from its finished shards.")
@click.option("--shard-seeds", type=click.IntRange(min=1), default=32, show_default=True,
              help="Seeds per shard: finished shards survive a crash and --resume keeps them.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists (and discard an unfinished run).")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="Who runs the shards: this machine, or Ray Data actors (pip install 'microvar[ray]'; "
                   "README: Running on a cluster). Same dataset either way.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="local: processes running shards (torch threads divided between them; each holds a "
                   "model: 2 on 2 cores scored 1.7x faster, README Benchmarks) [default: 1]; "
                   "ray: actors, each loading the model once [default: 2].")
@click.option("--gpus-per-worker", type=click.FloatRange(min=0), default=None,
              help="ray: GPUs each actor asks for [default: 1 when the cluster has GPUs, else 0].")
@click.option("--ray-address", default=None, metavar="ADDRESS",
              help="ray: attach to this cluster ('auto' after `ray start --head`) instead of starting Ray here.")
@_quiet()
def expand(seeds, out, recipes, model, tokenizer, device, dtype, batch_tokens, budget, drift, drift_threshold,
           ripple_window, own_context, runs_apart, max_memory, variants,
           seed, skip_invalid, split_long, fmt, prompt_from, separator, chat_template, schedule, presentations,
           bridges, license_, holdout, resume, shard_seeds, overwrite, engine, workers, gpus_per_worker, ray_address,
           quiet):
    """Expand SEEDS (JSONL file, or - for stdin) into an Arrow dataset at OUT, each variant
    scored by the reference model and held to the volatility budget."""
    from .pipeline.options import Options
    from .pipeline.run import run_expand
    score = model != "none"
    limits = _budget_limits(budget)
    opts = Options(seeds, out, list(recipes), model if score else None, tokenizer, variants, seed, skip_invalid,
                   overwrite, split_long, progress=not quiet, score=score, device=device,
                   dtype=dtype, batch_tokens=batch_tokens, drift=drift, drift_threshold=drift_threshold,
                   budget=tuple(limits), format=fmt, prompt_from=prompt_from,
                   separator=separator.encode("latin-1", "backslashreplace").decode("unicode_escape"),
                   chat_template=chat_template, schedule=schedule, presentations=presentations, license=license_, bridges=bridges,
                   resume=resume, shard_seeds=shard_seeds, holdout=holdout, engine=engine,
                   workers=workers or (2 if engine == "ray" else 1), gpus_per_worker=gpus_per_worker,
                   ray_address=ray_address, ripple_window=ripple_window, own_context=own_context,
                   runs_apart=runs_apart,
                   max_memory=max_memory)
    if fmt != "messages" and chat_template:
        raise MicrovarError("--chat-template is for --format messages")
    if engine != "ray" and (gpus_per_worker is not None or ray_address):
        raise MicrovarError("--gpus-per-worker and --ray-address are for --engine ray")
    summary = run_expand(opts)
    if not quiet:
        _report(summary.lines(), out)


@main.command()
@click.argument("seeds", type=str)
@click.argument("templates", nargs=-1, type=str)
@click.option("--recipe", "recipes", multiple=True, help="Recipe file or shipped name; the first is the default. Repeatable.")
@click.option("--model", default=None, help="Whose tokenizer and context to check against: a local HF model dir or "
              ".gguf (default: embedded SmolLM2-135M; the model itself is not loaded).")
@click.option("--tokenizer", default=None, help="A tokenizer directory instead of the model's.")
@click.option("--variants", type=click.IntRange(min=1), default=None, help="Cap on variants per seed, as for expand.")
@click.option("--min-variants", type=click.IntRange(min=1), default=None,
              help="Warn about seeds that expand to fewer variants [default: the recipe's repeat, 24].")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed of the expansion, as for expand.")
@click.option("--no-expand", is_flag=True, help="Do not expand the seeds to count their variants (faster on big files).")
@_json()
@_quiet("Errors and warnings only (no notes).")
def lint(seeds, templates, recipes, model, tokenizer, variants, min_variants, seed, no_expand, as_json, fmt, quiet):
    """Check SEEDS (JSONL, or - for stdin), the recipes it uses and their wrap templates (plus
    TEMPLATES) in one pass: FILE:LINE:COL: severity: message for each problem. Exit 1 when
    there are errors, 0 with warnings and notes only (2: a path that cannot be read)."""
    import json

    from .tools.lint import LintOptions
    from .tools.lint import lint as run_lint

    report = run_lint(LintOptions(seeds, list(recipes), list(templates), None if model == "none" else model,
                                  tokenizer, variants, seed, min_variants, expand=not no_expand))
    if as_json or fmt == "json":
        click.echo(json.dumps(report.to_json(notes=not quiet), ensure_ascii=False, indent=1))
    else:
        for line in report.lines(notes=not quiet):
            click.echo(line)
    sys.exit(report.exit_code)


@main.command()
@click.argument("seeds", type=str)
@click.option("--id", "seed_id", required=True, help="The seed to preview.")
@click.option("--recipe", "recipes", multiple=True, help="Recipe file or shipped name; the first is the default. Repeatable.")
@click.option("--model", default=None, help="Reference model: a local HF model dir or .gguf (default: embedded "
              "SmolLM2-135M); 'none' expands without scoring.")
@click.option("--tokenizer", default=None, help="A tokenizer directory for the checks (with --model none).")
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda", "mps"]),
              help="Where the reference model runs.")
@click.option("--budget", "budget", multiple=True, metavar="LIMITS",
              help="Volatility limits like 'ripple_kl<=0.3, top1>=0.9' over the recipe's. Repeatable.")
@click.option("--variants", type=click.IntRange(min=1), default=None, help="Cap on variants (default: the recipe's).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed, as for expand.")
@click.option("--bridges", type=click.IntRange(min=0), default=2, show_default=True,
              help="Rows a drift path may step back through, as for expand.")
@click.option("--rejects/--no-rejects", default=True, show_default=True, help="Also show the rejected variants.")
@click.option("--width", type=click.IntRange(min=20), default=None, help="Columns [default: the terminal's, else 100].")
@_json()
def preview(seeds, seed_id, recipes, model, tokenizer, device, budget, variants, seed, bridges, rejects, width, as_json,
            fmt):
    """Show one seed's variants in curriculum order: each one's token diff against its parent,
    step tokens, volatility, kept or why rejected, and its place in the seed's drift path."""
    import json

    from .tools.preview import PreviewOptions, build_preview, print_preview
    limits = _budget_limits(budget)
    pv = build_preview(PreviewOptions(seeds, seed_id, list(recipes), None if model == "none" else model,
                                      tokenizer, score=model != "none", device=device, budget=tuple(limits),
                                      variants=variants, seed=seed, bridges=bridges))
    if as_json or fmt == "json":
        click.echo(json.dumps(pv.to_json(rejects), ensure_ascii=False, indent=1))
    else:
        print_preview(pv, width=width, rejects=rejects)


@main.command()
@click.argument("out", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--by", type=click.Choice(["lora_level", "phase"]), required=True, help="Column to split on.")
@_output("target", "--to", default=None, help="Directory for the parts [default: OUT-by-COLUMN].")
@click.option("--overwrite", is_flag=True, help="Replace the target if it exists.")
@_quiet("No summary line.")
def split(out, by, target, overwrite, quiet):
    """Write one dataset per LoRA level or phase of OUT, rows in curriculum order."""
    from .pipeline.split import split_dataset

    counts = split_dataset(out, by, target, overwrite)
    if not quiet:
        click.echo(", ".join(f"{k}: {v} rows" for k, v in counts.items()), err=True)


@main.command()
@click.argument("out", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.argument("repo_id", required=False)
@click.option("--private", is_flag=True, help="Create the Hub repo private (an existing repo keeps its visibility).")
@click.option("--token", default=None, help="Hugging Face token with write access [default: HF_TOKEN, else the "
              "`hf auth login` token].")
@click.option("--revision", default=None, metavar="BRANCH", help="Push to this branch (created if missing).")
@_output("to_dir", "--to-dir", default=None, help="Write the Hub-ready folder here instead of uploading it.")
@click.option("--license", "license_", default=None, metavar="ID",
              help="License id for the card [default: the one OUT was made with].")
@click.option("--overwrite", is_flag=True,
              help="Replace the -o folder if it exists, or the files of a Hub repo that has some.")
@_quiet("No upload progress bar or summary line (the URL still goes to stdout).")
def push(out, repo_id, private, token, revision, to_dir, license_, overwrite, quiet):
    """Upload the dataset OUT to the Hub dataset repo REPO_ID (or write it to a folder, -o DIR):
    parquet shards in curriculum order plus a dataset card, in one commit."""
    from .export.hub import push as push_to_hub
    from .export.hub import to_dir as write_dir

    if (repo_id is None) == (to_dir is None):
        raise MicrovarError("give exactly one of REPO_ID (upload to the Hub) or -o DIR (a local folder)")
    if to_dir is not None:
        if private or token or revision:
            raise MicrovarError("--private, --token and --revision are for uploading to REPO_ID, not --to-dir / -o DIR "
                                  "(a local folder)")
        folder = write_dir(out, to_dir, overwrite=overwrite, license=license_)
        if not quiet:
            click.echo(f"wrote {folder.path}: {folder.rows} rows in {folder.shards} parquet shard(s) and README.md",
                       err=True)
        return
    if quiet or not sys.stderr.isatty():
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()  # the upload's bars: worth watching on a terminal, noise in a log
    url = push_to_hub(out, repo_id, private=private, token=token, revision=revision, license=license_,
                      overwrite=overwrite)
    if not quiet:
        click.echo(f"pushed {out} to {url}", err=True)
    click.echo(url)


@main.command()
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--model", default=None, help="Base model: a local HF model dir or .gguf (default: embedded SmolLM2-135M).")
@_output("output", required=True, help="Adapter directory to write.")
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
@_quiet()
def train(out, model, output, level, steps, batch_size, lr, lora_r, device, seed, overwrite, quiet):
    """Train a LoRA adapter on the dataset OUT in curriculum order: phases ascending, each
    phase's rows in their order (needs `pip install 'microvar[train]'`)."""
    from .train.lora import train as run_train

    report = run_train(out, model, output, level, steps, batch_size=batch_size, lr=lr, lora_r=lora_r,
                       device=device, overwrite=overwrite, seed=seed, progress=not quiet and sys.stderr.isatty())
    if not quiet:
        _report(report.lines(), output)


@main.command()
@click.argument("adapters", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--data", "out", required=True, type=click.Path(path_type=Path),
              help="The dataset the adapters were trained on (a microvar expand output directory).")
@click.option("--control", default=None, type=click.Path(path_type=Path),
              help="Control text: plain text with blank-line-separated documents, or JSONL with 'text' "
              "[default: the base model's own samples from neutral prompts, cached].")
@click.option("--seeds", default=None, help="The seeds file, for the targets' continuations [default: the one "
              "the dataset's manifest names, when it is still there unchanged].")
@click.option("--model", default=None, help="Base model: a local HF model dir or .gguf (default: embedded SmolLM2-135M).")
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda", "mps"]),
              help="Where the models run.")
@_batch_tokens("half of expand's, as it keeps two vocabulary-sized rows a position: 1024 on CPU, 8192 on "
               "CUDA, 192 and 1536 for Gemma 3")
@_output("output", default=None, type=click.Path(path_type=Path, dir_okay=False),
         help="Write every figure (per seed and overall) as JSON.")
@_quiet("No table.")
def evaluate(adapters, out, control, seeds, model, device, batch_tokens, output, quiet):
    """Measure LoRA ADAPTERS against their base model: implant (NLL of the seeds' targets, texts,
    held-out variants and rows by stage), collateral (KL, NLL change and top-1 agreement on
    control text) and echo (prompt copying in greedy continuations)."""
    from .train.evaluate import EvalOptions, table, write_result
    from .train.evaluate import evaluate as run_evaluate

    result = run_evaluate(EvalOptions(list(adapters), out, control, seeds, model, device, batch_tokens, output))
    if output is not None:
        write_result(result, output)
    if not quiet:
        for line in table(result):
            click.echo(line, err=True)
        if output is not None:
            click.echo(f"wrote {output}", err=True)


@main.command()
@click.argument("seeds", type=str)
@_output("out", "--out", required=True, type=click.Path(path_type=Path, dir_okay=False),
         help="The response map to write (JSON).")
@click.option("--recipe", "recipes", multiple=True, help="Recipe file or shipped name; the first is the default. Repeatable.")
@click.option("--model", default=None, help="Reference model: a local HF model dir or .gguf (default: embedded SmolLM2-135M).")
@click.option("--variants", type=click.IntRange(min=1), default=16, show_default=True,
              help="Variants per seed to measure (the root included).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed of the expansion.")
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda", "mps"]),
              help="Where the reference model runs; auto picks CUDA when present.")
@click.option("--dtype", default="auto", show_default=True, type=click.Choice(["auto", "float32", "bfloat16", "float16"]),
              help="auto: bfloat16 on CUDA, float32 elsewhere.")
@_batch_tokens()
@click.option("--drift-threshold", type=click.FloatRange(min=0, min_open=True), default=0.1, show_default=True,
              help="Relative hidden-state change that counts as drift.")
@click.option("--html", "html", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Also write the map as a self-contained HTML page.")
@_quiet()
def probe(seeds, out, recipes, model, variants, seed, device, dtype, batch_tokens, drift_threshold, html, quiet):
    """Measure how the reference model reacts to each kind of edit of SEEDS: per seed and edit
    kind, surprisal, ripple KL by distance from the edit, top-1 agreement and the layer where
    hidden states start to drift; written to OUT as JSON (schema microvar.probe/1)."""
    from .train.lora import passive_openmp

    passive_openmp()  # before torch loads: a busy CPU otherwise slows every forward many times
    from .tools.probe import ProbeOptions, run_probe

    opts = ProbeOptions(seeds, out, list(recipes), model, variants, seed, device, dtype, batch_tokens, drift_threshold,
                        progress=not quiet)
    result = run_probe(opts)
    if html is not None:
        from .tools.report import write_probe_page

        write_probe_page(result, html)
    if not quiet:
        t = result["_timing"]
        click.echo(f"probed {len(result['seeds'])} seeds, {t['variants']} variants on {result['model']['device']} "
                   f"in {t['seconds']:.1f} s ({t['load_seconds']:.1f} s loading the model)", err=True)
        for kind, k in result["kinds"].items():
            s, r, d = k["surprisal"], k["ripple_kl"], k["drift"]
            click.echo(f"  {kind:<18} n {k['n']:>4}  surprisal {_num(s['mean'])} ± {_num(s['std'])}  ripple_kl "
                       f"{_num(r['mean'])}  top1 {_num(k['top1']['mean'])}  drift starts at layer "
                       f"{'-' if d['start_layer'] is None else d['start_layer']}", err=True)
        click.echo(f"wrote {out}" + (f" and {html}" if html is not None else ""), err=True)


def _num(x) -> str:
    return "    -" if x is None else f"{x:5.2f}"


@main.command()
@click.argument("out", type=click.Path(path_type=Path, exists=True, file_okay=False))
@_output("output", required=True, type=click.Path(path_type=Path, dir_okay=False), help="The HTML file to write.")
@click.option("--model", default=None, help="Model for the token fields: a local HF model dir or .gguf [default: the "
              "one OUT was scored with]; 'none' skips the fields and charts.")
@click.option("--probe", "probe_map", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="A response map from `microvar probe`, shown as a page of the report.")
@click.option("--eval", "evaluation", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="An `microvar evaluate -o` file: adds a section with its figures and a chart.")
@click.option("--seeds", "seed_filter", default=None, metavar="IDS",
              help="Only these seeds: comma-separated ids or shell patterns (think-*).")
@click.option("--max-seeds", type=click.IntRange(min=1), default=None, help="At most this many seeds (after --seeds).")
@click.option("--rows-per-seed", type=click.IntRange(min=1), default=24, show_default=True,
              help="Path rows shown (and measured) per seed.")
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda", "mps"]),
              help="Where the model runs; auto picks CUDA when present.")
@click.option("--dtype", default="auto", show_default=True, type=click.Choice(["auto", "float32", "bfloat16", "float16"]),
              help="auto: bfloat16 on CUDA, float32 elsewhere.")
@_batch_tokens()
@_quiet()
def report(out, output, model, probe_map, evaluation, seed_filter, max_seeds, rows_per_seed, device, dtype, batch_tokens,
           quiet):
    """Write a self-contained HTML report of the dataset OUT: per seed its curriculum path as
    token probability fields, the ripple and layer drift of each variant, histograms of stages
    and volatility, rejects by reason and bridge gaps."""
    from .train.lora import passive_openmp

    passive_openmp()  # before torch loads: a busy CPU otherwise slows every forward many times
    from .tools.report import ReportOptions, build_report

    opts = ReportOptions(out, output, model, probe_map, evaluation, seed_filter, max_seeds, rows_per_seed, device,
                         dtype, batch_tokens, progress=not quiet and sys.stderr.isatty())
    summary = build_report(opts)
    if not quiet:
        for line in summary:
            click.echo(line, err=True)
        click.echo(f"wrote {output}", err=True)
