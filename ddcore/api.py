"""The public API: everything a plugin (or a script driving runs) imports, from one module.

    from ddcore.api import Filter, GenItem, hookimpl, option

Names here keep working across minor versions: ``API_VERSION`` is ``(major, minor)``. A minor
bump adds names or optional arguments; a major bump may remove or change one, and is announced
one minor version ahead with a ``DeprecationWarning``. A plugin can check it::

    from ddcore.api import API_VERSION
    assert API_VERSION[0] == 1, "this plugin is written for ddcore API 1.x"

The older paths (``ddcore.hookspecs``, ``ddcore.stages``, ``ddcore.records``, ``ddcore.errors``,
``ddcore.pipeline.RunContext``) stay as they are; the modules behind the other names are
internal and may move. Names that need torch or diffusers (models, training, distributed
gradients) load on first use, so ``from ddcore.api import hookimpl`` stays light: import those
inside the functions that use them, as the built-in plugins do.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ddcore.data import ensure_digits, is_image_file, load_image_folder, load_rgb, load_split_file
from ddcore.data.fewshot import relative_path
from ddcore.data.splits import unique_dirnames
from ddcore.checkpoint import load_state, save_state
from ddcore.distributed import ProcessInfo, grad_norm, process_info, sum_across, sum_gradients, wait_for_everyone
from ddcore.errors import ConfigError, DataError, DDError, ModelNotFoundError, PluginError, StageError
from ddcore.generation import plan_item
from ddcore.hookspecs import hookimpl
from ddcore.kinds import STAGE_KINDS, TRAIN_ON
from ddcore.options import OptionInfo, option, option_infos
from ddcore.progress import SILENT, Reporter
from ddcore.records import Dataset, GenItem, Prompt, Sample, SyntheticSet, safe_dirname
from ddcore.seeds import derive as derive_seed
from ddcore.seeds import image_seed, lora_init_seed, prior_image_seed
from ddcore.stages import (Adapter, Classifier, DatasetSource, Filter, Generator, Method, PromptBuilder, RunContext,
                           Setting, Stage, TrainingData)
from ddcore.train_log import TrainLog, read_train_log, train_logs
from ddcore.store import atomic_save_image, atomic_write_bytes, atomic_write_json, atomic_write_text, digest, file_sha256

# 1.1: TrainLog, read_train_log, train_logs, load_state, save_state, grad_norm, sum_across.
# 1.2: speed_up, resolve_switch; option(..., keyed=False); Adapter.prepare_compile.
# 1.3: option(..., keyed="if-set"); apply_step_cache, apply_token_merging; per_class_quality, feature_space;
#      load_pipeline, Family, FAMILIES, family_of_pipeline; load_sd_pipeline(..., who=); Conditioner, FlowMatching,
#      predict, latent_shift_and_scale (training on any family); save_memory, save_tiny_family.
API_VERSION = (1, 3)

# name -> module, imported on first use (they import torch).
_LAZY = {
    # models: loading checkpoints by hub id, local folder or "tiny"; diffusion helpers
    "load_sd_pipeline": "ddcore.models.diffusion",
    "load_pipeline": "ddcore.models.diffusion",
    "Family": "ddcore.models.families",
    "FAMILIES": "ddcore.models.families",
    "family_of_pipeline": "ddcore.models.families",
    "Conditioner": "ddcore.models.family_training",
    "FlowMatching": "ddcore.models.family_training",
    "predict": "ddcore.models.family_training",
    "latent_shift_and_scale": "ddcore.models.family_training",
    "model_identity": "ddcore.models.loading",
    "load_pretrained": "ddcore.models.loading",
    "short_reason": "ddcore.models.loading",
    "torch_dtype": "ddcore.models.diffusion",
    "training_dtype": "ddcore.models.diffusion",
    "swap_scheduler": "ddcore.models.diffusion",
    "speed_up": "ddcore.models.speedups",
    "resolve_switch": "ddcore.models.speedups",
    "save_memory": "ddcore.models.speedups",
    "apply_step_cache": "ddcore.models.step_cache",
    "apply_token_merging": "ddcore.models.token_merging",
    # set quality (dd quality's measures): per class and pooled ("all"), in a named feature space
    "per_class_quality": "ddcore.quality",
    "feature_space": "ddcore.quality_report",
    "denoising_target": "ddcore.models.diffusion",
    "load_clip": "ddcore.models.clip",
    "save_open_clip_folder": "ddcore.models.clip",
    "hub_offline": "ddcore.models.paths",
    "hub_offline_mode": "ddcore.models.paths",
    "hub_cache_dir": "ddcore.models.paths",
    "save_tiny_sd": "ddcore.models.tiny",
    "save_tiny_family": "ddcore.models.tiny",
    "tiny_sd_pipeline": "ddcore.models.tiny",
    "tiny_clip_tokenizer": "ddcore.models.tiny",
    "tiny_captioner": "ddcore.models.tiny",
    "tiny_sam": "ddcore.models.tiny",
    "tiny_text_generator": "ddcore.models.tiny",
    # classifier training: the shared loop a classifier plugin hands its model to
    "TrainableModel": "ddcore.training.loop",
    "TrainingOptions": "ddcore.training.loop",
    "train_classifier": "ddcore.training.loop:train",
    "eval_transform": "ddcore.training.loop",
    "predict_scores": "ddcore.training.loop",
    "remove_checkpoint": "ddcore.training.loop",
    "warmup_cosine": "ddcore.training.loop",
    "read_info": "ddcore.training.info",
    "write_info": "ddcore.training.info",
    "CLASSIFIER_INFO": "ddcore.training.info:INFO",
    # driving runs from Python (scripts, benchmarks, notebooks)
    "Run": "ddcore.pipeline",
    "Plugins": "ddcore.plugins",
    "RunConfig": "ddcore.config",
    "resolve_config": "ddcore.config:resolve",
}

__all__ = [  # every name above and in _LAZY (a test checks they match)
    "API_VERSION", "Adapter", "CLASSIFIER_INFO", "Classifier", "ConfigError", "DDError", "DataError", "Dataset",
    "DatasetSource", "Filter", "GenItem", "Generator", "Method", "ModelNotFoundError", "OptionInfo", "PluginError",
    "Plugins", "ProcessInfo", "Prompt", "PromptBuilder", "Reporter", "Run", "RunConfig", "RunContext", "SILENT",
    "STAGE_KINDS", "Sample", "Setting", "Stage", "StageError", "SyntheticSet", "TRAIN_ON", "TrainableModel",
    "TrainingData", "TrainingOptions", "atomic_save_image", "atomic_write_bytes", "atomic_write_json",
    "atomic_write_text", "denoising_target", "derive_seed", "digest", "ensure_digits", "eval_transform",
    "file_sha256", "hookimpl", "hub_cache_dir", "hub_offline", "hub_offline_mode", "image_seed", "is_image_file",
    "load_clip", "load_image_folder", "load_pretrained", "load_rgb", "load_sd_pipeline", "load_split_file",
    "lora_init_seed", "model_identity", "option", "option_infos", "plan_item", "predict_scores", "prior_image_seed",
    "process_info", "read_info", "relative_path", "remove_checkpoint", "resolve_config", "safe_dirname",
    "save_open_clip_folder", "save_tiny_sd", "short_reason", "sum_gradients", "swap_scheduler", "tiny_captioner",
    "tiny_clip_tokenizer", "tiny_sam", "tiny_sd_pipeline", "tiny_text_generator", "torch_dtype", "train_classifier",
    "training_dtype", "unique_dirnames", "wait_for_everyone", "warmup_cosine", "write_info",
    # 1.1
    "TrainLog", "grad_norm", "load_state", "read_train_log", "save_state", "sum_across", "train_logs",
    # 1.2
    "resolve_switch", "speed_up",
    # 1.3
    "apply_step_cache", "apply_token_merging", "feature_space", "per_class_quality", "load_pipeline", "Family",
    "FAMILIES", "family_of_pipeline", "Conditioner", "FlowMatching", "predict", "latent_shift_and_scale",
    "save_memory", "save_tiny_family",
]


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'ddcore.api' has no attribute '{name}'")
    module, _, attr = target.partition(":")
    value = getattr(importlib.import_module(module), attr or name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # for type checkers and IDEs; at run time these load on first use
    from ddcore.config import RunConfig
    from ddcore.config import resolve as resolve_config
    from ddcore.models.clip import load_clip, save_open_clip_folder
    from ddcore.models.diffusion import denoising_target, load_sd_pipeline, swap_scheduler, torch_dtype, training_dtype
    from ddcore.models.loading import load_pretrained, model_identity, short_reason
    from ddcore.models.speedups import resolve_switch, speed_up
    from ddcore.models.paths import hub_cache_dir, hub_offline, hub_offline_mode
    from ddcore.models.tiny import (save_tiny_sd, tiny_captioner, tiny_clip_tokenizer, tiny_sam, tiny_sd_pipeline,
                                    tiny_text_generator)
    from ddcore.pipeline import Run
    from ddcore.plugins import Plugins
    from ddcore.training.info import INFO as CLASSIFIER_INFO
    from ddcore.training.info import read_info, write_info
    from ddcore.training.loop import (TrainableModel, TrainingOptions, eval_transform, predict_scores,
                                      remove_checkpoint, warmup_cosine)
    from ddcore.training.loop import train as train_classifier
