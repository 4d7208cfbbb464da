"""Peak memory of a DataDream adapter-training step per model family at real shapes, with and
without each memory lever.

Each family's denoiser is built from its real configuration (SDXL base 1.0's U-Net, SD 3.5
Medium's MMDiT-X, FLUX.1-dev's transformer) with random weights, nothing downloaded, and trained
the way ``LoraTrainer`` trains it: peft LoRA on the family's targets (``Family.lora_targets``),
LoRA weights in fp32 over base weights in the run's dtype under autocast, the family's
objective (``FlowMatching`` or DDPM noise) through ``predict``, and AdamW; the text conditioning
is what the trainer caches (tensors of the encoders' output shapes). Each configuration runs
in its own child process, which reports its peak resident memory (``VmHWM``) above what it held
before the denoiser was built, the denoiser's weight bytes, the LoRA's parameters and the time
of its second step.

What this measures is host memory on the CPU, at a small resolution (``--resolution``, 256 px
by default: 1/16 of the 1024 px tokens) with a batch of one: the weights are exact, the
activations are the CPU's (no CUDA workspaces or allocator cache) and grow with batch and pixels.
The frozen components that never run in a training step (VAE, T5, frozen CLIP encoders) are
counted from their configurations (built on the meta device): what ``adapter.offload_frozen``
takes off the GPU.

``--part vae`` measures the generation lever ``generator.vae_tiling``: the peak of decoding one
image (``--decode-resolution``, 1024 px) with the SDXL VAE, tiled and not.

FLUX.1's 11.9 B parameters do not fit this 24 GB machine even in bf16, so it runs at two reduced
depths of real-width blocks (``--flux-units``, a unit being one double-stream and two
single-stream blocks; FLUX.1 has 19 units) and its full-depth figures are the straight line
through the two, labelled as extrapolated: every term (weights, LoRA, optimizer state, stored
activations, with or without checkpointing) grows linearly with the number of blocks.

    python benchmarks/family_memory.py                       # all families, all levers (CPU)
    python benchmarks/family_memory.py --families sdxl --resolution 128
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _common as C
import torch

GB = 1e9
FLUX_UNITS = 19  # FLUX.1: 19 double-stream and 38 single-stream blocks

FLUX_DEV = dict(attention_head_dim=128, guidance_embeds=True, in_channels=64, joint_attention_dim=4096,
                num_attention_heads=24, patch_size=1, pooled_projection_dim=768, axes_dims_rope=(16, 56, 56))
TITLES = {"sdxl": "SDXL base 1.0", "sd3": "SD 3.5 Medium", "flux": "FLUX.1-dev"}
LATENT_CHANNELS = {"sdxl": 4, "sd3": 16, "flux": 16}  # the VAE's
# What a training step runs besides the denoiser, and what it never runs (with offload_frozen).
FROZEN = {"sdxl": ("vae",), "sd3": ("vae", "t5"), "flux": ("vae", "t5")}
TEXT_ENCODERS = {"sdxl": ("clip-l", "clip-g"), "sd3": ("clip-l", "clip-g"), "flux": ("clip-l",)}
LEVERS = [  # (label, dtype, gradient checkpointing)
    ("fp32", torch.float32, False), ("fp32 + checkpointing", torch.float32, True),
    ("bf16 base", torch.bfloat16, False), ("bf16 base + checkpointing", torch.bfloat16, True)]


def arguments() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--families", default="sdxl,sd3,flux", help="comma-separated: sdxl, sd3, flux")
    p.add_argument("--resolution", type=int, default=256, help="training resolution, px")
    p.add_argument("--rank", type=int, default=16, help="LoRA rank (paper: 16)")
    p.add_argument("--flux-units", default="2,4", help="the two reduced FLUX depths measured (units of 1 double + 2 "
                                                       "single blocks)")
    p.add_argument("--part", choices=["training", "vae", "both"], default="both",
                   help="training: the LoRA step per family and lever; vae: one image decoded by the SDXL VAE at "
                        "--decode-resolution with generator.vae_tiling off and on")
    p.add_argument("--decode-resolution", type=int, default=1024, help="px of the decoded image (--part vae)")
    p.add_argument("--out", type=Path, default=C.RESULTS / "family_memory.json")
    p.add_argument("--probe", help=argparse.SUPPRESS)  # internal: one configuration, as JSON
    return p.parse_args()


# --------------------------------------------------------------------------- models


def denoiser(family: str, units: int = FLUX_UNITS):
    import diffusers

    if family == "sdxl":
        return diffusers.UNet2DConditionModel(**C.SDXL_UNET)
    if family == "sd3":
        return diffusers.SD3Transformer2DModel(**C.SD35_MEDIUM)
    return diffusers.FluxTransformer2DModel(num_layers=units, num_single_layers=2 * units, **FLUX_DEV)


def parameter_count(build) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in build().parameters())


def component_counts(family: str) -> dict[str, int]:
    """Parameters of each component of the family's pipeline (on the meta device: no memory)."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    clip = {"clip-l": C.CLIP_L, "clip-g": C.CLIP_G}
    counts = {"denoiser": parameter_count(lambda: denoiser(family))}
    for name in TEXT_ENCODERS[family]:
        counts[name] = parameter_count(lambda: CLIPTextModelWithProjection(CLIPTextConfig(**clip[name])))
    counts["vae"] = parameter_count(lambda: AutoencoderKL(latent_channels=LATENT_CHANNELS[family], **C.SD_VAE))
    if "t5" in FROZEN[family]:
        counts["t5"] = parameter_count(lambda: T5EncoderModel(T5Config(**C.T5_XXL)))
    return counts


