"""Speed of DataDream adapter training: our LoraTrainer versus a plain train_dreambooth_lora loop.

Ours: the real ``datadream-dset`` adapter plugin's ``LoraTrainer`` built from a Run (method
datadream-dset) on a small image folder; ``train(group)`` is timed for ``--steps`` steps. Its
setup (pipeline load, LoRA, the shots' VAE latents computed once) is timed apart.

Plain: the loop of diffusers' ``examples/dreambooth/train_dreambooth_lora.py`` written out here:
the same pipeline folder, the same peft ``LoraConfig`` on the U-Net (to_q, to_k, to_v, to_out.0)
and the text encoder (q_proj, k_proj, v_proj, out_proj), AdamW, and per step: a DataLoader batch
(open, resize, random crop, normalise, tokenize), VAE encode of the pixels, noise, timesteps, text
encoder, U-Net, MSE, backward, gradient clipping, optimiser and LR-scheduler steps. Same batch
size, resolution, number of steps, dtype; both save the LoRA at the end.

The ratio is ours / plain (time per step); below 1 means ours is faster. Peak memory comes from
one child process per side (``--probe``), so the two sides do not share a process's peak.

    python benchmarks/adapter_training.py --model tiny --device cpu
    python benchmarks/adapter_training.py --model sd21-shapes --device cuda
    python benchmarks/adapter_training.py --model tiny-flux --device cpu   # tiny-sdxl, tiny-sd3 likewise

For the other families (``--model tiny-sdxl``, ``tiny-sd3``, ``tiny-flux``) the plain side is the
step of diffusers' own SDXL / SD3 / FLUX LoRA scripts (``PlainFamily``).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
from pathlib import Path

import _common as C  # first: sets the offline environment before the heavy imports
import torch
import torch.nn.functional as F

NAME = "adapter_training"
DEFAULTS = {
    "tiny": {"steps": 100, "batch": 4, "resolution": 32},
    "sd21-shapes": {"steps": 20, "batch": 8, "resolution": 512},
    **{name: {"steps": 30, "batch": 4, "resolution": 32} for name in C.FAMILY_FOLDERS},
    "sdxl-shapes": {"steps": 3, "batch": 1, "resolution": 256},  # the CPU's: 2.6 B U-Net parameters
}
UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


def arguments():
    p = C.parser(__doc__.split("\n\n")[0], families=True)
    p.add_argument("--steps", type=int, default=None, help="optimisation steps per timed repetition")
    p.add_argument("--batch", type=int, default=None, help="images per step")
    p.add_argument("--resolution", type=int, default=None, help="training resolution, px")
    p.add_argument("--classes", type=int, default=3)
    p.add_argument("--shots", type=int, default=4, help="images per class")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--no-memory", action="store_true", help="skip the per-side peak-memory child processes")
    p.add_argument("--apart", action="store_true",
                   help="time each side in a child process of its own, one repeat per process (for a model two "
                        "copies of which do not fit in memory: sdxl-shapes on a 24 GB machine)")
    p.add_argument("--probe", choices=["ours", "plain"], help=argparse.SUPPRESS)  # internal: one side's memory
    return C.finish_args(p.parse_args(), NAME, DEFAULTS)


# --------------------------------------------------------------------------- ours


class Ours:
    """The datadream-dset adapter's trainer, built exactly as ``Run.adapt()`` builds it."""

    def __init__(self, args, base: Path, data: Path, work: Path) -> None:
        from dd_plugins.datadream import DATASET_GROUP, Group
        from dd_plugins.datadream_training import LoraTrainer

        from ddcore.api import Run

        config = C.run_config(data, work / "ours-run", method="datadream-dset", base=base, device=args.device,
                              shots=args.shots, images_per_class=1, steps=1, resolution=args.resolution,
                              batch_size=args.batch, seed=args.seed,
                              adapter={"max_steps": args.steps, "batch_size": args.batch, "rank": args.rank,
                                       "checkpoint_every": 10**9})
        run = Run(config)
        run.prepare()
        run._build_prompts()  # what Run.adapt() does before fit()
        adapter = run.stages["adapter"]
        self.out = work / "ours-adapter"
        self.setup_s, self.trainer = C.timed(lambda: LoraTrainer(adapter.options, run.context, self.out), args.device)
        self.shots = len(run.context.shots)
        self.group = lambda steps: Group(DATASET_GROUP, list(range(self.shots)), steps)
        self.prompts = {c: p[0].text for c, p in run.context.prompts.items()}
        self.dtype = self.trainer.dtype

    def train(self, steps: int) -> None:
        self.trainer.train(self.group(steps))


