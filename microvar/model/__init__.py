"""The reference model: where it comes from and how it is loaded (``load.py``), what it says
about variants (``score.py``: volatility; ``field.py``: the response map of edits), what it
suggests before expansion (``advisor.py``) and the volatility limits a variant must keep
(``budget.py``)."""

from .load import LoadedModel, ModelRef, context_length, load_model, load_tokenizer, model_hash, resolve

__all__ = ["LoadedModel", "ModelRef", "context_length", "load_model", "load_tokenizer", "model_hash", "resolve"]
