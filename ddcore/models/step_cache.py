"""Step caching for the U-Net, in the manner of DeepCache (Ma et al., CVPR 2024, arXiv 2312.00858).

Adjacent denoising steps compute nearly the same deep features. Every ``interval``-th step
runs the whole U-Net and keeps the input of its last up block (the deep path's result);
the steps between run only the shallowest skip branch (``conv_in``, the first down block,
the last up block, the output layers) on that cached input. With SD 2.1's four levels that
skips most of the U-Net's work on ``interval - 1`` of every ``interval`` steps.

This changes the images (the cached features are a step old), so the generator option that
turns it on is part of the stage key, unlike the levers in :mod:`ddcore.models.speedups`.
It is deterministic and per sample (nothing mixes across the batch), so a set stays the same
whatever the batch size, the number of processes and interruptions.

A new pipeline call is recognised by its timestep: within one call the timesteps fall, so a
timestep that does not fall (or a batch of another shape) starts a full step.
"""

from __future__ import annotations

import types
from typing import Any, Callable

import torch

from ddcore.errors import ConfigError


class StepCache:
    """The state one U-Net's cached forward keeps between its calls."""

    def __init__(self, interval: int) -> None:
        self.interval = interval
        self.step = 0
        self.last_timestep: float | None = None
        self.deep: torch.Tensor | None = None  # the input of the last up block at the last full step
        self.full_steps = self.cached_steps = 0  # counted for the tests and the log

    def is_full_step(self, sample: torch.Tensor, timestep: Any) -> bool:
        t = float(timestep.flatten()[0]) if torch.is_tensor(timestep) else float(timestep)
        starts_a_call = self.last_timestep is None or t >= self.last_timestep
        self.step = 0 if starts_a_call else self.step + 1
        self.last_timestep = t
        stale = self.deep is None or self.deep.shape[0] != sample.shape[0]
        return starts_a_call or stale or self.step % self.interval == 0


def _shallow_forward(unet: Any, deep: torch.Tensor, sample: torch.Tensor, timestep: Any,
                     encoder_hidden_states: torch.Tensor, timestep_cond: Any, added_cond_kwargs: Any) -> torch.Tensor:
    """The U-Net's output from the shallowest skip branch and the cached deep features
    (the same sequence of calls as ``UNet2DConditionModel.forward``, for that branch only)."""
    emb = unet.time_embedding(unet.get_time_embed(sample=sample, timestep=timestep), timestep_cond)
    aug = unet.get_aug_embed(emb=emb, encoder_hidden_states=encoder_hidden_states, added_cond_kwargs=added_cond_kwargs)
    emb = emb + aug if aug is not None else emb
    if unet.time_embed_act is not None:
        emb = unet.time_embed_act(emb)
    encoder_hidden_states = unet.process_encoder_hidden_states(encoder_hidden_states=encoder_hidden_states,
                                                               added_cond_kwargs=added_cond_kwargs)
    hidden = unet.conv_in(sample)
    first, last = unet.down_blocks[0], unet.up_blocks[-1]
    cross = {"encoder_hidden_states": encoder_hidden_states}
    if getattr(first, "has_cross_attention", False):
        _, skips = first(hidden_states=hidden, temb=emb, **cross)
    else:
        _, skips = first(hidden_states=hidden, temb=emb)
    # The last up block takes the first len(resnets) skips: conv_in's output and the first
    # down block's layers (its downsampler's output feeds the next-deeper up block).
    skips = ((hidden,) + tuple(skips))[: len(last.resnets)]
    if getattr(last, "has_cross_attention", False):
        out = last(hidden_states=deep, temb=emb, res_hidden_states_tuple=skips, **cross)
    else:
        out = last(hidden_states=deep, temb=emb, res_hidden_states_tuple=skips)
    if unet.conv_norm_out is not None:
        out = unet.conv_act(unet.conv_norm_out(out))
    return unet.conv_out(out)


def apply_step_cache(unet: Any, interval: int) -> tuple[StepCache | None, Callable[[], None]]:
    """Make ``unet`` (a diffusers ``UNet2DConditionModel``) compute its deep path on one step of
    every ``interval``; return the cache state and a function that restores the plain forward.
    ``interval`` 0 or 1: off (nothing is installed)."""
    if interval < 0:
        raise ConfigError(f"generator.step_cache must be 0 (off) or an interval of at least 2 steps, not {interval}")
    if interval <= 1:
        return None, lambda: None
    unsupported = {"class_embed_type": unet.config.class_embed_type, "center_input_sample":
                   unet.config.center_input_sample or None, "addition_embed_type_image_hint":
                   unet.config.addition_embed_type == "image_hint" or None}
    unsupported = [name for name, value in unsupported.items() if value]
    if unsupported or len(unet.up_blocks) < 2:
        raise ConfigError(f"generator.step_cache does not support this U-Net ({', '.join(unsupported) or 'one level'}); "
                          "set generator.step_cache=0")
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

    cache = StepCache(interval)
    plain_forward = unet.forward

    def keep_deep_input(_module, _args, kwargs):
        cache.deep = kwargs["hidden_states"]

    hook = unet.up_blocks[-1].register_forward_pre_hook(keep_deep_input, with_kwargs=True)

    def forward(self, sample, timestep, encoder_hidden_states, class_labels=None, timestep_cond=None,
                attention_mask=None, cross_attention_kwargs=None, added_cond_kwargs=None,
                down_block_additional_residuals=None, mid_block_additional_residual=None,
                down_intrablock_additional_residuals=None, encoder_attention_mask=None, return_dict=True):
        extras = (class_labels, attention_mask, cross_attention_kwargs, down_block_additional_residuals,
                  mid_block_additional_residual, down_intrablock_additional_residuals, encoder_attention_mask)
        if any(extra is not None for extra in extras) or cache.is_full_step(sample, timestep):
            cache.full_steps += 1
            return plain_forward(sample, timestep, encoder_hidden_states, class_labels=class_labels,
                                 timestep_cond=timestep_cond, attention_mask=attention_mask,
                                 cross_attention_kwargs=cross_attention_kwargs, added_cond_kwargs=added_cond_kwargs,
                                 down_block_additional_residuals=down_block_additional_residuals,
                                 mid_block_additional_residual=mid_block_additional_residual,
                                 down_intrablock_additional_residuals=down_intrablock_additional_residuals,
                                 encoder_attention_mask=encoder_attention_mask, return_dict=return_dict)
        cache.cached_steps += 1
        out = _shallow_forward(self, cache.deep, sample, timestep, encoder_hidden_states, timestep_cond,
                               added_cond_kwargs)
        return UNet2DConditionOutput(sample=out) if return_dict else (out,)

    unet.forward = types.MethodType(forward, unet)

    def restore() -> None:
        hook.remove()
        del unet.forward  # back to the class's forward

    return cache, restore
