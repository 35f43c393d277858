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
and cached under ``$MICROVAR_CACHE/control``, keyed by the model's hash."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import MicrovarError

log = logging.getLogger(__name__)

CONTROL_PROMPTS = "control.jsonl"   # in the shipped prompts/ folder
CONTROL_NEW_TOKENS = 160            # sampled per prompt: 44 prompts, about 7k tokens (README: why not 20k)
CONTROL_SEED = 0
CONTROL_TOP_P = 0.95
ECHO_PROMPTS = 12                   # control documents whose openings become echo prompts
ECHO_PROMPT_TOKENS = 48
ECHO_NEW_TOKENS = 24
NGRAM = 4
STAGE_ROWS = 2                      # distinct rows per seed and stage scored for the per-stage figures
HOLDOUT_NAMES = ("holdout.jsonl", "holdout")   # where `expand --holdout` writes held-out variants


# ---------------------------------------------------------------- inputs


@dataclass
class Adapter:
    """A PEFT LoRA directory, and what microvar train recorded about it (when it did)."""
    path: Path
    name: str
    base_sha256: str | None          # the base model it was trained on
    trained_seeds: set[str] | None   # the seed ids it was trained on (training.json), when known
    seeds_sha256: str | None         # of the seeds file its dataset was expanded from (manifest.json)
    training: dict = field(default_factory=dict)


@dataclass
class EvalData:
    """The texts evaluated, by seed: its target, its text, held-out variants, rows by stage."""
    path: Path
    fingerprint: str | None
    seeds_sha256: str | None
    targets: dict[str, str]
    target_source: dict[str, str]     # per seed: seeds file, grow rows, or seed text
    seed_texts: dict[str, str]
    heldout: dict[str, list[str]] | None
    heldout_source: str | None
    stages: dict[str, dict[str, list[str]]]   # stage -> seed -> texts
    stage_order: list[str]


def read_adapter(path: Path) -> Adapter:
    """A LoRA adapter directory; MicrovarError when it is not one."""
    path = Path(path)
    if not path.is_dir():
        raise MicrovarError(f"{path}: no such adapter directory")
    config_file = path / "adapter_config.json"
    if not config_file.is_file():
        raise MicrovarError(f"{path}: not a PEFT adapter (no adapter_config.json)")
    config = _json(config_file)
    if str(config.get("peft_type", "")).upper() != "LORA":
        raise MicrovarError(f"{path}: a {config.get('peft_type') or 'unknown'} adapter; evaluate takes LoRA adapters")
    if not any((path / f).is_file() for f in ("adapter_model.safetensors", "adapter_model.bin")):
        raise MicrovarError(f"{path}: adapter_config.json but no adapter_model.safetensors")
    training = _json(path / "training.json") if (path / "training.json").is_file() else {}
    base = training.get("base_model") or {}
    trained = set(training["seed_ids"]) if isinstance(training.get("seed_ids"), list) else None
    manifest = _json(path / "manifest.json") if (path / "manifest.json").is_file() else {}
    return Adapter(path, path.name or str(path), base.get("sha256") or base.get("gguf_sha256"), trained,
                   (manifest.get("inputs") or {}).get("sha256"), training)


def check_adapter(adapter: Adapter, model_sha: str, model_name: str, seeds: set[str], seeds_sha: str | None) -> None:
    """The adapter was trained on this base model and on some of these seeds (when it says so:
    a PEFT adapter not made by microvar train is taken as it is)."""
    if adapter.base_sha256 and adapter.base_sha256 != model_sha:
        trained_on = adapter.training.get("model") or adapter.base_sha256[:12]
        raise MicrovarError(f"{adapter.path}: trained on another base model ({trained_on}, weights "
                            f"{adapter.base_sha256[:12]}) than {model_name} (weights {model_sha[:12]}); "
                            "pass its base with --model")
    if adapter.trained_seeds is not None:
        if not adapter.trained_seeds & seeds:
            raise MicrovarError(f"{adapter.path}: trained on seeds {_few(adapter.trained_seeds)}, none of which is "
                                f"in the dataset (seeds {_few(seeds)})")
    elif adapter.seeds_sha256 and seeds_sha and adapter.seeds_sha256 != seeds_sha:
        log.warning("%s was trained on a dataset from another seeds file; which of these seeds it saw is unknown",
                    adapter.path)


