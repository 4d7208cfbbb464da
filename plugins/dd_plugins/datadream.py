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

from ddcore.api import Adapter, ConfigError, StageError, atomic_write_json, hookimpl, option

from .datadream_layout import ADAPTER_NAME, CHECKPOINTS, DATASET_GROUP, INFO, WEIGHTS, Group  # noqa: F401


CLS_STEPS = ("epochs", "equal-compute")
INTERPOLATIONS = ("bilinear", "bicubic")


class DataDreamAdapter(Adapter):
    """Base of both modes; ``per_class`` picks the mode."""

    per_class = False

    @dataclass
    class Options:
        rank: int = option(16, "LoRA rank of every adapted layer (paper: 16)")
        alpha: int = option(0, "LoRA alpha; 0 means alpha = rank, as in the paper")
        epochs: int = option(200, "passes over the shots of each adapter (the presets: 100 for dset on ImageNet)")
        max_steps: int = option(0, ">0: the total steps instead, in both modes (cls shares them out equally among "
                                   "its classes)", demo=60)
        cls_steps: str = option("epochs", "cls: 'epochs' (official code: each class trains `epochs` passes over its "
                                          "own shots, 200 steps at K < 8, 400 at K = 16) or 'equal-compute' (the "
                                          "paper's text: each class gets S/N steps, S the dset total)")
        batch_size: int = option(8, "shots per step (paper: 8)")
        lr: float = option(1e-4, "AdamW learning rate, after a linear warm-up and then cosine (paper: 1e-4)",
                           demo=1e-3)
        adam_beta1: float = option(0.9, "AdamW beta1")
        adam_beta2: float = option(0.999, "AdamW beta2")
        weight_decay: float = option(1e-2, "AdamW weight decay")
        adam_epsilon: float = option(1e-8, "AdamW epsilon")
        warmup_steps: int = option(100, "linear warm-up steps of each adapter (official code: 100)", demo=5)
        max_warmup_fraction: float = option(0.5, "an adapter's warm-up never exceeds this share of its steps")
        max_grad_norm: float = option(1.0, "clip the gradient norm to this (0: no clipping)")
        train_text_encoder: bool = option(True, "also put LoRA on the text encoder's attention (paper: yes)")
        unet_targets: str = option("to_q,to_k,to_v,to_out.0", "U-Net modules that get LoRA, comma-separated")
        text_targets: str = option("q_proj,k_proj,v_proj,out_proj", "text-encoder modules that get LoRA")
        interpolation: str = option("bilinear", "how the shots are resized: bilinear (official code) or bicubic")
        prior_loss_weight: float = option(0.0, ">0: DreamBooth's preservation loss with this weight (off in the "
                                               "paper)")
        prior_images: int = option(8, "class images per class the base model makes for the preservation loss")
        mixed_precision: str = option("auto", "base-weight dtype: auto (bf16/fp16 on a GPU, fp32 on the CPU), fp16, "
                                              "bf16 or no")
        checkpoint_every: int = option(500, "steps between checkpoints a killed run resumes from", demo=50)
        optimizer: str = option("adamw", "adamw, or adamw8bit: bitsandbytes' 8-bit AdamW (a quarter of the "
                                         "optimizer's memory; its rounding changes the training a little)",
                                keyed="if-set")
        # Speed and memory only: the same training (up to numerical noise), so no key includes them.
        gradient_checkpointing: str = option("auto", "recompute the denoiser's and text encoders' activations in "
                                                    "the backward pass (less memory, slower steps): auto (on for "
                                                    "SDXL, SD3 and FLUX on a GPU), on or off", keyed=False)
        fused_adamw: str = option("auto", "torch's fused AdamW kernel: auto (on a GPU), on or off", keyed=False)
        offload_frozen: str = option("auto", "once every prompt's frozen embedding and the shots' latents are "
                                             "cached, move what training no longer runs (T5, the VAE, frozen "
                                             "text encoders) to the CPU: auto (on a GPU), on or off", keyed=False)
        compile: str = option("off", "torch.compile the U-Net: on or off (the first steps pay the compile)",
                              keyed=False)

        def __post_init__(self) -> None:
            import importlib.util

            # true/false: the values of this option before it had an automatic default
            self.gradient_checkpointing = {"true": "on", "false": "off", True: "on", False: "off"}.get(
                self.gradient_checkpointing, self.gradient_checkpointing)
            for name in ("gradient_checkpointing", "offload_frozen"):
                if getattr(self, name) not in ("auto", "on", "off"):
                    raise ConfigError(f"adapter.{name} must be auto, on or off, not {getattr(self, name)!r}")
            if self.optimizer not in ("adamw", "adamw8bit"):
                raise ConfigError(f"adapter.optimizer must be adamw or adamw8bit, not {self.optimizer!r}")
            if self.optimizer == "adamw8bit" and importlib.util.find_spec("bitsandbytes") is None:
                raise ConfigError("adapter.optimizer=adamw8bit needs bitsandbytes, which is not installed: "
                                  "pip install bitsandbytes (or set adapter.optimizer=adamw)")
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
        from .datadream_training import LoraTrainer

        from ddcore.api import ProcessInfo

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
        from ddcore.api import model_identity

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
        self._in_place = False  # swap classes' weights into the loaded layers (a compiled U-Net)
        if not self.per_class:
            self._load(pipe, adapter_dir / DATASET_GROUP, what="the data-set adapter")

    def prepare_compile(self, pipe: Any) -> None:
        if self.per_class:
            self.select(pipe, 0)
            self._in_place = True

    def select(self, pipe: Any, label: int) -> None:
        if not self.per_class or self._active == label:
            return
        class_dir = self._class_dirs[label]
        folder, what = self._adapter_dir / class_dir, f"the adapter of class '{class_dir}'"
        if self._in_place:
            self._swap_in_place(pipe, folder, what)
        else:
            if self._active is not None:
                pipe.delete_adapters(ADAPTER_NAME)
            self._load(pipe, folder, what)
        self._active = label

    def _check(self, pipe: Any, folder: Path, what: str) -> None:
        if not (folder / WEIGHTS).is_file():
            raise StageError(f"{what} is missing ({folder / WEIGHTS}); rerun `dd adapt` to train it")
        trained_on = json.loads((folder / INFO).read_text()).get("base_model") if (folder / INFO).is_file() else None
        current = getattr(pipe, "dd_model_id", None)
        if trained_on and current and trained_on != current:
            raise StageError(f"{what} was trained on base model '{trained_on}' but the generator uses '{current}'; "
                             "use the same --base-model or train a new adapter")

    def _load(self, pipe: Any, folder: Path, what: str) -> None:
        self._check(pipe, folder, what)
        pipe.load_lora_weights(str(folder), weight_name=WEIGHTS, adapter_name=ADAPTER_NAME)

    def _swap_in_place(self, pipe: Any, folder: Path, what: str) -> None:
        """The denoiser's LoRA weights replaced in the loaded layers (diffusers' hotswap: the
        compiled graph stays valid), on a U-Net or a transformer; each CLIP text encoder, not
        compiled, reloads its layers (diffusers cannot hotswap a text encoder)."""
        import inspect

        from diffusers.utils.peft_utils import delete_adapter_layers

        self._check(pipe, folder, what)
        family = pipe.dd_family
        found = pipe.lora_state_dict(str(folder), weight_name=WEIGHTS)  # SD, SDXL: with the network alphas
        state, alphas = found if isinstance(found, tuple) else (found, None)
        common = {"network_alphas": alphas, "adapter_name": ADAPTER_NAME, "metadata": _lora_metadata(folder / WEIGHTS),
                  "_pipeline": pipe}

        def load(method, **arguments) -> None:  # the families' loaders take different arguments
            accepted = inspect.signature(method).parameters
            method(state, **{k: v for k, v in {**common, **arguments}.items() if k in accepted})

        denoiser = getattr(pipe, family.denoiser)
        if family.denoiser == "unet":
            load(pipe.load_lora_into_unet, unet=denoiser, hotswap=True)
        else:
            load(pipe.load_lora_into_transformer, transformer=denoiser, hotswap=True)
        for name in family.text_encoders:
            if any(key.startswith(f"{name}.") for key in state):
                encoder = getattr(pipe, name)
                delete_adapter_layers(encoder, ADAPTER_NAME)
                load(pipe.load_lora_into_text_encoder, text_encoder=encoder, prefix=name, lora_scale=pipe.lora_scale)


def _lora_metadata(path: Path) -> dict[str, Any] | None:
    """The LoRA configurations (rank, alpha, targets) diffusers' ``save_lora_weights`` writes
    into the safetensors header, as its loaders take them."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        text = (handle.metadata() or {}).get("lora_adapter_metadata")
    return json.loads(text) if text else None


class DataDreamDataset(DataDreamAdapter):
    """DataDream: one LoRA (U-Net + text encoder) on all classes' shots."""

    per_class = False


class DataDreamClass(DataDreamAdapter):
    """DataDream: one LoRA per class, on that class's shots (adapter.cls_steps: how many steps each)."""

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
    from ddcore.api import Method

    from .fidelity import PROTOCOLS

    register("datadream-dset", Method(
        adapter="datadream-dset", options=dict(PROMPTS),
        dataset_options={"imagenet": {"adapter.epochs": 100}},  # Sec. 4.1: 100 epochs on ImageNet
        protocol=PROTOCOLS["datadream-dset"],
        description="DataDream, one adapter for the data set"), default=True)
    register("datadream-cls", Method(
        adapter="datadream-cls", options=dict(PROMPTS), protocol=PROTOCOLS["datadream-cls"],
        description="DataDream, one adapter per class"))
