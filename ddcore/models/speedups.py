"""Faster sampling that keeps the images: memory layout, fused projections, a compiled denoiser.

Each lever is an option of the generator (``keyed=False``: it changes the speed, not the
images, so a finished set is reused whichever is on) with a per-device default:

- **SDPA**: diffusers' default attention processor (``AttnProcessor2_0``) already calls
  ``torch.nn.functional.scaled_dot_product_attention``; :func:`attention_kind` reports it.
- **channels-last** U-Net and VAE weights (``auto``: on a GPU, where convolutions in NHWC run
  on tensor cores; on the CPU, oneDNN gains little at these shapes).
- **fused QKV projections** (``pipe.fuse_qkv_projections()``, one matmul for q, k and v).
  ``auto``: on a GPU when no LoRA is loaded. Never with a LoRA: fusing copies the base
  weights and would silently drop the adapter.
- **torch.compile** of the U-Net (``off`` by default everywhere: the first batch pays the
  compile, minutes at SD 2.1 shapes, which only long runs win back).

The images equal the default's up to numerical noise (the tests hold them within 1/255).
"""

from __future__ import annotations

from typing import Any

from ddcore.errors import ConfigError

SWITCH = ("auto", "on", "off")


def resolve_switch(name: str, value: str, auto: bool) -> bool:
    """An ``auto | on | off`` option as a bool (``auto`` is the device's default); ``name``
    (``generator.compile``) words the error."""
    if value not in SWITCH:
        raise ConfigError(f"{name} must be auto, on or off, not {value!r}")
    return auto if value == "auto" else value == "on"


# Diffusers' processors that call torch's scaled_dot_product_attention, per family.
SDPA_PROCESSORS = {"AttnProcessor2_0", "FusedAttnProcessor2_0", "JointAttnProcessor2_0",
                   "FusedJointAttnProcessor2_0", "FluxAttnProcessor", "FluxAttnProcessor2_0", "FusedFluxAttnProcessor2_0"}


def attention_kind(pipe: Any) -> str:
    """``sdpa`` when every attention of the denoiser uses torch's fused attention."""
    from .families import family_of_pipeline

    denoiser = getattr(pipe, family_of_pipeline(pipe).denoiser)
    names = {type(p).__name__ for p in denoiser.attn_processors.values()}
    return "sdpa" if names <= SDPA_PROCESSORS else ",".join(sorted(names))


def speed_up(pipe: Any, *, device: str, has_lora: bool, channels_last: str = "auto", fuse_qkv: str = "auto",
             compile: str = "off") -> dict[str, Any]:
    """Apply the levers to ``pipe`` in place; return what is on (the generator logs it).
    Channels-last is for U-Nets (convolutions); a transformer's projections are fused by the
    transformer itself, where it can."""
    import torch

    from .families import family_of_pipeline

    family = family_of_pipeline(pipe)
    denoiser = getattr(pipe, family.denoiser)
    unet = family.denoiser == "unet"
    gpu = device.startswith("cuda")
    applied: dict[str, Any] = {}
    if resolve_switch("generator.channels_last", channels_last, gpu and unet):
        denoiser.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
        applied["channels_last"] = True
    fusable = unet or hasattr(denoiser, "fuse_qkv_projections")
    if resolve_switch("generator.fuse_qkv", fuse_qkv, gpu and not has_lora and fusable):
        if has_lora:
            raise ConfigError("generator.fuse_qkv=on cannot be used with a LoRA adapter (fusing copies the base "
                              "weights and would drop the adapter's); set generator.fuse_qkv=off")
        if not fusable:
            raise ConfigError(f"generator.fuse_qkv=on: this {family.title} denoiser cannot fuse its projections; "
                              "set generator.fuse_qkv=off")
        pipe.fuse_qkv_projections() if unet else denoiser.fuse_qkv_projections()
        applied["fuse_qkv"] = True
    applied["attention"] = attention_kind(pipe)
    if resolve_switch("generator.compile", compile, False):
        setattr(pipe, family.denoiser, torch.compile(denoiser))
        applied["compile"] = True
    return applied


def offload_by_default(family: Any, device: str, total_bytes: int | None = None) -> bool:
    """``generator.offload=auto``: on a GPU with less memory than the family's pipeline needs
    resident (``Family.resident_gib``: FLUX and SD 3.5 Large on a 24 GB card), off elsewhere."""
    if not device.startswith("cuda"):
        return False
    if total_bytes is None:
        import torch

        total_bytes = torch.cuda.get_device_properties(torch.device(device)).total_memory
    return total_bytes < family.resident_gib * 2**30


def save_memory(pipe: Any, *, device: str, offload: str = "auto", vae_tiling: bool = False) -> dict[str, bool]:
    """The generation memory levers, in place: model CPU offload (each component moves to the
    GPU only while it runs: the same images, slower) and VAE tiling (the decoder works tile by
    tile: less memory at large sizes, pixels may differ where tiles meet). Returns what is on."""
    from .families import family_of_pipeline

    applied = {}
    if resolve_switch("generator.offload", offload, offload_by_default(family_of_pipeline(pipe), device)):
        if not device.startswith("cuda"):
            raise ConfigError("generator.offload=on needs a GPU (it moves components between the CPU and the GPU); "
                              "set generator.offload=off")
        pipe.enable_model_cpu_offload(device=device)
        applied["offload"] = True
    if vae_tiling:
        pipe.vae.enable_tiling()
        applied["vae_tiling"] = True
    return applied
