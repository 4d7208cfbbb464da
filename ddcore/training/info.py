"""``classifier.json``: what a trained classifier was trained on, read back before any use."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ddcore.errors import StageError
from ddcore.store import atomic_write_json

INFO = "classifier.json"

ClassifierInfo = dict[str, Any]


def write_info(out_dir: Path, *, classifier: str, classnames: list[str], **fields: Any) -> None:
    """Record the classifier plugin, the class names in label order, and plugin fields
    (model, prompts, options, ...)."""
    atomic_write_json(out_dir / INFO, {"classifier": classifier, "classnames": list(classnames), **fields})


def read_info(out_dir: Path, classnames: list[str] | None = None) -> ClassifierInfo:
    """Read ``classifier.json``; with ``classnames``, check the classifier knows exactly these
    classes in this order (a classifier trained on other classes would mislabel silently)."""
    path = out_dir / INFO
    if not path.is_file():
        raise StageError(f"{out_dir} holds no trained classifier (no {INFO}); train one with `dd train`")
    info = json.loads(path.read_text())
    if classnames is not None and info["classnames"] != list(classnames):
        theirs, ours = info["classnames"], list(classnames)
        missing = [c for c in ours if c not in theirs][:3]
        extra = [c for c in theirs if c not in ours][:3]
        detail = (f"data classes it lacks: {', '.join(missing) or '-'}; classes the data lacks: {', '.join(extra) or '-'}"
                  if missing or extra else "same classes in another order")
        raise StageError(f"the classifier in {out_dir} was trained on {len(theirs)} other classes than the data's "
                         f"{len(ours)} ({detail}); train a classifier on this data")
    return info