def read_data(out: Path, seeds_file: str | None = None, stage_rows: int = STAGE_ROWS) -> EvalData:
    """The dataset's seeds, their targets, held-out variants and a sample of rows per stage."""
    from .export import variant_text
    from .train import read_dataset

    ds, manifest, _ = read_dataset(out)
    rows = sorted(ds.to_list(), key=lambda r: r["order"])
    seed_texts: dict[str, str] = {}
    stages: dict[str, dict[str, list[str]]] = {}
    grown: dict[str, str] = {}
    for r in rows:
        text, sid = variant_text(r), r["seed_id"]
        if r["depth"] == 0:
            seed_texts.setdefault(sid, text)
        per_seed = stages.setdefault(r["stage"], {}).setdefault(sid, [])
        if text not in per_seed and len(per_seed) < stage_rows:
            per_seed.append(text)
        if r["edits"] and all(e.startswith("grow") for e in r["edits"]) and len(text) > len(grown.get(sid, "")):
            grown[sid] = text
    targets, source = _targets(out, manifest, seed_texts, grown, seeds_file)
    heldout, held_source = read_holdout(out)
    order = [s for s in (manifest.get("curriculum") or {}).get("stages", {}) if s in stages]
    order += sorted(s for s in stages if s not in order)
    return EvalData(Path(out), _fingerprint(out), (manifest.get("inputs") or {}).get("sha256"), targets, source,
                    seed_texts, heldout, held_source, stages, order)


def _targets(out: Path, manifest: dict, seed_texts: dict[str, str], grown: dict[str, str],
             seeds_file: str | None) -> tuple[dict[str, str], dict[str, str]]:
    """Each seed's text with its continuation: from the seeds file (--seeds, else the one the
    manifest names when its hash still matches), else the longest grow row, else the seed text."""
    from .seeds import read_seeds

    inputs = manifest.get("inputs") or {}
    path = seeds_file
    if path is None and inputs.get("seeds") not in (None, "-"):
        candidate = Path(inputs["seeds"])
        if candidate.is_file() and hashlib.sha256(candidate.read_bytes()).hexdigest() == inputs.get("sha256"):
            path = str(candidate)
    given = {}
    if path is not None:
        given = {s.id: s for s in read_seeds(path, skip_invalid=True).seeds if s.id in seed_texts}
        if seeds_file is not None and not given:
            raise MicrovarError(f"--seeds {seeds_file}: none of its seeds is in {out}")
    targets, source = {}, {}
    for sid, text in seed_texts.items():
        if sid in given:
            targets[sid] = given[sid].text + (given[sid].continuation or "")
            source[sid] = "seeds file"
        elif sid in grown:
            targets[sid], source[sid] = grown[sid], "longest grow row"
        else:
            targets[sid], source[sid] = text, "seed text"
    if path is None and any(s == "longest grow row" for s in source.values()):
        log.warning("the seeds file %s is not at hand: targets are the longest grow rows; pass --seeds FILE for "
                    "the full continuations", inputs.get("seeds"))
    return targets, source


def read_holdout(out: Path) -> tuple[dict[str, list[str]] | None, str | None]:
    """Held-out variants per seed, from ``holdout.jsonl`` (rows with ``seed_id`` and a variant
    text in any export format) or a ``holdout/`` dataset beside the curriculum; (None, None)
    when the dataset has none."""
    from .export import variant_text

    for name in HOLDOUT_NAMES:
        path = Path(out) / name
        if path.is_file():
            try:
                rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            except (OSError, ValueError) as e:
                raise MicrovarError(f"{path}: cannot read held-out variants: {e}") from None
        elif path.is_dir():
            from datasets import load_from_disk

            try:
                rows = load_from_disk(str(path)).to_list()
            except Exception as e:  # noqa: BLE001 (datasets raises several kinds; all mean "not a dataset")
                raise MicrovarError(f"{path}: cannot load held-out variants: {e}") from None
        else:
            continue
        held: dict[str, list[str]] = {}
        for r in rows:
            if isinstance(r, dict) and isinstance(r.get("seed_id"), str):
                held.setdefault(r["seed_id"], []).append(variant_text(r))
        return held, name
    return None, None


