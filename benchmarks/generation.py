"""Speed of generation: our GenerationJob + txt2img generator versus plain diffusers calls.

Ours: a Run with method ``sd-txt2img`` (no adapter) on a small image folder; ``run.generate()``
is timed on a fresh output folder. That includes loading the pipeline (the generator's setup,
also timed on its own), planning, one ``torch.Generator`` per image, the denoising, and writing
each PNG atomically (encode, write, fsync, rename) plus metadata.jsonl and stage.json.

Plain: what a user's script does: ``DiffusionPipeline.from_pretrained(folder)`` (the family's
pipeline class: ``--model tiny-sdxl``, ``tiny-sd3`` and ``tiny-flux`` run the other families), then per
class ``pipe(prompt=[p] * B, generator=[torch.Generator().manual_seed(s) ...], ...)`` in batches
of the same size, saving each image with ``image.save(path)``. Same prompts, seeds, images,
steps, guidance, resolution, dtype.

The ratio is ours / plain (time); below 1 means ours is faster. A second table times ours
against ours with the writer threads off (``image_writers=0``: each PNG encoded and written on
the render thread), which shows how much the overlap of writing and rendering gives.

    python benchmarks/generation.py --model tiny --device cpu
    python benchmarks/generation.py --model sd21-shapes --device cuda
"""

from __future__ import annotations

import shutil
from pathlib import Path

import _common as C  # first: sets the offline environment before the heavy imports

NAME = "generation"
DEFAULTS = {
    "tiny": {"images_per_class": 16, "classes": 3, "steps": 10, "batch": 4, "resolution": 32},
    "sd21-shapes": {"images_per_class": 16, "classes": 3, "steps": 25, "batch": 8, "resolution": 512},
    **{name: {"images_per_class": 16, "classes": 3, "steps": 10, "batch": 4, "resolution": 32}
       for name in C.FAMILY_FOLDERS},
    "sdxl-shapes": {"images_per_class": 2, "classes": 1, "steps": 4, "batch": 2, "resolution": 256},  # the CPU's
    "sd35m-shapes": {"images_per_class": 2, "classes": 1, "steps": 4, "batch": 2, "resolution": 256},  # with bf16
}


def arguments():
    p = C.parser(__doc__.split("\n\n")[0], families=True)
    C.generation_arguments(p)
    p.add_argument("--guidance", type=float, default=2.0)
    p.add_argument("--set", dest="generator_options", action="append", default=[], metavar="generator.NAME=VALUE",
                   help="an option of our txt2img generator, as `dd --set` (e.g. generator.compile=on); repeatable")
    p.add_argument("--no-writers-table", action="store_true", help="skip timing ours with the writer threads off")
    return C.finish_args(p.parse_args(), NAME, DEFAULTS)


def generator_options(pairs: list[str]) -> dict[str, str]:
    options = {}
    for pair in pairs:
        name, sep, value = pair.removeprefix("generator.").partition("=")
        if not sep:
            raise SystemExit(f"--set expects generator.NAME=VALUE, got {pair!r}")
        options[name] = value
    return options


def dtype(args):
    """The pipelines' dtype, as ours resolves ``--set dtype=...`` (the plain side follows)."""
    return C.generation_dtype(args.device, generator_options(args.generator_options).get("dtype", "auto"), args.model)


