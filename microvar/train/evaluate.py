"""`microvar evaluate`: did an adapter take up its seeds, and what else in the model moved?

For each LoRA adapter against its base model, on the same texts and tokenizer:
  implant     mean per-token NLL under base and adapter, and its change (negative =
              learned), per seed and overall, of each seed's target (the seed with its
              continuation where it has one), of the seed text alone, of held-out variants
              when the dataset has them, and of a sample of the dataset's rows per stage
  collateral  on control text unrelated to the seeds: mean per-token KL(base || adapter),
              the change in NLL, and the share of positions where both predict the same token
  echo        greedy continuations of the control texts' openings: the share of their token
              4-grams found in the prompt (a model that learned to copy its prompt repeats it)

Every text is scored behind the scorer's context token, in right-padded batches (the
scorer's ``pad_batch`` and batching). All adapters are loaded into one PEFT model, and each
batch runs once with the adapters disabled (the base) and once per adapter, so the base is
computed once and KL needs no stored distributions.

The default control text is the base model's own: continuations sampled with a fixed seed
from short neutral prompts in English and Russian (``prompts/control.jsonl``), generated once
and cached under ``$MICROVAR_CACHE/control``, keyed by the model's hash.

This module runs it and writes the result; ``eval_inputs.py`` reads what it needs and
``eval_measure.py`` does the measuring."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import MicrovarError
from .eval_inputs import (
    STAGE_ROWS,
    Adapter,
    EvalData,
    _json,
    check_adapter,
    default_control,
    read_adapter,
    read_control,
    read_data,
)
from .eval_measure import (
    ECHO_NEW_TOKENS,
    ECHO_PROMPT_TOKENS,
    ECHO_PROMPTS,
    NGRAM,
    Sums,
    _r,
    _stop_ids,
    load_adapters,
    measure,
    measure_echo,
)


@dataclass
class EvalOptions:
    adapters: list[Path]
    out: Path
    control: Path | None = None
    seeds: str | None = None
    model: str | None = None
    device: str = "auto"
    batch_tokens: int | None = None    # None: default_batch_tokens(rows=2), 1024 on CPU with SmolLM2
    output: Path | None = None


def evaluate(opts: EvalOptions) -> dict:
    """Every figure of the module's doc, as one JSON-ready dict (see README `microvar evaluate`)."""
    from ..model.load import load_model, load_tokenizer, model_hash, resolve
    from ..model.score import context_token, default_batch_tokens
    from .lora import passive_openmp, require_trl

    start, cpu_start = time.perf_counter(), time.process_time()
    passive_openmp()
    require_trl()
    if opts.output is not None and not Path(opts.output).parent.is_dir():
        raise MicrovarError(f"-o {opts.output}: {Path(opts.output).parent} does not exist")
    data = read_data(opts.out, opts.seeds)
    control = read_control(opts.control) if opts.control is not None else None
    ref = resolve(opts.model)
    model_sha = model_hash(ref)
    adapters = [read_adapter(p) for p in opts.adapters]
    for a in adapters:
        check_adapter(a, model_sha, ref.name, set(data.seed_texts), data.seeds_sha256)
    tk, _ = load_tokenizer(opts.model)
    ctx = context_token(tk.hf)
    lm = load_model(ref, opts.device, "auto")
    control_source = str(opts.control) if control is not None else None
    if control is None:
        control, cache_file = default_control(lm, tk, model_sha)
        control_source = f"default: the base model's samples ({cache_file.name})"
    model = load_adapters(lm, adapters)

    groups = _texts(data, control)
    room = (tk.context or 1 << 30) - 1   # a text longer than the context is scored on its beginning
    encoded = [ids[:room] for ids in tk.encode([text for _, text in groups])]
    batch_tokens = opts.batch_tokens or default_batch_tokens(lm.device, tk.vocab_size, rows=2)
    sums = measure(model, len(adapters), encoded, ctx, batch_tokens)
    echo_prompts = [ids[:ECHO_PROMPT_TOKENS] for ids in tk.encode(control[:ECHO_PROMPTS])]
    echo = measure_echo(model, len(adapters), [[ctx] + p for p in echo_prompts if p], _stop_ids(tk.hf, ctx))
    result = _assemble(data, adapters, groups, sums, echo)
    result.update({
        "model": {"name": ref.name, "sha256": model_sha, "device": lm.device},
        "dataset": {"path": str(data.path), "fingerprint": data.fingerprint, "seeds_sha256": data.seeds_sha256,
                    "seeds": len(data.seed_texts)},
        "control": {"source": control_source, "documents": len(control),
                    "tokens": sum(s.tokens for (kind, _), s in zip(groups, sums) if kind[0] == "control")},
        "echo_settings": {"prompts": len(echo_prompts), "prompt_tokens": ECHO_PROMPT_TOKENS,
                          "new_tokens": ECHO_NEW_TOKENS, "ngram": NGRAM},
        "heldout_source": data.heldout_source,
        "stage_rows_per_seed": STAGE_ROWS,
        "seconds": round(time.perf_counter() - start, 2),
        "cpu_seconds": round(time.process_time() - cpu_start, 2),   # all threads; wall time on a busy CPU says less
    })
    return result


def _texts(data: EvalData, control: list[str]) -> list[tuple[tuple, str]]:
    """Every text to score with its label: (("target"|"seed"|"heldout", seed), text),
    (("stage", stage, seed), text) or (("control",), text)."""
    out: list[tuple[tuple, str]] = []
    for sid in data.seed_texts:
        out.append((("target", sid), data.targets[sid]))
        out.append((("seed", sid), data.seed_texts[sid]))
        for text in (data.heldout or {}).get(sid, []):
            out.append((("heldout", sid), text))
    for stage in data.stage_order:
        for sid, texts in data.stages[stage].items():
            out.extend((("stage", stage, sid), t) for t in texts)
    out.extend((("control",), d) for d in control)
    return out


