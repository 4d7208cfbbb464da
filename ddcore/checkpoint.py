"""Training checkpoints: written atomically, read without running code.

A checkpoint holds tensors, numbers, strings and containers of them (model and optimizer state,
the step). It is read with ``torch.load(weights_only=True)``, which refuses anything else: a
run folder copied from elsewhere, or a file planted in one, cannot execute code when a run
resumes from it.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from ddcore.errors import StageError
from ddcore.store import atomic_write_bytes


def save_state(path: Path, state: dict[str, Any]) -> None:
    """``state`` written with ``torch.save`` to memory, then atomically to ``path``."""
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_state(path: Path) -> dict[str, Any]:
    """A checkpoint's state, tensors on the CPU. Raises a one-line :class:`StageError` when the
    file holds anything but plain data (pickled objects or code) or cannot be read."""
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StageError(f"refusing to resume from checkpoint {path}: it is not a plain tensor file ({reason[:160]}); "
                         "delete it and rerun, and that part trains again from the start") from exc
