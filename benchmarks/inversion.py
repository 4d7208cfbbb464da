"""Speed of Diffusion Inversion: our embedding learning and sampling versus the reference code's loops.

Part 1, embedding learning. Ours: the real ``diffusion-inversion`` adapter's ``EmbeddingTrainer``
built from a Run (method diffusion-inversion) on a small image folder, as ``adapter.fit()``
builds it; ``train(group, indices)`` is timed for ``--steps`` steps on one group holding every
shot. Its setup (pipeline load, the shots' VAE latents computed once) is timed apart.

Plain: the loop of the reference code (yongchaoz/diffusion_inversion ``src/diffuser_inversion.py``,
a textual-inversion style accelerate script) written out here without accelerate: the scheduler,
text encoder (loaded only for its width, as the reference does), VAE and U-Net loaded from the
same pipeline folder; an ``nn.Linear(num_emb -> tokens * D, bias=False)`` embedding model fed
one-hot rows; AdamW lr 3e-2, constant schedule; and per step: a DataLoader batch (open, resize,
centre-crop, normalise), VAE encode of the pixels, noise, timesteps, U-Net with the embeddings
as ``encoder_hidden_states``, MSE, backward, optimiser and LR-scheduler steps. Same group size,
batch, resolution, tokens, steps and dtype; both save the embeddings at the end.

Part 2, sampling. Ours: ``run.generate()`` of that Run with the trained adapter on a fresh output
folder (pipeline load, per-image seeds, the perturbation ``0.9 c_base + 0.1 c_partner + 0.1 eps``,
CFG with the mean embedding, DDIM eta 1, atomic PNG writes, metadata). Plain:
``StableDiffusionPipeline.from_pretrained(folder)`` with ``DDIMScheduler``, the embeddings read
from the adapter's safetensors file and perturbed the same way (same seeds, so the images come
out identical; checked), then ``pipe(prompt_embeds=..., negative_prompt_embeds=mean, eta=1,
generator=[...])`` per batch of the same size and ``image.save(path)``.

The ratios are ours / plain (time); below 1 means ours is faster. Peak memory comes from one
child process per side and part (``--probe``), so the sides do not share a process's peak.

    python benchmarks/inversion.py --model tiny --device cpu --threads 1
    python benchmarks/inversion.py --model sd21-shapes --device cuda
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import _common as C  # first: sets the offline environment before the heavy imports
import numpy as np
import torch
import torch.nn.functional as F

NAME = "inversion"
DEFAULTS = {
    "tiny": {"steps": 60, "batch": 4, "resolution": 32, "classes": 3, "shots": 4,
             "images_per_class": 16, "sample_steps": 10, "sample_batch": 4},
    # A 2-core CPU does one 256 px SD-2.1 U-Net forward+backward in several seconds: toy sizes.
    "sd21-shapes": {"steps": 3, "batch": 2, "resolution": 256, "classes": 2, "shots": 1,
                    "images_per_class": 1, "sample_steps": 3, "sample_batch": 1},
}
PARTS = ("learn", "sample")


def arguments():
    p = C.parser(__doc__.split("\n\n")[0])
    p.add_argument("--part", choices=["both", *PARTS], default="both")
    p.add_argument("--steps", type=int, default=None, help="embedding-learning steps per timed repetition")
    p.add_argument("--batch", type=int, default=None, help="images per learning step")
    p.add_argument("--resolution", type=int, default=None, help="learning and sampling resolution, px")
    p.add_argument("--classes", type=int, default=None)
    p.add_argument("--shots", type=int, default=None, help="images per class (all in one group)")
    p.add_argument("--tokens", type=int, default=5, help="embedding length")
    p.add_argument("--images-per-class", type=int, default=None, help="sampled images per class")
    p.add_argument("--sample-steps", type=int, default=None, help="DDIM sampling steps")
    p.add_argument("--sample-batch", type=int, default=None, help="images per pipeline call")
    p.add_argument("--guidance", type=float, default=2.0)
    p.add_argument("--noise", type=float, default=0.1, help="lambda of c + lambda * eps")
    p.add_argument("--interpolation", type=float, default=0.1, help="the partner's weight")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's own choice); 1 keeps timings stable on a shared "
                        "machine")
    p.add_argument("--no-memory", action="store_true", help="skip the per-side peak-memory child processes")
    p.add_argument("--probe", choices=[f"{s}-{part}" for part in PARTS for s in ("ours", "plain")],
                   help=argparse.SUPPRESS)  # internal: one side's memory
    p.add_argument("--probe-work", type=Path, help=argparse.SUPPRESS)  # internal: the parent's scratch folder
    args = C.finish_args(p.parse_args(), NAME, DEFAULTS)
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def config(args, data: Path, out: Path, base: Path, store: Path | None = None):
    """The Run's config, as ``dd run --method diffusion-inversion --set adapter.X=... --set generator.X=...``."""
    return C.run_config(
        data, out, method="diffusion-inversion", base=base, device=args.device, shots=args.shots,
        images_per_class=args.images_per_class, steps=1, resolution=args.resolution,
        batch_size=args.sample_batch, seed=args.seed, store=store,
        adapter={"steps": args.steps, "batch_size": args.batch, "resolution": args.resolution,
                 "tokens": args.tokens, "group_size": args.classes * args.shots, "checkpoint_every": 10**9},
        generator={"steps": args.sample_steps, "guidance": args.guidance, "noise": args.noise,
                   "interpolation": args.interpolation, "eta": 1.0, "scheduler": "DDIMScheduler"})