def _assemble(data: EvalData, adapters: list[Adapter], groups, sums: list[Sums], echo: list[dict]) -> dict:
    """Sum the per-text figures by what they measure; the JSON of `microvar evaluate -o`."""
    by: dict[tuple, Sums] = {}
    for (label, _), s in zip(groups, sums):
        keys = [label[:1], label] if label[0] != "stage" else [label[:2], label]
        for key in dict.fromkeys(keys):   # ("control",) is both the kind and the label
            by.setdefault(key, Sums()).add(s)

    def block(kind: str, a: int | None) -> dict | None:
        if kind == "heldout" and data.heldout is None:
            return None
        overall = by.get((kind,), Sums())
        fig = (lambda s: s.base_figures()) if a is None else (lambda s: s.figures(a))
        return {"overall": fig(overall),
                "per_seed": {sid: fig(by[(kind, sid)]) for sid in data.seed_texts if (kind, sid) in by}}

    def stages(a: int | None) -> dict:
        fig = (lambda s: s.base_figures()) if a is None else (lambda s: s.figures(a))
        return {st: fig(by[("stage", st)]) for st in data.stage_order if ("stage", st) in by}

    def implant(a: int | None) -> dict:
        return {"target": block("target", a), "seed": block("seed", a), "heldout": block("heldout", a),
                "stages": stages(a)}

    control = by.get(("control",), Sums())
    base = {"implant": implant(None), "collateral": control.base_figures(), "echo": echo[0]["echo"],
            "echo_ngrams": echo[0]["ngrams"]}
    rows = []
    for a, ad in enumerate(adapters):
        trained = sorted(ad.trained_seeds) if ad.trained_seeds is not None else None
        rows.append({"path": str(ad.path), "name": ad.name, "trained_seeds": trained,
                     "untrained_seeds_in_dataset": (sorted(set(data.seed_texts) - set(trained)) if trained else []),
                     "implant": implant(a), "collateral": control.figures(a),
                     "echo": echo[a + 1]["echo"], "echo_change": _r(echo[a + 1]["echo"] - echo[0]["echo"])})
    return {"targets": {sid: {"text": data.targets[sid], "source": data.target_source[sid]}
                        for sid in data.seed_texts},
            "base": base, "adapters": rows}


def table(result: dict) -> list[str]:
    """The stderr table: the base as the reference row, then one row per adapter."""
    head = (f"{'':<24} {'target':>7} {'Δ':>7} {'seed':>7} {'Δ':>7} {'held':>7} {'Δ':>7} "
            f"{'ctl KL':>7} {'ctl ΔNLL':>8} {'top-1':>6} {'echo':>6}")
    base = result["base"]
    lines = [f"implant: mean NLL per token (nats; Δ < 0: learned); collateral on {result['control']['tokens']} "
             f"control tokens; echo: share of greedy {NGRAM}-grams copied from the prompt", head]
    imp = base["implant"]
    lines.append(f"{'base':<24} {_f(imp['target']['overall']['nll'])} {'':>7} {_f(imp['seed']['overall']['nll'])} "
                 f"{'':>7} {_f(_held(imp, 'nll'))} {'':>7} {_f(0.0)} {_f(0.0, 8)} {_f(1.0, 6)} "
                 f"{_f(base['echo'], 6)}")
    for row in result["adapters"]:
        imp, col = row["implant"], row["collateral"]
        t, s = imp["target"]["overall"], imp["seed"]["overall"]
        lines.append(f"{_short(row['name'], 24):<24} {_f(t['nll'])} {_f(t['nll_change'], sign=True)} {_f(s['nll'])} "
                     f"{_f(s['nll_change'], sign=True)} {_f(_held(imp, 'nll'))} "
                     f"{_f(_held(imp, 'nll_change'), sign=True)} {_f(col['kl'])} {_f(col['nll_change'], 8, True)} "
                     f"{_f(col['top1'], 6)} {_f(row['echo'], 6)}")
    if result["heldout_source"] is None:
        lines.append("held-out variants: none in the dataset (expand --holdout writes them)")
    for row in result["adapters"]:
        stages = ", ".join(f"{st} {v['nll_change']:+.3f}" for st, v in row["implant"]["stages"].items()
                           if v["nll_change"] is not None)
        lines.append(f"  {_short(row['name'], 22)} ΔNLL by stage: {stages}")
    return lines


def load_result(path: Path) -> dict:
    """An `evaluate -o` file; MicrovarError when it is not one."""
    obj = _json(Path(path))
    if not isinstance(obj.get("base"), dict) or not isinstance(obj.get("adapters"), list):
        raise MicrovarError(f"--eval {path}: not a file written by microvar evaluate -o (no base and adapters)")
    return obj


def write_result(result: dict, path: Path) -> None:
    from ..model.load import _atomic_write

    _atomic_write(Path(path), json.dumps(result, ensure_ascii=False, indent=1) + "\n")


def _held(implant: dict, key: str):
    return implant["heldout"]["overall"][key] if implant["heldout"] else None


def _f(x, width: int = 7, sign: bool = False) -> str:
    if x is None:
        return f"{'-':>{width}}"
    return f"{x:>+{width}.3f}" if sign else f"{x:>{width}.3f}"


def _short(name: str, width: int) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1):]