# --------------------------------------------------------------------------- plain


class DreamBoothDataset(torch.utils.data.Dataset):
    """train_dreambooth_lora.py's dataset: each item opened, transformed and tokenized on access."""

    def __init__(self, paths: list[Path], prompts: list[str], tokenizer, size: int) -> None:
        from torchvision import transforms

        self.paths, self.prompts, self.tokenizer = paths, prompts, tokenizer
        self.transforms = transforms.Compose([
            transforms.Resize(size, interpolation=transforms.InterpolationMode.BILINEAR),
            transforms.RandomCrop(size),
            transforms.ToTensor(),
            transforms.Normalize([0.5], [0.5]),
        ])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        from PIL import Image
        from PIL.ImageOps import exif_transpose

        image = exif_transpose(Image.open(self.paths[index]))
        if image.mode != "RGB":
            image = image.convert("RGB")
        ids = self.tokenizer(self.prompts[index], truncation=True, padding="max_length",
                             max_length=self.tokenizer.model_max_length, return_tensors="pt").input_ids
        return {"pixel_values": self.transforms(image), "input_ids": ids}


def collate(examples: list[dict]) -> dict:
    pixels = torch.stack([e["pixel_values"] for e in examples]).to(memory_format=torch.contiguous_format).float()
    return {"pixel_values": pixels, "input_ids": torch.cat([e["input_ids"] for e in examples])}


