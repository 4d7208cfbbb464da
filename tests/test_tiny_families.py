"""The tiny random SDXL, SD3 and FLUX pipelines (``ddcore.models.tiny``): offline, deterministic,
32 px by default, saved and loaded like downloaded ones, and LoRA-injectable."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ddcore.models import tiny

PROMPTS = ["a photo of a cat", "a photo of a dog"]

# family -> (builder, pipeline class name, denoiser attribute, LoRA target module names)
FAMILIES = {
    "sdxl": (tiny.tiny_sdxl_pipeline, "StableDiffusionXLPipeline", "unet",
             ["to_q", "to_k", "to_v", "to_out.0"]),
    "sd3": (tiny.tiny_sd3_pipeline, "StableDiffusion3Pipeline", "transformer",
            ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"]),
    "flux": (tiny.tiny_flux_pipeline, "FluxPipeline", "transformer",
             ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"]),
}

# The attention modules each tiny denoiser has (so each LoRA target above matches for real).
EXPECTED_LORA_MODULES = {
    "sdxl": {f"{block}.transformer_blocks.{i}.{attn}.{proj}"
             for block, layers in [("down_blocks.1.attentions.0", 2), ("up_blocks.0.attentions.0", 2),
                                   ("up_blocks.0.attentions.1", 2),
                                   ("mid_block.attentions.0", 2)]
             for i in range(layers) for attn in ("attn1", "attn2") for proj in ("to_q", "to_k", "to_v", "to_out.0")},
    "sd3": {f"transformer_blocks.{i}.attn.{proj}" for i in (0, 1)
            for proj in ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj")}
           | {"transformer_blocks.0.attn.to_add_out"},  # the last block is context-pre-only, as in SD3
    "flux": {f"transformer_blocks.0.attn.{proj}" for proj in
             ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")}
            | {f"single_transformer_blocks.0.attn.{proj}" for proj in ("to_q", "to_k", "to_v")},
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These models are so small that thread start-up dominates; on a busy 2-core box two
    threads run each op ~30x slower than one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def render(pipe, guidance_scale: float = 2.0, **kwargs) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    generators = [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)]
    return pipe(prompt=PROMPTS, num_inference_steps=2, guidance_scale=guidance_scale, generator=generators,
                output_type="np", **kwargs).images


_CACHE: dict[str, tuple] = {}


def built(family: str):
    """(pipeline, its images) built once per family for the tests that only read them."""
    if family not in _CACHE:
        pipe = FAMILIES[family][0]()
        _CACHE[family] = (pipe, render(pipe))
    return _CACHE[family]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_builds_the_family_pipeline_at_32px(family):
    pipe, images = built(family)
    assert type(pipe).__name__ == FAMILIES[family][1]
    assert pipe.vae_scale_factor == 2
    assert pipe.default_sample_size * pipe.vae_scale_factor == tiny.TINY_RESOLUTION == 32
    for name, component in pipe.components.items():
        if isinstance(component, torch.nn.Module):
            assert not component.training, name
    assert images.shape == (2, 32, 32, 3)
    assert images.dtype == np.float32
    assert np.isfinite(images).all()
    assert images.min() >= 0.0 and images.max() <= 1.0
    for image in images:
        assert image.std() > 0.01  # not constant
    assert np.abs(images[0] - images[1]).max() > 0.05  # different seeds and prompts, different images


@pytest.mark.parametrize("family", list(FAMILIES))
def test_same_seeds_same_images_and_rebuilds_identical(family):
    pipe, images = built(family)
    assert np.array_equal(render(pipe), images)
    again = FAMILIES[family][0]()
    for name, component in pipe.components.items():
        if isinstance(component, torch.nn.Module):
            theirs = again.components[name].state_dict()
            for key, value in component.state_dict().items():
                assert torch.equal(value, theirs[key]), f"{name}.{key}"
    assert np.array_equal(render(again), images)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_guidance_scale_changes_the_image(family):
    pipe, images = built(family)
    assert np.abs(render(pipe, guidance_scale=6.0) - images).max() > 1e-3


@pytest.mark.parametrize("family", list(FAMILIES))
def test_save_and_load_renders_the_same(family, tmp_path, monkeypatch):
    import diffusers

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _, images = built(family)
    dest = tiny.save_tiny_family(family, tmp_path / family)
    assert dest == tmp_path / family
    index = json.loads((dest / "model_index.json").read_text())
    class_name = FAMILIES[family][1]
    assert index["_class_name"] == class_name
    for tokenizer in [k for k in index if k.startswith("tokenizer")]:
        assert index[tokenizer] == ["transformers", "CLIPTokenizer"]
    cls = getattr(diffusers, class_name)
    extra = {"add_watermarker": False} if family == "sdxl" else {}
    loaded = cls.from_pretrained(str(dest), local_files_only=True, **extra)
    assert type(loaded) is cls
    # FluxPipeline hard-codes default_sample_size = 128: a loaded one needs the size passed.
    size = {"height": 32, "width": 32} if family == "flux" else {}
    np.testing.assert_allclose(render(loaded, **size), images, rtol=0, atol=1e-6)


def test_save_tiny_family_names(tmp_path):
    assert set(tiny.TINY_FAMILY_PIPELINES) == {"tiny-sdxl", "tiny-sd3", "tiny-flux"}
    with pytest.raises(ValueError, match="unknown tiny family"):
        tiny.save_tiny_family("sd4", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def _denoise(family: str, pipe, model):
    """One forward pass of the denoiser on seeded inputs shaped as the pipeline feeds it."""
    gen = torch.Generator().manual_seed(0)
    batch = 2
    if family == "sdxl":
        sample = torch.randn(batch, 4, 16, 16, generator=gen)
        cond = dict(encoder_hidden_states=torch.randn(batch, 77, 64, generator=gen),
                    added_cond_kwargs={"text_embeds": torch.randn(batch, 32, generator=gen),
                                       "time_ids": torch.tensor([[32.0, 32, 0, 0, 32, 32]] * batch)})
        out = model(sample, torch.tensor([500] * batch), **cond).sample
        assert out.shape == sample.shape
    elif family == "sd3":
        sample = torch.randn(batch, 16, 16, 16, generator=gen)
        out = model(hidden_states=sample, encoder_hidden_states=torch.randn(batch, 333, 64, generator=gen),
                    pooled_projections=torch.randn(batch, 48, generator=gen),
                    timestep=torch.tensor([500.0] * batch)).sample
        assert out.shape == sample.shape
    else:
        sample = torch.randn(batch, 64, 64, generator=gen)  # 8x8 packed 2x2 patches of 16 channels
        img_ids = pipe._prepare_latent_image_ids(batch, 8, 8, torch.device("cpu"), torch.float32)
        out = model(hidden_states=sample, encoder_hidden_states=torch.randn(batch, 20, 32, generator=gen),
                    pooled_projections=torch.randn(batch, 32, generator=gen),
                    timestep=torch.tensor([0.5] * batch), guidance=torch.tensor([2.0] * batch),
                    img_ids=img_ids, txt_ids=torch.zeros(20, 3)).sample
        assert out.shape == sample.shape
    assert torch.isfinite(out).all()
    return out


@pytest.mark.parametrize("family", list(FAMILIES))
def test_lora_attaches_to_the_denoiser(family):
    from peft import LoraConfig, inject_adapter_in_model
    from peft.tuners.lora import LoraLayer

    pipe = FAMILIES[family][0]()  # a fresh one: injection changes the model in place
    model = getattr(pipe, FAMILIES[family][2])
    with torch.no_grad():
        before = _denoise(family, pipe, model)
    config = LoraConfig(r=4, lora_alpha=4, init_lora_weights=True, target_modules=FAMILIES[family][3])
    model = inject_adapter_in_model(config, model)
    wrapped = {name for name, module in model.named_modules() if isinstance(module, LoraLayer)}
    assert wrapped == EXPECTED_LORA_MODULES[family]
    trainable = [name for name, p in model.named_parameters() if p.requires_grad and "lora_" in name]
    assert len(trainable) == 2 * len(wrapped)
    with torch.no_grad():
        assert torch.allclose(_denoise(family, pipe, model), before, atol=1e-6)  # lora_B starts at zero
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.fill_(0.1)
        assert (_denoise(family, pipe, model) - before).abs().max() > 1e-4  # the adapters are in the path
    # and gradients reach the adapters (what training relies on)
    model.zero_grad()
    _denoise(family, pipe, model).square().mean().backward()
    grads = [p.grad for name, p in model.named_parameters() if "lora_A" in name]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_encode_prompt_outputs(family):
    """What each installed pipeline's ``encode_prompt`` returns, with the tiny dims."""
    pipe, _ = built(family)
    with torch.no_grad():
        if family == "sdxl":
            out = pipe.encode_prompt(PROMPTS, device=torch.device("cpu"), do_classifier_free_guidance=True)
            # (prompt_embeds, negative_prompt_embeds, pooled, negative_pooled); negatives are zeros
            # (force_zeros_for_empty_prompt) when no negative prompt is given
            assert [tuple(t.shape) for t in out] == [(2, 77, 64), (2, 77, 64), (2, 32), (2, 32)]
            assert not out[1].any() and not out[3].any()
        elif family == "sd3":
            out = pipe.encode_prompt(PROMPTS, None, None, device=torch.device("cpu"))
            # (prompt_embeds, negative_prompt_embeds, pooled, negative_pooled): 77 CLIP + 256 T5 tokens
            assert [tuple(t.shape) for t in out] == [(2, 333, 64), (2, 333, 64), (2, 48), (2, 48)]
            assert not out[0][:, :77, 48:].any()  # CLIP-L + CLIP-G (16 + 32) zero-padded to T5's 64
        else:
            out = pipe.encode_prompt(PROMPTS, device=torch.device("cpu"))
            # (prompt_embeds from T5, pooled_prompt_embeds from CLIP, text_ids)
            assert [tuple(t.shape) for t in out] == [(2, 512, 32), (2, 32), (512, 3)]
            assert not out[2].any()
