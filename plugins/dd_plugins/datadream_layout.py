"""What the DataDream adapter and its trainer share: the files of an adapter folder, and the
plan's unit (one adapter to train). Kept apart so the plugin (light) and the trainer (torch)
import it, not each other."""

from __future__ import annotations

from dataclasses import dataclass

WEIGHTS = "pytorch_lora_weights.safetensors"
INFO = "datadream.json"
CHECKPOINTS = "checkpoints"
ADAPTER_NAME = "datadream"
DATASET_GROUP = "dataset"


@dataclass
class Group:
    """One adapter to train: its folder name, its shots (indices into the shot list), its
    steps and warm-up steps."""

    name: str
    shots: list[int]
    steps: int
    label: int | None = None
    warmup: int = 0
