"""The libraries' own progress bars while a model loads.

transformers ("Loading weights", "Loading checkpoint shards") and diffusers ("Loading pipeline
components...") draw tqdm bars of their own that would interleave with ours, so they are off
while a model loads. huggingface_hub's download bars stay as they were: a first download can
be gigabytes, and its bar is the only sign that something is happening.

transformers' switch is not enough on its own: ``disable_progress_bar()`` (and ``enable``) also
flips huggingface_hub's global state and clears its per-group states, so the hub's state is put
back around every call to it.
"""

from __future__ import annotations

import contextlib
import importlib
import warnings
from collections.abc import Callable, Iterator


def _keeping_hub_state(switch: Callable[[], None]) -> None:
    """``switch()`` (a transformers toggle) with huggingface_hub's bar state unchanged after it."""
    # huggingface_hub.utils.tqdm is the tqdm class as an attribute; the module holds the states
    # (per group, "_global" for all; in every huggingface_hub this project supports).
    states = importlib.import_module("huggingface_hub.utils.tqdm").progress_bar_states
    saved = dict(states)
    with warnings.catch_warnings():
        # With HF_HUB_DISABLE_PROGRESS_BARS set the hub ignores the change and warns on every
        # call; the variable's choice stands either way, so the warning is noise.
        warnings.simplefilter("ignore")
        switch()
    states.clear()
    states.update(saved)


@contextlib.contextmanager
def quiet_loading_bars() -> Iterator[None]:
    """transformers' and diffusers' loading bars off for the block, their previous state back
    after it; huggingface_hub's download bars untouched."""
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    transformers_was = transformers_logging.is_progress_bar_enabled()
    diffusers_was = diffusers_logging.is_progress_bar_enabled()
    _keeping_hub_state(transformers_logging.disable_progress_bar)
    diffusers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if transformers_was:
            _keeping_hub_state(transformers_logging.enable_progress_bar)
        if diffusers_was:
            diffusers_logging.enable_progress_bar()
