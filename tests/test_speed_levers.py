"""Speed levers that keep the result: prompt embeddings once per prompt, the generator's and the
adapter trainer's options (channels-last, fused QKV, compile, fused AdamW, checkpointing)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dd_plugins.prompt_embeddings import PromptEmbeddings
from ddcore.api import load_sd_pipeline


@pytest.fixture
def compile_without_codegen(monkeypatch):
    """torch.compile with the aot_eager backend: dynamo traces and AOT autograd splits the graph as
    they do for inductor, but no C++ kernels are generated (about 90 s on 2 CPUs for the adapter's
    forward and backward). What the tests that use it check (the same LoRA, no recompile when a
    class's adapter is swapped in) is decided by the tracing and its guards. Inductor itself runs in
    test_every_image_preserving_option_keeps_the_set_and_its_key."""
    compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kwargs: compile(model, **{"backend": "aot_eager", **kwargs}))


def images(pipe, seeds, **arguments):
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    return pipe(**arguments, num_inference_steps=2, guidance_scale=2.0, height=32, width=32, generator=generators,
                output_type="np").images


def test_each_distinct_prompt_is_encoded_once_and_the_images_stay_the_same():
    pipe = load_sd_pipeline("tiny")
    texts = ["a photo of a cat", "a photo of a cat", "a photo of a dog", "a photo of a cat"]
    cache = PromptEmbeddings()
    arguments = cache.arguments(pipe, texts, negative="", guidance=2.0)
    assert cache.encoded == 2
    embeds = arguments["prompt_embeds"]
    assert embeds.shape[0] == 4 and torch.equal(embeds[0], embeds[1]) and torch.equal(embeds[0], embeds[3])
    assert not torch.equal(embeds[0], embeds[2])
    assert arguments["negative_prompt_embeds"].shape == embeds.shape
    cache.arguments(pipe, texts[:3], negative="", guidance=2.0)
    assert cache.encoded == 2  # all cached
    ours = images(pipe, [1, 2, 3, 4], **arguments)
    plain = images(pipe, [1, 2, 3, 4], prompt=texts)
    assert np.abs(ours - plain).mean() < 1 / 255 and np.abs(ours - plain).max() < 2 / 255


def test_the_key_holds_the_adapter_selection_and_the_cache_is_bounded():
    pipe = load_sd_pipeline("tiny")
    cache = PromptEmbeddings(max_entries=2)
    for selection in (0, 1, 0):
        cache.arguments(pipe, ["a photo"], negative="", guidance=2.0, selection=selection)
    assert cache.encoded == 2  # class 1's adapter may change the encoder: its own entry
    cache.arguments(pipe, ["b photo"], negative="", guidance=2.0)  # evicts the least recently used: class 1's
    cache.arguments(pipe, ["a photo"], negative="", guidance=2.0, selection=0)
    assert cache.encoded == 3
    cache.arguments(pipe, ["a photo"], negative="", guidance=2.0, selection=1)
    assert cache.encoded == 4
    # without guidance no negative embeddings are made
    assert "negative_prompt_embeds" not in cache.arguments(pipe, ["a photo"], negative="", guidance=1.0)


def synthetic_arrays(run) -> dict[str, np.ndarray]:
    from PIL import Image

    run.prepare()
    synthetic = run.generate()
    return {row["file_name"]: np.asarray(Image.open(synthetic.root / row["file_name"])).astype(np.float64) / 255
            for row in synthetic.items}


@pytest.mark.slow
def test_every_image_preserving_option_keeps_the_set_and_its_key(tiny_folder, tmp_path):
    """channels-last, fused QKV, a compiled U-Net (inductor, on the CPU), the writer threads:
    each image within 1/255 mean absolute difference of the default set's, under the same key."""
    from ddcore.api import Run

    from conftest import config_for

    default = Run(config_for(tiny_folder, tmp_path / "default", "--method", "sd-txt2img", image_writers=0))
    fast = Run(config_for(tiny_folder, tmp_path / "fast", "--method", "sd-txt2img", "--set",
                          "generator.channels_last=on", "--set", "generator.fuse_qkv=on", "--set",
                          "generator.compile=on", image_writers=3))
    reference, images = synthetic_arrays(default), synthetic_arrays(fast)
    assert fast.stages["generator"].speedups == {"channels_last": True, "fuse_qkv": True, "attention": "sdpa",
                                                 "compile": True}
    assert fast.keys() == default.keys()  # a speed option reuses a finished set
    assert reference.keys() == images.keys() and len(images) >= 6
    differences = [np.abs(images[name] - reference[name]).mean() for name in reference]
    assert max(differences) < 1 / 255


def test_fused_projections_refuse_a_lora_and_switches_are_checked():
    from ddcore.api import ConfigError, speed_up

    pipe = load_sd_pipeline("tiny")
    with pytest.raises(ConfigError, match="fuse_qkv=on cannot be used with a LoRA adapter"):
        speed_up(pipe, device="cpu", has_lora=True, fuse_qkv="on")
    with pytest.raises(ConfigError, match="generator.compile must be auto, on or off, not 'yes'"):
        speed_up(pipe, device="cpu", has_lora=False, compile="yes")
    # auto: nothing but SDPA on the CPU; on a GPU channels-last, and fused projections without a LoRA
    assert speed_up(pipe, device="cpu", has_lora=False) == {"attention": "sdpa"}


def trained_lora(tiny_folder, out, *sets):
    from safetensors.torch import load_file

    from ddcore.api import Run

    from conftest import config_for

    run = Run(config_for(tiny_folder, out, "--method", "datadream-dset", "--set", "adapter.max_steps=3",
                         "--set", "adapter.warmup_steps=1", "--set", "adapter.batch_size=2", *sets))
    run.prepare()
    return run, load_file(str(run.adapt() / "dataset" / "pytorch_lora_weights.safetensors"))


@pytest.mark.slow
def test_the_adapter_levers_train_the_same_lora_under_the_same_key(tiny_folder, tmp_path, compile_without_codegen):
    default_run, default = trained_lora(tiny_folder, tmp_path / "default")
    fast_run, fast = trained_lora(tiny_folder, tmp_path / "fast", "--set", "adapter.gradient_checkpointing=true",
                                  "--set", "adapter.fused_adamw=on", "--set", "adapter.compile=on")
    assert fast_run.keys() == default_run.keys()
    assert fast.keys() == default.keys() and len(fast) > 0
    for name in default:
        assert torch.allclose(fast[name], default[name], atol=1e-5, rtol=1e-4), name
    up = [name for name in default if "lora_B" in name or "lora.up" in name]
    assert up and any((default[name] != 0).any() for name in up), sorted(default)[:4]  # it trained


@pytest.mark.slow
def test_a_frozen_text_encoder_encodes_each_prompt_once(tiny_folder, tmp_path, monkeypatch):
    from dd_plugins import datadream_training

    calls = []
    original = datadream_training.LoraTrainer._speed_up

    def spy(self, options):
        original(self, options)
        self.text_encoders["text_encoder"].register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))

    monkeypatch.setattr(datadream_training.LoraTrainer, "_speed_up", spy)
    trained_lora(tiny_folder, tmp_path / "run", "--set", "adapter.train_text_encoder=false")
    # 3 steps x 2 shots, but the 3 classes' prompts are encoded once each, one at a time
    assert calls and all(n == 1 for n in calls) and len(calls) <= 3