# =========================================================================== part 1: learning
# --------------------------------------------------------------------------- ours


class OursLearn:
    """The diffusion-inversion adapter's trainer, built as ``DiffusionInversionAdapter.fit()`` builds it."""

    def __init__(self, args, base: Path, data: Path, work: Path) -> None:
        from dd_plugins.diffusion_inversion_training import EmbeddingTrainer

        from ddcore.api import Run

        run = Run(config(args, data, work / "ours-run", base))
        run.prepare()
        run._build_prompts()  # what Run.adapt() does before fit()
        adapter = run.stages["adapter"]
        groups = adapter.groups(len(run.context.shots))
        assert len(groups) == 1, groups
        self.indices, self.options = groups[0], adapter.options
        self.out = work / "ours-adapter"

        def setup():
            trainer = EmbeddingTrainer(adapter.options, run.context, self.out)
            trainer._encode(self.indices)  # the shots' latents, once (train() does it on its first call)
            return trainer

        self.setup_s, self.trainer = C.timed(setup, args.device)
        self.dtype = self.trainer.dtype

    def train(self, steps: int) -> None:
        self.trainer.options = dataclasses.replace(self.options, steps=steps)
        self.trainer.train(0, self.indices)


# --------------------------------------------------------------------------- plain


class EmbDataset(torch.utils.data.Dataset):
    """The reference's ``EmbDataset`` for an image folder: each item opened, resized (bicubic)
    and centre-cropped on access, scaled to [-1, 1], with its one-hot embedding row."""

    def __init__(self, paths: list[Path], size: int) -> None:
        from torchvision import transforms

        self.paths = paths
        self.transform = transforms.Compose([
            transforms.Resize(size, interpolation=transforms.InterpolationMode.BICUBIC, antialias=True),
            transforms.CenterCrop(size),
        ])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        from PIL import Image

        image = self.transform(Image.open(self.paths[index]).convert("RGB"))
        image = (np.array(image).astype(np.uint8) / 127.5 - 1.0).astype(np.float32)
        return {"pixel_values": torch.from_numpy(image).permute(2, 0, 1),
                "emb_id": np.eye(len(self.paths))[index].astype(np.float32)}


