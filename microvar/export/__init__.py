"""What a run leaves behind: the Arrow dataset, its rejects and manifest (``dataset.py``),
the dataset card (``card.py``), Parquet shards and the Hub push (``hub.py``), and the one
source of dataset statistics that the card and the report both render (``stats.py``)."""

from .dataset import (
    FORMATS,
    META_COLUMNS,
    TRAINING_COLUMNS,
    check_target,
    columns,
    features,
    format_of,
    read_manifest,
    staging,
    training_fields,
    variant_text,
    write_dataset,
    write_json,
    write_jsonl,
)

__all__ = ["FORMATS", "META_COLUMNS", "TRAINING_COLUMNS", "check_target", "columns", "features", "format_of",
           "read_manifest", "staging", "training_fields", "variant_text", "write_dataset", "write_json", "write_jsonl"]