class Plain:
    """The plain diffusers + peft LoRA DreamBooth loop (no DataDream code)."""

    def __init__(self, args, base: Path, data: Path, work: Path, prompts: dict[int, str]) -> None:
        self.args, self.base, self.out = args, base, work / "plain-lora"
        self.device, self.dtype = args.device, C.training_dtype(args.device)
        self.setup_s, _ = C.timed(lambda: self._setup(data, prompts), args.device)

    def _setup(self, data: Path, prompts: dict[int, str]) -> None:
        from diffusers import DDPMScheduler, StableDiffusionPipeline
        from peft import LoraConfig, inject_adapter_in_model

        args = self.args
        pipe = StableDiffusionPipeline.from_pretrained(str(self.base), safety_checker=None,
                                                       requires_safety_checker=False, **C.plain_dtype_kwargs(self.dtype))
        pipe.to(self.device)
        self.unet, self.text_encoder, self.vae, tokenizer = pipe.unet, pipe.text_encoder, pipe.vae, pipe.tokenizer
        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        for module in (self.unet, self.text_encoder, self.vae):
            module.requires_grad_(False)
        self.unet.add_adapter(LoraConfig(r=args.rank, lora_alpha=args.rank, init_lora_weights="gaussian",
                                         target_modules=UNET_TARGETS))
        # The script calls text_encoder.add_adapter(...); transformers 5.24's version of it demands
        # a peft release (>= 0.22) that does not exist yet, so the same injection goes through peft
        # directly (what add_adapter does underneath; the layers and their training are the same).
        inject_adapter_in_model(LoraConfig(r=args.rank, lora_alpha=args.rank, init_lora_weights="gaussian",
                                           target_modules=TEXT_TARGETS), self.text_encoder)
        self.params = [p for m in (self.unet, self.text_encoder) for p in m.parameters() if p.requires_grad]
        for p in self.params:  # cast_training_params: trainable LoRA weights in fp32
            p.data = p.data.float()
        self.loader, _ = self._loader(data, prompts, tokenizer)

    def _loader(self, data: Path, prompts: dict[int, str], tokenizer):
        """The script's DataLoader over the shots, and each shot's prompt."""
        args = self.args
        classes = sorted(p.name for p in (data / "train").iterdir() if p.is_dir())
        paths, texts = [], []
        for label, name in enumerate(classes):
            for path in sorted((data / "train" / name).glob("*.png"))[: args.shots]:
                paths.append(path)
                texts.append(prompts[label])
        dataset = DreamBoothDataset(paths, texts, tokenizer, args.resolution)
        # drop_last: every step gets a full batch, as ours does (it fills an epoch's last batch up),
        # so both sides do the same work per step whatever the shot count.
        return torch.utils.data.DataLoader(dataset, batch_size=min(args.batch, len(dataset)), shuffle=True,
                                           collate_fn=collate, num_workers=0, drop_last=True), texts

    def _batches(self):
        while True:  # epochs, reshuffled each time, as the example's DataLoader loop
            yield from self.loader

    def train(self, steps: int) -> None:
        from diffusers import StableDiffusionPipeline
        from diffusers.optimization import get_scheduler
        from diffusers.utils import convert_state_dict_to_diffusers
        from peft.utils import get_peft_model_state_dict

        optimizer = torch.optim.AdamW(self.params, lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
        lr_scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=100, num_training_steps=steps)
        self.unet.train()
        self.text_encoder.train()
        autocast = torch.autocast(self.device.split(":")[0], dtype=self.dtype, enabled=self.dtype != torch.float32)
        batches = self._batches()
        for _ in range(steps):
            batch = next(batches)
            pixel_values = batch["pixel_values"].to(self.device, dtype=self.dtype)
            model_input = self.vae.encode(pixel_values).latent_dist.sample() * self.vae.config.scaling_factor
            noise = torch.randn_like(model_input)
            timesteps = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (model_input.shape[0],),
                                      device=model_input.device).long()
            noisy = self.noise_scheduler.add_noise(model_input, noise, timesteps)
            with autocast:
                hidden = self.text_encoder(batch["input_ids"].to(self.device))[0]
                prediction = self.unet(noisy, timesteps, hidden).sample
            if self.noise_scheduler.config.prediction_type == "v_prediction":
                target = self.noise_scheduler.get_velocity(model_input, noise, timesteps)
            else:
                target = noise
            loss = F.mse_loss(prediction.float(), target.float(), reduction="mean")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, 1.0)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad()
        StableDiffusionPipeline.save_lora_weights(
            str(self.out),
            unet_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(self.unet)),
            text_encoder_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(self.text_encoder)),
            safe_serialization=True,
        )


