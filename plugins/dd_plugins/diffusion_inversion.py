"""Diffusion Inversion (Zhou et al., NeurIPS 2023, "Training on Thin Air: Improve Image
Classification with Generated Data"): adapter, generator and method ``diffusion-inversion``.

Stage 1, the adapter, learns one conditioning embedding per real shot, ``[tokens, D]`` with D
the U-Net's cross-attention width, passed to the frozen U-Net as ``encoder_hidden_states`` (the
text encoder is bypassed), with the plain latent-diffusion denoising loss. As in the reference
code, the shots are trained in groups of ``group_size`` images, each group a unit with its own
AdamW optimizer (lr 3e-2, constant), at the TARGET resolution (``adapter.resolution``), which
the generator then samples at.

Stage 2, the generator, samples Stable Diffusion conditioned on perturbed embeddings. Image
``i`` of class ``c`` starts from class c's shot ``i % K`` (K = its number of shots, in the order
of ``fewshot.json``), its *base*; a *partner* is another shot of class c drawn from the image's
seed (itself when K = 1); the conditioning is

    c = (1 - interpolation) * c_base + interpolation * c_partner + noise * eps,  eps ~ N(0, I)

``interpolation`` (alpha here) is the partner's weight, so this is the paper's
``alpha * c1 + (1 - alpha) * c2`` with ``c1`` the partner and ``c2`` the base. Classifier-free
guidance uses the MEAN of all learned embeddings (every class) as the unconditional embedding.
Sampling keeps the checkpoint's scheduler, as the reference's sampling script does (it passes
``eta=1``, which SD 1.4's PNDM scheduler ignores); ``generator.scheduler=DDIMScheduler`` with
``generator.eta`` gives stochastic DDIM.
The prompt text is not used; the core records the base shot as each image's ``source``.

The heavy training loop lives in ``dd_plugins.diffusion_inversion_training``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ddcore.api import Adapter, ConfigError, Generator, Method, StageError, derive_seed, hookimpl, option

from .diffusion_inversion_layout import CHECKPOINTS, EMBEDDINGS, GROUPS, INFO  # noqa: F401
NAME = "diffusion-inversion"
CONDITIONING = "learned embeddings, text encoder bypassed (the prompt text is not used)"

USE_ADAPTER = f"use `--adapter {NAME}` (or `--method {NAME}`)"
USE_GENERATOR = f"use `--generator {NAME}` (or `--method {NAME}`)"



# --------------------------------------------------------------------------- adapter


class DiffusionInversionAdapter(Adapter):
    """One learned conditioning embedding per real shot (the text encoder bypassed)."""

    families = ("sd",)  # the inversion of SD 1.x/2.x's CLIP text encoder (docs/diffusion-inversion.md)

    generators = (NAME,)

    @dataclass
    class Options:
        tokens: int = option(5, "embedding length, in tokens of the U-Net's cross-attention width (official code: 5)")
        group_size: int = option(100, "shots trained together as one unit, with their own AdamW (official code: 100)")
        steps: int = option(3000, "training steps of each group (paper: up to 3K)", demo=60)
        batch_size: int = option(50, "shots of the group per step (official README: 50, so a group of 100 is 2 steps "
                                     "per pass)")
        lr: float = option(3e-2, "AdamW learning rate, constant after the warm-up (paper: 3e-2)", demo=0.001)
        warmup_steps: int = option(0, "linear warm-up steps of each group (official code: none)", demo=5)
        weight_decay: float = option(1e-2, "AdamW weight decay (official code: 1e-2)")
        adam_beta1: float = option(0.9, "AdamW beta1")
        adam_beta2: float = option(0.999, "AdamW beta2")
        adam_epsilon: float = option(1e-8, "AdamW epsilon")
        resolution: int = option(256, 'the TARGET resolution; the generator samples at it too (paper: 256, 128 for '
                                      'CIFAR)', demo=32)
        init_scale: float = option(0.1, "embeddings start uniform in +-init_scale (nn.Linear's init at 100 inputs)")
        max_grad_norm: float = option(0.0, ">0: clip the gradient norm to this (0: no clipping, as the official code)")
        mixed_precision: str = option("auto", "base-weight dtype: auto (bf16/fp16 on a GPU, fp32 on the CPU), fp16, "
                                              "bf16 or no")
        checkpoint_every: int = option(500, "steps between checkpoints a killed run resumes from", demo=50)

        def __post_init__(self) -> None:
            for name in ("tokens", "group_size", "steps", "batch_size", "checkpoint_every"):
                if int(getattr(self, name)) < 1:
                    raise ConfigError(f"adapter.{name} must be at least 1, not {getattr(self, name)}")
            if self.resolution < 8 or self.resolution % 8:
                raise ConfigError(f"adapter.resolution must be a positive multiple of 8, not {self.resolution}")
            if self.lr <= 0 or self.init_scale < 0 or self.warmup_steps < 0 or self.max_grad_norm < 0:
                raise ConfigError("adapter.lr must be > 0 and adapter.init_scale, warmup_steps and "
                                  "max_grad_norm must be >= 0")

    def groups(self, count: int) -> list[list[int]]:
        """Shot indices of each group: consecutive runs of ``group_size`` shots."""
        size = self.options.group_size
        return [list(range(start, min(start + size, count))) for start in range(0, count, size)]

    def fit(self, context, out_dir: Path) -> None:
        from ddcore.api import ProcessInfo, wait_for_everyone

        if (out_dir / EMBEDDINGS).is_file() and (out_dir / INFO).is_file():
            return
        if not context.shots:
            raise StageError("diffusion inversion learns one embedding per real shot, but the run has none")
        me = ProcessInfo(context.rank, context.world_size)
        groups = self.groups(len(context.shots))
        mine = [k for k in range(len(groups)) if k % me.world_size == me.rank
                and not (out_dir / GROUPS / f"{k}.safetensors").is_file()]
        if mine:
            from .diffusion_inversion_training import EmbeddingTrainer

            trainer = EmbeddingTrainer(self.options, context, out_dir)
            for k in mine:
                trainer.train(k, groups[k])
        wait_for_everyone(me)
        if me.is_main:
            self._write_final(context, out_dir, len(groups))

    def _write_final(self, context, out_dir: Path, count: int) -> None:
        import torch
        from safetensors.torch import load_file, save

        from ddcore.api import atomic_write_bytes, atomic_write_json, model_identity, relative_path

        parts = []
        for k in range(count):
            path = out_dir / GROUPS / f"{k}.safetensors"
            if not path.is_file():
                raise StageError(f"group {k} of the diffusion inversion embeddings is missing ({path}); "
                                 "rerun `dd adapt` to train it")
            parts.append(load_file(str(path))["embeddings"])
        embeddings = torch.cat(parts).float().contiguous()
        if embeddings.shape[0] != len(context.shots):
            raise StageError(f"{out_dir} holds {embeddings.shape[0]} embeddings for {len(context.shots)} shots; "
                             "remove the folder and rerun `dd adapt`")
        root = context.dataset.root
        atomic_write_json(out_dir / INFO, {
            "method": NAME, "tokens": int(embeddings.shape[1]), "dim": int(embeddings.shape[2]),
            "resolution": self.options.resolution, "base_model": model_identity(context.config.base_model),
            "steps": self.options.steps, "group_size": self.options.group_size, "groups": count,
            "seed": context.config.seed, "options": asdict(self.options),
            "embeddings": [{"index": i, "path": relative_path(s.path, root), "label": s.label, "class": s.classname}
                           for i, s in enumerate(context.shots)],
        })
        # The tensor file last: its presence marks the adapter finished.
        atomic_write_bytes(out_dir / EMBEDDINGS, save({"embeddings": embeddings}))

    def load_into(self, context, pipe: Any, adapter_dir: Path) -> None:
        raise ConfigError(f"the {NAME} adapter learns conditioning embeddings that only the {NAME} generator "
                          f"can sample from; {USE_GENERATOR}")


# --------------------------------------------------------------------------- generator


@dataclass(frozen=True)
class Draw:
    """What image ``item`` is conditioned on: embedding rows, guidance, the Gaussian noise."""

    base: int
    partner: int
    guidance: float
    eps: Any  # torch.Tensor [tokens, D], float32


class DiffusionInversionGenerator(Generator):
    """Stable Diffusion conditioned on perturbed learned embeddings, at the adapter's resolution."""

    families = ("sd",)

    adapters = (NAME,)

    @dataclass
    class Options:
        steps: int = option(100, 'sampling steps (the global --steps does not apply; paper: 100)', demo=10)
        guidance: float = option(2.0, "classifier-free guidance scale, the mean embedding as the unconditional one "
                                      "(the global --guidance does not apply; official code: 2)")
        guidance_choices: str = option("", "e.g. '2,3,4': each image picks its guidance scale from these by its "
                                           "seed; empty: every image uses guidance")
        noise: float = option(0.1, "lambda: the Gaussian noise's weight, c + lambda * eps (official code: 0.1)")
        interpolation: float = option(0.1, "alpha: the partner shot's weight in the mix of two embeddings (official "
                                           "code: 0.1)")
        scheduler: str = option("", "a diffusers scheduler class name (e.g. DDIMScheduler); empty: the checkpoint's, "
                                    "as the official code (PNDM for SD 1.4)")
        eta: float = option(1.0, "DDIM's eta, passed as the official code does; only schedulers that take eta (DDIM) "
                                 "use it")
        dtype: str = option("auto", "pipeline dtype: auto (fp16 on a GPU, fp32 on the CPU), fp32, fp16 or bf16")

        def __post_init__(self) -> None:
            if self.steps < 1:
                raise ConfigError(f"generator.steps must be at least 1, not {self.steps}")
            if self.noise < 0 or self.eta < 0 or not 0.0 <= self.interpolation <= 1.0:
                raise ConfigError(f"generator.noise and generator.eta must be >= 0 and generator.interpolation in "
                                  f"[0, 1] (not {self.noise}, {self.eta}, {self.interpolation})")
            self.choices()

        def choices(self) -> list[float]:
            text = str(self.guidance_choices).strip()
            if not text:
                return []
            try:
                return [float(v) for v in text.split(",") if v.strip()]
            except ValueError:
                raise ConfigError(f"generator.guidance_choices must be numbers separated by commas (e.g. "
                                  f"\"2,3,4\"), not {self.guidance_choices!r}") from None

    # -- planning ---------------------------------------------------------------------------

    def plan_prompts(self, context, prompts):
        """Tie image ``i`` of a class to its base shot ``i % K`` (recorded as ``source``)."""
        from .img2img import tie_prompts_to_shots

        shots = context.shots_by_class()
        return {label: tie_prompts_to_shots([dataclasses.replace(p, source=None) for p in plist],
                                            shots.get(label, []))
                for label, plist in prompts.items()}

    # -- setup ------------------------------------------------------------------------------

    def setup(self, context, adapter_dir):
        import torch
        from safetensors.torch import load_file

        from ddcore.api import load_sd_pipeline, model_identity, relative_path, swap_scheduler, torch_dtype

        if adapter_dir is None or not (Path(adapter_dir) / EMBEDDINGS).is_file():
            raise ConfigError(f"the {NAME} generator samples from embeddings learned by the {NAME} adapter, "
                              f"and this run has none; {USE_ADAPTER}")
        adapter_dir = Path(adapter_dir)
        info = json.loads((adapter_dir / INFO).read_text())
        self.context = context
        self.base_identity = model_identity(context.config.base_model)
        trained_on = info.get("base_model")
        if trained_on and trained_on != self.base_identity:
            raise StageError(f"the {NAME} embeddings were learned on base model '{trained_on}' but the generator "
                             f"uses '{self.base_identity}'; use the same --base-model or learn new embeddings")
        self.resolution = int(info["resolution"])
        self.embeddings = load_file(str(adapter_dir / EMBEDDINGS))["embeddings"].float()
        self.unconditional = self.embeddings.mean(dim=0)  # [tokens, D], over every class's shots
        rows = {row["path"]: int(row["index"]) for row in info["embeddings"]}
        root = context.dataset.root
        self.rows: dict[int, list[int]] = {}
        self.paths: dict[int, str] = {}  # embedding row -> its shot's path, as the core records `source`
        for label, shots in context.shots_by_class().items():
            if not shots:
                raise StageError(f"class '{context.dataset.classnames[label]}' has no real shot to sample from")
            missing = [relative_path(s.path, root) for s in shots if relative_path(s.path, root) not in rows]
            if missing:
                raise StageError(f"the {NAME} embeddings in {adapter_dir} have no row for shot {missing[0]}; "
                                 "they were learned on other shots; rerun `dd adapt`")
            self.rows[label] = [rows[relative_path(s.path, root)] for s in shots]
            self.paths.update({rows[relative_path(s.path, root)]: str(s.path) for s in shots})
        self.dtype = torch_dtype(self.options.dtype, context.device)
        self.pipe = load_sd_pipeline(context.config.base_model, device=context.device, dtype=self.dtype)
        swap_scheduler(self.pipe, self.options.scheduler)
        width = self.pipe.unet.config.cross_attention_dim
        if self.embeddings.shape[-1] != width:
            raise StageError(f"the {NAME} embeddings are {self.embeddings.shape[-1]} wide but the U-Net expects "
                             f"{width}; use the base model they were learned on")
        self._torch = torch

    # -- one image --------------------------------------------------------------------------

    def draw(self, item) -> Draw:
        """The image's base and partner rows, guidance and Gaussian noise, all from its seed (a
        stream apart from the one of its initial latent noise)."""
        torch = self._torch
        rows = self.rows[item.label]
        position = item.index % len(rows)
        generator = torch.Generator(device="cpu").manual_seed(derive_seed("diffusion-inversion", item.seed))
        partner = position
        if len(rows) > 1:
            other = int(torch.randint(0, len(rows) - 1, (1,), generator=generator))
            partner = other if other < position else other + 1
        eps = torch.randn(self.embeddings.shape[1:], generator=generator)
        choices = self.options.choices()
        guidance = float(self.options.guidance)
        if choices:
            guidance = choices[int(torch.randint(0, len(choices), (1,), generator=generator))]
        return Draw(rows[position], rows[partner], guidance, eps)

    def conditioning(self, draw: Draw):
        alpha, noise = self.options.interpolation, self.options.noise
        base, partner = self.embeddings[draw.base], self.embeddings[draw.partner]
        return (1 - alpha) * base + alpha * partner + noise * draw.eps

    def generate(self, items):
        torch = self._torch
        draws = [self.draw(item) for item in items]
        images: list[Any] = [None] * len(items)
        for guidance in dict.fromkeys(d.guidance for d in draws):  # first-seen order
            chosen = [k for k, d in enumerate(draws) if d.guidance == guidance]
            device = self.pipe.device
            cond = torch.stack([self.conditioning(draws[k]) for k in chosen]).to(device, self.dtype)
            uncond = self.unconditional.expand(len(chosen), -1, -1).to(device, self.dtype)
            with torch.inference_mode():
                out = self.pipe(
                    prompt_embeds=cond, negative_prompt_embeds=uncond, guidance_scale=guidance,
                    num_inference_steps=self.options.steps, height=self.resolution, width=self.resolution,
                    eta=self.options.eta,
                    generator=[torch.Generator(device="cpu").manual_seed(items[k].seed) for k in chosen],
                    output_type="pil",
                ).images
            for k, image in zip(chosen, out):
                images[k] = image
        return images

    # -- metadata ---------------------------------------------------------------------------

    def metadata(self):
        return {
            "steps": self.options.steps,
            "guidance": self.options.guidance,
            "guidance_choices": self.options.choices(),
            "noise": self.options.noise,
            "interpolation": self.options.interpolation,
            "scheduler": type(self.pipe.scheduler).__name__,
            "eta": self.options.eta,
            "resolution": self.resolution,
            "base_model": self.base_identity,
            "conditioning": CONDITIONING,
            "unconditional": "mean of all learned embeddings",
        }

    def item_metadata(self, item):
        draw = self.draw(item)
        return {"embedding": draw.base, "partner": self.paths[draw.partner], "noise": self.options.noise,
                "interpolation": self.options.interpolation, "guidance": draw.guidance}


# --------------------------------------------------------------------------- registration


@hookimpl
def register_adapters(register):
    register(NAME, DiffusionInversionAdapter)


@hookimpl
def register_generators(register):
    register(NAME, DiffusionInversionGenerator)


@hookimpl
def register_methods(register):
    from .fidelity import PROTOCOLS

    register(NAME, Method(
        adapter=NAME, prompt_builder="template", generator=NAME, filter="none", train_on="real+synthetic",
        protocol=PROTOCOLS[NAME],
        description="Diffusion Inversion (Zhou et al., NeurIPS 2023, 'Training on Thin Air'): one conditioning "
                    "embedding per real shot (5 tokens, groups of 100, lr 3e-2, 3000 steps, at the target "
                    "resolution), sampled with noise 0.1 and interpolation 0.1, guidance 2 with the mean embedding "
                    "as unconditional, 100 steps of the checkpoint's scheduler",
    ))
