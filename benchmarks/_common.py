"""Shared helpers of the speed benchmarks: arguments, base models, toy data, timing, reports.

Nothing here is timed itself. The base models are saved once into a cache folder
(``/tmp/dd-bench-tiny``, ``/tmp/dd-bench-sd21``) so that both our code and the plain loops load
the very same weights from disk, by folder path, as a user's ``--base-model FOLDER`` would.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Offline and hermetic, as in the test suite; set before ddcore/diffusers are imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DD_BUILTIN_PLUGINS_ONLY", "1")
os.environ.setdefault("DD_HOME", "/tmp/dd-bench-home")

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
MODEL_FOLDERS = {"tiny": Path("/tmp/dd-bench-tiny"), "sd21-shapes": Path("/tmp/dd-bench-sd21")}
# The other families (generation.py and adapter_training.py take them: their plain sides load any
# family): the tiny models, and SDXL base 1.0's architecture with random weights.
FAMILY_FOLDERS = {**{name: Path(f"/tmp/dd-bench-{name}") for name in ("tiny-sdxl", "tiny-sd3", "tiny-flux")},
                  "sdxl-shapes": Path("/tmp/dd-bench-sdxl"), "sd35m-shapes": Path("/tmp/dd-bench-sd35m")}
FAMILY_OF_MODEL = {"tiny-sdxl": "sdxl", "tiny-sd3": "sd3", "tiny-flux": "flux", "sdxl-shapes": "sdxl",
                   "sd35m-shapes": "sd3"}

# Real configurations (the checkpoints' config.json), for models built with random weights.
SDXL_UNET = dict(
    act_fn="silu", addition_embed_type="text_time", addition_embed_type_num_heads=64, addition_time_embed_dim=256,
    attention_head_dim=[5, 10, 20], block_out_channels=[320, 640, 1280], cross_attention_dim=2048,
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"], in_channels=4,
    layers_per_block=2, norm_num_groups=32, out_channels=4, projection_class_embeddings_input_dim=2816,
    sample_size=128, transformer_layers_per_block=[1, 2, 10],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"], use_linear_projection=True)
SD_VAE = dict(block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
              up_block_types=["UpDecoderBlock2D"] * 4, layers_per_block=2, in_channels=3, out_channels=3,
              norm_num_groups=32)
CLIP_TOKENS = dict(vocab_size=49408, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407, pad_token_id=1)
CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
              projection_dim=768, hidden_act="quick_gelu", **CLIP_TOKENS)
CLIP_G = dict(hidden_size=1280, intermediate_size=5120, num_attention_heads=20, num_hidden_layers=32,
              projection_dim=1280, hidden_act="gelu", **CLIP_TOKENS)
SD35_MEDIUM = dict(
    attention_head_dim=64, caption_projection_dim=1536, dual_attention_layers=tuple(range(13)), in_channels=16,
    joint_attention_dim=4096, num_attention_heads=24, num_layers=24, out_channels=16, patch_size=2,
    pooled_projection_dim=2048, pos_embed_max_size=384, qk_norm="rms_norm", sample_size=128)
T5_XXL = dict(d_model=4096, d_ff=10240, d_kv=64, num_heads=64, num_layers=24, vocab_size=32128,
              feed_forward_proj="gated-gelu")

# Ten easily told apart classes: a coloured square on noise.
COLOURS = {
    "red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 60, 220), "yellow": (230, 220, 40),
    "purple": (140, 40, 200), "orange": (240, 140, 30), "cyan": (40, 210, 220), "pink": (240, 120, 190),
    "brown": (120, 70, 30), "grey": (128, 128, 128),
}


# --------------------------------------------------------------------------- arguments


def parser(description: str, families: bool = False) -> argparse.ArgumentParser:
    """The shared arguments; ``families``: ``--model`` also takes the tiny SDXL, SD3 and FLUX."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    models = sorted(MODEL_FOLDERS) + (sorted(FAMILY_FOLDERS) if families else [])
    p.add_argument("--model", choices=models, default="tiny",
                   help="tiny: the project's tiny random SD; sd21-shapes: SD 2.1-base architecture, random weights"
                        + ("; tiny-sdxl, tiny-sd3, tiny-flux: the tiny models of those families; sdxl-shapes, "
                           "sd35m-shapes: SDXL base 1.0's and SD 3.5 Medium's architectures, random weights"
                           if families else ""))
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--out", type=Path, default=None, help="JSON results file (default benchmarks/results/<name>.json)")
    p.add_argument("--repeats", type=int, default=3, help="timed repetitions per side (after one warm-up)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a new temporary folder)")
    return p


