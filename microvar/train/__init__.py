"""After the dataset: LoRA training phase by phase with TRL (``lora.py``) and the evaluation
of adapters against their base model (``evaluate.py``, with ``targets.py``, ``control.py``
and ``measure.py``)."""

from .lora import PhaseReport, TrainReport, plan_phases, read_dataset, train

__all__ = ["PhaseReport", "TrainReport", "plan_phases", "read_dataset", "train"]
