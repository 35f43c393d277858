"""What `microvar evaluate` reads: the adapters and the training.json beside each, the
dataset's seeds, targets, held-out variants and per-stage rows, and the control text (a
file, or the base model's own continuations of the shipped prompts, sampled once and cached
under ``$MICROVAR_CACHE/control``, keyed by the model's hash)."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import MicrovarError
from .eval_measure import _stop_ids, generate

log = logging.getLogger(__name__)

CONTROL_PROMPTS = "control.jsonl"   # in the shipped prompts/ folder


CONTROL_NEW_TOKENS = 160            # sampled per prompt: 44 prompts, about 7k tokens (README: why not 20k)


CONTROL_SEED = 0


CONTROL_TOP_P = 0.95


STAGE_ROWS = 2                      # distinct rows per seed and stage scored for the per-stage figures


HOLDOUT_NAMES = ("holdout.jsonl", "holdout")   # where `expand --holdout` writes held-out variants


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
    from ..export.dataset import variant_text
    from .lora import read_dataset

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
    from ..expand.seeds import read_seeds

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
    from ..export.dataset import variant_text

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
    from ..model.load import _atomic_write, cache_root
    from ..resources import data_dir

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


def sample_continuations(lm, tk, prompts: list[str], new_tokens: int) -> list[str]:
    """Each prompt followed by the base model's sampled continuation (seed CONTROL_SEED)."""
    import torch

    from ..model.score import context_token

    ctx = context_token(tk.hf)
    torch.manual_seed(CONTROL_SEED)
    cont = generate(lm.model, [[ctx] + ids for ids in tk.encode(prompts)], new_tokens, _stop_ids(tk.hf, ctx),
                    sample=True, top_p=CONTROL_TOP_P)
    return [p + tk.hf.decode(c, skip_special_tokens=True) for p, c in zip(prompts, cont)]


def _few(ids: set[str], n: int = 4) -> str:
    shown = sorted(ids)[:n]
    return ", ".join(shown) + (f" and {len(ids) - n} more" if len(ids) > n else "")


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