def generation_arguments(p: argparse.ArgumentParser, classes: int | None = None) -> None:
    """The options of a generation benchmark (``None``: the model's default in DEFAULTS)."""
    p.add_argument("--images-per-class", type=int, default=None)
    p.add_argument("--classes", type=int, default=classes)
    p.add_argument("--steps", type=int, default=None, help="denoising steps")
    p.add_argument("--batch", type=int, default=None, help="images per pipeline call")
    p.add_argument("--resolution", type=int, default=None, help="px")


def finish_args(args: argparse.Namespace, name: str, defaults: dict[str, dict[str, Any]]) -> argparse.Namespace:
    """Fill options left at None with the model's defaults; pick the output path."""
    for key, value in defaults[args.model].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.out is None:
        args.out = RESULTS / f"{name}.json"
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device is available here")
    return args


def workdir(args: argparse.Namespace, prefix: str) -> Path:
    import tempfile

    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        return args.workdir
    return Path(tempfile.mkdtemp(prefix=prefix))


def clean_workdir(args: argparse.Namespace, work: Path) -> None:
    """Remove the scratch folder unless the user named it (``--workdir``)."""
    import shutil

    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


def quiet_libraries() -> None:
    """Keep the libraries' warnings and progress bars out of the tables."""
    import diffusers.utils.logging as dlog
    import transformers.utils.logging as tlog

    dlog.set_verbosity_error()
    tlog.set_verbosity_error()
    dlog.disable_progress_bar()
    tlog.disable_progress_bar()


# --------------------------------------------------------------------------- base models


def sd21_shapes_pipeline():
    """Stable Diffusion 2.1-base's architecture (U-Net, VAE, OpenCLIP ViT-H text encoder) with
    random weights: the same shapes and FLOPs as the real model, nothing downloaded."""
    from diffusers import (
        AutoencoderKL,
        PNDMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    from ddcore.api import tiny_clip_tokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280), attention_head_dim=(5, 10, 20, 20),
        cross_attention_dim=1024, use_linear_projection=True, norm_num_groups=32,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
        block_out_channels=[128, 256, 512, 512], norm_num_groups=32,
        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_attention_heads=16,
        num_hidden_layers=23, hidden_act="gelu", projection_dim=512, max_position_embeddings=77,
        layer_norm_eps=1e-5, bos_token_id=49406, eos_token_id=49407, pad_token_id=1,
    ))
    # SD 2.1-base ships PNDM (skip_prk_steps) with the scaled-linear betas and epsilon targets.
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1,
                              prediction_type="epsilon", num_train_timesteps=1000)
    return StableDiffusionPipeline(vae=vae.eval(), text_encoder=text_encoder.eval(), tokenizer=tiny_clip_tokenizer(),
                                   unet=unet.eval(), scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)


def sdxl_shapes_pipeline():
    """SDXL base 1.0's architecture (U-Net 2.57 B, the SDXL VAE, CLIP ViT-L and OpenCLIP bigG text
    encoders, its Euler scheduler) with random weights, nothing downloaded."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from ddcore.api import tiny_clip_tokenizer

    torch.manual_seed(0)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="leading", prediction_type="epsilon")
    return StableDiffusionXLPipeline(
        vae=AutoencoderKL(latent_channels=4, sample_size=1024, scaling_factor=0.13025, **SD_VAE).eval(),
        text_encoder=CLIPTextModel(CLIPTextConfig(**CLIP_L)).eval(), tokenizer=tiny_clip_tokenizer(),
        text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_G)).eval(), tokenizer_2=tiny_clip_tokenizer(),
        unet=UNet2DConditionModel(**SDXL_UNET).eval(), scheduler=scheduler, add_watermarker=False)


def sd35m_shapes_pipeline():
    """SD 3.5 Medium's architecture (MMDiT-X 2.24 B, CLIP ViT-L and OpenCLIP bigG with
    projections, T5-XXL's encoder, the 16-channel VAE, FlowMatch Euler with shift 3) with random
    weights, built in bf16 (31.6 GB in fp32 do not fit a 24 GB machine). The tokenizers are CLIP's
    BPE (no offline SentencePiece model), so T5's vocabulary is CLIP's 49 408 ids instead of
    32 128: 71 M more embedding rows, the same compute."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    from ddcore.api import tiny_clip_tokenizer

    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    try:
        return StableDiffusion3Pipeline(
            transformer=SD3Transformer2DModel(**SD35_MEDIUM).eval(),
            vae=AutoencoderKL(latent_channels=16, sample_size=1024, scaling_factor=1.5305, shift_factor=0.0609,
                              use_quant_conv=False, use_post_quant_conv=False, **SD_VAE).eval(),
            text_encoder=CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_L)).eval(), tokenizer=tiny_clip_tokenizer(),
            text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_G)).eval(),
            tokenizer_2=tiny_clip_tokenizer(),
            text_encoder_3=T5EncoderModel(T5Config(**{**T5_XXL, "vocab_size": 49408})).eval(),
            tokenizer_3=tiny_clip_tokenizer(), scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0))
    finally:
        torch.set_default_dtype(torch.float32)


