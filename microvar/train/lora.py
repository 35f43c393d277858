"""`microvar train`: a LoRA adapter trained on an exported dataset in its curriculum order.

A thin wrapper over TRL's ``SFTTrainer`` and PEFT's ``LoraConfig``. The dataset is read with
``datasets.load_from_disk`` and handed to TRL as it is (its training columns are already in
one of TRL's standard formats). Phases are trained one after another in ascending order,
each phase's rows in their ``order``, one trainer run per phase continuing the same adapter;
a sequential sampler keeps TRL from shuffling. The adapter directory is staged beside its
target and renamed at the end, so it is either complete or absent."""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import shutil
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import MicrovarError
from ..export.dataset import check_target, format_of, read_manifest, staging, write_json

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 4
DEFAULT_LR = 2e-4
DEFAULT_LORA_R = 8
INSTALL_HINT = "pip install 'microvar[train]'"


@dataclass
class PhaseReport:
    phase: int
    levels: list[str]
    rows: int               # rows of the dataset in this phase (after --level)
    kept_rows: int          # rows TRL kept (it drops rows truncation leaves with no loss)
    trained_rows: int       # rows the optimizer's steps took: steps x batch, a row taken twice counting twice
    steps: int
    epochs: float
    loss: float | None      # mean training loss over the phase's steps
    last_loss: float | None
    first_order: int | None  # order of the first and last row a trained batch held
    last_order: int | None
    in_order: bool          # every batch came after the one before, in `order` (per pass)
    seconds: float


@dataclass
class TrainReport:
    output: Path
    dataset: Path
    format: str
    model: str
    device: str
    level: str | None
    batch_size: int
    lr: float
    lora_r: int
    steps_per_phase: int | None
    phases: list[PhaseReport] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict:
        d = asdict(self)
        d["output"], d["dataset"] = str(self.output), str(self.dataset)
        return d

    def lines(self) -> list[str]:
        out = [f"trained {self.model} on {self.dataset} ({self.format}"
               + (f", level {self.level}" if self.level else "") + f") on {self.device} in {self.seconds:.1f} s"]
        for p in self.phases:
            loss = f"{p.loss:.3f}" if p.loss is not None else "-"
            out.append(f"  phase {p.phase} ({', '.join(p.levels)}): {p.trained_rows} of {p.rows} rows trained, "
                       f"{p.steps} steps, "
                       f"loss {loss}, {p.seconds:.1f} s")
        return out


class OrderLog:
    """Wraps a data collator: records the ``order`` of each example of each batch it builds,
    and hands the wrapped collator only what it needs (TRL's collator reads ``input_ids``,
    ``labels`` and ``seq_lengths``). Needs ``remove_unused_columns=False`` so that ``order``
    reaches the collator. Batches are built in the order the trainer consumes them; the
    dataloader may build one batch ahead, so the trained ones are the first
    ``global_step * gradient_accumulation_steps`` of ``batches``."""

    KEEP = ("input_ids", "labels", "seq_lengths")

    def __init__(self, collator) -> None:
        self.collator = collator
        self.batches: list[list[int]] = []

    def __call__(self, examples: list[dict]) -> dict:
        self.batches.append([int(e["order"]) for e in examples])
        return self.collator([{k: e[k] for k in self.KEEP if k in e} for e in examples])

    def trained(self, state, accumulation: int = 1) -> list[list[int]]:
        return self.batches[:state.global_step * accumulation]


def passive_openmp() -> None:
    """Let OpenMP threads sleep instead of spin while they wait. With spinning threads a CPU
    that anything else is using trains many times slower (measured: 45 s instead of 0.8 s a
    step on 2 busy cores). OpenMP reads this once, when torch loads; later it changes nothing."""
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def require_trl():
    """TRL and PEFT, or a MicrovarError saying how to install them."""
    try:
        import peft  # noqa: F401
        import trl  # noqa: F401
    except ImportError as e:
        raise MicrovarError(f"training needs TRL and PEFT ({e.name} is missing): {INSTALL_HINT}") from None