def read_control(path: Path) -> list[str]:
    """Control documents: JSONL with ``text`` (a .jsonl file), else plain text with documents
    separated by blank lines; MicrovarError when unreadable or empty."""
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MicrovarError(f"--control {path}: no such file") from None
    except IsADirectoryError:
        raise MicrovarError(f"--control {path}: a directory, expected a text or JSONL file") from None
    except UnicodeDecodeError as e:
        raise MicrovarError(f"--control {path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise MicrovarError(f"--control {path}: cannot read it: {e.strerror}") from None
    if path.suffix == ".jsonl":
        docs = []
        for n, line in enumerate(raw.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as e:
                raise MicrovarError(f"--control {path}:{n}: not JSON: {e}") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                raise MicrovarError(f"--control {path}:{n}: expected an object with a string 'text'")
            docs.append(obj["text"])
    else:
        docs = [d.strip() for d in raw.replace("\r\n", "\n").split("\n\n")]
    docs = [d for d in docs if d.strip()]
    if not docs:
        raise MicrovarError(f"--control {path}: no text in it")
    return docs


def default_control(lm, tk, model_sha: str) -> tuple[list[str], Path]:
    """The base model's own continuations of the shipped neutral prompts (fixed seed,
    CONTROL_NEW_TOKENS each), generated once and cached by model hash; (documents, cache file)."""
    from .model import _atomic_write, cache_root
    from .resources import data_dir

    prompts_file = data_dir("prompts") / CONTROL_PROMPTS
    prompts = [json.loads(line)["text"] for line in prompts_file.read_text(encoding="utf-8").splitlines() if line]
    new_tokens = CONTROL_NEW_TOKENS
    key = hashlib.sha256(json.dumps([prompts, new_tokens, CONTROL_SEED, CONTROL_TOP_P]).encode()).hexdigest()
    cached = cache_root() / "control" / f"{model_sha[:16]}-{key[:12]}.jsonl"
    if cached.is_file():
        return [json.loads(line)["text"] for line in cached.read_text(encoding="utf-8").splitlines()], cached
    log.warning("sampling the default control text from the base model (%d prompts x %d tokens; once, cached in %s)",
                len(prompts), new_tokens, cached)
    docs = sample_continuations(lm, tk, prompts, new_tokens)
    _atomic_write(cached, "".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in docs))
    return docs, cached


# ---------------------------------------------------------------- the model with its adapters


def load_adapters(lm, adapters: list[Adapter]):
    """One PEFT model over the base holding every adapter (named a0, a1, ...); MicrovarError
    when an adapter's weights do not fit the base model."""
    import warnings

    from peft import PeftModel

    model = None
    for i, a in enumerate(adapters):
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
                if model is None:
                    model = PeftModel.from_pretrained(lm.model, str(a.path), adapter_name=f"a{i}")
                    result = None
                else:
                    result = model.load_adapter(str(a.path), adapter_name=f"a{i}")
        except (RuntimeError, ValueError, KeyError, OSError) as e:
            raise MicrovarError(f"{a.path}: does not fit the base model {lm.name}: {_first_line(e)}") from None
        unexpected = [k for k in getattr(result, "unexpected_keys", None) or [] if "lora_" in k]
        if unexpected:
            raise MicrovarError(f"{a.path}: does not fit the base model {lm.name}: weights for modules it lacks "
                                f"({unexpected[0]}, ...)")
    model.eval()
    return model


# ---------------------------------------------------------------- measuring


@dataclass
class Sums:
    """Token sums over some texts, for the base and each adapter."""
    tokens: int = 0
    nll_base: float = 0.0
    nll: list[float] = field(default_factory=list)
    kl: list[float] = field(default_factory=list)
    agree: list[float] = field(default_factory=list)

    def add(self, other: Sums) -> None:
        if not self.nll:
            k = len(other.nll)
            self.nll, self.kl, self.agree = [0.0] * k, [0.0] * k, [0.0] * k
        self.tokens += other.tokens
        self.nll_base += other.nll_base
        for i in range(len(other.nll)):
            self.nll[i] += other.nll[i]
            self.kl[i] += other.kl[i]
            self.agree[i] += other.agree[i]

    def base_figures(self) -> dict:
        return {"tokens": self.tokens, "nll": _r(self.nll_base / self.tokens) if self.tokens else None}

    def figures(self, a: int) -> dict:
        """Means per token for adapter a: NLL under base and adapter, change, KL, top-1 agreement."""
        if not self.tokens:
            return {"tokens": 0, "nll_base": None, "nll": None, "nll_change": None, "kl": None, "top1": None}
        n = self.tokens
        return {"tokens": n, "nll_base": _r(self.nll_base / n), "nll": _r(self.nll[a] / n),
                "nll_change": _r((self.nll[a] - self.nll_base) / n), "kl": _r(self.kl[a] / n),
                "top1": _r(self.agree[a] / n)}


def measure(model, n_adapters: int, texts: list[list[int]], context_id: int, batch_tokens: int) -> list[Sums]:
    """Per text (token ids), the sums of NLL under the base and each adapter, KL(base || adapter)
    and top-1 agreement, over every token of the text predicted behind the context token."""
    import torch

    from .score import _batches, pad_batch

    device = next(model.parameters()).device
    out = [Sums(nll=[0.0] * n_adapters, kl=[0.0] * n_adapters, agree=[0.0] * n_adapters) for _ in texts]
    order = sorted((i for i, t in enumerate(texts) if t), key=lambda i: len(texts[i]))
    for batch in _batches(order, lambda i: len(texts[i]) + 1, batch_tokens, 256):
        ids, mask, lengths = pad_batch([[context_id] + texts[i][:-1] for i in batch])
        target = torch.tensor([t for i in batch for t in texts[i]], device=device)
        real = torch.cat([torch.arange(n) + b * ids.shape[1] for b, n in enumerate(lengths)]).to(device)
        with torch.inference_mode():
            with model.disable_adapter():
                base = _logp(model, ids, mask, real)
            base_tok = base.gather(1, target[:, None]).squeeze(1)
            base_top = base.argmax(-1)
            probs = base.exp()
            neg_entropy = torch.einsum("ij,ij->i", probs, base)
            per_adapter = []
            for a in range(n_adapters):
                model.set_adapter(f"a{a}")
                logp = _logp(model, ids, mask, real)
                kl = (neg_entropy - torch.einsum("ij,ij->i", probs, logp)).clamp_min(0)
                per_adapter.append((-logp.gather(1, target[:, None]).squeeze(1), kl, (logp.argmax(-1) == base_top)))
                del logp
        for b, (i, part) in enumerate(zip(batch, _spans(lengths))):
            s = out[i]
            s.tokens = lengths[b]
            s.nll_base = float(-base_tok[part].sum())
            for a, (nll, kl, same) in enumerate(per_adapter):
                s.nll[a], s.kl[a], s.agree[a] = float(nll[part].sum()), float(kl[part].sum()), float(same[part].sum())
        del base, probs
    return out


def _logp(model, ids, mask, real):
    """Log-probabilities at the real (unpadded) positions of a right-padded batch."""
    import torch

    device = real.device
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits
    return torch.log_softmax(logits.reshape(-1, logits.shape[-1]).index_select(0, real).float(), -1)


def _spans(lengths: list[int]) -> list[slice]:
    spans, start = [], 0
    for n in lengths:
        spans.append(slice(start, start + n))
        start += n
    return spans


def generate(model, prompts: list[list[int]], new_tokens: int, stop_ids: set[int], *, sample: bool = False,
             top_p: float = 1.0) -> list[list[int]]:
    """Continuations of left-padded prompts (token ids), each cut at its first stop token."""
    import torch

    width = max(len(p) for p in prompts)
    pad = next(iter(stop_ids)) if stop_ids else 0
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    device = next(model.parameters()).device
    # every setting explicit: a model's generation_config may carry its own sampling defaults
    how = ({"do_sample": True, "top_p": top_p, "top_k": 0, "temperature": 1.0} if sample
           else {"do_sample": False, "top_p": None, "top_k": None, "temperature": None})
    with torch.inference_mode():
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=new_tokens,
                             pad_token_id=pad, eos_token_id=sorted(stop_ids) or None, **how)
    result = []
    for row in out[:, width:].tolist():
        cut = next((k for k, t in enumerate(row) if t in stop_ids), len(row))
        result.append(row[:cut])
    return result


