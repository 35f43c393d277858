"""What a run reads before it expands: the recipes the seeds name, long seeds cut to fit the
context, the chat template of the messages format, the expander and the reference model."""

from __future__ import annotations

import re
from pathlib import Path

from ..dsl.recipe import Recipe, load_recipe
from ..errors import InputError, InputErrors, MicrovarError
from ..expand.expander import Expander
from ..expand.seeds import Seed
from ..expand.tokens import RefTokenizer, same_tokenizer
from ..model.load import load_tokenizer
from ..resources import data_dir
from .options import Options

def choose_recipes(seeds: list[Seed], refs: list[str], seeds_dir: Path | None,
                   unreadable: dict[str, InputError] | None = None) -> tuple[Recipe, dict[str, Recipe]]:
    """The default recipe (first --recipe, else the shipped one) and every recipe a seed names.
    Every error of every recipe is raised together, as lint lists them. With ``unreadable``, a
    seed whose own recipe cannot be read is put there instead (its id -> an error at its line
    that quotes the recipe's), so that it is listed with the seed file's other bad lines, or
    rejected like them under --skip-invalid; the --recipe ones still raise."""
    errors: list[InputError] = []
    loaded = [_load_recipe(r, None, errors) for r in refs] or [_load_recipe("default", None, errors)]
    by_ref: dict[str, Recipe] = {}
    for ref, recipe in zip(refs, loaded):
        if recipe is not None:
            by_ref[ref] = by_ref[recipe.name] = recipe
    failed: dict[str, list[InputError]] = {ref: [] for ref in set(refs) - set(by_ref)}
    for s in seeds:
        if not s.recipe or s.recipe in by_ref:
            continue
        first = s.recipe not in failed
        if first:
            missing: list[InputError] = []
            recipe = _load_recipe(s.recipe, seeds_dir, missing)
            if recipe is not None:
                by_ref[s.recipe] = recipe
                continue
            failed[s.recipe] = missing
        errs = failed[s.recipe]
        if not errs:
            continue        # a --recipe that failed: its own errors are raised below
        if len(errs) == 1 and errs[0].file == s.recipe and errs[0].line is None:
            err = InputError(s.file, s.line, f"recipe {s.recipe!r}: {errs[0].message}")
            if unreadable is None:
                errors.append(err)
        else:
            shown = "; ".join(e.render().splitlines()[0] for e in errs[:2])
            more = f"; and {len(errs) - 2} more" if len(errs) > 2 else ""
            err = InputError(s.file, s.line, f"recipe {s.recipe!r} cannot be read: {shown}{more}")
            if unreadable is None and first:
                errors.extend(errs)    # its errors once, not once per seed that names it
        if unreadable is not None:
            unreadable[s.id] = err
    if errors:
        raise InputErrors(errors)
    return loaded[0], by_ref


def _load_recipe(ref: str, relative_to: Path | None, errors: list[InputError]) -> Recipe | None:
    try:
        return load_recipe(ref, relative_to)
    except InputErrors as e:
        errors.extend(e.errors)
    except InputError as e:
        errors.append(e)
    return None


_SPLIT_AT = re.compile(r"(?<=\n)|(?<=[.!?…。])\s+")


def split_long(seed: Seed, tk: RefTokenizer, limit: int) -> list[Seed] | None:
    """Pieces of a plain-text seed that each fit ``limit`` tokens, cut at lines then sentences."""
    if seed.parts is not None or len(tk.encode([seed.text])[0]) <= limit:
        return None
    units = [u for u in _SPLIT_AT.split(seed.text) if u]
    pieces, current = [], ""
    for unit in units:
        joined = current + (" " if current and not current.endswith("\n") else "") + unit
        if current and len(tk.encode([joined])[0]) > limit:
            pieces.append(current)
            current = unit
        else:
            current = joined
    pieces.append(current)
    return [Seed(f"{seed.id}#{k}", p.strip("\n") or p, None, None, seed.recipe, seed.meta, seed.file, seed.line)
            for k, p in enumerate(pieces, start=1)]


def read_chat_template(opts: Options, tk: RefTokenizer) -> str | None:
    """The chat template the messages format is meant for, checked by rendering a chat with it:
    --chat-template (a file, or a name in templates/), else the tokenizer's own."""
    sample = [{"role": "user", "content": "Ритм, not quantity."}, {"role": "assistant", "content": "Ритм."}]
    text = None
    if opts.chat_template:
        path = Path(opts.chat_template)
        if not path.is_file():
            path = data_dir("templates") / opts.chat_template
        if not path.is_file():
            raise MicrovarError(f"--chat-template {opts.chat_template}: no such file (also looked in "
                                f"{data_dir('templates')})")
        text = path.read_text(encoding="utf-8")
    elif not getattr(tk.hf, "chat_template", None):
        raise MicrovarError(f"--format messages: the tokenizer {tk.name} has no chat template; pass "
                            "--chat-template FILE (a Jinja chat template, e.g. chat_plain.jinja from templates/)")
    try:
        tk.hf.apply_chat_template(sample, chat_template=text, tokenize=False)
    except Exception as e:  # jinja2 errors of several kinds; all mean the template is unusable
        where = opts.chat_template or f"the chat template of {tk.name}"
        raise MicrovarError(f"{where}: cannot render a chat: {e}") from None
    return text


def make_expander(opts: Options, tk: RefTokenizer, lm) -> Expander:
    """The expander of a run: model-guided edits when there is a reference model."""
    advisor = None
    if lm is not None:
        from ..model.advisor import Advisor

        advisor = Advisor(lm, tk)
    return Expander(tk, seed=opts.seed, variants=opts.variants, advisor=advisor)


def load_reference(opts: Options, tk: RefTokenizer):
    """The scoring model, refusing one whose tokenizer is not the one the checks used."""
    from ..model.load import load_model, resolve

    ref = resolve(opts.model)
    if opts.tokenizer is not None:
        model_tk, _ = load_tokenizer(opts.model, None)
        why = same_tokenizer(tk, model_tk)
        if why:
            raise MicrovarError(f"--tokenizer {opts.tokenizer} is not the tokenizer of --model {ref.name}: {why}; "
                                "variants checked with one tokenizer cannot be scored by a model that reads "
                                "another (drop --tokenizer, or pass --model none)")
    lm = load_model(ref, opts.device, opts.dtype)
    n_embed = lm.model.get_input_embeddings().weight.shape[0]
    if tk.vocab_size > n_embed:
        raise MicrovarError(f"--model {ref.name}: the tokenizer has {tk.vocab_size} tokens but the model only "
                            f"{n_embed} embeddings; they do not belong together")
    return lm