def read_dataset(out: Path):
    """The dataset at OUT (in memory: TRL's preprocessing must not write cache files into
    it), its manifest and its format; MicrovarError when OUT is not a microvar dataset."""
    from datasets import load_from_disk
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()
    out = Path(out)
    if not out.is_dir():
        raise MicrovarError(f"{out}: no such dataset directory")
    if not (out / "state.json").is_file():
        raise MicrovarError(f"{out}: not a dataset written by microvar expand (no state.json)")
    manifest = read_manifest(out)
    try:
        empty = json.loads((out / "state.json").read_text(encoding="utf-8")).get("_data_files") == []
    except ValueError:
        empty = False
    if empty:  # datasets saves a dataset without rows with no data file, and cannot load it back
        raise MicrovarError(f"{out}: the dataset has no rows; nothing to train on")
    try:
        ds = load_from_disk(str(out), keep_in_memory=True)
    except (OSError, ValueError, KeyError, TypeError) as e:  # all mean "not a dataset"
        raise MicrovarError(f"{out}: cannot load the dataset: {e}") from None
    if not hasattr(ds, "column_names") or isinstance(ds.column_names, dict):
        raise MicrovarError(f"{out}: a DatasetDict, not a dataset written by microvar expand")
    missing = [c for c in ("order", "lora_level", "phase") if c not in ds.column_names]
    if missing:
        raise MicrovarError(f"{out}: not a dataset written by microvar expand (no column {', '.join(missing)})")
    fmt = format_of(ds.column_names, manifest)
    if fmt is None:
        raise MicrovarError(f"{out}: no training columns (prompt/completion, text or messages)")
    return ds, manifest, fmt


def plan_phases(ds, level: str | None) -> dict[int, list[int]]:
    """Row indices per phase, phases ascending, each phase's rows in ``order``."""
    levels = ds["lora_level"]
    if level is not None:
        present = sorted({x for x in levels if x is not None})
        if level not in present:
            raise MicrovarError(f"--level {level}: no rows of that level; the dataset has "
                                f"{', '.join(present) if present else 'no levels'}")
    orders, phases = ds["order"], ds["phase"]
    plan: dict[int, list[int]] = {}
    for i, (lv, ph) in enumerate(zip(levels, phases)):
        if level is None or lv == level:
            plan.setdefault(int(ph), []).append(i)
    if not plan:
        raise MicrovarError("nothing to train on: the dataset has no rows"
                            + (f" of level {level}" if level else ""))
    return {p: sorted(rows, key=lambda i: orders[i]) for p, rows in sorted(plan.items())}


