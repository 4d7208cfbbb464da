"""DeepCache-style step caching of the U-Net (ddcore/models/step_cache.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ddcore.api import load_sd_pipeline
from ddcore.errors import ConfigError
from ddcore.models.step_cache import _shallow_forward, apply_step_cache


def render(pipe, seeds, steps=6):
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    return pipe(prompt=["a photo of a cat"] * len(seeds), num_inference_steps=steps, guidance_scale=2.0, height=32,
                width=32, generator=generators, output_type="np").images


@pytest.fixture(scope="module")
def pipe():
    return load_sd_pipeline("tiny")


def test_the_shallow_branch_on_the_true_deep_features_is_the_full_forward(pipe):
    """The cached step re-implements a slice of UNet2DConditionModel.forward: fed this step's
    own deep features it must give the full forward's output."""
    unet = pipe.unet
    sample, text = torch.randn(2, 4, 16, 16), torch.randn(2, 77, 32)
    kept = {}
    hook = unet.up_blocks[-1].register_forward_pre_hook(
        lambda _m, _a, kwargs: kept.update(deep=kwargs["hidden_states"]), with_kwargs=True)
    with torch.no_grad():
        full = unet(sample, 500, encoder_hidden_states=text).sample
        hook.remove()
        shallow = _shallow_forward(unet, kept["deep"], sample, 500, text, None, None)
    assert shallow.shape == full.shape
    torch.testing.assert_close(shallow, full, rtol=1e-5, atol=1e-5)


def test_every_interval_th_step_is_full_and_the_images_change_a_little(pipe):
    default = render(pipe, [1, 2])
    cache, restore = apply_step_cache(pipe.unet, 3)
    try:
        cached = render(pipe, [1, 2])
        assert (cache.full_steps, cache.cached_steps) == (2, 4)  # steps 0 and 3 of 6 run the whole U-Net
        again = render(pipe, [1, 2])  # a new call starts with a full step again
        assert (cache.full_steps, cache.cached_steps) == (4, 8)
        alone = render(pipe, [2])
    finally:
        restore()
    assert np.array_equal(cached, again)  # deterministic
    assert np.abs(alone[0] - cached[1]).mean() < 1 / 255  # per sample: independent of the batch
    difference = np.abs(cached - default).mean()
    assert 0 < difference < 0.1, difference
    assert np.array_equal(render(pipe, [1, 2]), default)  # restored: the plain forward again


def test_interval_one_installs_nothing_and_a_negative_one_is_refused(pipe):
    cache, restore = apply_step_cache(pipe.unet, 1)
    assert cache is None and "forward" not in vars(pipe.unet)
    restore()
    with pytest.raises(ConfigError, match="step_cache"):
        apply_step_cache(pipe.unet, -2)
