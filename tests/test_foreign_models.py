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


# -- the other families: folders built the way diffusers' own pipeline tests build theirs -------

def t5_tokenizer(dest: Path):
    """A real ``T5Tokenizer`` (Unigram, as T5's is; there is no offline SentencePiece model), saved
    and loaded back, as a checkpoint's tokenizer_3 / tokenizer_2 is."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import AutoTokenizer, T5TokenizerFast

    words = "a photo of the red square green circle blue stripes".split()
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -3.0)]
    vocab += [("▁" + w, -2.0) for w in words] + [(c, -8.0) for c in "abcdefghijklmnopqrstuvwxyz"]
    backend = Tokenizer(models.Unigram(vocab, unk_id=2))
    backend.pre_tokenizer, backend.decoder = pre_tokenizers.Metaspace(), decoders.Metaspace()
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    T5TokenizerFast(tokenizer_object=backend, eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                    extra_ids=0).save_pretrained(str(dest))
    return AutoTokenizer.from_pretrained(str(dest)), len(vocab)


def write_family_folder(family: str, dest: Path) -> Path:
    """SDXL, SD3 or FLUX with the component configs of diffusers' own pipeline tests
    (``get_dummy_components``; their CLIP vocabulary is CLIP's here, as the tokenizer is), unlike
    the project's tiny models, saved with plain ``save_pretrained``."""
    import diffusers
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer, T5Config, \
        T5EncoderModel

    from ddcore.models.tiny import clip_bpe_tokenizer_files

    torch.manual_seed(5)
    files = clip_bpe_tokenizer_files(dest.parent / "tokenizer-files")
    clip_tokenizer = CLIPTokenizer(str(files / "vocab.json"), str(files / "merges.txt"), model_max_length=77)
    clip = CLIPTextConfig(bos_token_id=49406, eos_token_id=49407, hidden_size=32, intermediate_size=37,
                          layer_norm_eps=1e-05, num_attention_heads=4, num_hidden_layers=5, pad_token_id=1,
                          vocab_size=49408, hidden_act="gelu", projection_dim=32)
    flow_vae = dict(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(4,), layers_per_block=1,
                    norm_num_groups=1, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609,
                    scaling_factor=1.5035)
    if family == "sdxl":
        unet = diffusers.UNet2DConditionModel(
            block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
            addition_time_embed_dim=8, transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=80,
            cross_attention_dim=64)
        vae = diffusers.AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3, latent_channels=4,
                                      down_block_types=["DownEncoderBlock2D"] * 2,
                                      up_block_types=["UpDecoderBlock2D"] * 2, sample_size=128)
        scheduler = diffusers.EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, steps_offset=1,
                                                     beta_schedule="scaled_linear", timestep_spacing="leading")
        pipe = diffusers.StableDiffusionXLPipeline(
            unet=unet, vae=vae, scheduler=scheduler, text_encoder=CLIPTextModel(clip), tokenizer=clip_tokenizer,
            text_encoder_2=CLIPTextModelWithProjection(clip), tokenizer_2=clip_tokenizer)
    else:
        tokenizer, vocab_size = t5_tokenizer(dest.parent / "t5-tokenizer")
        t5 = T5EncoderModel(T5Config(vocab_size=vocab_size, d_model=32, d_ff=37, d_kv=8, num_layers=2, num_heads=4,
                                     relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1))
        if family == "sd3":
            transformer = diffusers.SD3Transformer2DModel(
                sample_size=32, patch_size=1, in_channels=4, num_layers=1, attention_head_dim=8, num_attention_heads=4,
                caption_projection_dim=32, joint_attention_dim=32, pooled_projection_dim=64, out_channels=4)
            pipe = diffusers.StableDiffusion3Pipeline(
                transformer=transformer, vae=diffusers.AutoencoderKL(latent_channels=4, **flow_vae),
                scheduler=diffusers.FlowMatchEulerDiscreteScheduler(),
                text_encoder=CLIPTextModelWithProjection(clip), tokenizer=clip_tokenizer,
                text_encoder_2=CLIPTextModelWithProjection(clip), tokenizer_2=clip_tokenizer,
                text_encoder_3=t5, tokenizer_3=tokenizer)
        else:
            transformer = diffusers.FluxTransformer2DModel(
                patch_size=1, in_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=16,
                num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8])
            pipe = diffusers.FluxPipeline(
                transformer=transformer, vae=diffusers.AutoencoderKL(latent_channels=1, **flow_vae),
                scheduler=diffusers.FlowMatchEulerDiscreteScheduler(), text_encoder=CLIPTextModel(clip),
                tokenizer=clip_tokenizer, text_encoder_2=t5, tokenizer_2=tokenizer)
    pipe.save_pretrained(str(dest))
    return dest


@pytest.mark.slow
@pytest.mark.parametrize("family", ["sdxl", "sd3", "flux"])
def test_dd_run_on_a_diffusers_folder_of_each_family(tiny_folder, tmp_path, run_dd, family):
    """The whole DataDream run (adapter, set, classifier) on a checkpoint the project did not make;
    its LoRA loads in plain diffusers and makes the set's images."""
    import diffusers
    import numpy as np
    from PIL import Image

    from ddcore.api import FAMILIES

    base = write_family_folder(family, tmp_path / f"my-{family}")
    out = tmp_path / "run"
    result = run_dd("run", "--data", str(tiny_folder), "--out", str(out), *FAST, *FAST_ADAPTER,
                    "--set", "adapter.lr=1e-2", "--base-model", str(base))
    assert result.returncode == 0, result.stderr
    synthetic = next(out.glob("synthetic/*"))
    rows = [json.loads(line) for line in (synthetic / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and rows[0]["family"] == family and rows[0]["base_model"] == str(base.resolve())
    assert json.loads((out / "metrics.json").read_text())["num_test"] == 12
    known = FAMILIES[family]
    pipe = getattr(diffusers, known.text_to_image).from_pretrained(str(base), **known.init_arguments(loading=True))

    def plain(row):
        return pipe(prompt=row["prompt"], generator=torch.Generator().manual_seed(row["seed"]),
                    num_inference_steps=row["steps"], guidance_scale=row["guidance"], height=32, width=32,
                    output_type="np").images[0]

    def ours(row):
        return np.asarray(Image.open(synthetic / row["file_name"]), dtype=np.float64) / 255

    without_lora = plain(rows[0])
    pipe.load_lora_weights(str(next(out.glob("adapter/*")) / "dataset"), weight_name="pytorch_lora_weights.safetensors")
    assert np.abs(ours(rows[0]) - without_lora).mean() > 2 / 255  # the trained LoRA is in the set's images
    for row in rows[:2]:
        assert np.abs(ours(row) - plain(row)).mean() < 1 / 255, row["file_name"]
