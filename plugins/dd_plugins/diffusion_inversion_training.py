"""The training loop behind the ``diffusion-inversion`` adapter (kept apart from the plugin's
registration so the plugin module imports nothing heavy).

Per group of shots: embeddings ``[n, tokens, D]`` (fp32) fed to the frozen U-Net as
``encoder_hidden_states``, AdamW on them alone, the latent-diffusion denoising loss. Every
random draw of step ``s`` of group ``k`` (the batch, the latent samples, the noise, the
timesteps) comes from a seed of (run seed, k, s), and every embedding starts from a seed of
(run seed, its shot index): a resumed run gives exactly the embeddings of an uninterrupted one,
and an image's start does not depend on the grouping.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import torch
import torch.nn.functional as F

from ddcore.api import atomic_write_bytes, denoising_target, derive_seed, training_dtype

from .diffusion_inversion_layout import CHECKPOINTS, GROUPS
from .step_loop import save_checkpoint, train_steps


def square_pixels(path: Path, resolution: int) -> torch.Tensor:
    """The shot as a ``[3, r, r]`` tensor in [-1, 1]: shorter side resized to ``resolution``
    (bicubic), centre-cropped to a square. No augmentation (the paper uses none)."""
    from torchvision.transforms import functional as TF

    from ddcore.api import load_rgb

    image = TF.resize(load_rgb(path), resolution, interpolation=TF.InterpolationMode.BICUBIC)
    image = TF.center_crop(image, [resolution, resolution])
    return TF.to_tensor(image).mul(2).sub(1)


class EmbeddingTrainer:
    """Loads the frozen base once; learns the embeddings of one group at a time."""

    def __init__(self, options, context, out_dir: Path) -> None:
        from diffusers import DDPMScheduler

        from ddcore.api import load_sd_pipeline

        self.options, self.context, self.out_dir = options, context, out_dir
        self.device = context.device
        self.dtype = training_dtype(options.mixed_precision, self.device)
        pipe = load_sd_pipeline(context.config.base_model, device=self.device, dtype=self.dtype)
        self.unet, self.vae = pipe.unet, pipe.vae
        for module in (pipe.unet, pipe.vae, pipe.text_encoder):
            if module is not None:
                module.requires_grad_(False)
                module.eval()
        # Training noise: DDPM with the checkpoint's own schedule and prediction type.
        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        self.dim = int(self.unet.config.cross_attention_dim)
        self.scaling = self.vae.config.scaling_factor
        self.means: dict[int, torch.Tensor] = {}
        self.stds: dict[int, torch.Tensor] = {}

    # -- data -------------------------------------------------------------------------------

    def _encode(self, indices: list[int]) -> None:
        """The VAE latent distributions of these shots (once; sampled at every step)."""
        todo = [i for i in indices if i not in self.means]
        if not todo:
            return
        shots = self.context.shots
        with torch.no_grad(), self.context.reporter.task("encoding shots", len(todo)) as advance:
            for i in todo:
                pixels = square_pixels(shots[i].path, self.options.resolution).unsqueeze(0)
                dist = self.vae.encode(pixels.to(self.device, self.dtype)).latent_dist
                self.means[i] = dist.mean[0].float().cpu()
                self.stds[i] = dist.std[0].float().cpu()
                advance(1)

    def initial(self, indices: list[int]) -> torch.Tensor:
        """Starting embeddings, uniform in +-init_scale, each from (run seed, shot index)."""
        scale, tokens = self.options.init_scale, self.options.tokens
        rows = []
        for i in indices:
            generator = torch.Generator().manual_seed(derive_seed(self.context.config.seed, "di-init", i))
            rows.append((torch.rand((tokens, self.dim), generator=generator) * 2 - 1) * scale)
        return torch.stack(rows)

    def _batch(self, group: int, size: int, step: int) -> list[int]:
        """Positions in the group for ``step``: shuffled epochs, the last batch filled up."""
        batch = min(self.options.batch_size, size)
        per_epoch = math.ceil(size / batch)
        epoch, position = divmod(step, per_epoch)
        order = list(range(size))
        random.Random(derive_seed(self.context.config.seed, "di-epoch", group, epoch)).shuffle(order)
        chosen = order[position * batch:(position + 1) * batch]
        return chosen + order[: batch - len(chosen)]

    # -- training ---------------------------------------------------------------------------

    def train(self, group: int, indices: list[int]) -> None:
        from diffusers.optimization import get_scheduler

        opts, context = self.options, self.context
        self._encode(indices)
        embeddings = torch.nn.Parameter(self.initial(indices).to(self.device))
        optimizer = torch.optim.AdamW([embeddings], lr=opts.lr, betas=(opts.adam_beta1, opts.adam_beta2),
                                      weight_decay=opts.weight_decay, eps=opts.adam_epsilon)
        scheduler = get_scheduler("constant_with_warmup", optimizer, num_warmup_steps=opts.warmup_steps)
        checkpoint = self.out_dir / CHECKPOINTS / f"{group}.pt"

        def restore(state: dict) -> None:
            with torch.no_grad():
                embeddings.copy_(state["embeddings"].to(embeddings.device))

        train_steps(lambda step: self._loss(embeddings, group, indices, step), [embeddings], optimizer, scheduler,
                    steps=opts.steps, checkpoint=checkpoint, restore=restore,
                    save=lambda step, **loop: self._checkpoint(checkpoint, embeddings, optimizer, scheduler, step,
                                                               **loop),
                    checkpoint_every=opts.checkpoint_every,
                    max_grad_norm=opts.max_grad_norm,
                    reporter=context.reporter, task=f"inverting group {group} ({len(indices)} images)",
                    resuming=f"embedding group {group}", log_dir=self.out_dir, part=str(group),
                    images_per_step=min(opts.batch_size, len(indices)), grad_scaler=self.dtype == torch.float16)
        self._save_group(group, indices, embeddings)
        checkpoint.unlink(missing_ok=True)
        try:
            checkpoint.parent.rmdir()  # when no other group's checkpoint is left in it
        except OSError:
            pass

    def _loss(self, embeddings: torch.Tensor, group: int, indices: list[int], step: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(derive_seed(self.context.config.seed, "di-step", group, step))
        positions = self._batch(group, len(indices), step)
        latents = torch.stack([self.means[indices[p]] + self.stds[indices[p]]
                               * torch.randn(self.means[indices[p]].shape, generator=generator)
                               for p in positions]) * self.scaling
        noise = torch.randn(latents.shape, generator=generator)
        timesteps = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (len(positions),),
                                  generator=generator)
        latents, noise = latents.to(self.device, self.dtype), noise.to(self.device, self.dtype)
        timesteps = timesteps.to(self.device)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        condition = embeddings[torch.tensor(positions, device=embeddings.device)]
        with torch.autocast(self.device.split(":")[0], dtype=self.dtype, enabled=self.dtype != torch.float32):
            prediction = self.unet(noisy, timesteps, encoder_hidden_states=condition.to(self.dtype)).sample
        target = denoising_target(self.noise_scheduler, latents, noise, timesteps)
        return F.mse_loss(prediction.float(), target.float())

    # -- files ------------------------------------------------------------------------------

    def _save_group(self, group: int, indices: list[int], embeddings: torch.Tensor) -> None:
        from safetensors.torch import save

        tensors = {"embeddings": embeddings.detach().float().cpu().contiguous(),
                   "indices": torch.tensor(indices, dtype=torch.int64)}
        atomic_write_bytes(self.out_dir / GROUPS / f"{group}.safetensors", save(tensors))

    def _checkpoint(self, path: Path, embeddings, optimizer, scheduler, step: int, **loop) -> None:
        """One checkpoint (a method of its own: the resume test interrupts training here)."""
        save_checkpoint(path, step, optimizer, scheduler, embeddings=embeddings.detach().cpu(), **loop)
