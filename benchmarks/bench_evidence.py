"""Does the curriculum work? microvar's curriculum against real alternatives, at equal cost.

Every arm trains a fresh LoRA on the same base model with the same settings (rank, alpha,
learning rate, batch, seed, TRL's SFTTrainer as ``microvar train`` configures it) on the
same seeds, until the same number of trained target tokens (counted through the trainer's
loss mask: the labels its collator builds) has gone through it:

  microvar  the default recipe's curriculum, in order, in the default format (text: each
            variant alone, loss on all of it)
  shuffled  the same rows in a random order
  pairs     the same curriculum, in order, as prompt-completion pairs (parent -> variant, loss
            on the variant; the default format until this benchmark showed it implants nothing)
  naive     each seed's target (its text and continuation), repeated, seeds in turn
  nlpaug    the targets augmented by nlpaug (random word swap and delete, keyboard and
            character noise; augmenters that run offline), shuffled as an augmentation
            pipeline would feed them

At checkpoints (every ``tokens / checkpoints`` trained tokens) it records, with
``microvar.evaluate``'s measurements: implant (mean NLL per token of each seed's target and
of held-out variants, which ``expand --holdout`` set aside; implant = base NLL - NLL) and
collateral (KL(base || adapter) and the NLL change on the base model's own control text,
top-1 agreement, and echo: the share of greedy continuations' 4-grams copied from the
prompt). Each arm becomes a curve in the implant-collateral plane.

Summary: the common implant level is the weakest arm's final implant (over arms whose final
implant is positive); for each arm, the collateral at the first point where its implant
reaches that level (linear between checkpoints), the presentations per seed by then, and
the collateral at the end. The table, a PNG and a last JSON line follow.

    pip install -e '.[bench]'
    python benchmarks/bench_evidence.py                 # full run on the default model (CPU: ~40 min)
    python benchmarks/bench_evidence.py --quick         # mechanics only: a tiny random model

The expanded dataset is kept in ``--work`` and reused by a later run with the same seeds and
options (delete it to expand again)."""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # spinning OpenMP threads make a shared CPU ~10x slower

ROOT = Path(__file__).resolve().parent.parent
SEEDS = [ROOT / "data" / "seeds.jsonl", ROOT / "tests" / "data" / "plain_seeds.jsonl"]
# the default run: what fits about 40 minutes of 2 CPU cores (README: why not all 45 seeds)
DEFAULT_IDS = ["think-ru-1", "lithography-ru", "bridge-ru", "rhythm-en", "anchor-en", "capital-en", "steps-en",
               "code-markup"]