class PlainFamily(Plain):
    """The step of diffusers' own LoRA scripts for SDXL (``train_dreambooth_lora_sdxl.py``), SD3
    (``train_dreambooth_lora_sd3.py``) and FLUX (``train_dreambooth_lora_flux.py``) with the text
    encoders trained: the pixels VAE-encoded, every prompt encoded by every text encoder (T5
    too) each step, the family's noise, denoiser call and loss. No DataDream code."""

    TRANSFORMER_TARGETS = UNET_TARGETS + ["add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"]

    def _setup(self, data: Path, prompts: dict[int, str]) -> None:
        from diffusers import DDPMScheduler, DiffusionPipeline, FlowMatchEulerDiscreteScheduler
        from peft import LoraConfig, inject_adapter_in_model

        args = self.args
        pipe = DiffusionPipeline.from_pretrained(str(self.base), **C.plain_dtype_kwargs(self.dtype)).to(self.device)
        self.pipe, self.kind = pipe, C.FAMILY_OF_MODEL[args.model]
        self.net = pipe.unet if self.kind == "sdxl" else pipe.transformer
        self.encoders = [pipe.text_encoder] + ([pipe.text_encoder_2] if self.kind in ("sdxl", "sd3") else [])
        for module in pipe.components.values():
            if isinstance(module, torch.nn.Module):
                module.requires_grad_(False)
        targets = UNET_TARGETS if self.kind == "sdxl" else self.TRANSFORMER_TARGETS
        inject_adapter_in_model(LoraConfig(r=args.rank, lora_alpha=args.rank, init_lora_weights="gaussian",
                                           target_modules=targets), self.net)
        for encoder in self.encoders:
            inject_adapter_in_model(LoraConfig(r=args.rank, lora_alpha=args.rank, init_lora_weights="gaussian",
                                               target_modules=TEXT_TARGETS), encoder)
        self.params = [p for m in (self.net, *self.encoders) for p in m.parameters() if p.requires_grad]
        for p in self.params:
            p.data = p.data.float()
        if self.kind == "sdxl":
            self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        else:
            self.flow = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)
        self.loader, self.prompts = self._loader(data, prompts, pipe.tokenizer)

    def _loss(self, pixel_values: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        pipe, vae = self.pipe, self.pipe.vae
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        model_input = (vae.encode(pixel_values).latent_dist.sample() - shift) * vae.config.scaling_factor
        noise = torch.randn_like(model_input)
        b = model_input.shape[0]
        if self.kind == "sdxl":
            embeds, _, pooled, _ = pipe.encode_prompt(prompts, device=self.device, do_classifier_free_guidance=False)
            size = (self.args.resolution, self.args.resolution)
            time_ids = pipe._get_add_time_ids(size, (0, 0), size, dtype=embeds.dtype,
                                              text_encoder_projection_dim=pipe.text_encoder_2.config.projection_dim)
            timesteps = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (b,), device=self.device)
            noisy = self.noise_scheduler.add_noise(model_input, noise, timesteps)
            prediction = self.net(noisy, timesteps, embeds, added_cond_kwargs={
                "text_embeds": pooled, "time_ids": time_ids.to(self.device).repeat(b, 1)}).sample
            return F.mse_loss(prediction.float(), noise.float())
        u = torch.sigmoid(torch.randn(b)) if self.kind == "sd3" else torch.rand(b)
        indices = (u * self.flow.config.num_train_timesteps).long()
        timesteps = self.flow.timesteps[indices].to(self.device)
        sigmas = self.flow.sigmas[indices].to(self.device, model_input.dtype).view(b, 1, 1, 1)
        noisy = (1.0 - sigmas) * model_input + sigmas * noise
        if self.kind == "sd3":
            embeds, _, pooled, _ = pipe.encode_prompt(prompts, prompts, prompts, device=self.device,
                                                      do_classifier_free_guidance=False)
            prediction = self.net(hidden_states=noisy, timestep=timesteps, encoder_hidden_states=embeds,
                                  pooled_projections=pooled, return_dict=False)[0]
            return F.mse_loss((noisy - sigmas * prediction).float(), model_input.float())
        embeds, pooled, text_ids = pipe.encode_prompt(prompts, prompts, device=self.device)
        h, w = model_input.shape[2:]
        packed = pipe._pack_latents(noisy, b, model_input.shape[1], h, w)
        image_ids = pipe._prepare_latent_image_ids(b, h // 2, w // 2, self.device, model_input.dtype)
        guidance = torch.full((b,), 3.5, device=self.device) if self.net.config.guidance_embeds else None
        out = self.net(hidden_states=packed, timestep=timesteps / 1000, guidance=guidance, pooled_projections=pooled,
                       encoder_hidden_states=embeds, txt_ids=text_ids, img_ids=image_ids, return_dict=False)[0]
        prediction = pipe._unpack_latents(out, h * pipe.vae_scale_factor, w * pipe.vae_scale_factor,
                                          pipe.vae_scale_factor)
        return F.mse_loss(prediction.float(), (noise - model_input).float())

    def train(self, steps: int) -> None:
        from diffusers.optimization import get_scheduler
        from peft.utils import get_peft_model_state_dict

        optimizer = torch.optim.AdamW(self.params, lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
        lr_scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=100, num_training_steps=steps)
        for module in (self.net, *self.encoders):
            module.train()
        autocast = torch.autocast(self.device.split(":")[0], dtype=self.dtype, enabled=self.dtype != torch.float32)
        batches = self._batches()
        for _ in range(steps):
            batch = next(batches)
            prompts = [self.prompts[0]] * batch["pixel_values"].shape[0]  # the class prompts are alike in length
            with autocast:
                loss = self._loss(batch["pixel_values"].to(self.device, dtype=self.dtype), prompts)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, 1.0)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad()
        layers = {f"{'unet' if self.kind == 'sdxl' else 'transformer'}_lora_layers": get_peft_model_state_dict(self.net)}
        for name, encoder in zip(("text_encoder", "text_encoder_2"), self.encoders):
            layers[f"{name}_lora_layers"] = get_peft_model_state_dict(encoder)
        type(self.pipe).save_lora_weights(str(self.out), **layers, safe_serialization=True)