class Ours:
    def __init__(self, args, base: Path, data: Path, work: Path, image_writers: int | None = None) -> None:
        self.args, self.base, self.data, self.work = args, base, data, work
        self.image_writers = image_writers  # None: the default
        self.count = 0
        self.name = "ours" if image_writers is None else f"ours-writers{image_writers}"

    def config(self, out: Path):
        a = self.args
        return C.run_config(self.data, out, method="sd-txt2img", base=self.base, device=a.device, shots=1,
                            images_per_class=a.images_per_class, steps=a.steps, resolution=a.resolution,
                            batch_size=a.batch, seed=a.seed, image_writers=self.image_writers,
                            generator=generator_options(a.generator_options))

    def plan(self):
        """The prompts and seeds our run uses, for the plain side to make the same images."""
        from ddcore.api import Run, plan_item

        run = Run(self.config(self.work / "plan"))
        run.prepare()
        prompts = run._build_prompts()
        return [[(item.prompt.text, item.seed, item.file_name)
                 for item in (plan_item(run.dataset, prompts, run.config.seed, c, i)
                              for i in range(self.args.images_per_class))]
                for c in range(run.dataset.num_classes)]

    def generate(self) -> dict:
        """One timed run.generate() on a fresh output folder (Run built and prepared untimed)."""
        from ddcore.api import Run

        self.count += 1
        out = self.work / f"{self.name}-{self.count}"
        run = Run(self.config(out))
        run.prepare()
        seconds, setup_s, synthetic = C.timed_generation(run, self.args.device)
        assert len(synthetic.items) == self.args.images_per_class * len(self.args.class_names)
        shutil.rmtree(out, ignore_errors=True)
        return {"total_s": seconds, "setup_s": setup_s}


class Plain:
    def __init__(self, args, base: Path, work: Path, plan) -> None:
        self.args, self.base, self.work, self.plan = args, base, work, plan
        self.count = 0

    def generate(self) -> dict:
        a = self.args
        self.count += 1
        out = self.work / f"plain-{self.count}"
        clock = {}

        def body() -> None:
            from diffusers import DiffusionPipeline

            sd = a.model in C.MODEL_FOLDERS  # SD's pipeline takes the safety-checker arguments
            extra = {"safety_checker": None, "requires_safety_checker": False} if sd else {}
            clock["setup_s"], pipe = C.timed(lambda: DiffusionPipeline.from_pretrained(
                str(self.base), **extra, **C.plain_dtype_kwargs(dtype(a))).to(a.device),
                a.device, collect=False)
            pipe.set_progress_bar_config(disable=True)
            for items in self.plan:
                C.plain_generate(pipe, items, out, a)

        seconds, _ = C.timed(body, a.device)
        shutil.rmtree(out, ignore_errors=True)
        return {"total_s": seconds, "setup_s": clock["setup_s"]}


def main() -> None:
    args = arguments()
    base, work, data = C.generation_setup(args, "dd-bench-gen-")
    args.class_names = sorted(p.name for p in (data / "train").iterdir())
    total = args.images_per_class * args.classes
    print(f"{args.model} on {args.device}: {args.classes} classes x {args.images_per_class} images = {total}, "
          f"{args.resolution} px, {args.steps} steps, batch {args.batch}, guidance {args.guidance}; "
          f"{args.repeats} repeats (+1 warm-up); work dir {work}")

    ours = Ours(args, base, data, work)
    plain = Plain(args, base, work, ours.plan())
    result = C.time_generation(ours, plain, args, total)
    rows = C.generation_rows(result, total)
    C.print_table(f"Generation: {args.model}, {args.device}", ["", "ours", "plain", "ours/plain (time)"], rows,
                  note="ratio < 1: ours is faster")
    writers = None
    if not args.no_writers_table:
        print("ours with the image writer threads off (image_writers=0):")
        writers = C.time_generation(ours, Ours(args, base, data, work, image_writers=0), args, total)
        C.print_table(f"Writer threads: {args.model}, {args.device}",
                      ["", "ours (writers on)", "writers off", "on/off (time)"], C.generation_rows(writers, total),
                      note="ratio < 1: the writer threads make it faster")
    C.write_json(args.out, {
        "benchmark": NAME, "model": args.model, "device": args.device,
        "settings": {**{k: getattr(args, k) for k in ("images_per_class", "classes", "steps", "batch", "resolution",
                                                      "guidance", "repeats", "seed")},
                     "generator_options": generator_options(args.generator_options)},
        "dtype": str(dtype(args)), "env": C.environment(args.device), **result,
        "writers_off": writers and {"ours_writers_on": writers["ours"], "ours_writers_off": writers["plain"],
                                    **{k: v for k, v in writers.items() if k.startswith("ratio_")}},
    })
    C.clean_workdir(args, work)


if __name__ == "__main__":
    main()