ARMS = ("microvar", "shuffled", "pairs", "naive", "nlpaug")
HELDOUT_PER_SEED = 3   # held-out variants measured per seed (the first ones holdout.jsonl lists)
CONTROL_DOCS = 12      # control documents measured at each checkpoint (of the 44 sampled by evaluate)
QUICK = {"seeds": 4, "variants": 16, "checkpoints": 3}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=Path, nargs="+", default=SEEDS, help="seed files (JSONL), joined")
    p.add_argument("--ids", nargs="+", default=DEFAULT_IDS, help="the seeds to use, by id ('all': every seed)")
    p.add_argument("--work", type=Path, default=ROOT / ".bench-evidence", help="expanded data and results")
    p.add_argument("--tokens", type=int, default=None,
                   help="trained target tokens per arm [default: the curriculum's, i.e. one pass over it]")
    p.add_argument("--checkpoints", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--holdout", type=float, default=0.2)
    p.add_argument("--variants", type=int, default=None, help="variants cap per seed for the expansion")
    p.add_argument("--recipe", default=None, help="a recipe instead of the default (to try a change of defaults)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    p.add_argument("--plot", type=Path, default=None, help="PNG [default: WORK/evidence.png]")
    p.add_argument("--quick", action="store_true", help="a tiny random model and few seeds: mechanics, not outcome")
    return p.parse_args(argv)


# ---------------------------------------------------------------- data


def joined_seeds(files: list[Path], work: Path, ids: list[str], limit: int | None) -> Path:
    """The chosen seeds of the seed files as one JSONL, written into the work folder."""
    lines = []
    for f in files:
        for line in f.read_text(encoding="utf-8").splitlines():
            if line.strip() and (ids == ["all"] or json.loads(line).get("id") in ids):
                lines.append(line)
    lines = lines[:limit] if limit else lines
    path = work / "seeds.jsonl"
    text = "\n".join(lines) + "\n"
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")
    return path


def expanded(seeds: Path, work: Path, args, model: str | None) -> Path:
    """The curriculum with held-out variants (expand --holdout), reused when the inputs match."""
    from microvar.pipeline.options import Options
    from microvar.pipeline.run import run_expand

    recipe = Path(args.recipe).read_text("utf-8") if args.recipe and Path(args.recipe).is_file() else args.recipe
    key = hashlib.sha256(json.dumps([seeds.read_text("utf-8"), args.holdout, args.variants, args.seed,
                                     model, args.quick] + ([recipe] if recipe else [])).encode()).hexdigest()[:16]
    out = work / f"data-{key}"
    if (out / "manifest.json").is_file():
        print(f"reusing {out}", file=sys.stderr)
        return out
    t0 = time.perf_counter()
    summary = run_expand(Options(str(seeds), out, recipes=[args.recipe] if args.recipe else [],
                                 model=None if model == "none" else model, score=model != "none",
                                 variants=args.variants, seed=args.seed, holdout=args.holdout, overwrite=True,
                                 format="prompt-completion",   # both formats' columns: the pairs arm needs them
                                 progress=sys.stderr.isatty()))
    print(f"expanded {summary.seeds} seeds in {time.perf_counter() - t0:.0f} s: {summary.curriculum['rows']} rows, "
          f"{summary.held_out} variants held out", file=sys.stderr)
    return out


def arm_rows(arm: str, rows: list[dict], targets: dict[str, str], seed: int) -> list[dict]:
    """One arm's training rows, in the order it trains them (enough to cycle through: the
    trainer stops at the token budget)."""
    from microvar.export.dataset import variant_text

    if arm == "microvar":
        return [{"text": variant_text(r), "seed_id": r["seed_id"]} for r in rows]
    if arm == "shuffled":
        out = arm_rows("microvar", rows, targets, seed)
        random.Random(seed).shuffle(out)
        return out
    if arm == "pairs":
        return [{"prompt": r["prompt"], "completion": r["completion"], "seed_id": r["seed_id"]} for r in rows]
    ids = sorted(targets)
    if arm == "naive":
        return [{"text": targets[s], "seed_id": s} for _ in range(len(rows) // len(ids) + 1) for s in ids]
    out = [{"text": t, "seed_id": s} for s, t in augmented(targets, len(rows), seed)]
    random.Random(seed).shuffle(out)
    return out


def augmented(targets: dict[str, str], n: int, seed: int) -> list[tuple[str, str]]:
    """n nlpaug augmentations of the targets, seeds in turn, augmenters in turn."""
    import nlpaug.augmenter.char as nac
    import nlpaug.augmenter.word as naw
    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    augmenters = [naw.RandomWordAug(action="swap"), naw.RandomWordAug(action="delete"),
                  nac.KeyboardAug(aug_word_p=0.1), nac.RandomCharAug(action="substitute", aug_word_p=0.1)]
    ids = sorted(targets)
    out = []
    for k in range(n):
        sid = ids[k % len(ids)]
        text = augmenters[(k // len(ids)) % len(augmenters)].augment(targets[sid])
        out.append((sid, text[0] if isinstance(text, list) else text))
    return out


# ---------------------------------------------------------------- models


def tiny_model(work: Path) -> Path:
    """A tiny random Llama with the default tokenizer (--quick)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from microvar.model.load import load_tokenizer

    d = work / "tiny-llama"
    if not (d / "config.json").is_file():
        torch.manual_seed(0)
        tk, _ = load_tokenizer(None)
        tk.hf.save_pretrained(str(d))
        config = LlamaConfig(vocab_size=tk.vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                             num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512)
        LlamaForCausalLM(config).save_pretrained(str(d))
    return d


class Meter:
    """The evaluation texts as token ids, and the base model's figures on them."""

    def __init__(self, tk, targets: dict[str, str], heldout: dict[str, list[str]], control: list[str],
                 echo_prompts: list[list[int]], ctx: int, stop_ids: set[int], batch_tokens: int = 1024) -> None:
        self.ids = {"target": tk.encode([targets[s] for s in sorted(targets)]),
                    "heldout": tk.encode([t for s in sorted(heldout) for t in heldout[s][:HELDOUT_PER_SEED]]),
                    "control": tk.encode(control)}
        self.echo_prompts, self.ctx, self.stop_ids, self.batch_tokens = echo_prompts, ctx, stop_ids, batch_tokens
        self.base: dict | None = None
        self.start: dict | None = None

    def __call__(self, model) -> dict:
        """Figures of adapter a0 (and, the first time, of the base)."""
        from microvar.train.eval_measure import ECHO_NEW_TOKENS, Sums, echo_share, generate, measure

        was_training = model.training
        model.eval()
        fig = {}
        for name, texts in self.ids.items():
            total = Sums(nll=[0.0], kl=[0.0], agree=[0.0])
            for s in measure(model, 1, texts, self.ctx, self.batch_tokens):
                total.add(s)
            fig[name] = total.figures(0)
        found = grams = 0
        for p, c in zip(self.echo_prompts, generate(model, self.echo_prompts, ECHO_NEW_TOKENS, self.stop_ids)):
            f, g = echo_share(p, c)
            found, grams = found + f, grams + g
        fig["echo"] = found / grams if grams else 0.0
        if self.base is None:
            with model.disable_adapter():
                base_cont = generate(model, self.echo_prompts, ECHO_NEW_TOKENS, self.stop_ids)
            pairs = [echo_share(p, c) for p, c in zip(self.echo_prompts, base_cont)]
            self.base = {k: fig[k]["nll_base"] for k in self.ids} | {
                "echo": sum(f for f, _ in pairs) / max(1, sum(g for _, g in pairs))}
        if was_training:
            model.train()
        return {"target_nll": fig["target"]["nll"], "heldout_nll": fig["heldout"]["nll"],
                "implant": self.base["target"] - fig["target"]["nll"],
                "heldout_implant": (self.base["heldout"] - fig["heldout"]["nll"]) if fig["heldout"]["tokens"] else None,
                "kl": fig["control"]["kl"], "control_nll_change": fig["control"]["nll_change"],
                "top1": fig["control"]["top1"], "echo": fig["echo"]}


# ---------------------------------------------------------------- training


def train_arm(arm: str, rows: list[dict], model_path: str | None, tokenizer, meter: Meter, budget: int,
              args) -> dict:
    """Train one arm to ``budget`` trained target tokens; its checkpoints."""
    import warnings

    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import TrainerCallback, set_seed
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import SFTTrainer

    from microvar.model.load import load_model, resolve
    from microvar.train.lora import sft_config

    t0 = time.perf_counter()
    lm = load_model(resolve(model_path), "cpu", "float32")
    set_seed(args.seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        model = get_peft_model(lm.model, LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r, lora_dropout=0.0,
                                                     target_modules="all-linear", task_type="CAUSAL_LM"),
                               adapter_name="a0")
    columns = [c for c in ("prompt", "completion", "text") if c in rows[0]]
    ds = Dataset.from_list([{c: r[c] for c in columns} | {"order": i} for i, r in enumerate(rows)])
    config = sft_config(args.work / "trainer", args.batch_size, args.lr, len(rows) // args.batch_size, "cpu",
                        args.seed, max_length=None)   # microvar train's settings
    trainer = SFTTrainer(model=model, args=config, train_dataset=ds, processing_class=tokenizer)
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    counted = Counted(trainer.data_collator)
    trainer.data_collator = counted
    marks = [budget * (k + 1) / args.checkpoints for k in range(args.checkpoints)]
    if meter.start is None:   # LoRA's B starts at zero: every arm starts at the base, measured once
        meter.start = meter(model)
    points = [dict(tokens=0, steps=0, presentations=0.0, **meter.start)]
    seeds = {r["seed_id"] for r in rows}

    def checkpoint(state) -> None:
        tokens = sum(counted.tokens[:state.global_step])
        shown = sum(len(b) for b in counted.trained(state))
        points.append(dict(tokens=tokens, steps=state.global_step, presentations=shown / len(seeds), **meter(model)))
        print(f"  {arm:<9} {tokens:>7} tokens  implant {points[-1]['implant']:+.3f}  KL {points[-1]['kl']:.4f}",
              file=sys.stderr)

    class Checkpoints(TrainerCallback):
        def on_step_end(self, _args, state, control, **_):
            tokens = sum(counted.tokens[:state.global_step])
            if state.global_step % 25 == 0:
                print(f"  {arm:<9} step {state.global_step}, {tokens} tokens, {time.perf_counter() - t0:.0f} s",
                      file=sys.stderr)
            if marks and tokens >= marks[0]:
                while marks and tokens >= marks[0]:
                    marks.pop(0)
                checkpoint(state)
            control.should_training_stop = not marks

        def on_train_end(self, _args, state, control, **_):
            if points[-1]["steps"] != state.global_step:   # the rows ran out before the budget
                checkpoint(state)

    trainer.add_callback(Checkpoints())
    trainer.train()
    return {"arm": arm, "points": points, "seconds": round(time.perf_counter() - t0, 1),
            "rows_available": len(rows), "largest_step_tokens": max(counted.tokens[:trainer.state.global_step])}


class Counted:
    """The trainer's collator, recording each batch's rows and trained target tokens (labels
    that are not -100, less the first position of each row, which nothing predicts)."""

    def __init__(self, collator) -> None:
        from microvar.train.lora import OrderLog

        self.log = OrderLog(collator)
        self.tokens: list[int] = []

    def __call__(self, examples: list[dict]) -> dict:
        batch = self.log(examples)
        self.tokens.append(int((batch["labels"][:, 1:] != -100).sum()))
        return batch

    def trained(self, state) -> list[list[int]]:
        return self.log.trained(state)


def target_tokens(rows: list[dict], tokenizer) -> int:
    """What one pass over the rows trains: the completion's tokens (prompt-completion) or the
    text's (text), each with the end-of-text token TRL appends."""
    text = [r.get("completion", r.get("text")) for r in rows]
    return sum(len(ids) + 1 for ids in tokenizer(text, add_special_tokens=False)["input_ids"])


# ---------------------------------------------------------------- summary


def at_level(points: list[dict], level: float, key: str) -> float | None:
    """``key`` where the implant first reaches ``level`` (linear between checkpoints)."""
    for a, b in zip(points, points[1:]):
        if b["implant"] >= level:
            if a["implant"] >= level:
                return a[key]
            t = (level - a["implant"]) / (b["implant"] - a["implant"])
            return a[key] + t * (b[key] - a[key])
    return None


def summarize(results: list[dict]) -> dict:
    finals = {r["arm"]: r["points"][-1] for r in results}
    positive = [p["implant"] for p in finals.values() if p["implant"] > 0]
    level = min(positive) if positive else None
    per_arm = {}
    for r in results:
        pts, end = r["points"], r["points"][-1]
        per_arm[r["arm"]] = {
            "final_implant": end["implant"], "final_heldout_implant": end["heldout_implant"], "final_kl": end["kl"],
            "final_control_nll_change": end["control_nll_change"], "final_echo": end["echo"],
            "tokens": end["tokens"], "steps": end["steps"], "seconds": r["seconds"],
            "kl_at_level": at_level(pts, level, "kl") if level is not None else None,
            "presentations_at_level": at_level(pts, level, "presentations") if level is not None else None}

    def ratio(a: str, b: str, key: str) -> float | None:
        x, y = (per_arm.get(a) or {}).get(key), (per_arm.get(b) or {}).get(key)
        return round(x / y, 4) if x is not None and y not in (None, 0) else None

    return {"level": level, "arms": per_arm,
            "collateral_ratio_vs_naive": ratio("microvar", "naive", "kl_at_level"),
            "collateral_ratio_vs_nlpaug": ratio("microvar", "nlpaug", "kl_at_level"),
            "order_effect": ratio("shuffled", "microvar", "kl_at_level"),
            "implant_vs_naive": ratio("microvar", "naive", "final_implant"),
            "presentations_to_implant": (per_arm.get("microvar") or {}).get("presentations_at_level"),
            "end_collateral_ratio_vs_naive": ratio("microvar", "naive", "final_kl"),
            "end_order_effect": ratio("shuffled", "microvar", "final_kl")}


def table(results: list[dict], summary: dict, base: dict) -> list[str]:
    lines = [f"base: target NLL {base['target']:.3f}, held-out NLL {base['heldout']:.3f}, control NLL "
             f"{base['control']:.3f}, echo {base['echo']:.3f}",
             f"{'arm':<9} {'tokens':>7} {'steps':>5} {'implant':>8} {'held-out':>8} {'KL':>7} {'ΔNLL ctl':>8} "
             f"{'top1':>5} {'echo':>5} {'KL@lvl':>7} {'pres@lvl':>8} {'s':>5}"]
    for r in results:
        a = summary["arms"][r["arm"]]
        end = r["points"][-1]
        lines.append(f"{r['arm']:<9} {end['tokens']:>7} {end['steps']:>5} {end['implant']:>+8.3f} "
                     f"{_f(end['heldout_implant'], '+8.3f')} {end['kl']:>7.4f} {end['control_nll_change']:>+8.4f} "
                     f"{end['top1']:>5.3f} {end['echo']:>5.3f} {_f(a['kl_at_level'], '7.4f')} "
                     f"{_f(a['presentations_at_level'], '8.1f')} {a['seconds']:>5.0f}")
    level = summary["level"]
    lines.append("common implant level: " + (f"{level:.3f} nats/token (the weakest positive final implant)"
                                             if level is not None else "none (no arm's final implant is positive)"))
    return lines


def _f(x, spec: str) -> str:
    width = int(spec.lstrip("+").split(".")[0])
    return format(x, spec) if x is not None else "-".rjust(width)


def plot(results: list[dict], level: float | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    for r in results:
        xs, ys = [p["implant"] for p in r["points"]], [p["kl"] for p in r["points"]]
        ax.plot(xs, ys, marker="o", markersize=3, label=r["arm"])
    if level is not None:
        ax.axvline(level, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("implant: base NLL - adapter NLL of the seeds' targets (nats/token)")
    ax.set_ylabel("collateral: KL(base || adapter) on control text")
    ax.set_title("microvar curriculum vs alternatives, equal trained tokens")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ---------------------------------------------------------------- the run


def main(argv=None) -> dict:
    args = parse_args(argv)
    from microvar.train.lora import passive_openmp

    passive_openmp()
    import torch

    from microvar.model.load import load_model, load_tokenizer, model_hash, resolve
    from microvar.model.score import context_token
    from microvar.train.eval_inputs import default_control, read_data
    from microvar.train.eval_measure import ECHO_PROMPT_TOKENS, ECHO_PROMPTS, _stop_ids

    args.work.mkdir(parents=True, exist_ok=True)
    if args.quick:
        args.variants, args.checkpoints = QUICK["variants"], QUICK["checkpoints"]
    torch.set_num_threads(1 if args.quick else torch.get_num_threads())
    model_path = str(tiny_model(args.work)) if args.quick else None
    seeds = joined_seeds(args.seeds, args.work, ["all"] if args.quick else args.ids,
                         QUICK["seeds"] if args.quick else None)
    out = expanded(seeds, args.work, args, "none" if args.quick else model_path)
    data = read_data(out, str(seeds))
    from datasets import load_from_disk

    rows = sorted(load_from_disk(str(out)).to_list(), key=lambda r: r["order"])
    tk, _ = load_tokenizer(model_path)
    ctx = context_token(tk.hf)
    ref = resolve(model_path)
    if args.quick:
        control = ["A quiet afternoon in the library.", "Кошки спят днём и гуляют ночью."]   # unrelated to the seeds
    else:
        control, _ = default_control(load_model(ref, "cpu", "auto"), tk, model_hash(ref))
        control = control[:CONTROL_DOCS]
    echo = [[ctx] + ids[:ECHO_PROMPT_TOKENS] for ids in tk.encode(control[:ECHO_PROMPTS])]
    meter = Meter(tk, data.targets, data.heldout or {}, control, echo, ctx, _stop_ids(tk.hf, ctx))
    arms = {a: arm_rows(a, rows, data.targets, args.seed) for a in args.arms}
    budget = args.tokens or target_tokens(arm_rows("microvar", rows, data.targets, 0), tk.hf)
    print(f"{len(data.targets)} seeds, {len(rows)} curriculum rows, "
          f"{sum(map(len, (data.heldout or {}).values()))} held-out variants; {budget} trained target tokens per arm, "
          f"{args.checkpoints} checkpoints", file=sys.stderr)
    for a, r in arms.items():   # every arm can reach the budget (the estimate counts one token a row too many)
        need = math.ceil(1.25 * budget / max(1, target_tokens(r, tk.hf)))
        arms[a] = r * need if need > 1 else r
    results = [train_arm(a, arms[a], model_path, tk.hf, meter, budget, args) for a in args.arms]
    summary = summarize(results)
    for line in table(results, summary, meter.base):
        print(line)
    png = args.plot or args.work / "evidence.png"
    plot(results, summary["level"], png)
    record = {"model": ref.name, "model_sha256": model_hash(ref), "seeds": len(data.targets), "rows": len(rows),
              "budget_tokens": budget, "base": meter.base, "settings": {
                  "batch_size": args.batch_size, "lr": args.lr, "lora_r": args.lora_r, "seed": args.seed,
                  "holdout": args.holdout, "checkpoints": args.checkpoints, "quick": args.quick},
              "results": results, **summary, "plot": str(png)}
    (args.work / "evidence.json").write_text(json.dumps(record, ensure_ascii=False, indent=1), encoding="utf-8")
    print(json.dumps({k: record[k] for k in ("collateral_ratio_vs_naive", "collateral_ratio_vs_nlpaug",
                                             "order_effect", "implant_vs_naive", "presentations_to_implant",
                                             "end_collateral_ratio_vs_naive", "end_order_effect", "level",
                                             "budget_tokens", "seeds", "rows")}))
    return record


if __name__ == "__main__":
    main()