def base_model_folder(model: str, log: Callable[[str], None] = print) -> Path:
    """The model's pipeline folder, saved with ``save_pretrained`` on first use (fp32 weights,
    as the hub's default files)."""
    folder = {**MODEL_FOLDERS, **FAMILY_FOLDERS}[model]
    if (folder / "model_index.json").is_file():
        return folder
    log(f"saving the {model} base model to {folder} (once)...")
    start = time.perf_counter()
    if model == "tiny":
        from ddcore.api import save_tiny_sd

        save_tiny_sd(folder)
    elif model == "sdxl-shapes":
        sdxl_shapes_pipeline().save_pretrained(str(folder))
    elif model == "sd35m-shapes":
        sd35m_shapes_pipeline().save_pretrained(str(folder))
    elif model in FAMILY_FOLDERS:
        from ddcore.api import save_tiny_family

        save_tiny_family(model, folder)
    else:
        sd21_shapes_pipeline().save_pretrained(str(folder))
    log(f"  done in {time.perf_counter() - start:.0f} s")
    return folder


def plain_dtype_kwargs(dtype: torch.dtype) -> dict[str, Any]:
    """``dtype=`` on diffusers that take it, else ``torch_dtype=`` (as any user script would)."""
    from diffusers.pipelines import pipeline_utils

    return {"dtype": dtype} if hasattr(pipeline_utils, "_resolve_dtype") else {"torch_dtype": dtype}


def generation_dtype(device: str, option: str = "auto", model: str = "tiny") -> torch.dtype:
    """What the txt2img generator uses for ``generator.dtype=option`` with ``--model``: auto is the
    family's on a GPU (fp16 for SD and SDXL, bf16 for SD3 and FLUX), fp32 on the CPU."""
    if option == "auto" and device.startswith("cuda"):
        option = "bf16" if FAMILY_OF_MODEL.get(model) in ("sd3", "flux") else "fp16"
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}.get(option, torch.float32)


def training_dtype(device: str) -> torch.dtype:
    """What the adapter uses by default (mixed_precision=auto): bf16 (else fp16) on a GPU, fp32 on the CPU."""
    if not device.startswith("cuda"):
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


# --------------------------------------------------------------------------- data and runs


def generation_setup(args: argparse.Namespace, prefix: str) -> tuple[Path, Path, Path]:
    """What every generation benchmark starts with: quiet libraries, the seed, and the base
    model folder, a scratch folder and a toy image folder (``args.classes`` classes): (base, work, data)."""
    quiet_libraries()
    torch.manual_seed(args.seed)
    base = base_model_folder(args.model)
    work = workdir(args, prefix)
    return base, work, write_image_folder(work / "data", args.classes, train=1)


def write_image_folder(root: Path, classes: int, train: int, size: int = 64, test: int = 1) -> Path:
    """DATA/{train,test}/<colour>_square/NNN.png: a coloured square on noise, ``size`` px."""
    names = list(COLOURS)[:classes]
    if len(names) < classes:
        raise SystemExit(f"at most {len(COLOURS)} classes")
    for split, count in (("train", train), ("test", test)):
        for c, name in enumerate(names):
            folder = root / split / f"{name}_square"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                rng = np.random.default_rng(c * 1000 + i + (500 if split == "test" else 0))
                pixels = rng.integers(0, 60, size=(size, size, 3), dtype=np.uint8)
                q = size // 4
                pixels[q:size - q, q:size - q] = COLOURS[name]
                Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    return root