def train(out: Path, model: str | None, output: Path, level: str | None = None, steps: int | None = None, *,
          batch_size: int = DEFAULT_BATCH_SIZE, lr: float = DEFAULT_LR, lora_r: int = DEFAULT_LORA_R,
          device: str = "auto", overwrite: bool = False, seed: int = 0, max_length: int | None = None,
          progress: bool = False) -> TrainReport:
    """Train a LoRA adapter on the dataset at OUT and save it to OUTPUT (see the module doc)."""
    start = time.perf_counter()
    passive_openmp()
    out, output = Path(out), Path(output)
    require_trl()
    check_target(output, overwrite)
    if output.resolve() == out.resolve() or out.resolve() in output.resolve().parents:
        raise MicrovarError(f"--output {output}: must not be the dataset directory or inside it")
    ds, manifest, fmt = read_dataset(out)
    plan = plan_phases(ds, level)

    from ..model.load import context_length, load_model, load_tokenizer, model_hash, resolve

    ref = resolve(model)
    tk, _ = load_tokenizer(model)
    tokenizer = tk.hf
    template = _chat_template(out, manifest, fmt, tokenizer, ref.name)
    dataset_tk = (manifest.get("tokenizer") or {}).get("sha256")
    if dataset_tk and dataset_tk != tk.sha256:
        log.warning("the dataset's variants were checked with another tokenizer than %s's; their token-level "
                    "steps are not the ones this model sees", ref.name)
    lm = load_model(ref, device, "auto")
    if max_length is None:
        max_length = context_length(ref.directory)

    import peft
    import torch
    import transformers
    import trl
    from peft import LoraConfig, get_peft_model
    from transformers import set_seed

    set_seed(seed)  # LoRA's A matrices are random
    lora = LoraConfig(r=lora_r, lora_alpha=2 * lora_r, lora_dropout=0.0, target_modules="all-linear",
                      task_type="CAUSAL_LM")
    with warnings.catch_warnings():  # PEFT 0.21 reads transformers 5's deprecated is_gradient_checkpointing
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        peft_model = get_peft_model(lm.model, lora)

    report = TrainReport(output, out, fmt, ref.name, lm.device, level, batch_size, lr, lora_r, steps)
    with staging(output, overwrite) as tmp:
        work = tmp / ".trainer"
        for phase, rows in plan.items():
            part = ds.select(rows)
            report.phases.append(_train_phase(peft_model, tokenizer, part, phase, work, lm.device, batch_size, lr,
                                              steps, seed, max_length, template, progress))
        shutil.rmtree(work, ignore_errors=True)
        peft_model.save_pretrained(str(tmp))
        shutil.copy2(out / "manifest.json", tmp / "manifest.json")
        if template is not None:
            shutil.copy2(template, tmp / template.name)
        recipes = manifest.get("recipes") or {}
        if recipes:
            (tmp / "recipe").mkdir()
            for name, r in recipes.items():
                if isinstance(r, dict) and isinstance(r.get("text"), str):
                    (tmp / "recipe" / f"{_safe(name)}.recipe").write_text(r["text"], encoding="utf-8")
        report.seconds = time.perf_counter() - start
        record = report.to_json()
        record["versions"] = {"trl": trl.__version__, "peft": peft.__version__,
                              "transformers": transformers.__version__, "torch": torch.__version__}
        record["lora"] = {"r": lora.r, "alpha": lora.lora_alpha, "dropout": lora.lora_dropout,
                          "target_modules": sorted(lora.target_modules) if lora.target_modules else None}
        record["max_length"] = max_length
        record["base_model"] = {"directory": str(ref.directory), "gguf_sha256": ref.sha256,
                                "sha256": model_hash(ref)}
        seed_ids = ds["seed_id"]
        record["seed_ids"] = sorted({seed_ids[i] for rows in plan.values() for i in rows})  # what evaluate checks
        write_json(tmp / "training.json", record)
        _follow_umask(tmp)
    return report


def _follow_umask(directory: Path) -> None:
    """Files as the umask says (safetensors writes the weights private)."""
    umask = os.umask(0)
    os.umask(umask)
    for f in directory.rglob("*"):
        if f.is_file():
            f.chmod(0o666 & ~umask)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name).lstrip(".") or "recipe"


def _chat_template(out: Path, manifest: dict, fmt: str, tokenizer, model_name: str) -> Path | None:
    """The dataset's own chat template file for the messages format, if it names one; checks
    that a messages dataset has some template to render it."""
    if fmt != "messages":
        return None
    name = (manifest.get("export") or {}).get("chat_template")
    if name:
        path = out / name
        if not path.is_file():
            raise MicrovarError(f"{out}: manifest names chat template {name} but the file is missing")
        return path
    if not getattr(tokenizer, "chat_template", None):
        raise MicrovarError(f"the dataset is in messages format but the tokenizer of {model_name} has no chat "
                            "template; export with a chat template or in prompt-completion format")
    return None