def conditioning(family: str, batch: int, resolution: int, dtype: torch.dtype) -> dict[str, Any]:
    """What the trainer's Conditioner hands the denoiser: the text encoders' output shapes."""
    def rand(*shape):
        return torch.randn(*shape, dtype=dtype)

    if family == "sdxl":  # CLIP-L + CLIP-G hidden states, CLIP-G's pooled, the size ids
        size = float(resolution)
        time_ids = torch.tensor([[size, size, 0.0, 0.0, size, size]] * batch, dtype=dtype)
        return {"encoder_hidden_states": rand(batch, 77, 2048),
                "added_cond_kwargs": {"text_embeds": rand(batch, 1280), "time_ids": time_ids}}
    if family == "sd3":  # 77 CLIP tokens padded to T5's width + 256 T5 tokens; both pooled
        return {"encoder_hidden_states": rand(batch, 77 + 256, 4096), "pooled_projections": rand(batch, 2048)}
    return {"encoder_hidden_states": rand(batch, 512, 4096), "pooled_projections": rand(batch, 768)}


def pipeline_shim(family: str, net):
    """The family's pipeline holding only its denoiser and scheduler: ``predict`` reads FLUX's
    latent packing from it."""
    import diffusers

    if family == "flux":
        return diffusers.FluxPipeline(scheduler=diffusers.FlowMatchEulerDiscreteScheduler(), vae=None,
                                      text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None,
                                      transformer=net)
    return None


# --------------------------------------------------------------------------- one configuration


def probe(spec: dict[str, Any]) -> dict[str, Any]:
    """One training configuration in this (fresh) process: memory above the starting point."""
    import diffusers
    from peft import LoraConfig, inject_adapter_in_model

    from ddcore.api import FAMILIES, FlowMatching, denoising_target, predict

    torch.manual_seed(0)
    family, dtype = FAMILIES[spec["family"]], getattr(torch, spec["dtype"])
    start_mb = C.rss_mb()
    torch.set_default_dtype(dtype)  # built in the run's dtype: no fp32 copy on the way
    net = denoiser(family.name, spec.get("units", FLUX_UNITS))
    torch.set_default_dtype(torch.float32)
    net.requires_grad_(False)
    weights = sum(p.numel() * p.element_size() for p in net.parameters())
    inject_adapter_in_model(LoraConfig(r=spec["rank"], lora_alpha=spec["rank"], init_lora_weights="gaussian",
                                       target_modules=family.lora_targets(["to_q", "to_k", "to_v", "to_out.0"])), net)
    params = [p for n, p in net.named_parameters() if "lora_" in n]
    for p in params:  # LoRA weights train in fp32 whatever the base dtype, as in LoraTrainer
        p.data = p.data.float()
        p.requires_grad_(True)
    if spec["checkpointing"]:
        net.enable_gradient_checkpointing()
    net.train()
    pipe = pipeline_shim(family.name, net)
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    channels = LATENT_CHANNELS[family.name]
    size = spec["resolution"] // 8
    if family.flow_matching:
        flow = FlowMatching(family, diffusers.FlowMatchEulerDiscreteScheduler().config)
    else:
        noise_scheduler = diffusers.DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    step_s = []
    for step in range(2):
        generator = torch.Generator().manual_seed(step)
        latents = torch.randn(1, channels, size, size, generator=generator)
        noise = torch.randn(latents.shape, generator=generator)
        begin = time.perf_counter()
        if family.flow_matching:
            noisy, timesteps, sigmas = flow.sample(latents, noise, generator)
        else:
            timesteps = torch.randint(0, 1000, (1,), generator=generator)
            noisy = noise_scheduler.add_noise(latents, noise, timesteps)
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            condition = conditioning(family.name, 1, spec["resolution"], dtype)
            prediction = predict(pipe, family, net, noisy.to(dtype), timesteps, condition)
        if family.flow_matching:
            output, target = flow.loss_terms(prediction.float(), noisy, latents, noise, sigmas)
        else:
            output, target = prediction.float(), denoising_target(noise_scheduler, latents, noise, timesteps)
        torch.nn.functional.mse_loss(output, target.float()).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step_s.append(time.perf_counter() - begin)
    return {"peak_gb": (C.peak_rss_mb() - start_mb) * 2**20 / GB, "weights_gb": weights / GB,
            "lora_params": sum(p.numel() for p in params), "second_step_s": step_s[1]}


