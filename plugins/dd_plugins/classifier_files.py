"""Reading back a classifier trained by the shared loop: ``classifier.json`` and its weights file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ddcore.api import read_info


def load_trained(classifier, context, out_dir: Path, weights: str, build: Callable[[dict], Any]) -> tuple[dict, Any]:
    """Read ``classifier.json`` (its classes checked against the data's, in order), restore the
    options it was trained with, build the model with ``build(info)`` (the previous one dropped
    first: never two models in memory at once), load the trained weights from ``weights`` unless
    the info says it was not trained (zero-shot), and put it in eval mode. Returns (info, model)."""
    from safetensors.torch import load_file

    info = read_info(out_dir, context.dataset.classnames)
    classifier.options = type(classifier.options)(**info["options"])
    classifier.model = None
    model = build(info)
    if info.get("trained", True):
        model.load_trained_state(load_file(str(out_dir / weights), device=context.device))
    model.module.eval()
    return info, model
