"""Loading open_clip CLIP models.

Spec grammar for :func:`load_clip`:

* ``tiny`` -- the tiny random ``dd-tiny-clip`` (tests, smoke runs);
* ``local-dir:PATH`` -- a folder with ``open_clip_config.json`` and weights (the layout of an
  open_clip hub repo, e.g. what ``hf download timm/vit_base_patch16_clip_224.openai`` gives);
* ``hf-hub:ORG/REPO`` -- an open_clip repo on the Hugging Face hub (or its local cache);
* ``NAME:TAG`` -- an open_clip built-in architecture with one of its pretrained tags;
* ``NAME:/path/to/weights.(pt|pth|bin|safetensors)`` -- a built-in architecture, weights from a file;
* ``NAME:random`` -- a built-in architecture, random init;
* ``NAME`` -- ``NAME:openai`` if open_clip lists that tag for NAME, else its first listed tag.
"""

from __future__ import annotations

import contextlib
import difflib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import ModelNotFoundError
from .paths import hub_cache_dir, hub_offline, hub_offline_mode
from .tiny import random_init_expected

LOCAL_DIR = "local-dir:"
HF_HUB = "hf-hub:"
RANDOM_TAG = "random"
_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
_CONVERTED = (FileNotFoundError, RuntimeError, ValueError, OSError)


@dataclass
class LoadedClip:
    """An open_clip model ready for use, with what is needed to feed it."""

    model: nn.Module  # open_clip CLIP, in eval mode
    tokenizer: Callable  # open_clip tokenizer: list[str] -> LongTensor [N, context_length]
    image_size: int
    mean: tuple
    std: tuple
    spec: str  # the resolved spec (bare NAME -> NAME:TAG, local paths absolute)
    model_cfg: dict | None = None  # open_clip's architecture config, as the model was built (for export)


# --------------------------------------------------------------------------- helpers


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _clean_tag(tag: str) -> str:
    # open_clip normalises tags the same way (pretrained._clean_tag)
    return tag.lower().replace("-", "_")


def _offline_note() -> str:
    return "offline: HF_HUB_OFFLINE=1" if hub_offline() else "not cached and the hub could not be reached"


def _close_names(name: str, names: Sequence[str], n: int = 8) -> list[str]:
    lowered = {m.lower(): m for m in names}
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.5)
    return [lowered[h] for h in hits]


def _find_checkpoint(folder: Path) -> Path | None:
    # The same files open_clip's factory._find_checkpoint_in_dir looks for.
    for pattern in ("*.safetensors", "*.bin", "*.pth"):
        found = sorted(folder.glob(pattern))
        if found:
            return found[0]
    return None


def _hub_repo(hf_hub: str) -> str:
    """'timm/vit_base_patch16_clip_224.openai/' or 'org/repo/file.bin' -> 'org/repo'."""
    return "/".join(hf_hub.strip("/").split("/")[:2])


def _is_weights_path(tag: str) -> bool:
    return tag.lower().endswith(_WEIGHT_SUFFIXES) or "/" in tag or os.sep in tag or tag.startswith("~")


def _default_tag(name: str) -> str | None:
    import open_clip

    tags = open_clip.list_pretrained_tags_by_model(name)
    if not tags:
        return None
    return "openai" if "openai" in tags else tags[0]


def _check_name(name: str) -> None:
    import open_clip

    names = open_clip.list_models()
    if name in names:
        return
    close = _close_names(name, names)
    hint = f"close names: {', '.join(close)}; " if close else ""
    raise ModelNotFoundError(
        f"unknown open_clip model name '{name}': {hint}open_clip.list_models() has the rest "
        f"(or use local-dir:DIR / hf-hub:ORG/REPO)"
    )


