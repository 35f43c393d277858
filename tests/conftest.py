"""Shared fixtures. The real default tokenizer is loaded once per session (converted from
the embedded GGUF on first use and cached under the user's cache directory)."""

from __future__ import annotations

import json
import os
from pathlib import Path

# OpenMP threads that spin while waiting make torch many times slower when another process
# (a subprocess under test) shares the 2 cores; passive waiting costs nothing here
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest
from click.testing import CliRunner

from microvar.cli import main
from microvar.model.load import load_tokenizer

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"


@pytest.fixture(scope="session")
def tk():
    """The reference tokenizer of the embedded SmolLM2-135M-Instruct."""
    return load_tokenizer()[0]


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError("the test tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def write_seeds(tmp_path):
    """Write seeds (dicts, or raw str lines) to a JSONL file; returns its path."""
    def write(rows, name="seeds.jsonl", raw: bytes | None = None) -> Path:
        path = tmp_path / name
        if raw is not None:
            path.write_bytes(raw)
            return path
        lines = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in rows]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path
    return write


@pytest.fixture
def cli():
    """Run the microvar CLI in-process; returns click's Result (exit_code, stdout, stderr)."""
    def run(*args, input: str | bytes | None = None):
        return CliRunner().invoke(main, [str(a) for a in args], input=input, catch_exceptions=False)
    return run


@pytest.fixture
def model_dir(tmp_path, tk):
    """A local 'Hugging Face model directory': the real tokenizer and a tiny random Llama."""
    from transformers import LlamaConfig, LlamaForCausalLM

    d = tmp_path / "tiny-llama"
    tk.hf.save_pretrained(str(d))
    config = LlamaConfig(vocab_size=tk.vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=40)
    LlamaForCausalLM(config).save_pretrained(str(d))
    return d


def pickled_files(work) -> list:
    """Files in the work directory that begin with pickle's protocol byte."""
    found = []
    for p in work.rglob("*"):
        try:
            if p.is_file() and p.read_bytes()[:1] == b"\x80":
                found.append(p)
        except FileNotFoundError:   # a shard's temporary directory renamed meanwhile
            pass
    return found