def plain_side(args) -> type:
    return PlainFamily if args.model in C.FAMILY_FOLDERS else Plain


# --------------------------------------------------------------------------- one side in a child process


def probe(args) -> None:
    """One side alone in this process: setup, (with ``--apart`` a warm-up,) then ``--steps``
    timed steps; print its peak memory, setup and step seconds."""
    import shutil

    C.quiet_libraries()
    before = C.rss_mb()
    work = C.workdir(args, "dd-bench-probe-")
    data = C.write_image_folder(work / "data", args.classes, args.shots)
    base = C.base_model_folder(args.model)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    prompts = {c: f"a photo of a {name.replace('_', ' ')}" for c, name in
               enumerate(sorted(p.name for p in (data / "train").iterdir()))}
    side = Ours(args, base, data, work) if args.probe == "ours" else plain_side(args)(args, base, data, work, prompts)
    after_setup = C.peak_rss_mb()
    torch.manual_seed(args.seed)
    if args.apart:  # a timed repeat: warm up first, as time_training does
        side.train(min(2, args.steps))
    train_s, _ = C.timed(lambda: side.train(args.steps), args.device)
    result = {"rss_before_mb": before, "peak_rss_after_setup_mb": after_setup, "peak_rss_mb": C.peak_rss_mb(),
              "setup_s": side.setup_s, "train_s": train_s}
    if args.device == "cuda":
        result["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    print("PROBE " + json.dumps(result))


def side_in_child(args, side: str) -> dict:
    """One side alone in a child process (`probe`): its peak memory, setup and timed steps."""
    cmd = [sys.executable, __file__, "--probe", side, "--model", args.model, "--device", args.device,
           "--steps", str(args.steps), "--batch", str(args.batch), "--resolution", str(args.resolution),
           "--classes", str(args.classes), "--shots", str(args.shots), "--rank", str(args.rank),
           "--seed", str(args.seed)] + (["--apart"] if args.apart else [])
    done = subprocess.run(cmd, check=False, capture_output=True, text=True)
    for line in done.stdout.splitlines():
        if line.startswith("PROBE "):
            return json.loads(line[6:])
    raise SystemExit(f"the {side} side's child process failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")


# --------------------------------------------------------------------------- main


def main() -> None:
    args = arguments()
    if args.probe:
        return probe(args)
    C.quiet_libraries()
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    base = C.base_model_folder(args.model)
    work = C.workdir(args, "dd-bench-train-")
    data = C.write_image_folder(work / "data", args.classes, args.shots)
    print(f"{args.model} on {args.device}: {args.classes} classes x {args.shots} shots, {args.resolution} px, "
          f"batch {args.batch}, {args.steps} steps x {args.repeats} repeats (+1 warm-up); work dir {work}")

    result = time_apart(args) if args.apart else time_together(args, base, data, work)
    report(args, result)
    C.clean_workdir(args, work)


def time_apart(args) -> dict:
    """``args.repeats`` child processes per side, alternating which side goes first; each one
    sets up, warms up and times ``args.steps`` steps (its peak memory comes with it)."""
    runs: dict[str, list[dict]] = {"ours": [], "plain": []}
    for r in range(args.repeats):
        for name in ("ours", "plain") if r % 2 == 0 else ("plain", "ours"):
            runs[name].append(side_in_child(args, name))
            seconds = runs[name][-1]["train_s"]
            print(f"  repeat {r + 1}: {name:5s} {seconds:.3f} s ({args.steps / seconds:.3f} steps/s), own process")
    result = C.training_result({name: [run["train_s"] for run in found] for name, found in runs.items()},
                               {name: statistics.median(run["setup_s"] for run in found)
                                for name, found in runs.items()}, args.steps)
    for name, found in runs.items():
        result[name]["memory"] = max(found, key=lambda run: run["peak_rss_mb"])
    return result


def time_together(args, base: Path, data: Path, work: Path) -> dict:
    """Both sides in this process (C.time_training), then each side's memory in a child."""
    # Each side is set up once untimed (first imports, kernels, file cache), then again timed.
    ours = Ours(args, base, data, work)
    prompts = ours.prompts
    del ours
    plain_side(args)(args, base, data, work, prompts)  # built and dropped
    if args.device == "cuda":
        torch.cuda.empty_cache()
    ours = Ours(args, base, data, work)
    plain = plain_side(args)(args, base, data, work, prompts)
    assert ours.dtype == plain.dtype, (ours.dtype, plain.dtype)

    result = C.time_training(ours, plain, args)
    if not args.no_memory:
        del ours, plain
        for name in ("ours", "plain"):
            result[name]["memory"] = side_in_child(args, name)
    return result


def report(args, result: dict) -> None:
    rows = [
        ["steps/s (median)", result["ours"]["steps_per_s_median"], result["plain"]["steps_per_s_median"],
         result["ratio_time_median"]],
        ["steps/s (best)", result["ours"]["steps_per_s_best"], result["plain"]["steps_per_s_best"],
         result["ratio_time_best"]],
        [f"s per {args.steps} steps (median)", result["ours"]["median_s"], result["plain"]["median_s"],
         result["ratio_time_median"]],
        ["setup s (load, LoRA, latents)", result["ours"]["setup_s"], result["plain"]["setup_s"], result["ratio_setup"]],
    ]
    if not args.no_memory:
        key = "cuda_max_allocated_mb" if args.device == "cuda" else "peak_rss_mb"
        label = "peak CUDA allocated MiB" if args.device == "cuda" else "peak RSS MiB (own process)"
        o, p = result["ours"]["memory"][key], result["plain"]["memory"][key]
        rows.append([label, o, p, C.ratio(o, p)])
        if args.device != "cuda":  # the libraries alone take several hundred MiB; show what the work adds
            o -= result["ours"]["memory"]["rss_before_mb"]
            p -= result["plain"]["memory"]["rss_before_mb"]
            rows.append(["  of which above the imports", o, p, C.ratio(o, p)])
    C.print_table(f"Adapter training: {args.model}, {args.device}" + (", each side in its own processes" if args.apart
                                                                      else ""),
                  ["", "ours", "plain", "ours/plain (time)"], rows, note="ratio < 1: ours is faster (or smaller)")
    C.write_json(args.out, {
        "benchmark": NAME, "model": args.model, "device": args.device,
        "settings": {k: getattr(args, k) for k in ("steps", "batch", "resolution", "classes", "shots", "rank",
                                                   "repeats", "seed", "apart")},
        "dtype": str(C.training_dtype(args.device)), "env": C.environment(args.device), **result,
    })


if __name__ == "__main__":
    main()