@pytest.mark.slow
@pytest.mark.parametrize("base", ["tiny", "tiny-sdxl", "tiny-sd3", "tiny-flux"])
def test_a_compiled_denoiser_swaps_per_class_adapters_without_recompiling(tiny_folder, tmp_path, monkeypatch,
                                                                          compile_without_codegen, base):
    """On every family: the same images as the uncompiled per-class loading, the denoiser's LoRA
    hotswapped (no recompile) and every CLIP encoder's (SDXL and SD3 have two) reloaded."""
    import shutil

    import torch._dynamo

    from ddcore.api import Run

    from conftest import config_for

    def cls_run(name: str, *extra: str):
        run = Run(config_for(tiny_folder, tmp_path / name, "--method", "datadream-cls", "--set",
                             "adapter.max_steps=3", "--set", "adapter.warmup_steps=1", "--set", "adapter.batch_size=2",
                             "--set", "adapter.lr=1e-2", "--base-model", base, *extra,
                             store=str(tmp_path / name / "store")))
        run.prepare()
        return run

    plain = cls_run("plain")
    adapter_dir = plain.adapt()
    reference = synthetic_arrays(plain)
    compiled = cls_run("compiled", "--set", "generator.compile=on")
    # The same trained adapters (the speed option is in no key), without training them again.
    shutil.copytree(adapter_dir, compiled.stage_folders()["adapter"])
    torch._dynamo.reset()
    with torch._dynamo.config.patch(error_on_recompile=True):  # a recompile fails the test
        images = synthetic_arrays(compiled)
    assert compiled.stages["generator"].speedups["compile"] is True
    assert reference.keys() == images.keys() and len({name.split("/")[0] for name in images}) == 3
    differences = [np.abs(images[name] - reference[name]).mean() for name in reference]
    assert max(differences) < 1 / 255