class EmbModel(torch.nn.Module):
    """The reference's ``EmbModel``: one-hot rows -> ``[tokens, D]`` embeddings."""

    def __init__(self, emb_ch: int, num_emb: int, num_tokens: int) -> None:
        super().__init__()
        self.emb_ch, self.num_tokens = emb_ch, num_tokens
        self.emb = torch.nn.Linear(num_emb, emb_ch * num_tokens, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.emb(x).view(-1, self.num_tokens, self.emb_ch)


class PlainLearn:
    """The reference code's embedding-learning loop (no DataDream code)."""

    def __init__(self, args, base: Path, data: Path, work: Path) -> None:
        self.args, self.base, self.out = args, base, work / "plain-embeddings"
        self.device, self.dtype = args.device, C.training_dtype(args.device)
        self.setup_s, _ = C.timed(lambda: self._setup(data), args.device)

    def _setup(self, data: Path) -> None:
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel

        base = str(self.base)
        self.noise_scheduler = DDPMScheduler.from_pretrained(base, subfolder="scheduler")
        self.text_encoder = CLIPTextModel.from_pretrained(base, subfolder="text_encoder")  # for its width only
        self.vae = AutoencoderKL.from_pretrained(base, subfolder="vae")
        self.unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet")
        self.vae.requires_grad_(False)
        self.unet.requires_grad_(False)
        self.unet.to(self.device, dtype=self.dtype)
        self.vae.to(self.device, dtype=self.dtype)
        self.emb_ch = self.text_encoder.config.hidden_size
        classes = sorted(p.name for p in (data / "train").iterdir() if p.is_dir())
        paths = [path for name in classes for path in sorted((data / "train" / name).glob("*.png"))[: self.args.shots]]
        self.dataset = EmbDataset(paths, self.args.resolution)
        # shuffle=False as the reference; drop_last so every step gets a full batch, as ours does.
        self.loader = torch.utils.data.DataLoader(self.dataset, batch_size=min(self.args.batch, len(paths)),
                                                  shuffle=False, num_workers=0, drop_last=True)

    def _batches(self):
        while True:  # the reference's epoch loop
            yield from self.loader

    def train(self, steps: int) -> None:
        from diffusers.optimization import get_scheduler

        emb_model = EmbModel(self.emb_ch, len(self.dataset), self.args.tokens).to(self.device)
        optimizer = torch.optim.AdamW(emb_model.parameters(), lr=3e-2, betas=(0.9, 0.999), weight_decay=1e-2,
                                      eps=1e-8)
        lr_scheduler = get_scheduler("constant", optimizer=optimizer, num_warmup_steps=0, num_training_steps=steps)
        autocast = torch.autocast(self.device.split(":")[0], dtype=self.dtype, enabled=self.dtype != torch.float32)
        scaling = self.vae.config.scaling_factor  # the reference hard-codes SD's 0.18215
        emb_model.train()
        batches = self._batches()
        for _ in range(steps):
            batch = next(batches)
            latents = self.vae.encode(batch["pixel_values"].to(self.device, dtype=self.dtype)).latent_dist.sample()
            latents = latents.detach() * scaling
            noise = torch.randn_like(latents)
            timesteps = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (latents.shape[0],),
                                      device=latents.device).long()
            noisy_latents = self.noise_scheduler.add_noise(latents, noise, timesteps)
            encoder_hidden_states = emb_model(batch["emb_id"].to(self.device))
            with autocast:
                model_pred = self.unet(noisy_latents, timesteps, encoder_hidden_states).sample
            if self.noise_scheduler.config.prediction_type == "v_prediction":
                target = self.noise_scheduler.get_velocity(latents, noise, timesteps)
            else:
                target = noise
            loss = F.mse_loss(model_pred.float(), target.float(), reduction="mean")
            loss.backward()
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad()
        self.out.mkdir(parents=True, exist_ok=True)
        torch.save({"emb.weight": emb_model.emb.weight.detach().cpu()}, self.out / "learned_embeds.bin")


# =========================================================================== part 2: sampling


@dataclasses.dataclass(frozen=True)
class Planned:
    """What the plain side needs to make the image ours makes (computed untimed)."""

    seed: int  # the initial latent's generator
    draw_seed: int  # the perturbation's generator (partner, eps)
    rows: tuple[int, ...]  # the embedding rows of the image's class, in shot order
    position: int  # the base row's position in ``rows``
    file_name: str


