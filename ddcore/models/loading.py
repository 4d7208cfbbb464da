"""Loading a pretrained model named by a string: ``tiny``, a local folder, or a hub id.

Every model the stages load (Stable Diffusion pipelines, captioners, SAM, language models)
goes through :func:`load_pretrained`, so they all accept the same three forms, honour
``HF_HOME`` / ``HF_HUB_CACHE`` / ``HF_HUB_OFFLINE``, and fail with the same kind of one-line
:class:`ModelNotFoundError` that says how to use a local copy.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ModelNotFoundError
from .families import TINY_MODELS
from .library_bars import quiet_loading_bars
from .paths import hub_cache_dir, hub_offline, hub_offline_mode

TINY = "tiny"


def looks_like_path(model: str) -> bool:
    """A string meant as a folder rather than a hub id ('org/name' has exactly one slash)."""
    return (
        model.startswith(("/", "./", "../", "~", "."))
        or "\\" in model
        or model.count("/") > 1
        or os.path.isabs(model)
    )


def model_identity(model: str) -> str:
    """The identity string recorded for ``model`` without loading it: ``"tiny"``, the absolute
    path of a local folder, or the hub id as given."""
    if model == TINY or model in TINY_MODELS:
        return model
    path = Path(model).expanduser()
    if path.is_dir() or looks_like_path(model):
        return str(path.resolve())
    return model


def hub_load_kwargs() -> dict[str, Any]:
    """The ``from_pretrained`` / ``load_config`` arguments of a hub id: the cache folder
    (``HF_HUB_CACHE`` / ``HF_HOME``) and, offline (``HF_HUB_OFFLINE``), cached files only."""
    kwargs: dict[str, Any] = {"cache_dir": hub_cache_dir()} if hub_cache_dir() else {}
    if hub_offline():
        kwargs["local_files_only"] = True
    return kwargs


def short_reason(exc: BaseException, limit: int = 200) -> str:
    """An exception's message on one line, at most ``limit`` characters."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_errors() -> tuple[type[BaseException], ...]:
    """What transformers, diffusers and huggingface_hub raise for a model they cannot find."""
    errors: list[type[BaseException]] = [OSError, ValueError, KeyError]
    try:
        from huggingface_hub import errors as hf_errors

        for name in ("HfHubHTTPError", "EntryNotFoundError", "RepositoryNotFoundError", "LocalEntryNotFoundError",
                     "RevisionResolutionError", "CacheNotFound"):
            cls = getattr(hf_errors, name, None)
            if isinstance(cls, type) and issubclass(cls, BaseException):
                errors.append(cls)
    except ImportError:  # pragma: no cover - a dependency of transformers and diffusers
        pass
    return tuple(errors)


def load_pretrained(spec: str, *, what: str, use: str, load: Callable[..., Any], tiny: Callable[[], Any] | None = None,
                    marker: str = "config.json", download: str | None = None, note: str = "",
                    tiny_names: tuple[str, ...] = (TINY,)) -> tuple[Any, str]:
    """Load ``spec`` and return ``(load's result, model_identity(spec))``.

    - one of ``tiny_names`` (``tiny``): ``tiny()``, a tiny random model built offline (when the caller has one);
    - a local folder: ``load(folder, local_files_only=True)``; it must hold ``marker``
      (``config.json`` for transformers, ``model_index.json`` for a diffusers pipeline);
    - else a hub id: ``load(spec, cache_dir=..., local_files_only=<offline>)``.

    Errors are one line: ``what`` names the model ("captioning model"), ``use`` says how to
    pass a local copy (``--set prompt_builder.model=DIR``), ``download`` is the hub id the
    advice downloads (default ``spec``) and ``note`` is added after the reason.

    Our own progress bars report the work: the libraries' loading bars, which would interleave
    with them, are off during the load (only); huggingface_hub's download bars stay on.
    """
    with quiet_loading_bars():
        return _load(spec, what=what, use=use, load=load, tiny=tiny, marker=marker, download=download, note=note,
                     tiny_names=tiny_names)


def _load(spec: str, *, what: str, use: str, load: Callable[..., Any], tiny: Callable[[], Any] | None,
          marker: str, download: str | None, note: str, tiny_names: tuple[str, ...]) -> tuple[Any, str]:
    spec = spec.strip()
    identity = model_identity(spec)
    if tiny is not None and spec in tiny_names:
        return tiny(), identity
    folder = Path(identity)
    if folder.is_dir():
        if not (folder / marker).is_file():
            raise ModelNotFoundError(f"cannot load {what} from '{folder}': it is not a model folder (no {marker}); "
                                     f"pass a folder made by `hf download ORG/REPO --local-dir DIR` or save_pretrained "
                                     f"as {use}")
        try:
            return load(str(folder), local_files_only=True), identity
        except load_errors() as exc:
            raise ModelNotFoundError(f"cannot load {what} from folder '{folder}': {short_reason(exc)}") from exc
    if looks_like_path(spec):
        raise ModelNotFoundError(f"cannot load {what} '{spec}': no such folder ({identity}); pass an existing model "
                                 f"folder or a Hugging Face hub id as {use.replace('DIR', '...')}")
    kwargs = hub_load_kwargs()
    try:
        with hub_offline_mode():
            return load(spec, **kwargs), identity
    except load_errors() as exc:
        why = "offline: HF_HUB_OFFLINE=1" if hub_offline() else short_reason(exc)
        raise ModelNotFoundError(
            f"cannot load {what} '{spec}': not a local folder and not available from the Hugging Face hub ({why})"
            f"{note}. Download it where there is internet (`hf download {download or spec} --local-dir DIR`) and "
            f"pass {use}") from exc
