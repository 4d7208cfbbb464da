"""Tiny random models built from configs: offline, deterministic, fast.

They stand in for Stable Diffusion and CLIP in tests and smoke runs. Nothing is downloaded: the
CLIP BPE vocabulary comes from the copy bundled with open_clip.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
from pathlib import Path

import torch

from ..store import atomic_write_text
from .paths import dd_home

TINY_CLIP_NAME = "dd-tiny-clip"
CONFIGS_DIR = Path(__file__).resolve().parent / "configs"

# Number of BPE merges in CLIP's vocabulary (open_clip's SimpleTokenizer uses lines[1:48895]).
_N_MERGES = 49152 - 256 - 2


# --------------------------------------------------------------------------- tokenizer files


def clip_bpe_tokenizer_files(dest: Path) -> Path:
    """Write ``vocab.json`` and ``merges.txt`` for a transformers ``CLIPTokenizer`` into ``dest``.

    The vocabulary is built from open_clip's bundled ``bpe_simple_vocab_16e6.txt.gz`` exactly as
    open_clip's ``SimpleTokenizer`` builds it, so token ids agree with open_clip (49406 = start,
    49407 = end). Each file is written atomically. Returns ``dest``.
    """
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    dest = Path(dest)
    lines = gzip.open(default_bpe()).read().decode("utf-8").split("\n")
    merges = lines[1 : _N_MERGES + 1]
    byte_chars = list(bytes_to_unicode().values())
    vocab = byte_chars + [c + "</w>" for c in byte_chars]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    encoder = {tok: i for i, tok in enumerate(vocab)}
    atomic_write_text(dest / "vocab.json", json.dumps(encoder, ensure_ascii=False))
    atomic_write_text(dest / "merges.txt", "#version: 0.2\n" + "\n".join(merges) + "\n")
    return dest


def _tiny_tokenizer_dir() -> Path:
    d = dd_home() / "tiny" / "clip-tokenizer"
    if not ((d / "vocab.json").is_file() and (d / "merges.txt").is_file()):
        clip_bpe_tokenizer_files(d)
    return d


def tiny_clip_tokenizer():
    """A transformers ``CLIPTokenizer`` with CLIP's real vocabulary (files cached under dd_home())."""
    from transformers import CLIPTokenizer

    # from_pretrained on the folder: the constructor's file arguments differ between transformers 4 and 5
    return CLIPTokenizer.from_pretrained(str(_tiny_tokenizer_dir()), model_max_length=77, pad_token="<|endoftext|>")


# --------------------------------------------------------------------------- tiny Stable Diffusion


def tiny_sd_pipeline():
    """A tiny random ``StableDiffusionPipeline`` (diffusers-test style), deterministic and offline.

    The VAE downsamples by 2: a 16x16 latent decodes to a 32x32 image (the UNet's sample_size
    is 16, so the pipeline's default resolution is 32 px).
    """
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = tiny_clip_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = UNet2DConditionModel(
            block_out_channels=(32, 64),
            layers_per_block=1,
            sample_size=16,
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32,
            norm_num_groups=8,
            attention_head_dim=(2, 4),
        )
        torch.manual_seed(0)
        vae = AutoencoderKL(
            block_out_channels=[32, 64],
            in_channels=3,
            out_channels=3,
            down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
            up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
            latent_channels=4,
            norm_num_groups=8,
            sample_size=32,
        )
        torch.manual_seed(0)
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                bos_token_id=49406,
                eos_token_id=49407,
                hidden_size=32,
                intermediate_size=37,
                layer_norm_eps=1e-5,
                num_attention_heads=4,
                num_hidden_layers=2,
                pad_token_id=1,
                vocab_size=49408,
                projection_dim=32,
            )
        )
    # steps_offset=1 as in the real SD configs (0 makes the pipeline emit a deprecation warning).
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        unet=unet.eval(),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    return pipe


def save_tiny_sd(dest: Path) -> Path:
    """Save the tiny pipeline with ``save_pretrained`` (loadable by ``from_pretrained(dest)``)."""
    dest = Path(dest)
    tiny_sd_pipeline().save_pretrained(str(dest))
    return dest


# --------------------------------------------------------------------------- tiny CLIP

_tiny_clip_registered = False