def _create_kwargs(name: str, tag: str | None) -> dict[str, Any]:
    """The ``open_clip.create_model`` keyword arguments for built-in ``name`` with ``tag``.

    ``tag`` is a pretrained tag, a weights file path, ``"random"`` or None (random).
    """
    import open_clip

    kwargs: dict[str, Any] = {
        "pretrained": None,
        # Never fetch separate tower weights (timm / HF text towers): either the full CLIP
        # checkpoint is loaded or the model is intentionally random.
        "pretrained_image": False,
        "pretrained_text": False,
    }
    if tag is None or tag == RANDOM_TAG:
        return kwargs
    if _is_weights_path(tag):
        kwargs["pretrained"] = str(Path(tag).expanduser().resolve())
        kwargs["require_pretrained"] = True
        return kwargs
    kwargs["pretrained"] = tag
    kwargs["require_pretrained"] = True
    model_cfg = open_clip.get_model_config(name) or {}
    tag_cfg = open_clip.get_pretrained_cfg(name, tag) or {}
    # OpenAI's CLIP weights (and some others, flagged quick_gelu in open_clip's table) were
    # trained with QuickGELU. open_clip's plain names (ViT-B-16) build nn.GELU and only warn on the
    # mismatch; the model then runs, but its features are silently wrong. Force QuickGELU.
    wants_quick = _clean_tag(tag) == "openai" or bool(tag_cfg.get("quick_gelu", False))
    if wants_quick and not model_cfg.get("quick_gelu", False):
        kwargs["force_quick_gelu"] = True
    return kwargs


def uses_quick_gelu(model: nn.Module) -> bool:
    """True when the model's MLPs use open_clip's QuickGELU activation."""
    from open_clip.model import QuickGELU

    return any(isinstance(m, QuickGELU) for m in model.modules())


def _preprocess(model: nn.Module) -> tuple[int, tuple, tuple]:
    from open_clip.model import get_model_preprocess_cfg

    cfg = get_model_preprocess_cfg(model)
    size = cfg.get("size", getattr(getattr(model, "visual", model), "image_size", 224))
    if isinstance(size, (tuple, list)):
        size = size[0]
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    mean = tuple(float(x) for x in cfg.get("mean", OPENAI_DATASET_MEAN))
    std = tuple(float(x) for x in cfg.get("std", OPENAI_DATASET_STD))
    return int(size), mean, std


# --------------------------------------------------------------------------- load_clip


def _load_local_dir(spec: str, device: str) -> tuple[nn.Module, Callable, str]:
    import open_clip

    raw = spec[len(LOCAL_DIR) :]
    folder = Path(raw).expanduser().resolve()
    resolved = LOCAL_DIR + str(folder)
    if not raw or not folder.is_dir():
        raise ModelNotFoundError(
            f"cannot load CLIP model '{spec}': folder '{folder}' does not exist; pass "
            f"--classifier-model local-dir:DIR with a folder holding open_clip_config.json and the weights"
        )
    if not (folder / "open_clip_config.json").is_file():
        raise ModelNotFoundError(
            f"cannot load CLIP model '{spec}': '{folder}' has no open_clip_config.json (not an open_clip "
            f"model folder); download an open_clip hub repo (`hf download ORG/REPO --local-dir DIR`) or "
            f"pass NAME:/path/to/open_clip_pytorch_model.bin"
        )
    if _find_checkpoint(folder) is None:
        # open_clip would only log a warning and return a random model.
        raise ModelNotFoundError(
            f"cannot load CLIP model '{spec}': '{folder}' has open_clip_config.json but no weights "
            f"(*.safetensors, *.bin, *.pth); put open_clip_model.safetensors or "
            f"open_clip_pytorch_model.bin there"
        )
    try:
        model = open_clip.create_model(
            resolved, device=device, pretrained_image=False, pretrained_text=False, require_pretrained=True
        )
        tokenizer = open_clip.get_tokenizer(resolved)
    except ModelNotFoundError:
        raise
    except _CONVERTED as exc:
        raise ModelNotFoundError(f"cannot load CLIP model from '{folder}': {_one_line(exc)}") from exc
    return model, tokenizer, resolved


