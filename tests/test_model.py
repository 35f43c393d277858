"""Loading the reference model: the embedded GGUF (dequantized once, cached), a local
directory, and clear errors for what is not a causal LM."""

from __future__ import annotations

import time

import pytest
import torch

from microvar.errors import MicrovarError
from microvar.model.load import load_model, pick_dtype, resolve


@pytest.mark.slow
def test_embedded_model_loads_from_cache_and_predicts(tk):
    ref = resolve(None)
    load_model(ref, device="cpu")  # converts once if the cache is cold
    start = time.perf_counter()
    lm = load_model(ref, device="cpu")
    warm = time.perf_counter() - start
    model = lm.model
    assert model.config.num_hidden_layers == 30 and model.config.vocab_size == 49152
    assert abs(sum(p.numel() for p in model.parameters()) / 1e6 - 134.5) < 0.5
    assert lm.dtype == torch.float32 and not getattr(model, "is_quantized", False)
    ids = tk.encode(["The capital of France is"])[0]
    with torch.inference_mode():
        logits = model(torch.tensor([ids])).logits[0, -1]
    assert tk.decode([[int(logits.argmax())]])[0].strip() == "Paris"
    assert warm < 10, f"cached load took {warm:.1f} s"


def test_tiny_model_directory(tmp_path, tk):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=tk.vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2)
    LlamaForCausalLM(config).save_pretrained(str(tmp_path))
    lm = load_model(resolve(str(tmp_path)), device="cpu")
    assert lm.model.config.num_hidden_layers == 2 and not lm.model.training


def test_directory_that_is_not_a_causal_lm(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "not-a-model"}')
    with pytest.raises(MicrovarError, match="not a causal language model"):
        load_model(resolve(str(tmp_path)), device="cpu")


def test_device_and_dtype_choices():
    assert pick_dtype("auto", "cpu") == torch.float32 and pick_dtype("auto", "cuda") == torch.bfloat16
    with pytest.raises(MicrovarError):
        pick_dtype("int3", "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(MicrovarError, match="no CUDA"):
            load_model(resolve(None), device="cuda")