def sft_config(output_dir: Path, batch_size: int, lr: float, steps: int | None, device: str, seed: int,
               max_length: int | None, template: Path | None = None):
    """TRL's SFTConfig as microvar trains: rows in order, constant lr, fp32 on CPU, every
    row's columns passed to the collator (``order`` reaches OrderLog), nothing saved."""
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(output_dir),
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=1,
        learning_rate=lr,
        lr_scheduler_type="constant",
        max_steps=steps if steps else -1,
        num_train_epochs=1,
        train_sampling_strategy="sequential",   # the curriculum order; TRL/transformers default is random
        shuffle_dataset=False,
        bf16=device == "cuda",                  # TRL defaults bf16=True even on CPU, many times slower there
        fp16=False,
        use_cpu=device == "cpu",
        activation_checkpointing=False,         # TRL turns (the deprecated alias) gradient_checkpointing on by default
        remove_unused_columns=False,            # `order` must reach OrderLog
        dataloader_num_workers=0,
        report_to="none",
        save_strategy="no",
        logging_strategy="steps",
        logging_steps=1,
        disable_tqdm=True,
        seed=seed,
        data_seed=seed,
        max_length=max_length,
        chat_template_path=str(template) if template is not None else None,
    )


def _train_phase(peft_model, tokenizer, part, phase: int, work: Path, device: str, batch_size: int, lr: float,
                 steps: int | None, seed: int, max_length: int | None, template: Path | None,
                 progress: bool) -> PhaseReport:
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import SFTTrainer

    t0 = time.perf_counter()
    args = sft_config(work / f"phase-{phase}", batch_size, lr, steps, device, seed, max_length, template)
    trainer = SFTTrainer(model=peft_model, args=args, train_dataset=part, processing_class=tokenizer)
    trainer.remove_callback(PrinterCallback)    # it prints every log dict to stdout
    trainer.remove_callback(ProgressCallback)
    if progress:
        trainer.add_callback(_bar(phase))
    kept = len(trainer.train_dataset)
    if kept == 0:
        raise MicrovarError(f"phase {phase}: every row is longer than {max_length} tokens in its prompt; "
                            "nothing left to train on")
    if kept < len(part):
        log.warning("phase %d: %d rows left out (their prompts fill max_length=%s)", phase, len(part) - kept,
                    max_length)
    order_log = OrderLog(trainer.data_collator)
    trainer.data_collator = order_log
    result = trainer.train()
    state = trainer.state
    batches = order_log.trained(state, args.gradient_accumulation_steps)
    flat = [o for b in batches for o in b]
    losses = [h["loss"] for h in state.log_history if "loss" in h]
    return PhaseReport(
        phase=phase, levels=sorted(set(part["lora_level"])), rows=len(part), kept_rows=kept, trained_rows=len(flat),
        steps=state.global_step, epochs=round(state.epoch or 0.0, 3),
        loss=_num(result.training_loss), last_loss=_num(losses[-1]) if losses else None,
        first_order=flat[0] if flat else None, last_order=flat[-1] if flat else None,
        in_order=_in_passes(flat), seconds=round(time.perf_counter() - t0, 3))


def _num(x) -> float | None:
    x = float(x)
    return None if math.isnan(x) else round(x, 5)


def _in_passes(orders: list[int]) -> bool:
    """Strictly increasing, except where a new pass over the phase starts from its beginning."""
    first = orders[0] if orders else None
    return all(b > a or b == first for a, b in itertools.pairwise(orders))


def _bar(phase: int):
    """A progress bar on stderr for one phase's steps."""
    from tqdm.auto import tqdm
    from transformers import TrainerCallback

    class Bar(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            self.bar = tqdm(total=state.max_steps, desc=f"phase {phase}", unit="step", leave=False, file=sys.stderr)

        def on_step_end(self, args, state, control, **kw):
            self.bar.update(1)

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                self.bar.set_postfix(loss=f"{logs['loss']:.3f}")

        def on_train_end(self, args, state, control, **kw):
            self.bar.close()

    return Bar()