def register_tiny_clip() -> None:
    """Make ``dd-tiny-clip`` a known open_clip model name (idempotent)."""
    global _tiny_clip_registered
    import open_clip

    if _tiny_clip_registered and TINY_CLIP_NAME in open_clip.list_models():
        return
    if TINY_CLIP_NAME not in open_clip.list_models():
        open_clip.add_model_config(CONFIGS_DIR)
    _tiny_clip_registered = True


class _DropRandomInitNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Model initialized randomly" not in record.getMessage()


@contextlib.contextmanager
def random_init_expected():
    """Silence open_clip's random-init warning where random weights are the intent."""
    notice = _DropRandomInitNotice()
    logging.getLogger().addFilter(notice)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(notice)


def tiny_clip():
    """The tiny open_clip CLIP (``dd-tiny-clip``), random but deterministic, in eval mode."""
    import open_clip

    register_tiny_clip()
    with torch.random.fork_rng(devices=[]), random_init_expected():
        torch.manual_seed(0)
        model = open_clip.create_model(TINY_CLIP_NAME, pretrained=None)
    return model.eval()


# --------------------------------------------------------------------------- tiny captioner

_TINY_CAPTION_WORDS = 2000


def _tiny_caption_vocab() -> dict[str, int]:
    """A small WordPiece vocabulary for the tiny BLIP: BERT's special tokens, BLIP's ``[DEC]``
    start token, then the single letters and the first whole words of CLIP's bundled BPE list
    (so captions read as words; nothing is downloaded)."""
    from open_clip.tokenizer import default_bpe

    words = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    seen = set(words)
    for merge in gzip.open(default_bpe()).read().decode("utf-8").split("\n")[1 : _N_MERGES + 1]:
        token = "".join(merge.split())
        word = token[: -len("</w>")] if token.endswith("</w>") else ""
        if word.isascii() and word.isalpha() and word not in seen:
            seen.add(word)
            words.append(word)
            if len(words) >= _TINY_CAPTION_WORDS:
                break
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
    return {token: i for i, token in enumerate(special + [",", ".", "-", "'"] + words)}


def wordpiece_tokenizer(vocab: dict[str, int], **kwargs):
    """A transformers ``BertTokenizer`` over ``vocab`` (token -> id, ids 0..n-1), loaded with
    ``from_pretrained`` from a temporary ``vocab.txt``: the one way to build it from a vocabulary
    that both transformers 4 (a file only) and 5 take. ``kwargs`` go to ``from_pretrained``."""
    import tempfile

    from transformers import BertTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        lines = "".join(f"{token}\n" for token in sorted(vocab, key=vocab.get))
        (Path(tmp) / "vocab.txt").write_text(lines, encoding="utf-8")
        return BertTokenizer.from_pretrained(tmp, **kwargs)


def tiny_captioner():
    """A tiny random BLIP captioner (``BlipForConditionalGeneration`` and its ``BlipProcessor``),
    deterministic and offline: 32 px images, a 2k-word vocabulary. Returns ``(model, processor)``.

    Its weights are initialised wide (``initializer_range=0.5``) so that different images get
    different (meaningless) captions, which tests need to tell captions apart.
    """
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    vocab = _tiny_caption_vocab()
    tokenizer = wordpiece_tokenizer(vocab, bos_token="[DEC]")
    spread = 0.5
    config = BlipConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=128, initializer_range=spread,
                         bos_token_id=vocab["[DEC]"], eos_token_id=vocab["[SEP]"], sep_token_id=vocab["[SEP]"],
                         pad_token_id=vocab["[PAD]"]),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8, initializer_range=spread),
        projection_dim=32, image_text_hidden_size=32, initializer_range=spread,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = BlipForConditionalGeneration(config).eval()
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer)
    return model, processor


def save_tiny_captioner(dest: Path) -> Path:
    """Save the tiny captioner with ``save_pretrained`` (a transformers model folder, loadable
    with ``AutoProcessor`` / ``AutoModelForImageTextToText``, like a downloaded BLIP)."""
    dest = Path(dest)
    model, processor = tiny_captioner()
    model.save_pretrained(str(dest))
    processor.save_pretrained(str(dest))
    return dest


# --------------------------------------------------------------------------- tiny SAM segmenter


