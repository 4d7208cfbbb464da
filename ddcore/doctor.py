"""`dd doctor`: can this environment run, and what will a real run have to download?

One JSON-ready report: the stack's versions against the tested set and bounds
(:mod:`ddcore.compat`), whether each library imports, the devices with their free memory and
half-precision support, the Hugging Face cache and offline mode, and which pretrained models
the defaults would load are already in the local cache. ``ok`` is False when something
required is broken (the CLI exits non-zero then).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import platform
import sys
from pathlib import Path
from typing import Any

from . import __version__, compat
from .config import DEFAULT_BASE_MODEL
from .models.loading import TINY, looks_like_path, short_reason
from .models.paths import dd_home, hub_cache_dir, hub_offline
from .stages import STAGE_KINDS

# Import name per distribution, for the libraries whose import can fail on a bad combination.
IMPORTS = {"torch": "torch", "torchvision": "torchvision", "diffusers": "diffusers", "transformers": "transformers",
           "peft": "peft", "accelerate": "accelerate", "open-clip-torch": "open_clip", "timm": "timm"}


def diagnose(plugins=None) -> dict[str, Any]:
    """The whole report. ``plugins`` (a ddcore.plugins.Plugins) adds the stages' default models."""
    versions = compat.installed_versions()
    problems = compat.check(versions)
    stack = _stack(versions, problems)
    import_errors = _import_errors()
    report = {
        "datadream": __version__,
        "python": platform.python_version(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "stack": stack,
        "imports": {name: import_errors.get(name, "ok") for name in IMPORTS},
        "problems": [dataclasses.asdict(p) for p in problems],
        "devices": devices() if "torch" not in import_errors else [],
        "hub": hub_settings(),
        "models": default_models(plugins),
        "constraints": str(compat.CONSTRAINTS),
    }
    report["ok"] = not import_errors and not any(p.severity == "error" for p in problems)
    return report


def _stack(versions: dict[str, str | None], problems: list[compat.Problem]) -> list[dict[str, Any]]:
    bounds, pins = compat.declared_bounds(), compat.tested_versions()
    names = list(dict.fromkeys((*compat.STACK, *sorted(bounds))))
    rows = []
    for name in names:
        worst = sorted((p.severity for p in problems if name in p.packages), key=compat.SEVERITIES.index)
        status = worst[0] if worst else "ok"
        if versions.get(name) is None and name not in bounds:
            status = "not installed"
        rows.append({"package": name, "installed": versions.get(name), "tested": pins.get(name),
                     "bounds": str(bounds.get(name, "")), "status": status})
    return rows


def _import_errors() -> dict[str, str]:
    errors = {}
    for dist, module in IMPORTS.items():
        try:
            importlib.import_module(module)
        except Exception as exc:  # any failure is what the user needs to see, on one line
            errors[dist] = f"{type(exc).__name__}: {short_reason(exc)}"
    return errors


def devices() -> list[dict[str, Any]]:
    """The CPU and every CUDA (or MPS) device, with memory and half-precision support."""
    import torch

    found = [{"device": "cpu", "name": platform.processor() or platform.machine(), "cores": os.cpu_count(),
              "total_gib": _gib(_memory_total()), "free_gib": _gib(_memory_available()),
              "bf16": None, "fp16": None, "note": "stages run in fp32 on the CPU"}]
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            try:
                free, total = torch.cuda.mem_get_info(index)
            except RuntimeError:  # a device that is busy or in a bad state still gets a row
                free, total = None, props.total_memory
            capability = (props.major, props.minor)
            found.append({"device": f"cuda:{index}", "name": props.name, "capability": f"{props.major}.{props.minor}",
                          "total_gib": _gib(total), "free_gib": _gib(free),
                          "bf16": capability >= (8, 0), "fp16": capability >= (5, 3),
                          "note": f"CUDA {torch.version.cuda}"})
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append({"device": "mps", "name": "Apple GPU", "total_gib": None, "free_gib": None,
                      "bf16": False, "fp16": True, "note": "Metal"})
    return found


def _gib(value: int | None) -> float | None:
    return None if value is None else round(value / 2**30, 1)


def _meminfo(field: str) -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _memory_total() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return _meminfo("MemTotal")


def _memory_available() -> int | None:
    return _meminfo("MemAvailable")


def hub_settings() -> dict[str, Any]:
    return {"cache": hub_cache(), "offline": hub_offline(), "dd_home": str(dd_home()),
            "endpoint": os.environ.get("HF_ENDPOINT", "https://huggingface.co")}


def hub_cache() -> str:
    explicit = hub_cache_dir()
    if explicit:
        return explicit
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except ImportError:  # pragma: no cover - a dependency of diffusers and transformers
        return str(Path.home() / ".cache" / "huggingface" / "hub")


# -- the default models ---------------------------------------------------------------------

def default_models(plugins=None) -> list[dict[str, Any]]:
    """Each pretrained model a default would load: the base model, and every stage option
    naming a model (``model``, ``*_model`` or listed in the stage's ``pretrained_options``),
    with where it comes from and whether it is already on this machine."""
    wanted: dict[str, list[str]] = {DEFAULT_BASE_MODEL: ["--base-model"]}
    if plugins is not None:
        for kind in STAGE_KINDS:
            for name in plugins.names(kind):
                factory = plugins.get(kind, name).factory
                for option, spec in _model_options(factory):
                    wanted.setdefault(spec, []).append(f"{kind} {name} ({option})")
    return [{"model": spec, "used_by": users, **locate(spec)} for spec, users in wanted.items()]


def _model_options(factory) -> list[tuple[str, str]]:
    extra = set(factory.pretrained_options)
    found = []
    for field in dataclasses.fields(factory.Options):
        if field.name == "model" or field.name.endswith("_model") or field.name in extra:
            default = field.default
            if isinstance(default, str) and default.strip() and default != TINY:
                found.append((field.name, default))
    return found


def locate(spec: str) -> dict[str, Any]:
    """Where ``spec`` (a hub id, a folder, or an open_clip ``NAME:TAG`` / ``hf-hub:`` / ``local-dir:``
    spec, or a timm name) comes from, and the local copy if there is one."""
    if spec.startswith("local-dir:") or looks_like_path(spec):
        path = Path(spec.removeprefix("local-dir:")).expanduser()
        return {"source": str(path), "cached": path.exists(), "path": str(path) if path.exists() else None}
    if spec.startswith("hf-hub:"):
        return _in_cache(spec.removeprefix("hf-hub:"))
    if ":" in spec:  # an open_clip architecture with a pretrained tag
        return _open_clip_source(*spec.split(":", 1))
    if "/" in spec:
        return _in_cache(spec)
    return _timm_source(spec)


def _in_cache(repo: str) -> dict[str, Any]:
    repo = "/".join(repo.strip("/").split("/")[:2])
    snapshots = Path(hub_cache()) / ("models--" + repo.replace("/", "--")) / "snapshots"
    found = sorted(p for p in snapshots.glob("*") if p.is_dir() and any(p.iterdir())) if snapshots.is_dir() else []
    return {"source": f"hub {repo}", "cached": bool(found), "path": str(found[-1]) if found else None}


def _open_clip_source(name: str, tag: str) -> dict[str, Any]:
    try:
        import open_clip

        cfg = open_clip.get_pretrained_cfg(name, tag) or {}
    except Exception as exc:  # open_clip missing or broken: the stack table says why
        return {"source": f"open_clip ({short_reason(exc, 80)})", "cached": False, "path": None}
    if cfg.get("hf_hub"):
        return _in_cache(cfg["hf_hub"])
    if cfg.get("url"):
        file = Path(os.path.expanduser("~/.cache/clip")) / cfg["url"].rsplit("/", 1)[-1]
        return {"source": cfg["url"], "cached": file.is_file(), "path": str(file) if file.is_file() else None}
    return {"source": "open_clip: no download source", "cached": False, "path": None}


def _timm_source(name: str) -> dict[str, Any]:
    try:
        import timm

        cfg = timm.models.get_pretrained_cfg(name)
        hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    except Exception:  # not a timm name (or timm missing): nothing to look up
        hub_id = None
    if hub_id:
        return _in_cache(hub_id)
    return {"source": "unknown", "cached": False, "path": None}
