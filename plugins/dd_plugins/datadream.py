"""Adapters ``datadream-dset`` and ``datadream-cls``: DataDream's LoRA on Stable Diffusion.

LoRA (peft) on the U-Net attention projections and the CLIP text encoder's q/k/v/out
projections, rank 16, alpha = rank, B zero and A Gaussian (peft's ``"gaussian"`` init), trained
with the plain latent-diffusion loss on the few shots, each with its class prompt (the prompt
builder's, so training and generation prompts are the same). ``dset`` trains one adapter on
all classes; ``cls`` trains one per class on that class's shots, with equal compute by default
(each gets S/N steps, S the dset total).

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

from ddcore.errors import StageError
from ddcore.hookspecs import hookimpl
from ddcore.stages import Adapter
from ddcore.store import atomic_write_json

WEIGHTS = "pytorch_lora_weights.safetensors"
INFO = "datadream.json"
CHECKPOINTS = "checkpoints"
ADAPTER_NAME = "datadream"
DATASET_GROUP = "dataset"


@dataclass
class Group:
    """One adapter to train: its folder name, its shots (indices into the shot list), its steps."""

    name: str
    shots: list[int]
    steps: int
    label: int | None = None


class DataDreamAdapter(Adapter):
    """Base of both modes; ``per_class`` picks the mode."""

    per_class = False

    @dataclass
    class Options:
        rank: int = 16
        alpha: int = 0  # 0: alpha = rank, as in the paper
        epochs: int = 200
        max_steps: int = 0  # >0 overrides the step count derived from epochs
        batch_size: int = 8
        lr: float = 1e-4
        adam_beta1: float = 0.9
        adam_beta2: float = 0.999
        weight_decay: float = 1e-2
        adam_epsilon: float = 1e-8
        warmup_steps: int = 100
        max_grad_norm: float = 1.0
        train_text_encoder: bool = True
        unet_targets: str = "to_q,to_k,to_v,to_out.0"
        text_targets: str = "q_proj,k_proj,v_proj,out_proj"
        prior_loss_weight: float = 0.0  # >0: DreamBooth preservation loss (off in the paper)
        prior_images: int = 8  # per class, made by the base model, for the preservation loss
        equal_compute: bool = True  # cls: each class gets S/N steps
        mixed_precision: str = "auto"  # auto (bf16/fp16 on GPU, fp32 on CPU), fp16, bf16, no
        checkpoint_every: int = 500

    # -- plan -------------------------------------------------------------------------------

    def groups(self, context) -> list[Group]:
        opts = self.options
        shots = context.shots
        dset_steps = opts.max_steps or opts.epochs * math.ceil(len(shots) / opts.batch_size)
        if not self.per_class:
            return [Group(DATASET_GROUP, list(range(len(shots))), dset_steps)]
        by_class: dict[int, list[int]] = {}
        for i, shot in enumerate(shots):
            by_class.setdefault(shot.label, []).append(i)
        groups = []
        for label, indices in sorted(by_class.items()):
            if opts.max_steps:
                steps = opts.max_steps
            elif opts.equal_compute:
                steps = max(1, dset_steps // len(by_class))
            else:
                steps = opts.epochs * math.ceil(len(indices) / opts.batch_size)
            groups.append(Group(context.dataset.class_dirs[label], indices, steps, label))
        return groups

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
            "resolution": context.config.resolution, "steps": group.steps, "shots": len(group.shots),
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


@hookimpl
def register_methods(register):
    from ddcore.stages import Method

    register("datadream-dset", Method(adapter="datadream-dset", description="DataDream, one adapter for the data set"))
    register("datadream-cls", Method(adapter="datadream-cls", description="DataDream, one adapter per class"))
