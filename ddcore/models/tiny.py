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
