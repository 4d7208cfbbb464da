"""Training a LoRA on any family's denoiser: the parts that differ between families.

- :class:`Conditioner`: the denoiser's conditioning for a batch of prompts, with gradients
  through the CLIP text encoders (which may carry LoRA layers) and the frozen T5 encoder's
  embeddings computed once per prompt and cached (SD3's and FLUX's T5 is never trained);
- :func:`predict`: one denoiser call on noisy latents, in the family's calling convention
  (SDXL's pooled embedding and size ids, SD3's pooled projections, FLUX's packed 2x2 latent
  patches, position ids and guidance embedding);
- :class:`FlowMatching`: the rectified-flow training objective of SD3 and FLUX as diffusers'
  own ``train_dreambooth_lora_sd3.py`` / ``train_dreambooth_lora_flux.py`` set it up: noisy =
  (1 - sigma) x0 + sigma noise on the scheduler's training sigmas; SD3 draws its timesteps
  logit-normally (mean 0, std 1) and learns x0 through the preconditioned output
  ``noisy - sigma * prediction``; FLUX draws them uniformly and learns the velocity
  ``noise - x0``. SD 1.x/2.x and SDXL keep DDPM noise with the checkpoint's epsilon or
  v-prediction target (``denoising_target``).

Every random draw takes the caller's ``torch.Generator``, so a step is the same on every machine
and after a resume.
"""

from __future__ import annotations

from typing import Any

import torch

from .families import Family

T5_MAX_TOKENS = {"sd3": 256, "flux": 512}  # the pipelines' default max_sequence_length
FLUX_TRAINING_GUIDANCE = 3.5  # train_dreambooth_lora_flux.py's --guidance_scale (FLUX.1-dev is guidance-distilled)


def latent_shift_and_scale(vae: Any) -> tuple[float, float]:
    """``latents = (vae_sample - shift) * scale``: SD3's and FLUX's VAEs have a shift."""
    return float(getattr(vae.config, "shift_factor", None) or 0.0), float(vae.config.scaling_factor)


class Conditioner:
    """The denoiser's conditioning (keyword arguments) for a batch of prompt texts."""

    def __init__(self, pipe: Any, family: Family, resolution: int, device: str) -> None:
        self.pipe, self.family, self.resolution, self.device = pipe, family, resolution, device
        self._t5: dict[str, torch.Tensor] = {}  # text -> frozen T5 embedding (1, tokens, dim)

    def _t5_embedding(self, texts: list[str]) -> torch.Tensor:
        missing = [t for t in dict.fromkeys(texts) if t not in self._t5]
        if missing:
            with torch.no_grad():
                for text in missing:
                    self._t5[text] = self.pipe._get_t5_prompt_embeds(
                        prompt=[text], num_images_per_prompt=1, max_sequence_length=T5_MAX_TOKENS[self.family.name],
                        device=self.device)
        return torch.cat([self._t5[t] for t in texts])

    def __call__(self, texts: list[str]) -> dict[str, Any]:
        pipe, name = self.pipe, self.family.name
        if name == "sdxl":
            embeds, _, pooled, _ = pipe.encode_prompt(prompt=texts, device=self.device, num_images_per_prompt=1,
                                                      do_classifier_free_guidance=False)
            size = (self.resolution, self.resolution)
            time_ids = pipe._get_add_time_ids(size, (0, 0), size, dtype=embeds.dtype,
                                              text_encoder_projection_dim=pipe.text_encoder_2.config.projection_dim)
            return {"encoder_hidden_states": embeds,
                    "added_cond_kwargs": {"text_embeds": pooled,
                                          "time_ids": time_ids.to(self.device).repeat(len(texts), 1)}}
        if name == "sd3":  # as StableDiffusion3Pipeline.encode_prompt combines its three encoders
            first, pooled_first = pipe._get_clip_prompt_embeds(prompt=texts, device=self.device,
                                                               num_images_per_prompt=1, clip_model_index=0)
            second, pooled_second = pipe._get_clip_prompt_embeds(prompt=texts, device=self.device,
                                                                 num_images_per_prompt=1, clip_model_index=1)
            t5 = self._t5_embedding(texts)
            clip = torch.cat([first, second], dim=-1)
            clip = torch.nn.functional.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
            return {"encoder_hidden_states": torch.cat([clip, t5.to(clip.dtype)], dim=-2),
                    "pooled_projections": torch.cat([pooled_first, pooled_second], dim=-1)}
        if name == "flux":  # the CLIP encoder gives only the pooled embedding
            pooled = pipe._get_clip_prompt_embeds(prompt=texts, device=self.device, num_images_per_prompt=1)
            return {"encoder_hidden_states": self._t5_embedding(texts), "pooled_projections": pooled}
        raise ValueError(f"no training conditioner for the {self.family.title} family")