def _load_hf_hub(spec: str, device: str) -> tuple[nn.Module, Callable, str]:
    import open_clip

    repo = spec[len(HF_HUB) :].strip("/")
    advice = (
        f"download it where there is internet (`hf download {repo} --local-dir DIR`), then pass "
        f"--classifier-model local-dir:DIR"
    )
    if not repo:
        raise ModelNotFoundError(f"cannot load CLIP model '{spec}': no repo after 'hf-hub:' (use hf-hub:ORG/REPO)")
    try:
        with hub_offline_mode():
            model = open_clip.create_model(
                HF_HUB + repo,
                device=device,
                cache_dir=hub_cache_dir(),
                pretrained_image=False,
                pretrained_text=False,
                require_pretrained=True,
            )
            tokenizer = open_clip.get_tokenizer(HF_HUB + repo, cache_dir=hub_cache_dir())
    except _CONVERTED as exc:
        why = _offline_note() if hub_offline() else f"{_offline_note()}: {_one_line(exc, 120)}"
        raise ModelNotFoundError(
            f"cannot load CLIP model '{spec}': hub repo '{repo}' is not available ({why}); {advice}"
        ) from exc
    return model, tokenizer, HF_HUB + repo


def _load_builtin(spec: str, device: str) -> tuple[nn.Module, Callable, str]:
    import open_clip

    name, sep, tag = spec.partition(":")
    name = name.strip()
    _check_name(name)
    if not sep:
        default = _default_tag(name)
        if default is None:
            raise ModelNotFoundError(
                f"cannot load CLIP model '{name}': open_clip lists no pretrained weights for it; pass "
                f"{name}:random, {name}:/path/to/weights.bin or local-dir:DIR"
            )
        tag = default
    tag = tag.strip()
    if not tag:
        raise ModelNotFoundError(f"cannot load CLIP model '{spec}': empty tag after ':' (use {name}:TAG or {name})")

    if tag == RANDOM_TAG:
        resolved = f"{name}:{RANDOM_TAG}"
    elif _is_weights_path(tag):
        path = Path(tag).expanduser().resolve()
        if not path.is_file():
            raise ModelNotFoundError(
                f"cannot load CLIP model '{spec}': weights file '{path}' does not exist; pass "
                f"{name}:/path/to/open_clip_pytorch_model.bin or local-dir:DIR"
            )
        resolved = f"{name}:{path}"
    else:
        tags = open_clip.list_pretrained_tags_by_model(name)
        if _clean_tag(tag) not in tags:
            listed = ", ".join(tags) if tags else "none"
            raise ModelNotFoundError(
                f"unknown pretrained tag '{tag}' for open_clip model '{name}': its tags are {listed} "
                f"(or use {name}:random / {name}:/path/to/weights.bin)"
            )
        tag = _clean_tag(tag)
        resolved = f"{name}:{tag}"

    kwargs = _create_kwargs(name, tag)
    try:
        quiet = random_init_expected() if tag == RANDOM_TAG else contextlib.nullcontext()
        with hub_offline_mode(), quiet:
            model = open_clip.create_model(name, device=device, cache_dir=hub_cache_dir(), **kwargs)
    except _CONVERTED as exc:
        if tag == RANDOM_TAG or _is_weights_path(tag):
            raise ModelNotFoundError(f"cannot load CLIP model '{resolved}': {_one_line(exc)}") from exc
        cfg = open_clip.get_pretrained_cfg(name, tag) or {}
        if cfg.get("hf_hub"):
            source = f"open_clip fetches them from hub repo '{_hub_repo(cfg['hf_hub'])}'"
        elif cfg.get("url"):
            source = f"open_clip fetches them from {cfg['url']}"
        else:
            source = "open_clip has no download source for them"
        raise ModelNotFoundError(
            f"cannot load CLIP weights '{resolved}' ({_offline_note()}): {source}; download it where there "
            f"is internet, then pass --classifier-model local-dir:DIR or {name}:/path/to/open_clip_pytorch_model.bin"
        ) from exc
    try:
        tokenizer = open_clip.get_tokenizer(name)
    except _CONVERTED as exc:
        raise ModelNotFoundError(f"cannot load the tokenizer of CLIP model '{name}': {_one_line(exc)}") from exc
    return model, tokenizer, resolved