def run_config(data: Path, out: Path, *, method: str, base: Path, device: str, shots: int, images_per_class: int,
               steps: int, resolution: int, batch_size: int, seed: int = 0, adapter: dict | None = None,
               generator: dict | None = None, store: Path | None = None, image_writers: int | None = None):
    """A RunConfig as ``dd`` would build it from CLI flags (``ddcore.config.resolve``): ``adapter``
    and ``generator`` are ``--set adapter.X=...`` / ``--set generator.X=...``, ``store`` ``--store``."""
    from ddcore.api import resolve_config as resolve

    options = {kind: dict(values) for kind, values in (("adapter", adapter), ("generator", generator)) if values}
    return resolve({}, {
        "data": str(data), "out": str(out), "method": method, "base_model": str(base), "device": device,
        "shots": shots, "images_per_class": images_per_class, "steps": steps, "resolution": resolution,
        "batch_size": batch_size, "seed": seed, "classifier_model": "tiny", "options": options,
        "store": str(store) if store else None,
        **({"image_writers": image_writers} if image_writers is not None else {}),
    })


# --------------------------------------------------------------------------- timing


def plain_generate(pipe, items, out: Path, args: argparse.Namespace) -> None:
    """The plain diffusers way to make ``items`` ((prompt, seed, file name) triples): batched
    ``pipe(...)`` calls with one CPU generator per image, each image saved as a PNG."""
    for start in range(0, len(items), args.batch):
        chunk = items[start:start + args.batch]
        images = pipe(prompt=[p for p, _, _ in chunk],
                      generator=[torch.Generator(device="cpu").manual_seed(s) for _, s, _ in chunk],
                      num_inference_steps=args.steps, guidance_scale=args.guidance,
                      height=args.resolution, width=args.resolution).images
        for (_, _, name), image in zip(chunk, images):
            path = out / name
            path.parent.mkdir(parents=True, exist_ok=True)
            image.save(path)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: str, collect: bool = True) -> tuple[float, Any]:
    """Seconds ``fn()`` takes (the device synchronised at both ends) and its result.

    A full garbage collection first, so that each timed section starts from a clean heap: with
    the tiny models a collection that happens to fire inside one side (e.g. while a tokenizer's
    JSON is parsed) costs as much as the work itself. The collector stays on while timing.
    ``collect=False`` for a section timed inside another one."""
    if collect:
        gc.collect()
    sync(device)
    start = time.perf_counter()
    result = fn()
    sync(device)
    return time.perf_counter() - start, result


