"""The LoRA training loop behind the DataDream adapters (kept apart from the plugin's
registration so the plugin module imports nothing heavy)."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ddcore.api import (ConfigError, ProcessInfo, denoising_target, derive_seed, lora_init_seed, prior_image_seed,
                        training_dtype)

from .datadream_layout import ADAPTER_NAME, CHECKPOINTS, WEIGHTS, Group
from .step_loop import save_checkpoint, train_steps


class ShotLatents:
    """The shots' VAE latent distributions, computed once.

    Each shot is resized so its shorter side is the resolution (``interpolation``: bilinear as
    the official code, or bicubic), scaled to [-1, 1]
    and encoded whole. ``batch`` crops a latent square of the resolution (resolution / the
    VAE's scale factor, 8 for Stable Diffusion) at random, the paper's random crop in latent
    space, and samples from the distribution.
    """

    def __init__(self, vae, scale_factor: int, shots, resolution: int, device: str, dtype: torch.dtype,
                 reporter, interpolation: str = "bilinear") -> None:
        from torchvision.transforms import functional as TF

        from ddcore.api import load_rgb

        self.size = resolution // scale_factor
        self.scaling = vae.config.scaling_factor
        self.means, self.stds = [], []
        mode = TF.InterpolationMode(interpolation)
        with torch.no_grad(), reporter.task("encoding shots", len(shots)) as advance:
            for shot in shots:
                image = TF.resize(load_rgb(shot.path), resolution, interpolation=mode)
                pixels = TF.to_tensor(image).mul(2).sub(1).unsqueeze(0).to(device, dtype)
                dist = vae.encode(pixels).latent_dist
                self.means.append(dist.mean[0].float().cpu())
                self.stds.append(dist.std[0].float().cpu())
                advance(1)

    def batch(self, indices: list[int], generator: torch.Generator) -> torch.Tensor:
        crops = []
        for i in indices:
            mean, std = self.means[i], self.stds[i]
            h, w = mean.shape[-2:]
            top = int(torch.randint(0, h - self.size + 1, (1,), generator=generator))
            left = int(torch.randint(0, w - self.size + 1, (1,), generator=generator))
            window = (slice(None), slice(top, top + self.size), slice(left, left + self.size))
            noise = torch.randn(mean[window].shape, generator=generator)
            crops.append(mean[window] + std[window] * noise)
        return torch.stack(crops) * self.scaling


class LoraTrainer:
    """Loads the base once; trains one LoRA per group (one group in dset mode)."""

    def __init__(self, options, context, out_dir: Path, shard: ProcessInfo = ProcessInfo()) -> None:
        from diffusers import DDPMScheduler
        from peft import LoraConfig, inject_adapter_in_model

        from ddcore.api import load_sd_pipeline

        self.options, self.context, self.out_dir = options, context, out_dir
        self.shard = shard  # processes sharing each batch (data parallelism); one by default
        if shard.world_size > options.batch_size:
            raise ConfigError(f"adapter.batch_size {options.batch_size} is smaller than the {shard.world_size} "
                              "processes sharing each batch; raise it or launch fewer processes")
        self.device = context.device
        self.dtype = training_dtype(options.mixed_precision, self.device)
        pipe = load_sd_pipeline(context.config.base_model, device=self.device, dtype=self.dtype)
        self.pipe = pipe
        self.unet, self.text_encoder, self.vae, self.tokenizer = pipe.unet, pipe.text_encoder, pipe.vae, pipe.tokenizer
        # Training noise: DDPM with the checkpoint's own schedule and prediction type.
        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        for module in (self.unet, self.text_encoder, self.vae):
            module.requires_grad_(False)
        alpha = options.alpha or options.rank
        self.unet_config = LoraConfig(r=options.rank, lora_alpha=alpha, init_lora_weights="gaussian",
                                      target_modules=_targets(options.unet_targets))
        # peft itself injects the layers, not diffusers' or transformers' adapter mixins: those
        # wrap the same call but add version gates of their own (transformers 5.24's demands a
        # peft release that does not exist yet), and we need nothing else from them.
        inject_adapter_in_model(self.unet_config, self.unet, adapter_name=ADAPTER_NAME)
        self.text_config = None
        if options.train_text_encoder:
            self.text_config = LoraConfig(r=options.rank, lora_alpha=alpha, init_lora_weights="gaussian",
                                          target_modules=_targets(options.text_targets))
            inject_adapter_in_model(self.text_config, self.text_encoder, adapter_name=ADAPTER_NAME)
        self.lora_modules = [m for m in (self.unet, self.text_encoder) if m is not None]
        self.params = [p for m in self.lora_modules for n, p in m.named_parameters() if "lora_" in n]
        for p in self.params:  # LoRA weights train in fp32 whatever the base dtype
            p.data = p.data.float()
            p.requires_grad_(True)
        self._speed_up(options)
        self.latents = ShotLatents(self.vae, pipe.vae_scale_factor, context.shots, context.config.resolution,
                                   self.device, self.dtype, context.reporter, options.interpolation)
        self.prompt_ids = self._tokenize([context.prompts[s.label][0].text for s in context.shots])
        self.prior = self._prior_latents() if options.prior_loss_weight > 0 else None

    def _speed_up(self, options) -> None:
        """The speed and memory levers (none changes what is learned)."""
        from ddcore.api import resolve_switch

        if options.gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
            if options.train_text_encoder:
                self.text_encoder.gradient_checkpointing_enable()
        self.fused_adamw = resolve_switch("adapter.fused_adamw", options.fused_adamw, self.device.startswith("cuda"))
        # The compiled module only runs the forward; the LoRA weights are read from self.unet.
        self.denoiser = torch.compile(self.unet) if resolve_switch("adapter.compile", options.compile, False) \
            else self.unet
        # A frozen text encoder gives each prompt the same embedding at every step: once each.
        self._text_cache: dict[bytes, torch.Tensor] | None = None if options.train_text_encoder else {}

    def _encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        """The text encoder's output for token ids on the CPU (the cache keys on them there, so
        a step costs no device-to-host copy)."""
        if self._text_cache is None:
            return self.text_encoder(ids.to(self.device))[0]
        rows = []
        for row in ids:
            key = row.numpy().tobytes()
            if key not in self._text_cache:
                with torch.no_grad():
                    self._text_cache[key] = self.text_encoder(row[None].to(self.device))[0][0]
            rows.append(self._text_cache[key])
        return torch.stack(rows)

    def _tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(texts, padding="max_length", max_length=self.tokenizer.model_max_length,
                              truncation=True, return_tensors="pt").input_ids

    # -- one adapter ------------------------------------------------------------------------

    def _reset_lora(self, group: Group) -> None:
        """Fresh LoRA weights for this group, the same on every machine for a given seed."""
        from peft.tuners.lora import LoraLayer

        seed = lora_init_seed(self.context.config.seed, group.label)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for module in self.lora_modules:
                for layer in module.modules():
                    if isinstance(layer, LoraLayer) and ADAPTER_NAME in layer.lora_A:
                        layer.reset_lora_parameters(ADAPTER_NAME, "gaussian")
        for p in self.params:
            p.data = p.data.float()

    def train(self, group: Group) -> None:
        from diffusers.optimization import get_scheduler

        opts, context = self.options, self.context
        self._reset_lora(group)
        optimizer = torch.optim.AdamW(self.params, lr=opts.lr, betas=(opts.adam_beta1, opts.adam_beta2),
                                      weight_decay=opts.weight_decay, eps=opts.adam_epsilon,
                                      fused=self.fused_adamw or None)
        scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=group.warmup,
                                  num_training_steps=group.steps)
        checkpoint = self.out_dir / CHECKPOINTS / f"{group.name}.pt"
        for module in self.lora_modules:
            module.train()
        label = f"adapter {group.name}" if group.label is not None else "adapter"
        batch = min(opts.batch_size, len(group.shots)) * (2 if self.prior is not None else 1)
        train_steps(lambda step: self._loss(group, step), self.params, optimizer, scheduler, steps=group.steps,
                    checkpoint=checkpoint, restore=self._restore,
                    save=lambda step, **loop: save_checkpoint(checkpoint, step, optimizer, scheduler,
                                                              lora=self._lora_state(), **loop),
                    checkpoint_every=opts.checkpoint_every,
                    max_grad_norm=opts.max_grad_norm,
                    reporter=context.reporter, task=f"training {label}", resuming=f"adapter '{group.name}'",
                    log_dir=self.out_dir, part=group.name if group.label is not None else None,
                    images_per_step=batch, grad_scaler=self.dtype == torch.float16, shard=self.shard)
        if self.shard.is_main:
            self._save(self.out_dir / group.name)
            checkpoint.unlink(missing_ok=True)

    def _batch_indices(self, group: Group, step: int) -> list[int]:
        """Shots for ``step``: shuffled epochs, drawn from a seed so a resumed run continues
        exactly where it stopped."""
        size = min(self.options.batch_size, len(group.shots))
        per_epoch = math.ceil(len(group.shots) / size)
        epoch, position = divmod(step, per_epoch)
        order = list(group.shots)
        random.Random(derive_seed(self.context.config.seed, group.name, "epoch", epoch)).shuffle(order)
        chosen = order[position * size:(position + 1) * size]
        return chosen + order[: size - len(chosen)]  # the last batch of an epoch is filled up

    def _loss(self, group: Group, step: int) -> torch.Tensor:
        """The loss of this process's share of the step's batch.

        The whole batch (crops, noise, timesteps) is drawn from the step's seed, so it is the
        same however many processes share it. With data parallelism each process takes every
        n-th sample and scales its sum so that the gradients summed over processes equal the
        gradient of the full batch's mean: the result matches a single process."""
        generator = torch.Generator().manual_seed(derive_seed(self.context.config.seed, group.name, step))
        indices = self._batch_indices(group, step)
        latents = self.latents.batch(indices, generator)
        ids = self.prompt_ids[indices]
        weights = torch.full((len(indices),), 1.0 / len(indices))
        if self.prior is not None:
            prior_latents, prior_ids = self.prior.batch(len(indices), generator)
            latents, ids = torch.cat([latents, prior_latents]), torch.cat([ids, prior_ids])
            weights = torch.cat([weights, weights * self.options.prior_loss_weight])
        noise = torch.randn(latents.shape, generator=generator)
        steps = self.noise_scheduler.config.num_train_timesteps
        timesteps = torch.randint(0, steps, (latents.shape[0],), generator=generator)
        share = slice(self.shard.rank, None, self.shard.world_size)
        latents, noise, timesteps = (t[share].to(self.device) for t in (latents, noise, timesteps))
        ids, weights = ids[share], weights[share].to(self.device)  # ids stay on the CPU: _encode_text
        latents, noise = latents.to(self.dtype), noise.to(self.dtype)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        with torch.autocast(self.device.split(":")[0], dtype=self.dtype, enabled=self.dtype != torch.float32):
            context = self._encode_text(ids)
            prediction = self.denoiser(noisy, timesteps, encoder_hidden_states=context).sample
        target = denoising_target(self.noise_scheduler, latents, noise, timesteps)
        per_sample = F.mse_loss(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
        return (per_sample * weights).sum()

    # -- preservation loss ------------------------------------------------------------------

    def _prior_latents(self) -> "PriorSet":
        """Class images from the base model (LoRA off), for DreamBooth's preservation loss."""
        context, n = self.context, self.options.prior_images
        labels = sorted({s.label for s in context.shots})
        prompts = [context.prompts[c][0].text for c in labels for _ in range(n)]
        generators = [torch.Generator().manual_seed(prior_image_seed(context.config.seed, i)) for i in range(len(prompts))]
        self._enable_lora(False)
        latents = []
        with torch.no_grad(), context.reporter.task("prior images", len(prompts)) as advance:
            for start in range(0, len(prompts), self.options.batch_size):
                chunk = slice(start, start + self.options.batch_size)
                out = self.pipe(prompt=prompts[chunk], generator=generators[chunk], output_type="latent",
                                num_inference_steps=context.config.steps, guidance_scale=context.config.guidance,
                                height=context.config.resolution, width=context.config.resolution)
                latents.append(out.images.float().cpu())
                advance(len(prompts[chunk]))
        self._enable_lora(True)
        return PriorSet(torch.cat(latents), self._tokenize(prompts))

    def _enable_lora(self, enabled: bool) -> None:
        """Switch the LoRA layers on or off, through peft's layers (no model mixin needed)."""
        from peft.tuners.tuners_utils import BaseTunerLayer

        for module in self.lora_modules:
            for layer in module.modules():
                if isinstance(layer, BaseTunerLayer):
                    layer.enable_adapters(enabled)

    # -- files ------------------------------------------------------------------------------

    def _lora_state(self) -> dict[str, Any]:
        from peft import get_peft_model_state_dict

        state = {"unet": get_peft_model_state_dict(self.unet, adapter_name=ADAPTER_NAME)}
        if self.text_config is not None:
            state["text_encoder"] = get_peft_model_state_dict(self.text_encoder, adapter_name=ADAPTER_NAME)
        return state

    def _save(self, folder: Path) -> None:
        from diffusers import StableDiffusionPipeline
        from diffusers.utils import convert_state_dict_to_diffusers

        state = self._lora_state()
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{WEIGHTS}.tmp"
        metadata = {"unet_lora_adapter_metadata": _metadata(self.unet_config)}
        layers = {"unet_lora_layers": convert_state_dict_to_diffusers(state["unet"])}
        if "text_encoder" in state:
            layers["text_encoder_lora_layers"] = convert_state_dict_to_diffusers(state["text_encoder"])
            metadata["text_encoder_lora_adapter_metadata"] = _metadata(self.text_config)
        StableDiffusionPipeline.save_lora_weights(str(folder), weight_name=tmp.name, safe_serialization=True,
                                                  **{k: {n: t.detach().float().cpu().contiguous() for n, t in v.items()}
                                                     for k, v in layers.items()}, **metadata)
        tmp.replace(folder / WEIGHTS)

    def _restore(self, state: dict) -> None:
        """The LoRA weights of a checkpoint, put back."""
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(self.unet, state["lora"]["unet"], adapter_name=ADAPTER_NAME)
        if "text_encoder" in state["lora"]:
            set_peft_model_state_dict(self.text_encoder, state["lora"]["text_encoder"], adapter_name=ADAPTER_NAME)


class PriorSet:
    def __init__(self, latents: torch.Tensor, ids: torch.Tensor) -> None:
        self.latents, self.ids = latents, ids

    def batch(self, size: int, generator: torch.Generator):
        pick = torch.randint(0, len(self.latents), (size,), generator=generator)
        return self.latents[pick], self.ids[pick]



def _targets(text: str) -> list[str]:
    targets = [t.strip() for t in text.split(",") if t.strip()]
    if not targets:
        raise ConfigError("LoRA target module list is empty")
    return targets


def _metadata(config) -> dict[str, Any]:
    data = config.to_dict()
    data["target_modules"] = sorted(data["target_modules"]) if data.get("target_modules") else data.get("target_modules")
    return data