def sample_continuations(lm, tk, prompts: list[str], new_tokens: int) -> list[str]:
    """Each prompt followed by the base model's sampled continuation (seed CONTROL_SEED)."""
    import torch

    from .score import context_token

    ctx = context_token(tk.hf)
    torch.manual_seed(CONTROL_SEED)
    cont = generate(lm.model, [[ctx] + ids for ids in tk.encode(prompts)], new_tokens, _stop_ids(tk.hf, ctx),
                    sample=True, top_p=CONTROL_TOP_P)
    return [p + tk.hf.decode(c, skip_special_tokens=True) for p, c in zip(prompts, cont)]


def echo_share(prompt: list[int], continuation: list[int], n: int = NGRAM) -> tuple[int, int]:
    """(continuation n-grams found in the prompt, continuation n-grams)."""
    seen = {tuple(prompt[i:i + n]) for i in range(len(prompt) - n + 1)}
    grams = [tuple(continuation[i:i + n]) for i in range(len(continuation) - n + 1)]
    return sum(g in seen for g in grams), len(grams)


def measure_echo(model, n_adapters: int, prompts: list[list[int]], stop_ids: set[int]) -> list[dict]:
    """Echo of the base (first) and each adapter: greedy continuations of the prompts."""
    results = []
    for a in [None, *range(n_adapters)]:
        if a is None:
            with model.disable_adapter():
                cont = generate(model, prompts, ECHO_NEW_TOKENS, stop_ids)
        else:
            model.set_adapter(f"a{a}")
            cont = generate(model, prompts, ECHO_NEW_TOKENS, stop_ids)
        found = total = 0
        for p, c in zip(prompts, cont):
            f, t = echo_share(p, c)
            found, total = found + f, total + t
        results.append({"echo": _r(found / total) if total else 0.0, "ngrams": total})
    return results