def tiny_sam():
    """A tiny random SAM (``SamModel`` and its ``SamProcessor``), deterministic and offline: 64 px
    model input, 8 px patches, 32-wide layers. Returns ``(model, processor)``. Its masks are
    meaningless but have the shapes and the post-processing of a real checkpoint's."""
    from transformers import SamConfig, SamImageProcessor, SamModel, SamProcessor

    size, patch, width = 64, 8, 32
    config = SamConfig(
        vision_config=dict(hidden_size=width, output_channels=width, num_hidden_layers=2, num_attention_heads=2,
                           image_size=size, patch_size=patch, window_size=4, global_attn_indexes=(1,),
                           mlp_dim=2 * width, num_pos_feats=width // 2),
        prompt_encoder_config=dict(hidden_size=width, image_size=size, patch_size=patch, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=width, mlp_dim=2 * width, num_attention_heads=2,
                                 iou_head_hidden_dim=width),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = SamModel(config).eval()
    mask_side = size // patch * 4  # the mask decoder upscales the image embedding 4x
    processor = SamProcessor(image_processor=SamImageProcessor(
        size={"longest_edge": size}, pad_size={"height": size, "width": size},
        mask_size={"longest_edge": mask_side}, mask_pad_size={"height": mask_side, "width": mask_side}))
    return model, processor


def save_tiny_sam(dest: Path) -> Path:
    """Save the tiny SAM with ``save_pretrained`` (a folder loadable like a downloaded SAM)."""
    dest = Path(dest)
    model, processor = tiny_sam()
    model.save_pretrained(str(dest))
    processor.save_pretrained(str(dest))
    return dest


# --------------------------------------------------------------------------- tiny text generator

# A minimal chat template, so that code paths for chat models run with the tiny model too.
_TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }} : {{ message['content'] }} . {% endfor %}"
    "{% if add_generation_prompt %}assistant : {% endif %}"
)


def tiny_text_generator():
    """A tiny random causal language model (``LlamaForCausalLM``) and an offline WordPiece
    tokenizer over the captioner's 2k-word vocabulary (with a chat template), deterministic.
    Returns ``(model, tokenizer)``. Its answers are random words, often several per line."""
    from transformers import LlamaConfig, LlamaForCausalLM

    vocab = _tiny_caption_vocab()
    tokenizer = wordpiece_tokenizer(vocab, bos_token="[CLS]", eos_token="[SEP]",
                                    model_input_names=["input_ids", "attention_mask"])
    tokenizer.chat_template = _TINY_CHAT_TEMPLATE
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         initializer_range=0.5, bos_token_id=vocab["[CLS]"], eos_token_id=vocab["[SEP]"],
                         pad_token_id=vocab["[PAD]"], tie_word_embeddings=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config).eval()
    return model, tokenizer


def save_tiny_text_generator(dest: Path) -> Path:
    """Save the tiny language model and its tokenizer (a folder loadable with ``AutoTokenizer``
    and ``AutoModelForCausalLM``, like a downloaded one)."""
    dest = Path(dest)
    model, tokenizer = tiny_text_generator()
    model.save_pretrained(str(dest))
    tokenizer.save_pretrained(str(dest))
    return dest


# --------------------------------------------------------------------------- tiny SDXL, SD3, FLUX

# The default resolution of every tiny pipeline: a 16x16 latent through a VAE that downsamples by 2.
TINY_RESOLUTION = 32


def _tiny_clip_text_config(hidden_size: int, heads: int, projection_dim: int | None = None):
    """A 2-layer ``CLIPTextConfig`` over CLIP's 49408-token vocabulary (ids of ``tiny_clip_tokenizer``)."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        bos_token_id=49406,
        eos_token_id=49407,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        layer_norm_eps=1e-5,
        num_attention_heads=heads,
        num_hidden_layers=2,
        pad_token_id=1,
        vocab_size=49408,
        projection_dim=projection_dim or hidden_size,
    )


def _tiny_t5_encoder(d_model: int):
    """A tiny random ``T5EncoderModel`` (T5 v1.1 style, gated-gelu) whose vocabulary covers CLIP's
    49408 ids: it is fed ids from ``tiny_clip_tokenizer`` (no offline SentencePiece T5 tokenizer)."""
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=49408,
        d_model=d_model,
        d_kv=8,
        d_ff=2 * d_model,
        num_layers=2,
        num_heads=d_model // 8,
        feed_forward_proj="gated-gelu",
        pad_token_id=49407,
        eos_token_id=49407,
        decoder_start_token_id=49407,
    )
    return T5EncoderModel(config)


def _tiny_vae(latent_channels: int, **kwargs):
    """A 2-level ``AutoencoderKL`` (downsamples by 2: 16x16 latent <-> 32x32 image)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=latent_channels,
        norm_num_groups=8,
        sample_size=TINY_RESOLUTION,
        **kwargs,
    )