class OursSample:
    """``run.generate()`` of a diffusion-inversion Run whose adapter is trained (untimed, once)."""

    def __init__(self, args, base: Path, data: Path, work: Path) -> None:
        from ddcore.api import Run

        self.args, self.base, self.data, self.work = args, base, data, work
        self.store = work / "store"  # the adapter lives here; each timed run gets a fresh output folder
        self.count = 0
        run = Run(config(args, data, work / "adapted", base, self.store))
        run.prepare()
        run.adapt()
        self.adapter_dir = run.adapter_dir()
        self.run = run

    def plan(self) -> list[list[Planned]]:
        """Per class, the images' seeds, rows and file names, as our generator draws them."""
        from dd_plugins.diffusion_inversion import INFO

        from ddcore.api import derive_seed, plan_item, relative_path

        run = self.run
        rows = {r["path"]: int(r["index"]) for r in json.loads((self.adapter_dir / INFO).read_text())["embeddings"]}
        by_class = {label: tuple(rows[relative_path(s.path, run.dataset.root)] for s in shots)
                    for label, shots in run.context.shots_by_class().items()}
        prompts = run.stages["generator"].plan_prompts(run.context, run._build_prompts())
        plan = []
        for label in range(run.dataset.num_classes):
            items = [plan_item(run.dataset, prompts, run.config.seed, label, i)
                     for i in range(self.args.images_per_class)]
            plan.append([Planned(item.seed, derive_seed("diffusion-inversion", item.seed), by_class[label],
                                 item.index % len(by_class[label]), item.file_name) for item in items])
        return plan

    def generate(self, keep: bool = False) -> dict:
        """One timed run.generate() on a fresh output folder (Run built and prepared untimed)."""
        from ddcore.api import Run

        self.count += 1
        out = self.work / f"ours-gen-{self.count}"
        run = Run(config(self.args, self.data, out, self.base, self.store))
        run.prepare()
        seconds, setup_s, synthetic = C.timed_generation(run, self.args.device)
        assert len(synthetic.items) == self.args.images_per_class * self.args.classes
        images = run.stage_dir("synthetic").path
        result = {"total_s": seconds, "setup_s": setup_s, "images": images}
        if not keep:
            shutil.rmtree(images, ignore_errors=True)
            shutil.rmtree(out, ignore_errors=True)
        return result


class PlainSample:
    """Plain diffusers: the pipeline, DDIM, the embeddings perturbed by hand, ``pipe(prompt_embeds=...)``."""

    def __init__(self, args, base: Path, work: Path, adapter_dir: Path, plan: list[list[Planned]]) -> None:
        self.args, self.base, self.work, self.plan = args, base, work, plan
        self.embeddings_file = adapter_dir / "embeddings.safetensors"
        self.count = 0

    def generate(self, keep: bool = False) -> dict:
        a = self.args
        self.count += 1
        out = self.work / f"plain-gen-{self.count}"
        clock = {}

        def body() -> None:
            from diffusers import DDIMScheduler, StableDiffusionPipeline
            from safetensors.torch import load_file

            dtype = C.generation_dtype(a.device)
            clock["setup_s"], pipe = C.timed(lambda: StableDiffusionPipeline.from_pretrained(
                str(self.base), safety_checker=None, requires_safety_checker=False,
                **C.plain_dtype_kwargs(dtype)).to(a.device), a.device, collect=False)
            pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
            pipe.set_progress_bar_config(disable=True)
            embeddings = load_file(str(self.embeddings_file))["embeddings"].float()
            uncond = embeddings.mean(dim=0)
            for items in self.plan:
                for start in range(0, len(items), a.sample_batch):
                    chunk = items[start:start + a.sample_batch]
                    conds = []
                    for it in chunk:  # c = (1 - alpha) c_base + alpha c_partner + lambda eps
                        g = torch.Generator().manual_seed(it.draw_seed)
                        partner = it.position
                        if len(it.rows) > 1:
                            other = int(torch.randint(0, len(it.rows) - 1, (1,), generator=g))
                            partner = other if other < it.position else other + 1
                        eps = torch.randn(embeddings.shape[1:], generator=g)
                        conds.append((1 - a.interpolation) * embeddings[it.rows[it.position]]
                                     + a.interpolation * embeddings[it.rows[partner]] + a.noise * eps)
                    images = pipe(prompt_embeds=torch.stack(conds).to(a.device, dtype),
                                  negative_prompt_embeds=uncond.expand(len(chunk), -1, -1).to(a.device, dtype),
                                  guidance_scale=a.guidance, num_inference_steps=a.sample_steps,
                                  height=a.resolution, width=a.resolution, eta=1.0,
                                  generator=[torch.Generator(device="cpu").manual_seed(it.seed) for it in chunk]).images
                    for it, image in zip(chunk, images):
                        path = out / it.file_name
                        path.parent.mkdir(parents=True, exist_ok=True)
                        image.save(path)

        seconds, _ = C.timed(body, a.device)
        result = {"total_s": seconds, "setup_s": clock["setup_s"], "images": out}
        if not keep:
            shutil.rmtree(out, ignore_errors=True)
        return result