def predict(pipe: Any, family: Family, denoiser: Any, noisy: torch.Tensor, timesteps: torch.Tensor,
            condition: dict[str, Any]) -> torch.Tensor:
    """The denoiser's output for ``noisy`` latents (B, C, H, W), in their layout."""
    if family.denoiser == "unet":
        return denoiser(noisy, timesteps, **condition).sample
    if family.name == "sd3":
        return denoiser(hidden_states=noisy, timestep=timesteps, **condition, return_dict=False)[0]
    # FLUX: 2x2 latent patches as tokens, with their positions; the timestep in [0, 1]
    b, c, h, w = noisy.shape
    packed = pipe._pack_latents(noisy, b, c, h, w)
    image_ids = pipe._prepare_latent_image_ids(b, h // 2, w // 2, noisy.device, noisy.dtype)
    text = condition["encoder_hidden_states"]
    text_ids = torch.zeros(text.shape[1], 3, device=noisy.device, dtype=noisy.dtype)
    guidance = (torch.full((b,), FLUX_TRAINING_GUIDANCE, device=noisy.device)
                if denoiser.config.guidance_embeds else None)
    out = denoiser(hidden_states=packed, timestep=timesteps / 1000, guidance=guidance,
                   pooled_projections=condition["pooled_projections"], encoder_hidden_states=text, txt_ids=text_ids,
                   img_ids=image_ids, return_dict=False)[0]
    return pipe._unpack_latents(out, h * pipe.vae_scale_factor, w * pipe.vae_scale_factor, pipe.vae_scale_factor)


class FlowMatching:
    """SD3's and FLUX's training objective (see the module docstring)."""

    def __init__(self, family: Family, scheduler_config: Any) -> None:
        from diffusers import FlowMatchEulerDiscreteScheduler

        self.family = family
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(scheduler_config)
        self.timesteps, self.sigmas = scheduler.timesteps.float(), scheduler.sigmas.float()
        self.count = scheduler.config.num_train_timesteps

    def sample(self, latents: torch.Tensor, noise: torch.Tensor, generator: torch.Generator):
        """(noisy latents, timesteps, sigmas) for a batch, drawn from ``generator``."""
        n = latents.shape[0]
        if self.family.name == "sd3":  # logit-normal, mean 0, std 1 (the SD3 paper's rf/lognorm(0, 1))
            u = torch.sigmoid(torch.randn(n, generator=generator))
        else:
            u = torch.rand(n, generator=generator)
        indices = (u * self.count).long().clamp(max=self.count - 1)
        sigmas = self.sigmas[indices].view(n, 1, 1, 1)
        return (1.0 - sigmas) * latents + sigmas * noise, self.timesteps[indices], sigmas

    def loss_terms(self, prediction: torch.Tensor, noisy: torch.Tensor, latents: torch.Tensor, noise: torch.Tensor,
                   sigmas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(what the model's output is compared with, that target) for the MSE."""
        if self.family.name == "sd3":  # preconditioned: the output read as x0
            return noisy - sigmas.to(prediction.dtype) * prediction, latents
        return prediction, noise - latents