def _seeded(build):
    """``build()`` with the global torch RNG seeded to 0 (and restored afterwards)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build()


def tiny_sdxl_pipeline():
    """A tiny random ``StableDiffusionXLPipeline``, deterministic and offline.

    UNet with SDXL's ``addition_embed_type="text_time"`` conditioning (6 time ids x 8 + the
    pooled projection of text_encoder_2), cross-attention over the two encoders' concatenated
    hidden states (32 + 32); both tokenizers are ``tiny_clip_tokenizer()``. ``sample_size=16`` and
    a VAE that downsamples by 2: the default resolution is 32 px. Scheduler: SDXL's Euler
    (scaled_linear 0.00085..0.012, steps_offset=1, "leading" spacing); the watermarker is off.
    """
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    time_embed_dim, pooled_dim = 8, 32
    unet = _seeded(lambda: UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=TINY_RESOLUTION // 2,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_embed_dim,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * time_embed_dim + pooled_dim,
        cross_attention_dim=32 + 32,
        norm_num_groups=8,
    ))
    vae = _seeded(lambda: _tiny_vae(4, scaling_factor=0.13025))
    text_encoder = _seeded(lambda: CLIPTextModel(_tiny_clip_text_config(32, 4)))
    text_encoder_2 = _seeded(lambda: CLIPTextModelWithProjection(_tiny_clip_text_config(32, 4, pooled_dim)))
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
        interpolation_type="linear",
        prediction_type="epsilon",
    )
    return StableDiffusionXLPipeline(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        text_encoder_2=text_encoder_2.eval(),
        tokenizer=tiny_clip_tokenizer(),
        tokenizer_2=tiny_clip_tokenizer(),
        unet=unet.eval(),
        scheduler=scheduler,
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )


def tiny_sd3_pipeline():
    """A tiny random ``StableDiffusion3Pipeline``, deterministic and offline.

    ``SD3Transformer2DModel``: 2 joint blocks (the last one context-pre-only, as in SD3), 4 heads
    of 8, patch 2, 16 latent channels, ``sample_size=16``. Text: a CLIP-L-like (hidden 16) and a
    CLIP-G-like (hidden 32) ``CLIPTextModelWithProjection`` whose penultimate hidden states
    (16 + 32 = 48, zero-padded by the pipeline to 64) and pooled projections (16 + 32 = 48) feed
    the transformer, and a tiny ``T5EncoderModel`` (d_model 64 = joint_attention_dim).

    Tokenizers: all three are ``tiny_clip_tokenizer()``. There is no offline SentencePiece T5
    tokenizer, and the pipeline only calls tokenizer_3 for ids (padding to max_sequence_length,
    256 by default, and ``batch_decode`` for its truncation warning), so the T5 config's
    vocab_size is CLIP's 49408. Scheduler: ``FlowMatchEulerDiscreteScheduler(shift=3.0)`` as SD3.
    The VAE has SD3's ``scaling_factor``/``shift_factor``, no quant convs, and downsamples by 2:
    the default resolution is 32 px.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    clip_l, clip_g, t5_dim, latent_channels = 16, 32, 64, 16
    transformer = _seeded(lambda: SD3Transformer2DModel(
        sample_size=TINY_RESOLUTION // 2,
        patch_size=2,
        in_channels=latent_channels,
        out_channels=latent_channels,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=t5_dim,
        caption_projection_dim=4 * 8,
        pooled_projection_dim=clip_l + clip_g,
        pos_embed_max_size=32,
    ))
    vae = _seeded(lambda: _tiny_vae(latent_channels, scaling_factor=1.5305, shift_factor=0.0609,
                                    use_quant_conv=False, use_post_quant_conv=False))
    text_encoder = _seeded(lambda: CLIPTextModelWithProjection(_tiny_clip_text_config(clip_l, 2)))
    text_encoder_2 = _seeded(lambda: CLIPTextModelWithProjection(_tiny_clip_text_config(clip_g, 4)))
    text_encoder_3 = _seeded(lambda: _tiny_t5_encoder(t5_dim))
    return StableDiffusion3Pipeline(
        transformer=transformer.eval(),
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tiny_clip_tokenizer(),
        text_encoder_2=text_encoder_2.eval(),
        tokenizer_2=tiny_clip_tokenizer(),
        text_encoder_3=text_encoder_3.eval(),
        tokenizer_3=tiny_clip_tokenizer(),
    )


