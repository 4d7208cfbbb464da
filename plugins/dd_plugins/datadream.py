"""Adapters ``datadream-dset`` and ``datadream-cls``: DataDream's LoRA on Stable Diffusion.

LoRA (peft) on the U-Net attention projections and the CLIP text encoder's q/k/v/out
projections, rank 16, alpha = rank, B zero and A Gaussian (peft's ``"gaussian"`` init), trained
with the plain latent-diffusion loss on the few shots, each with its class prompt (the prompt
builder's, so training and generation prompts are the same). ``dset`` trains one adapter on
all classes for ``epochs`` passes (200; 100 on ImageNet); ``cls`` trains one per class on that
class's shots. How many steps a class adapter gets follows the official code by default
(``epochs`` passes over its own shots: 200 steps at K < 8, 400 at K = 16); the paper's text
says each gets S/N steps, S the dset total: ``adapter.cls_steps=equal-compute``. Either way the
warm-up (100 steps) is capped at ``max_warmup_fraction`` of an adapter's steps, so a short
adapter still reaches its peak learning rate and runs its cosine phase. See docs/fidelity.md.

Engineering beyond the reference code:

- The base pipeline is loaded once; for cls mode one LoRA is re-initialised per class.
- The shots' VAE latent distributions are computed once. The paper's random crop is done in
  latent space (8-pixel granularity): the shot is resized (shorter side = resolution) and
  encoded whole, and each step crops a resolution/8 square of the latent and samples from it.
- Checkpoints every ``checkpoint_every`` steps, and a killed training resumes there.
- Saved in the diffusers LoRA format (``pytorch_lora_weights.safetensors``), with the rank and
  alpha as adapter metadata, so plain ``pipe.load_lora_weights(folder)`` loads it exactly (offline
  with diffusers < 0.42, name the file: ``weight_name="pytorch_lora_weights.safetensors"``).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ddcore.errors import ConfigError, StageError
from ddcore.hookspecs import hookimpl
from ddcore.stages import Adapter
from ddcore.store import atomic_write_json

WEIGHTS = "pytorch_lora_weights.safetensors"
INFO = "datadream.json"
CHECKPOINTS = "checkpoints"
ADAPTER_NAME = "datadream"
DATASET_GROUP = "dataset"


CLS_STEPS = ("epochs", "equal-compute")
INTERPOLATIONS = ("bilinear", "bicubic")


@dataclass
class Group:
    """One adapter to train: its folder name, its shots (indices into the shot list), its
    steps and warm-up steps."""

    name: str
    shots: list[int]
    steps: int
    label: int | None = None
    warmup: int = 0


class DataDreamAdapter(Adapter):
    """Base of both modes; ``per_class`` picks the mode."""

    per_class = False

    @dataclass
    class Options:
        rank: int = 16
        alpha: int = 0  # 0: alpha = rank, as in the paper
        epochs: int = 200  # passes over the shots of each adapter (the presets: 100 for dset on ImageNet)
        # >0: the total steps instead, in both modes (cls shares them out equally among its classes)
        max_steps: int = 0
        # cls: "epochs" (official code: every class trains `epochs` passes over its own shots,
        # 200 steps at K < 8, 400 at K = 16) or "equal-compute" (the paper's text: each class
        # gets S/N steps, S the dset total)
        cls_steps: str = "epochs"
        batch_size: int = 8
        lr: float = 1e-4
        adam_beta1: float = 0.9
        adam_beta2: float = 0.999
        weight_decay: float = 1e-2
        adam_epsilon: float = 1e-8
        warmup_steps: int = 100
        max_warmup_fraction: float = 0.5  # an adapter's warm-up never exceeds this share of its steps
        max_grad_norm: float = 1.0
        train_text_encoder: bool = True
        unet_targets: str = "to_q,to_k,to_v,to_out.0"
        text_targets: str = "q_proj,k_proj,v_proj,out_proj"
        interpolation: str = "bilinear"  # the shots' resize (official code: bilinear)
        prior_loss_weight: float = 0.0  # >0: DreamBooth preservation loss (off in the paper)
        prior_images: int = 8  # per class, made by the base model, for the preservation loss
        mixed_precision: str = "auto"  # auto (bf16/fp16 on GPU, fp32 on CPU), fp16, bf16, no
        checkpoint_every: int = 500

        def __post_init__(self) -> None:
            if self.cls_steps not in CLS_STEPS:
                raise ConfigError(f"adapter.cls_steps must be one of {', '.join(CLS_STEPS)}, not {self.cls_steps!r}")
            if self.interpolation not in INTERPOLATIONS:
                raise ConfigError(f"adapter.interpolation must be one of {', '.join(INTERPOLATIONS)}, "
                                  f"not {self.interpolation!r}")
            if not 0.0 <= self.max_warmup_fraction <= 1.0:
                raise ConfigError(f"adapter.max_warmup_fraction must be between 0 and 1, not {self.max_warmup_fraction}")

    # -- plan -------------------------------------------------------------------------------

    def groups(self, context) -> list[Group]:
        """The adapters to train and the steps of each. ``max_steps`` is the total compute in
        both modes; otherwise dset trains ``epochs`` passes over all shots, and cls per
        ``cls_steps``."""
        opts = self.options
        shots = context.shots

        def epoch_steps(images: int) -> int:
            return opts.epochs * math.ceil(images / opts.batch_size)

        if not self.per_class:
            return [self._group(DATASET_GROUP, list(range(len(shots))), opts.max_steps or epoch_steps(len(shots)))]
        by_class: dict[int, list[int]] = {}
        for i, shot in enumerate(shots):
            by_class.setdefault(shot.label, []).append(i)
        total = opts.max_steps or (epoch_steps(len(shots)) if opts.cls_steps == "equal-compute" else 0)
        groups = []
        for label, indices in sorted(by_class.items()):
            steps = max(1, total // len(by_class)) if total else epoch_steps(len(indices))
            groups.append(self._group(context.dataset.class_dirs[label], indices, steps, label))
        return groups

    def _group(self, name: str, shots: list[int], steps: int, label: int | None = None) -> Group:
        warmup = min(self.options.warmup_steps, int(self.options.max_warmup_fraction * steps))
        return Group(name, shots, steps, label, warmup)

    def describe(self, context) -> dict:
        groups = self.groups(context)
        steps = sorted({g.steps for g in groups})
        warmups = sorted({g.warmup for g in groups})
        return {"adapters": len(groups), "group_steps": steps[0] if len(steps) == 1 else steps,
                "group_warmup": warmups[0] if len(warmups) == 1 else warmups,
                "total_steps": sum(g.steps for g in groups)}

    # -- training ---------------------------------------------------------------------------

    def fit(self, context, out_dir: Path) -> None:
        from dd_plugins.datadream_training import LoraTrainer

        from ddcore.distributed import ProcessInfo

        # The pipeline waits for every process after fit() returns; nothing to sync here.
        me = ProcessInfo(context.rank, context.world_size)
        groups = [g for g in self.groups(context) if not (out_dir / g.name / WEIGHTS).is_file()]
        if self.per_class:  # classes are dealt out to processes; each trains its own alone
            mine, shard = [g for i, g in enumerate(groups) if i % me.world_size == me.rank], ProcessInfo()
        else:  # every process shares each batch of the one adapter
            mine, shard = groups, me
        if mine:
            trainer = LoraTrainer(self.options, context, out_dir, shard)
            for group in mine:
                trainer.train(group)
                if shard.is_main:
                    self._write_info(context, out_dir / group.name, group)

    def _write_info(self, context, folder: Path, group: Group) -> None:
        from ddcore.models import model_identity

        prompts = context.prompts
        labels = [group.label] if group.label is not None else sorted(prompts)
        atomic_write_json(folder / INFO, {
            "method": self.name, "base_model": model_identity(context.config.base_model),
            "resolution": context.config.resolution, "steps": group.steps, "warmup": group.warmup,
            "shots": len(group.shots),
            "prompts": {context.dataset.classnames[c]: prompts[c][0].text for c in labels},
            "options": asdict(self.options),
        })

    # -- generation -------------------------------------------------------------------------

    def load_into(self, context, pipe: Any, adapter_dir: Path) -> None:
        self._adapter_dir = adapter_dir
        self._class_dirs = context.dataset.class_dirs
        self._active: int | None = None
        if not self.per_class:
            self._load(pipe, adapter_dir / DATASET_GROUP, what="the data-set adapter")

    def select(self, pipe: Any, label: int) -> None:
        if not self.per_class or self._active == label:
            return
        class_dir = self._class_dirs[label]
        if self._active is not None:
            pipe.delete_adapters(ADAPTER_NAME)
        self._load(pipe, self._adapter_dir / class_dir, what=f"the adapter of class '{class_dir}'")
        self._active = label

    def _load(self, pipe: Any, folder: Path, what: str) -> None:
        if not (folder / WEIGHTS).is_file():
            raise StageError(f"{what} is missing ({folder / WEIGHTS}); rerun `dd adapt` to train it")
        trained_on = json.loads((folder / INFO).read_text()).get("base_model") if (folder / INFO).is_file() else None
        current = getattr(pipe, "dd_model_id", None)
        if trained_on and current and trained_on != current:
            raise StageError(f"{what} was trained on base model '{trained_on}' but the generator uses '{current}'; "
                             "use the same --base-model or train a new adapter")
        pipe.load_lora_weights(str(folder), weight_name=WEIGHTS, adapter_name=ADAPTER_NAME)


class DataDreamDataset(DataDreamAdapter):
    """DataDream: one LoRA (U-Net + text encoder) on all classes' shots."""

    per_class = False


class DataDreamClass(DataDreamAdapter):
    """DataDream: one LoRA per class, on that class's shots, equal compute."""

    per_class = True


@hookimpl
def register_adapters(register):
    register("datadream-dset", DataDreamDataset)
    register("datadream-cls", DataDreamClass)


# The official code's prompt: "a {domain}photo of a {classname}" (the paper writes "a photo of
# a [CLS]"; the code that made its numbers puts the data set's domain word first).
PROMPTS = {"prompt_builder.domain": True}


@hookimpl
def register_methods(register):
    from ddcore.stages import Method

    from .fidelity import PROTOCOLS

    register("datadream-dset", Method(
        adapter="datadream-dset", options=dict(PROMPTS),
        dataset_options={"imagenet": {"adapter.epochs": 100}},  # Sec. 4.1: 100 epochs on ImageNet
        protocol=PROTOCOLS["datadream-dset"],
        description="DataDream, one adapter for the data set"))
    register("datadream-cls", Method(
        adapter="datadream-cls", options=dict(PROMPTS), protocol=PROTOCOLS["datadream-cls"],
        description="DataDream, one adapter per class"))
