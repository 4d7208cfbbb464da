"""Generator ``img2img``: Stable Diffusion image-to-image from the real shots (IsSynth, DISEF).

Each image starts from a real shot, encoded by the VAE and noised to ``strength`` (1 = pure
noise, the source then barely matters; near 0 = the source comes back almost unchanged), then
denoised with the prompt builder's prompt. With ``--steps N`` the pipeline runs the last
``int(N * strength)`` of the N steps.

Which shot seeds image ``i`` of class ``c``:

- the prompt's ``source`` when the prompt builder tied the prompt to a real image (DISEF's
  captions builder does);
- otherwise shot ``i % K`` of class ``c``, where K is that class's number of shots, in the
  order of the run's few-shot list (``fewshot.json``). Deterministic: the same image always
  starts from the same shot, whatever the batch, the number of processes or interruptions.

The core records ``prompt.source`` as ``source`` in ``metadata.jsonl``. So that the recorded
source is the real one when the prompt builder set none, ``plan_prompts`` ties the prompts to
the shots chosen by the rule above (``tie_prompts_to_shots``): a prompt list of length L
becomes one of length lcm(L, K) whose entry ``j`` has text ``prompts[j % L]`` and source
``shots[j % K]``, which the core's ``prompts[i % len(prompts)]`` maps back to the same text and
the same shot for every image ``i``.

A source is read as 8-bit RGB, padded to a square (centred on black, as DISEF's code does, so a
wide aircraft keeps its wings; ``generator.source_fit=crop`` takes the largest centred square
instead), then resized to ``--resolution`` (bicubic). Every image has its own CPU ``torch.Generator`` seeded
with the item's seed (for the VAE's latent sample and the noise), so image ``k`` depends only
on its item (seed, prompt, source), never on the batch.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from ddcore.api import ConfigError, Method, Prompt, StageError, hookimpl, option

from .txt2img import Txt2Img

# IsSynth as rerun in the DataDream paper (Appendix C: "We implement both methods based on
# DISEF official code", only the prompt changed to "a photo of a [CLS]"): the DISEF reference
# adds noise at step 5 of 20, i.e. the last 15 of 20 steps are run: strength 0.75.
ISSYNTH_STRENGTH = 0.75


SOURCE_FITS = ("pad", "crop")


def square_source(image, resolution: int, fit: str = "pad"):
    """``image`` made square, then resized to ``resolution`` (bicubic). ``pad``: centred on a
    black square of its longer side (DISEF's code: nothing of the object is cut off);
    ``crop``: its largest centred square."""
    from PIL import Image, ImageOps

    if fit == "pad":
        side = max(image.size)
        square = Image.new(image.mode, (side, side))  # black, as DISEF's pad_image
        square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    else:
        side = min(image.size)
        square = ImageOps.fit(image, (side, side), method=Image.Resampling.BICUBIC, centering=(0.5, 0.5))
    if square.size == (resolution, resolution):
        return square
    return square.resize((resolution, resolution), Image.Resampling.BICUBIC)


def source_for(index: int, prompt: Prompt, shots: list) -> Path:
    """The real image that image ``index`` of a class starts from (see the module docstring)."""
    if prompt.source is not None:
        return Path(prompt.source)
    return Path(shots[index % len(shots)].path)


def tie_prompts_to_shots(prompts: list[Prompt], shots: list) -> list[Prompt]:
    """``prompts`` with every missing source filled in by the shot rule, so that the prompt
    the core plans for image ``i`` carries the source ``source_for(i, ...)`` chooses."""
    if not shots or all(p.source is not None for p in prompts):
        return prompts
    length = math.lcm(len(prompts), len(shots))
    return [dataclasses.replace(prompts[j % len(prompts)], source=source_for(j, prompts[j % len(prompts)], shots))
            for j in range(length)]


class Img2Img(Txt2Img):
    """Stable Diffusion image-to-image from a real shot noised to ``strength``."""

    @dataclass
    class Options(Txt2Img.Options):
        strength: float = option(ISSYNTH_STRENGTH, "fraction of the schedule run from the noised shot, in (0, 1]; 1: "
                                                   "pure noise (DISEF's code: the last 15 of 20 steps, 0.75)")
        source_fit: str = option("pad", "how a shot becomes square: pad (centred on black, DISEF's code) or crop "
                                        "(its largest centred square)")

        def __post_init__(self) -> None:
            if self.source_fit not in SOURCE_FITS:
                raise ConfigError(f"generator.source_fit must be one of {', '.join(SOURCE_FITS)}, "
                                  f"not {self.source_fit!r}")
            if not 0.0 < self.strength <= 1.0:
                raise ConfigError(f"generator.strength must be in (0, 1] (1 = start from pure noise), "
                                  f"not {self.strength}")

    def plan_prompts(self, context, prompts):
        """Tie source-less prompts to their shots, so the recorded source is the one used."""
        shots = context.shots_by_class()
        return {label: tie_prompts_to_shots(p, shots.get(label, [])) for label, p in prompts.items()}

    def setup(self, context, adapter_dir):
        config = context.config
        if int(config.steps * self.options.strength) < 1:
            raise ConfigError(f"generator.strength {self.options.strength} with --steps {config.steps} leaves no "
                              f"denoising step (int(steps * strength) = 0); raise --steps or the strength")
        self.shots = context.shots_by_class()
        empty = [context.dataset.classnames[c] for c, shots in self.shots.items() if not shots]
        if empty:
            raise StageError(f"generator '{getattr(self, 'name', 'img2img')}' starts from real shots, but class(es) "
                             f"{', '.join(empty[:5])} have none")
        super().setup(context, adapter_dir)
        self.pipe = self.image_pipeline()
        self.pipe.set_progress_bar_config(disable=True)
        self._sources: dict[Path, object] = {}

    def image_pipeline(self):
        """The pipeline that renders. Adapters load into (and select on) the text-to-image
        pipeline ``base``; this one is built on the same module objects (not ``from_pipe``,
        which casts every module to fp32 by default), so it sees the same weights in the same
        dtype."""
        family = self.base.dd_family
        return family.pipeline_class("image-to-image")(**self.base.components, **family.init_arguments())

    def source(self, item) -> Path:
        """The real image ``item`` starts from."""
        return source_for(item.index, item.prompt, self.shots[item.label])

    def resolve(self, path: Path) -> Path:
        """A source path as recorded, made absolute under the data root when it is relative."""
        root = self.context.dataset.root
        if not path.is_absolute() and root is not None and not path.exists():
            return Path(root) / path
        return path

    def _source_image(self, path: Path):
        from ddcore.api import load_rgb

        path = self.resolve(path)
        if path not in self._sources:
            self._sources[path] = square_source(load_rgb(path), self.context.config.resolution,
                                                self.options.source_fit)
        return self._sources[path]

    def generate(self, items):
        import torch

        images = [self._source_image(self.source(item)) for item in items]
        with torch.inference_mode():
            return self.pipe(**self.call_arguments(items), image=images, strength=self.options.strength).images

    def metadata(self):
        return {
            **super().metadata(),
            "strength": self.options.strength,
            "denoising_steps": int(self.context.config.steps * self.options.strength),
            "source_resize": {"pad": "pad-square-black+bicubic", "crop": "center-crop-square+bicubic"}[
                self.options.source_fit],
        }


@hookimpl
def register_generators(register):
    register("img2img", Img2Img)


# IsSynth as the DataDream paper reran it (Appendix C: "based on DISEF official code", the
# prompt "a photo of a [CLS]"): DISEF's generation settings.
DISEF_GENERATION = {"steps": 20, "guidance": 8.0}
DISEF_GENERATOR = {"generator.strength": ISSYNTH_STRENGTH, "generator.scheduler": "DPMSolverMultistepScheduler",
                   "generator.source_fit": "pad"}


@hookimpl
def register_methods(register):
    from .fidelity import PROTOCOLS

    register("issynth", Method(
        adapter="none", prompt_builder="template", generator="img2img", filter="none",
        train_on="real+synthetic", options=dict(DISEF_GENERATOR), settings=dict(DISEF_GENERATION),
        protocol=PROTOCOLS["issynth"],
        description="IsSynth (He et al., ICLR 2023) as DataDream reran it: img2img from a real shot "
                    "(DPM-Solver, 20 steps, strength 0.75, guidance 8), prompt 'a photo of a {classname}'",
    ))