def tiny_flux_pipeline():
    """A tiny random ``FluxPipeline`` (FLUX.1-dev style), deterministic and offline.

    ``FluxTransformer2DModel``: 1 double + 1 single block, 2 heads of 16 (rope axes 4+6+6),
    ``guidance_embeds=True`` as FLUX.1-dev (the pipeline feeds ``guidance_scale`` to the
    transformer; there is no true CFG unless a negative prompt and ``true_cfg_scale > 1`` are
    given). The VAE has 16 latent channels, FLUX's ``scaling_factor``/``shift_factor``, no quant
    convs, and downsamples by 2; FLUX packs 2x2 latent patches, so the transformer's in_channels
    are 64. Text: ``CLIPTextModel`` (pooled output, hidden 32 = pooled_projection_dim) and a tiny
    ``T5EncoderModel`` (d_model 32 = joint_attention_dim). tokenizer_2 is ``tiny_clip_tokenizer()``
    like tokenizer (no offline SentencePiece T5 tokenizer; the pipeline only takes ids from it,
    padded to max_sequence_length, 512 by default), so the T5 vocab_size is CLIP's 49408.
    Scheduler: ``FlowMatchEulerDiscreteScheduler`` with FLUX.1-dev's dynamic shifting.

    ``FluxPipeline`` hard-codes ``default_sample_size = 128`` (not from any config): this builder
    sets it to 16 on the instance so it renders 32 px by default; a pipeline loaded with
    ``from_pretrained`` defaults to 128 * 2 = 256 px again, so pass ``height=width=32`` (or set
    ``default_sample_size`` after loading). Height and width must be multiples of 4
    (vae_scale_factor * 2).
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel

    latent_channels, clip_dim, t5_dim = 16, 32, 32
    transformer = _seeded(lambda: FluxTransformer2DModel(
        patch_size=1,
        in_channels=4 * latent_channels,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=t5_dim,
        pooled_projection_dim=clip_dim,
        guidance_embeds=True,
        axes_dims_rope=(4, 6, 6),
    ))
    vae = _seeded(lambda: _tiny_vae(latent_channels, scaling_factor=0.3611, shift_factor=0.1159,
                                    use_quant_conv=False, use_post_quant_conv=False))
    text_encoder = _seeded(lambda: CLIPTextModel(_tiny_clip_text_config(clip_dim, 4)))
    text_encoder_2 = _seeded(lambda: _tiny_t5_encoder(t5_dim))
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    pipe = FluxPipeline(
        scheduler=scheduler,
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tiny_clip_tokenizer(),
        text_encoder_2=text_encoder_2.eval(),
        tokenizer_2=tiny_clip_tokenizer(),
        transformer=transformer.eval(),
    )
    pipe.default_sample_size = TINY_RESOLUTION // pipe.vae_scale_factor
    return pipe


TINY_FAMILY_PIPELINES = {
    "tiny-sdxl": tiny_sdxl_pipeline,
    "tiny-sd3": tiny_sd3_pipeline,
    "tiny-flux": tiny_flux_pipeline,
}


def save_tiny_family(name: str, dest: Path) -> Path:
    """Save the tiny pipeline of family ``name`` ("sdxl", "sd3" or "flux"; "tiny-" prefix allowed)
    with ``save_pretrained`` (loadable by the family's pipeline class ``from_pretrained(dest)``)."""
    key = name if name.startswith("tiny-") else f"tiny-{name}"
    if key not in TINY_FAMILY_PIPELINES:
        raise ValueError(f"unknown tiny family {name!r}; choose from sdxl, sd3, flux")
    dest = Path(dest)
    TINY_FAMILY_PIPELINES[key]().save_pretrained(str(dest))
    return dest