def _stop_ids(tokenizer, context_id: int) -> set[int]:
    return {t for t in (context_id, tokenizer.eos_token_id) if t is not None}


# ---------------------------------------------------------------- the run


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
    from .model import load_model, model_hash, resolve
    from .score import context_token, default_batch_tokens
    from .tokens import load_tokenizer
    from .train import passive_openmp, require_trl

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


# ---------------------------------------------------------------- output


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
    from .model import _atomic_write

    _atomic_write(Path(path), json.dumps(result, ensure_ascii=False, indent=1) + "\n")


# ---------------------------------------------------------------- small helpers


def _held(implant: dict, key: str):
    return implant["heldout"]["overall"][key] if implant["heldout"] else None


def _f(x, width: int = 7, sign: bool = False) -> str:
    if x is None:
        return f"{'-':>{width}}"
    return f"{x:>+{width}.3f}" if sign else f"{x:>{width}.3f}"


def _short(name: str, width: int) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1):]


def _r(x: float) -> float:
    return round(float(x), 6)


def _few(ids: set[str], n: int = 4) -> str:
    shown = sorted(ids)[:n]
    return ", ".join(shown) + (f" and {len(ids) - n} more" if len(ids) > n else "")


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


def _json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise MicrovarError(f"{path}: cannot read it as JSON: {e}") from None
    if not isinstance(obj, dict):
        raise MicrovarError(f"{path}: expected a JSON object")
    return obj


def _fingerprint(out: Path) -> str | None:
    """The dataset's own fingerprint, as `datasets` recorded it in state.json."""
    try:
        return json.loads((Path(out) / "state.json").read_text(encoding="utf-8")).get("_fingerprint")
    except (OSError, ValueError):
        return None
