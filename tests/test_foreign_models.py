"""`dd run` with models the project did not create: a diffusers folder written by diffusers'
own ``save_pretrained`` and an open_clip ``local-dir:`` folder, both with configs unlike ours."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import FAST, FAST_ADAPTER


def write_diffusers_folder(dest: Path) -> Path:
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from ddcore.models.tiny import clip_bpe_tokenizer_files

    torch.manual_seed(3)
    unet = UNet2DConditionModel(
        block_out_channels=(16, 32), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=24, norm_num_groups=8, attention_head_dim=4,
    )
    vae = AutoencoderKL(block_out_channels=[16, 32], in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=8,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2)
    text = CLIPTextModel(CLIPTextConfig(bos_token_id=49406, eos_token_id=49407, hidden_size=24, intermediate_size=32,
                                        num_attention_heads=2, num_hidden_layers=1, vocab_size=49408))
    vocab = clip_bpe_tokenizer_files(dest.parent / "tokenizer-files")
    tokenizer = CLIPTokenizer(str(vocab / "vocab.json"), str(vocab / "merges.txt"), model_max_length=77)
    pipe = StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text, tokenizer=tokenizer,
                                   scheduler=PNDMScheduler(skip_prk_steps=True), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(dest)
    return dest


def write_open_clip_folder(dest: Path) -> Path:
    from open_clip.model import CLIP
    from safetensors.torch import save_file

    cfg = {"embed_dim": 24,
           "vision_cfg": {"image_size": 24, "layers": 1, "width": 48, "patch_size": 8, "head_width": 24},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 48, "heads": 2, "layers": 1}}
    torch.manual_seed(4)
    model = CLIP(**cfg)
    dest.mkdir(parents=True)
    (dest / "open_clip_config.json").write_text(json.dumps({
        "model_cfg": cfg, "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(dest / "open_clip_model.safetensors"))
    return dest


@pytest.mark.slow
def test_dd_run_with_a_local_diffusers_folder_and_open_clip_local_dir(tiny_folder, tmp_path, run_dd):
    sd = write_diffusers_folder(tmp_path / "my-sd")
    clip = write_open_clip_folder(tmp_path / "my-clip")
    out = tmp_path / "run"
    args = [*FAST, *FAST_ADAPTER, "--base-model", str(sd), "--classifier-model", f"local-dir:{clip}"]
    result = run_dd("run", "--data", str(tiny_folder), "--out", str(out), *args)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in next(out.glob("synthetic/*/metadata.jsonl")).read_text().splitlines()]
    assert rows[0]["scheduler"] == "PNDMScheduler"
    assert rows[0]["base_model"] == str(sd.resolve())
    assert rows[0]["adapter"] == "datadream-dset"  # the paper's method, trained on a foreign base
    info = json.loads(next(out.glob("classifier/*/classifier.json")).read_text())
    assert info["model"] == f"local-dir:{clip}"
    assert json.loads((out / "metrics.json").read_text())["num_test"] == 12
