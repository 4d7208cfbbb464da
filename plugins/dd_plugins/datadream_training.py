"""The LoRA training loop behind the DataDream adapters (kept apart from the plugin's
registration so the plugin module imports nothing heavy)."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ddcore.api import (ConfigError, FlowMatching, ProcessInfo, denoising_target, derive_seed, latent_shift_and_scale,
                        lora_init_seed, predict, prior_image_seed, training_dtype)

from .datadream_layout import ADAPTER_NAME, CHECKPOINTS, WEIGHTS, Group
from .step_loop import save_checkpoint, train_steps


class ShotLatents:
    """The shots' VAE latent distributions, computed once.

    Each shot is resized so its shorter side is the resolution (``interpolation``: bilinear as
    the official code, or bicubic), scaled to [-1, 1]
    and encoded whole. ``batch`` crops a latent square of the resolution (resolution / the
    VAE's scale factor, 8 for Stable Diffusion) at random, the paper's random crop in latent
    space, samples from the distribution, and shifts and scales it as the family's VAE says.
    """

    def __init__(self, vae, scale_factor: int, shots, resolution: int, device: str, dtype: torch.dtype,
                 reporter, interpolation: str = "bilinear") -> None:
        from torchvision.transforms import functional as TF

        from ddcore.api import load_rgb

        self.size = resolution // scale_factor
        self.shift, self.scaling = latent_shift_and_scale(vae)
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
        return (torch.stack(crops) - self.shift) * self.scaling


class LoraTrainer:
    """Loads the base once; trains one LoRA per group (one group in dset mode), on the
    denoiser (U-Net or transformer) and, optionally, the CLIP text encoders of any family."""

    def __init__(self, options, context, out_dir: Path, shard: ProcessInfo = ProcessInfo()) -> None:
        from diffusers import DDPMScheduler
        from peft import LoraConfig, inject_adapter_in_model

        from ddcore.api import Conditioner, load_pipeline, resolve_switch

        self.options, self.context, self.out_dir = options, context, out_dir
        self.shard = shard  # processes sharing each batch (data parallelism); one by default
        if shard.world_size > options.batch_size:
            raise ConfigError(f"adapter.batch_size {options.batch_size} is smaller than the {shard.world_size} "
                              "processes sharing each batch; raise it or launch fewer processes")
        self.device = context.device
        self.dtype = training_dtype(options.mixed_precision, self.device)
        pipe = load_pipeline(context.config.base_model, device=self.device, dtype=self.dtype)
        self.pipe, self.family = pipe, pipe.dd_family
        if options.prior_loss_weight > 0 and self.family.name != "sd":
            raise ConfigError(f"adapter.prior_loss_weight > 0 works on Stable Diffusion 1.x/2.x only so far, not "
                              f"on {self.family.title}; set it to 0 (the paper's setting)")
        self.net, self.vae, self.tokenizer = getattr(pipe, self.family.denoiser), pipe.vae, pipe.tokenizer
        self.text_encoders = {name: getattr(pipe, name) for name in self.family.text_encoders}
        for module in (self.net, self.vae, *self.text_encoders.values(), *self.family.frozen_modules(pipe)):
            module.requires_grad_(False)
        # Training noise: DDPM with the checkpoint's own schedule and prediction type, or flow matching.
        self.flow = FlowMatching(self.family, pipe.scheduler.config) if self.family.flow_matching else None
        self.noise_scheduler = None if self.flow else DDPMScheduler.from_config(pipe.scheduler.config)
        alpha = options.alpha or options.rank
        self.net_config = LoraConfig(r=options.rank, lora_alpha=alpha, init_lora_weights="gaussian",
                                     target_modules=self.family.lora_targets(_targets(options.unet_targets)))
        # peft itself injects the layers, not diffusers' or transformers' adapter mixins: those
        # wrap the same call but add version gates of their own (transformers 5.24's demands a
        # peft release that does not exist yet), and we need nothing else from them.
        inject_adapter_in_model(self.net_config, self.net, adapter_name=ADAPTER_NAME)
        self.lora = {self.family.denoiser: self.net}  # component name -> module with LoRA layers
        self.text_config = None
        if options.train_text_encoder:
            self.text_config = LoraConfig(r=options.rank, lora_alpha=alpha, init_lora_weights="gaussian",
                                          target_modules=_targets(options.text_targets))
            for name, encoder in self.text_encoders.items():
                inject_adapter_in_model(self.text_config, encoder, adapter_name=ADAPTER_NAME)
                self.lora[name] = encoder
        self.lora_modules = list(self.lora.values())
        self.params = [p for m in self.lora_modules for n, p in m.named_parameters() if "lora_" in n]
        for p in self.params:  # LoRA weights train in fp32 whatever the base dtype
            p.data = p.data.float()
            p.requires_grad_(True)
        self._speed_up(options)
        self.latents = ShotLatents(self.vae, pipe.vae_scale_factor, context.shots, context.config.resolution,
                                   self.device, self.dtype, context.reporter, options.interpolation)
        self.prompt_texts = [context.prompts[s.label][0].text for s in context.shots]
        if self.family.name == "sd":
            self.prompt_ids = self._tokenize(self.prompt_texts)
        else:
            self.conditioner = Conditioner(pipe, self.family, context.config.resolution, self.device)
        self.prior = self._prior_latents() if options.prior_loss_weight > 0 else None
        self._cache_frozen_embeddings()
        if resolve_switch("adapter.offload_frozen", options.offload_frozen, self.device.startswith("cuda")):
            self._offload_frozen()

    def _speed_up(self, options) -> None:
        """The speed and memory levers (none changes what is learned)."""
        from ddcore.api import resolve_switch

        big = self.family.name != "sd" and self.device.startswith("cuda")  # SDXL, SD3, FLUX need it on 24 GB
        if resolve_switch("adapter.gradient_checkpointing", options.gradient_checkpointing, big):
            self.net.enable_gradient_checkpointing()
            if options.train_text_encoder:
                for encoder in self.text_encoders.values():
                    encoder.gradient_checkpointing_enable()
        self.fused_adamw = resolve_switch("adapter.fused_adamw", options.fused_adamw, self.device.startswith("cuda"))
        # The compiled module only runs the forward; the LoRA weights are read from self.net.
        self.denoiser = torch.compile(self.net) if resolve_switch("adapter.compile", options.compile, False) \
            else self.net
        # A frozen text encoder gives each prompt the same embedding at every step: once each.
        self._text_cache: dict[Any, Any] | None = None if options.train_text_encoder else {}

    def _cache_frozen_embeddings(self) -> None:
        """Every prompt's embedding from the frozen encoders, computed now (the prompts are
        known before training): T5's always, the CLIP encoders' too when they get no LoRA.
        Training then never runs a frozen encoder."""
        if self.family.name == "sd":
            if self._text_cache is not None:
                self._encode_text(self.prompt_ids if self.prior is None else torch.cat([self.prompt_ids, self.prior.ids]))
            return
        texts = list(dict.fromkeys(self.prompt_texts))
        if self.family.t5:
            self.conditioner._t5_embedding(texts)
        if self._text_cache is not None:
            self._condition(list(range(len(self.prompt_texts))))

    def _offload_frozen(self) -> None:
        """The modules no training step runs, moved to the CPU: the VAE (the shots' latents
        are cached), T5 (its embeddings are), and the CLIP encoders when they are frozen. T5-XXL
        alone holds 9.5 GB in bf16, more than SD 3.5 Medium's whole training step (docs/performance.md)."""
        frozen = [self.vae, *self.family.frozen_modules(self.pipe)]
        if self._text_cache is not None:
            frozen += list(self.text_encoders.values())
        for module in frozen:
            module.to("cpu")
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()

    def _encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        """SD's text encoder output for token ids on the CPU (the cache keys on them there, so
        a step costs no device-to-host copy)."""
        encoder = self.text_encoders["text_encoder"]
        if self._text_cache is None:
            return encoder(ids.to(self.device))[0]
        rows = []
        for row in ids:
            key = row.numpy().tobytes()
            if key not in self._text_cache:
                with torch.no_grad():
                    self._text_cache[key] = encoder(row[None].to(self.device))[0][0]
            rows.append(self._text_cache[key])
        return torch.stack(rows)

    def _condition(self, indices: list[int]) -> dict[str, Any]:
        """The denoiser's conditioning for these shots' prompts (SD: from the token ids; the
        other families through their :class:`Conditioner`, each prompt once when the text
        encoders are frozen)."""
        if self.family.name == "sd":
            return {"encoder_hidden_states": self._encode_text(self.prompt_ids[indices])}
        texts = [self.prompt_texts[i] for i in indices]
        if self._text_cache is None:
            return self.conditioner(texts)
        for text in dict.fromkeys(texts):
            if text not in self._text_cache:
                with torch.no_grad():
                    self._text_cache[text] = self.conditioner([text])
        return _stacked([self._text_cache[t] for t in texts])

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
        optimizer = self._optimizer()
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

    def _optimizer(self):
        opts = self.options
        settings = {"lr": opts.lr, "betas": (opts.adam_beta1, opts.adam_beta2), "weight_decay": opts.weight_decay,
                    "eps": opts.adam_epsilon}
        if opts.optimizer == "adamw8bit":
            try:
                import bitsandbytes
            except ImportError as exc:  # Options checked it is there; a broken install still gets one line
                raise ConfigError(f"adapter.optimizer=adamw8bit: bitsandbytes does not import ({exc}); "
                                  "pip install 'datadream[memory]' or set adapter.optimizer=adamw") from None
            return bitsandbytes.optim.AdamW8bit(self.params, **settings)
        return torch.optim.AdamW(self.params, **settings, fused=self.fused_adamw or None)

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
        weights = torch.full((len(indices),), 1.0 / len(indices))
        prompts = list(indices)  # which prompt each sample has: a shot's, or (below) a prior image's
        if self.prior is not None:
            prior_latents, prior_ids = self.prior.batch(len(indices), generator)
            latents = torch.cat([latents, prior_latents])
            weights = torch.cat([weights, weights * self.options.prior_loss_weight])
        noise = torch.randn(latents.shape, generator=generator)
        if self.flow is not None:
            noisy, timesteps, sigmas = self.flow.sample(latents, noise, generator)
        else:
            steps = self.noise_scheduler.config.num_train_timesteps
            timesteps = torch.randint(0, steps, (latents.shape[0],), generator=generator)
        share = slice(self.shard.rank, None, self.shard.world_size)
        latents, noise, timesteps = (t[share].to(self.device) for t in (latents, noise, timesteps))
        weights = weights[share].to(self.device)
        latents, noise = latents.to(self.dtype), noise.to(self.dtype)
        if self.flow is not None:
            noisy, sigmas = noisy[share].to(self.device, self.dtype), sigmas[share].to(self.device)
        else:
            noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        with torch.autocast(self.device.split(":")[0], dtype=self.dtype, enabled=self.dtype != torch.float32):
            if self.prior is not None:  # SD only: prior images carry their own token ids
                ids = torch.cat([self.prompt_ids[indices], prior_ids])[share]
                condition = {"encoder_hidden_states": self._encode_text(ids)}
            else:
                condition = self._condition(prompts[share])
            prediction = predict(self.pipe, self.family, self.denoiser, noisy, timesteps, condition)
        if self.flow is not None:
            output, target = self.flow.loss_terms(prediction.float(), noisy.float(), latents.float(), noise.float(),
                                                  sigmas.float())
        else:
            output, target = prediction.float(), denoising_target(self.noise_scheduler, latents, noise, timesteps).float()
        per_sample = F.mse_loss(output, target, reduction="none").mean(dim=(1, 2, 3))
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
        """Each LoRA-carrying component's weights, by its pipeline name (``unet``,
        ``transformer``, ``text_encoder``, ``text_encoder_2``)."""
        from peft import get_peft_model_state_dict

        return {name: get_peft_model_state_dict(module, adapter_name=ADAPTER_NAME) for name, module in self.lora.items()}

    def _save(self, folder: Path) -> None:
        """The LoRA in the diffusers format of the family: its pipeline's ``load_lora_weights``
        loads it into a plain base pipeline."""
        from diffusers.utils import convert_state_dict_to_diffusers

        state = self._lora_state()
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{WEIGHTS}.tmp"
        # The U-Net families' layers in diffusers' key names, as diffusers' SD and SDXL LoRA
        # scripts save them; SD3's and FLUX's in peft's, as their scripts do.
        convert = convert_state_dict_to_diffusers if self.family.denoiser == "unet" else dict
        arguments: dict[str, Any] = {}
        for name, weights in state.items():
            config = self.net_config if name == self.family.denoiser else self.text_config
            arguments[f"{name}_lora_layers"] = {k: t.detach().float().cpu().contiguous()
                                                for k, t in convert(weights).items()}
            arguments[f"{name}_lora_adapter_metadata"] = _metadata(config)
        self.family.pipeline_class("text-to-image").save_lora_weights(str(folder), weight_name=tmp.name,
                                                                      safe_serialization=True, **arguments)
        tmp.replace(folder / WEIGHTS)

    def _restore(self, state: dict) -> None:
        """The LoRA weights of a checkpoint, put back."""
        from peft import set_peft_model_state_dict

        for name, weights in state["lora"].items():
            set_peft_model_state_dict(self.lora[name], weights, adapter_name=ADAPTER_NAME)


class PriorSet:
    def __init__(self, latents: torch.Tensor, ids: torch.Tensor) -> None:
        self.latents, self.ids = latents, ids

    def batch(self, size: int, generator: torch.Generator):
        pick = torch.randint(0, len(self.latents), (size,), generator=generator)
        return self.latents[pick], self.ids[pick]



def _stacked(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-prompt conditionings (batch of one each) as one batch, nested dicts included."""
    first = rows[0]
    return {key: _stacked([r[key] for r in rows]) if isinstance(first[key], dict) else torch.cat([r[key] for r in rows])
            for key in first}


def _targets(text: str) -> list[str]:
    targets = [t.strip() for t in text.split(",") if t.strip()]
    if not targets:
        raise ConfigError("LoRA target module list is empty")
    return targets


def _metadata(config) -> dict[str, Any]:
    data = config.to_dict()
    data["target_modules"] = sorted(data["target_modules"]) if data.get("target_modules") else data.get("target_modules")
    return data