def time_training(ours: Any, plain: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Both sides' ``train(steps)``: a short warm-up, then ``args.repeats`` timed runs of
    ``args.steps`` steps, alternating which side goes first (slow drifts of the machine hit
    both). Each side has ``setup_s``. Returns the per-side summaries (with steps/s and the
    setup time) and the ratios ours/plain of the median, best and setup times."""
    warm = min(2, args.steps)
    for side in (ours, plain):
        torch.manual_seed(args.seed)
        side.train(warm)
    times: dict[str, list[float]] = {"ours": [], "plain": []}
    for r in range(args.repeats):
        order = (("ours", ours), ("plain", plain)) if r % 2 == 0 else (("plain", plain), ("ours", ours))
        for name, side in order:
            torch.manual_seed(args.seed + r)
            seconds, _ = timed(lambda side=side: side.train(args.steps), args.device)
            times[name].append(seconds)
            print(f"  repeat {r + 1}: {name:5s} {seconds:.3f} s ({args.steps / seconds:.3f} steps/s)")
    return training_result(times, {"ours": ours.setup_s, "plain": plain.setup_s}, args.steps)


def training_result(times: dict[str, list[float]], setup_s: dict[str, float], steps: int) -> dict[str, Any]:
    """Each side's timed repeats of ``steps`` steps and its setup seconds, summarised (steps/s,
    setup), with the ratios ours/plain of the median, best and setup times."""
    result: dict[str, Any] = {}
    for name in ("ours", "plain"):
        result[name] = summary(times[name])
        result[name]["steps_per_s_median"] = steps / result[name]["median_s"]
        result[name]["steps_per_s_best"] = steps / result[name]["best_s"]
        result[name]["setup_s"] = setup_s[name]
    result["ratio_time_median"] = ratio(result["ours"]["median_s"], result["plain"]["median_s"])
    result["ratio_time_best"] = ratio(result["ours"]["best_s"], result["plain"]["best_s"])
    result["ratio_setup"] = ratio(setup_s["ours"], setup_s["plain"])
    return result


def timed_generation(run: Any, device: str) -> tuple[float, float, Any]:
    """``run.generate()`` timed, with the generator's ``setup`` (the pipeline load) timed apart:
    (total seconds, setup seconds, the synthetic set). ``run`` is built and prepared."""
    generator = run.stages["generator"]
    setup = generator.setup
    clock: dict[str, float] = {}

    def timed_setup(context, adapter_dir):
        clock["setup_s"], _ = timed(lambda: setup(context, adapter_dir), device, collect=False)

    generator.setup = timed_setup
    seconds, synthetic = timed(run.generate, device)
    return seconds, clock["setup_s"], synthetic


def time_generation(ours: Any, plain: Any, args: argparse.Namespace, total: int, warm_up: bool = True) -> dict:
    """Both sides' ``generate()`` (each returns ``total_s`` and ``setup_s``, the pipeline load):
    a warm-up unless ``warm_up=False`` (the caller did its own), then ``args.repeats`` timed runs,
    alternating which side goes first. Returns the per-side summaries (images/s with and without
    the load) and the ratios ours/plain."""
    if warm_up:
        for side in (ours, plain):
            torch.manual_seed(args.seed)
            side.generate()
    runs: dict[str, list[dict]] = {"ours": [], "plain": []}
    for r in range(args.repeats):
        order = (("ours", ours), ("plain", plain)) if r % 2 == 0 else (("plain", plain), ("ours", ours))
        for name, side in order:
            torch.manual_seed(args.seed + r)
            res = side.generate()
            runs[name].append(res)
            print(f"  repeat {r + 1}: {name:5s} {res['total_s']:.3f} s ({total / res['total_s']:.3f} images/s; "
                  f"pipeline load {res['setup_s']:.3f} s)")
    result: dict[str, Any] = {}
    for name in ("ours", "plain"):
        s = summary([x["total_s"] for x in runs[name]])
        s["images_per_s_median"] = total / s["median_s"]
        s["images_per_s_best"] = total / s["best_s"]
        s["load_median_s"] = summary([x["setup_s"] for x in runs[name]])["median_s"]
        s["images_per_s_excluding_load_median"] = total / summary(
            [x["total_s"] - x["setup_s"] for x in runs[name]])["median_s"]
        result[name] = s
    o, p = result["ours"], result["plain"]
    result["ratio_time_median"] = ratio(o["median_s"], p["median_s"])
    result["ratio_time_best"] = ratio(o["best_s"], p["best_s"])
    result["ratio_time_excluding_load_median"] = ratio(p["images_per_s_excluding_load_median"],
                                                       o["images_per_s_excluding_load_median"])
    result["ratio_load_median"] = ratio(o["load_median_s"], p["load_median_s"])
    return result


def generation_rows(result: dict, total: int) -> list[list[Any]]:
    """The table rows of a ``time_generation`` result."""
    o, p = result["ours"], result["plain"]
    return [
        ["images/s (median)", o["images_per_s_median"], p["images_per_s_median"], result["ratio_time_median"]],
        ["images/s (best)", o["images_per_s_best"], p["images_per_s_best"], result["ratio_time_best"]],
        [f"s for {total} images (median)", o["median_s"], p["median_s"], result["ratio_time_median"]],
        ["  pipeline load s (median)", o["load_median_s"], p["load_median_s"], result["ratio_load_median"]],
        ["  images/s without the load", o["images_per_s_excluding_load_median"],
         p["images_per_s_excluding_load_median"], result["ratio_time_excluding_load_median"]],
    ]


def summary(times: list[float]) -> dict[str, Any]:
    return {"times_s": [round(t, 4) for t in times], "median_s": statistics.median(times), "best_s": min(times)}


def ratio(ours: float, plain: float) -> float:
    return ours / plain if plain > 0 else float("nan")


def rss_mb() -> float:
    """Current resident set size (Linux)."""
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """Peak RSS of this process so far.

    Linux's ``VmHWM`` (/proc/self/status), where available: ``getrusage().ru_maxrss`` is carried
    over fork and exec, so a child started by a process holding 10 GiB reports at least 10 GiB
    whatever it does itself; VmHWM belongs to the child's own address space. Elsewhere,
    ``ru_maxrss`` (KiB on Linux, bytes on macOS)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


# --------------------------------------------------------------------------- reporting


def environment(device: str) -> dict[str, Any]:
    import diffusers
    import peft
    import transformers

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], check=False, cwd=ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    env = {
        "date": _dt.datetime.now().isoformat(timespec="seconds"), "python": platform.python_version(),
        "torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__,
        "peft": peft.__version__, "cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "device": device, "git_commit": commit,
    }
    if device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def print_table(title: str, columns: list[str], rows: list[list[Any]], note: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, caption=note)
    console = Console() if sys.stdout.isatty() else Console(width=150)
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*[fmt(v) for v in row])
    console.print(table)


def fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"results written to {path}")