def same_images(plan: list[list[Planned]], ours: Path, plain: Path) -> dict:
    """How far apart the two sides' images are (0: identical pixels)."""
    from PIL import Image

    diffs = []
    for items in plan:
        for it in items:
            a = np.asarray(Image.open(ours / it.file_name).convert("RGB"), dtype=np.int16)
            b = np.asarray(Image.open(plain / it.file_name).convert("RGB"), dtype=np.int16)
            diffs.append(int(np.abs(a - b).max()))
    return {"images": len(diffs), "identical": sum(d == 0 for d in diffs), "max_abs_pixel_diff": max(diffs)}


# --------------------------------------------------------------------------- memory probe


def probe(args) -> None:
    """One side of one part alone in this process; print its peak memory."""
    C.quiet_libraries()
    before = C.rss_mb()
    work = args.probe_work
    base = C.base_model_folder(args.model)
    data = work / "data"
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    side, part = args.probe.split("-")
    scratch = work / f"probe-{args.probe}"
    scratch.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    if part == "learn":
        learner = OursLearn(args, base, data, scratch) if side == "ours" else PlainLearn(args, base, data, scratch)
        after_setup = C.peak_rss_mb()
        learner.train(args.steps)
    else:
        after_setup = C.peak_rss_mb()
        if side == "ours":
            ours = OursSample(args, base, data, work)  # the adapter is in the parent's store: reused, not trained
            ours.work = scratch
            ours.generate()
        else:
            saved = json.loads((work / "plan.json").read_text())
            plan = [[Planned(**{**it, "rows": tuple(it["rows"])}) for it in items] for items in saved["plan"]]
            PlainSample(args, base, scratch, Path(saved["adapter_dir"]), plan).generate()
    result = {"rss_before_mb": before, "peak_rss_after_setup_mb": after_setup, "peak_rss_mb": C.peak_rss_mb()}
    if args.device == "cuda":
        result["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    shutil.rmtree(scratch, ignore_errors=True)
    print("PROBE " + json.dumps(result))


def memory(args, side: str, work: Path) -> dict:
    cmd = [sys.executable, __file__, "--probe", side, "--probe-work", str(work), "--model", args.model,
           "--device", args.device, "--steps", str(args.steps), "--batch", str(args.batch),
           "--resolution", str(args.resolution), "--classes", str(args.classes), "--shots", str(args.shots),
           "--tokens", str(args.tokens), "--images-per-class", str(args.images_per_class),
           "--sample-steps", str(args.sample_steps), "--sample-batch", str(args.sample_batch),
           "--guidance", str(args.guidance), "--noise", str(args.noise), "--interpolation", str(args.interpolation),
           "--seed", str(args.seed)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    done = subprocess.run(cmd, check=False, capture_output=True, text=True)
    for line in done.stdout.splitlines():
        if line.startswith("PROBE "):
            return json.loads(line[6:])
    raise SystemExit(f"memory probe for {side} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")


def memory_rows(args, result: dict) -> list[list]:
    key = "cuda_max_allocated_mb" if args.device == "cuda" else "peak_rss_mb"
    label = "peak CUDA allocated MiB" if args.device == "cuda" else "peak RSS MiB (own process)"
    o, p = result["ours"]["memory"][key], result["plain"]["memory"][key]
    rows = [[label, o, p, C.ratio(o, p)]]
    if args.device != "cuda":  # the libraries alone take several hundred MiB; show what the work adds
        o -= result["ours"]["memory"]["rss_before_mb"]
        p -= result["plain"]["memory"]["rss_before_mb"]
        rows.append(["  of which above the imports", o, p, C.ratio(o, p)])
    return rows


# --------------------------------------------------------------------------- parts


def bench_learn(args, base: Path, data: Path, work: Path) -> dict:
    print(f"part 1, embedding learning: {args.classes * args.shots} shots in one group, {args.resolution} px, "
          f"batch {args.batch}, {args.tokens} tokens, {args.steps} steps x {args.repeats} repeats (+ warm-up)")
    # Each side is set up once untimed (first imports, kernels, file cache), then again timed.
    OursLearn(args, base, data, work)
    PlainLearn(args, base, data, work)
    if args.device == "cuda":
        torch.cuda.empty_cache()
    ours = OursLearn(args, base, data, work)
    plain = PlainLearn(args, base, data, work)
    assert ours.dtype == plain.dtype, (ours.dtype, plain.dtype)
    result = C.time_training(ours, plain, args)
    del ours, plain
    if not args.no_memory:
        for name in ("ours", "plain"):
            result[name]["memory"] = memory(args, f"{name}-learn", work)
    o, p = result["ours"], result["plain"]
    rows = [
        ["steps/s (median)", o["steps_per_s_median"], p["steps_per_s_median"], result["ratio_time_median"]],
        ["steps/s (best)", o["steps_per_s_best"], p["steps_per_s_best"], result["ratio_time_best"]],
        [f"s per {args.steps} steps (median)", o["median_s"], p["median_s"], result["ratio_time_median"]],
        ["setup s (load, latents)", o["setup_s"], p["setup_s"], result["ratio_setup"]],
    ]
    if not args.no_memory:
        rows += memory_rows(args, result)
    C.print_table(f"Embedding learning: {args.model}, {args.device}", ["", "ours", "plain", "ours/plain (time)"],
                  rows, note="ratio < 1: ours is faster (or smaller)")
    return result


def bench_sample(args, base: Path, data: Path, work: Path) -> dict:
    total = args.images_per_class * args.classes
    print(f"part 2, sampling: {args.classes} classes x {args.images_per_class} images = {total}, {args.resolution} px, "
          f"{args.sample_steps} DDIM steps (eta 1), batch {args.sample_batch}, guidance {args.guidance}; "
          f"{args.repeats} repeats (+1 warm-up)")
    ours = OursSample(args, base, data, work)  # trains the adapter (untimed)
    plan = ours.plan()
    plain = PlainSample(args, base, work, ours.adapter_dir, plan)
    torch.manual_seed(args.seed)
    first_ours = ours.generate(keep=True)  # warm-up, kept to compare the images
    torch.manual_seed(args.seed)
    first_plain = plain.generate(keep=True)
    check = same_images(plan, first_ours["images"], first_plain["images"])
    print(f"  warm-up images: {check['identical']} of {check['images']} identical "
          f"(largest pixel difference {check['max_abs_pixel_diff']})")
    for first in (first_ours, first_plain):
        shutil.rmtree(first["images"], ignore_errors=True)
    result = {"images_check": check, **C.time_generation(ours, plain, args, total, warm_up=False)}
    if not args.no_memory:
        (work / "plan.json").write_text(json.dumps({  # for the plain probe
            "adapter_dir": str(ours.adapter_dir), "plan": [[dataclasses.asdict(it) for it in items] for items in plan]}))
        del ours, plain
        for name in ("ours", "plain"):
            result[name]["memory"] = memory(args, f"{name}-sample", work)
    rows = C.generation_rows(result, total)
    if not args.no_memory:
        rows += memory_rows(args, result)
    C.print_table(f"Sampling: {args.model}, {args.device}", ["", "ours", "plain", "ours/plain (time)"], rows,
                  note=f"ratio < 1: ours is faster; warm-up images identical: {check['identical']}/{check['images']}")
    return result


# --------------------------------------------------------------------------- main


def main() -> None:
    args = arguments()
    if args.probe:
        return probe(args)
    C.quiet_libraries()
    torch.manual_seed(args.seed)
    base = C.base_model_folder(args.model)
    work = C.workdir(args, "dd-bench-inversion-")
    data = C.write_image_folder(work / "data", args.classes, args.shots)
    print(f"{args.model} on {args.device}, {torch.get_num_threads()} torch thread(s); work dir {work}")
    results = {}
    if args.part in ("both", "learn"):
        results["learn"] = bench_learn(args, base, data, work)
    if args.part in ("both", "sample"):
        results["sample"] = bench_sample(args, base, data, work)
    C.write_json(args.out, {
        "benchmark": NAME, "model": args.model, "device": args.device,
        "settings": {k: getattr(args, k) for k in ("part", "steps", "batch", "resolution", "classes", "shots",
                                                   "tokens", "images_per_class", "sample_steps", "sample_batch",
                                                   "guidance", "noise", "interpolation", "threads", "repeats",
                                                   "seed")},
        "dtype": {"learn": str(C.training_dtype(args.device)), "sample": str(C.generation_dtype(args.device))},
        "env": C.environment(args.device), **results,
    })
    C.clean_workdir(args, work)


if __name__ == "__main__":
    main()
