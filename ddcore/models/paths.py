"""Where ddcore keeps its own cached files, and whether the Hugging Face hub may be used."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_TRUE = {"1", "true", "yes", "on"}


def dd_home() -> Path:
    """``$DD_HOME``, else ``$XDG_CACHE_HOME/datadream``, else ``~/.cache/datadream``."""
    env = os.environ.get("DD_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "datadream"
    return Path.home() / ".cache" / "datadream"


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set to 1/true/yes/on (case-insensitive)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def hub_cache_dir() -> str | None:
    """The hub cache folder the environment asks for right now (``HF_HUB_CACHE``, else
    ``$HF_HOME/hub``), or None to leave huggingface_hub's default.

    huggingface_hub reads these variables once, at import; passing the value explicitly keeps
    a change made after import (a test, a CLI option) effective.
    """
    cache = os.environ.get("HF_HUB_CACHE")
    if cache:
        return os.path.expandvars(os.path.expanduser(cache))
    home = os.environ.get("HF_HOME")
    if home:
        return os.path.join(os.path.expandvars(os.path.expanduser(home)), "hub")
    return None


@contextmanager
def hub_offline_mode() -> Iterator[bool]:
    """Inside the block, huggingface_hub is offline if ``HF_HUB_OFFLINE`` says so *now*.

    huggingface_hub reads ``HF_HUB_OFFLINE`` once, at import; code that cannot be given
    ``local_files_only`` (open_clip's downloads) would otherwise retry the network for tens of
    seconds. Yields whether offline mode is on. Never turns offline mode off.
    """
    offline = hub_offline()
    if not offline:
        yield False
        return
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency
        yield True
        return
    previous = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield True
    finally:
        constants.HF_HUB_OFFLINE = previous