def vae_probe(spec: dict[str, Any]) -> dict[str, Any]:
    """One image decoded by the SDXL VAE (fp32), tiled or not, as ``generator.vae_tiling`` does."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    start_mb = C.rss_mb()
    vae = AutoencoderKL(latent_channels=4, sample_size=1024, scaling_factor=0.13025, **C.SD_VAE).eval()
    if spec["tiling"]:
        vae.enable_tiling()
    weights_mb = C.peak_rss_mb() - start_mb
    size = spec["resolution"] // 8
    begin = time.perf_counter()
    with torch.no_grad():
        image = vae.decode(torch.randn(1, 4, size, size)).sample
    assert image.shape[-1] == spec["resolution"]
    return {"peak_gb": (C.peak_rss_mb() - start_mb) * 2**20 / GB, "weights_gb": weights_mb * 2**20 / GB,
            "decode_s": time.perf_counter() - begin}


def run_probe(spec: dict[str, Any]) -> dict[str, Any]:
    """``probe(spec)`` in a child process of its own (a fresh peak, nothing shared)."""
    done = subprocess.run([sys.executable, __file__, "--probe", json.dumps(spec)], capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def extrapolated(low: dict, high: dict, units: tuple[int, int]) -> dict[str, Any]:
    """The straight line through two reduced depths, at FLUX.1's 19 units."""
    if "error" in low or "error" in high:
        return {"error": low.get("error") or high.get("error")}
    slope = (FLUX_UNITS - units[0]) / (units[1] - units[0])
    return {key: low[key] + (high[key] - low[key]) * slope for key in ("peak_gb", "weights_gb", "lora_params",
                                                                       "second_step_s")} | {"extrapolated": True}


# --------------------------------------------------------------------------- report


def main() -> None:
    args = arguments()
    if args.probe:
        spec = json.loads(args.probe)
        print(json.dumps(vae_probe(spec) if "tiling" in spec else probe(spec)))
        return
    C.quiet_libraries()
    results: dict[str, Any] = {}
    if args.part in ("training", "both"):
        results["training"] = training_part(args)
    if args.part in ("vae", "both"):
        results["vae_decode"] = vae_part(args)
    C.write_json(args.out, {"settings": vars(args) | {"out": str(args.out)}, "results": results,
                            "environment": C.environment("cpu")})


def vae_part(args) -> dict[str, Any]:
    found = {label: run_probe({"tiling": tiling, "resolution": args.decode_resolution})
             for label, tiling in (("vae_tiling off", False), ("vae_tiling on", True))}
    C.print_table(f"SDXL VAE: one {args.decode_resolution} px image decoded (CPU, fp32)",
                  ["", "peak GB", "of which weights GB", "decode s"],
                  [[label, r.get("peak_gb", r.get("error")), r.get("weights_gb", "-"), r.get("decode_s", "-")]
                   for label, r in found.items()],
                  note="peak: the child process's peak RSS above its start")
    return found


def training_part(args) -> dict[str, Any]:
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    units = tuple(int(u) for u in args.flux_units.split(","))
    results: dict[str, Any] = {}
    rows = []
    for family in families:
        counts = component_counts(family)
        found: dict[str, Any] = {"components_params": counts, "levers": {}}
        for label, dtype, checkpointing in LEVERS:
            spec = {"family": family, "dtype": str(dtype).removeprefix("torch."), "checkpointing": checkpointing,
                    "resolution": args.resolution, "rank": args.rank}
            print(f"{TITLES[family]}: {label} ...", flush=True)
            if family == "flux":
                measured = {u: run_probe({**spec, "units": u}) for u in units}
                result = extrapolated(measured[units[0]], measured[units[1]], units)
                result["measured"] = {str(u): m for u, m in measured.items()}
            else:
                result = run_probe(spec)
            found["levers"][label] = result
            rows.append(row(family, label, result, counts, dtype))
        results[family] = found
    C.print_table(f"Adapter training at real shapes, {args.resolution} px, batch 1, LoRA rank {args.rank} (CPU)",
                  ["family", "levers", "denoiser weights GB", "training peak GB", "LoRA M params", "s / step",
                   "+ text encoders GB", "+ frozen (VAE, T5) GB"], rows,
                  note="training peak: the child process's peak RSS above its start (weights, LoRA, AdamW state, "
                       "activations); the two right columns: resident weights in the same dtype, counted from the "
                       "configs; the frozen ones leave the GPU with adapter.offload_frozen. FLUX: extrapolated from "
                       f"{units[0]} and {units[1]} of its {FLUX_UNITS} block units (*)")
    return results


def row(family: str, label: str, result: dict, counts: dict[str, int], dtype: torch.dtype) -> list[Any]:
    size = torch.tensor([], dtype=dtype).element_size()
    text = sum(counts[name] for name in TEXT_ENCODERS[family]) * size / GB
    frozen = sum(counts[name] for name in FROZEN[family]) * size / GB
    name = TITLES[family] + (" *" if result.get("extrapolated") else "")
    if "error" in result:
        return [name, label, "-", result["error"][:60], "-", "-", text, frozen]
    return [name, label, result["weights_gb"], result["peak_gb"], result["lora_params"] / 1e6,
            result["second_step_s"], text, frozen]


if __name__ == "__main__":
    main()