def _model_cfg(spec: str, resolved: str, model: nn.Module) -> dict | None:
    """The architecture config the model was built from, with its real activation recorded."""
    import json

    import open_clip

    cfg: dict | None
    if resolved.startswith(LOCAL_DIR):
        cfg = json.loads((Path(resolved[len(LOCAL_DIR):]) / "open_clip_config.json").read_text()).get("model_cfg")
    elif resolved.startswith(HF_HUB):
        try:
            from open_clip.factory import _get_hf_config

            with hub_offline_mode():
                cfg = _get_hf_config(resolved[len(HF_HUB):], cache_dir=hub_cache_dir()).get("model_cfg")
        except Exception:  # noqa: BLE001 - only export needs it, and says so
            cfg = None
    else:
        from .tiny import TINY_CLIP_NAME

        cfg = open_clip.get_model_config(TINY_CLIP_NAME if spec == "tiny" else resolved.partition(":")[0])
    if cfg is None:
        return None
    cfg = dict(cfg)
    cfg["quick_gelu"] = uses_quick_gelu(model)
    return cfg


def load_clip(spec: str, *, device: str = "cpu") -> LoadedClip:
    """Load an open_clip CLIP model from ``spec`` (see the module docstring for the grammar).

    Raises :class:`ModelNotFoundError` (one line) when the model or its weights cannot be found;
    a model silently left random by open_clip counts as not found (only ``tiny`` and
    ``NAME:random`` are random on purpose).
    """
    import open_clip

    spec = spec.strip()
    if spec == "tiny":
        from .tiny import TINY_CLIP_NAME, tiny_clip

        model = tiny_clip().to(device)
        tokenizer = open_clip.get_tokenizer(TINY_CLIP_NAME)
        resolved = "tiny"
    elif spec.startswith(LOCAL_DIR):
        model, tokenizer, resolved = _load_local_dir(spec, device)
    elif spec.startswith(HF_HUB):
        model, tokenizer, resolved = _load_hf_hub(spec, device)
    else:
        model, tokenizer, resolved = _load_builtin(spec, device)
    model.eval()
    size, mean, std = _preprocess(model)
    return LoadedClip(model=model, tokenizer=tokenizer, image_size=size, mean=mean, std=std, spec=resolved,
                      model_cfg=_model_cfg(spec, resolved, model))


def save_open_clip_folder(model: nn.Module, loaded: LoadedClip, dest: Path) -> Path:
    """Write ``model`` as an open_clip model folder (``open_clip_config.json`` and
    ``open_clip_model.safetensors``), loadable with ``load_clip("local-dir:DEST")`` or
    ``open_clip.create_model("local-dir:DEST")``. The config records the activation the model
    really uses, so OpenAI weights keep their QuickGELU."""
    import json

    from safetensors.torch import save_file

    from ..store import atomic_write_text

    if loaded.model_cfg is None:
        raise ValueError("the model's open_clip config is unknown")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    cfg = {**loaded.model_cfg, "quick_gelu": uses_quick_gelu(model)}
    preprocess = {"size": loaded.image_size, "mean": list(loaded.mean), "std": list(loaded.std),
                  "interpolation": "bicubic", "resize_mode": "shortest"}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = dest / ".open_clip_model.safetensors.tmp"
    save_file(state, str(tmp))
    tmp.replace(dest / "open_clip_model.safetensors")
    atomic_write_text(dest / "open_clip_config.json",
                      json.dumps({"model_cfg": cfg, "preprocess_cfg": preprocess}, indent=2))
    return dest


__all__ = [
    "LoadedClip",
    "load_clip",
    "save_open_clip_folder",
    "uses_quick_gelu",
]

