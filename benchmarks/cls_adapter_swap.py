"""Generation with one LoRA per class (datadream-cls): load once and swap, versus reload per class.

Setup (untimed): a 10-class image folder and a Run with method ``datadream-cls`` whose adapter
stage trains each class's LoRA for ``--adapter-steps`` step(s) with our plugin, which writes one
diffusers-format LoRA folder per class (``pytorch_lora_weights.safetensors``).

(a) Ours: the txt2img generator with the datadream-cls adapter, ``run.generate()`` timed on a
    fresh synthetic folder: the pipeline is loaded once and each class's adapter is loaded into
    it (and the previous one deleted) when its first batch comes.
(b) Official: what the reference DataDream generation code does: for every class, load the
    pipeline from disk again (``StableDiffusionPipeline.from_pretrained(folder)``), then
    ``load_lora_weights(class folder)``, then generate that class's images.
(c) Plain swap (reference): plain diffusers doing what we do: one ``from_pretrained``, then per
    class ``load_lora_weights`` / ``delete_adapters``. It shows what our bookkeeping costs on top.

All three make the same images (same prompts, seeds, steps, guidance, resolution, batch size) and
save them as PNGs. Ratios are ours / other (time); below 1 means ours is faster. Reloading reads
the pipeline folder again, but after the first read it comes from the OS page cache, so the
reload cost measured is deserialising and building the models, not the disk.

    python benchmarks/cls_adapter_swap.py --model tiny --device cpu
    python benchmarks/cls_adapter_swap.py --model sd21-shapes --device cuda
"""

from __future__ import annotations

import shutil
from pathlib import Path

import _common as C  # first: sets the offline environment before the heavy imports
import torch

NAME = "cls_adapter_swap"
DEFAULTS = {
    "tiny": {"images_per_class": 4, "steps": 10, "batch": 4, "resolution": 32},
    "sd21-shapes": {"images_per_class": 8, "steps": 25, "batch": 8, "resolution": 512},
}
WEIGHTS = "pytorch_lora_weights.safetensors"


def arguments():
    p = C.parser(__doc__.split("\n\n")[0])
    C.generation_arguments(p, classes=10)
    p.add_argument("--guidance", type=float, default=2.0)
    p.add_argument("--adapter-steps", type=int, default=1, help="training steps of each class's LoRA (setup)")
    return C.finish_args(p.parse_args(), NAME, DEFAULTS)


class Ours:
    def __init__(self, args, base: Path, data: Path, work: Path) -> None:
        from ddcore.api import Run

        self.args, self.base, self.data, self.out = args, base, data, work / "ours-run"
        run = Run(self.config())
        run.prepare()
        seconds, self.adapter_dir = C.timed(run.adapt, args.device)
        print(f"  trained {args.classes} class adapters ({args.adapter_steps} step each) in {seconds:.1f} s")
        self.folders = [self.adapter_dir / d for d in run.dataset.class_dirs]
        assert all((f / WEIGHTS).is_file() for f in self.folders)

    def config(self):
        a = self.args
        return C.run_config(self.data, self.out, method="datadream-cls", base=self.base, device=a.device, shots=1,
                            images_per_class=a.images_per_class, steps=a.steps, resolution=a.resolution,
                            batch_size=a.batch, seed=a.seed,
                            adapter={"max_steps": a.adapter_steps, "batch_size": 1, "checkpoint_every": 10**9})

    def plan(self):
        """Per class: its LoRA folder and (prompt, seed, file name) of each image our run makes."""
        from ddcore.api import Run, plan_item

        run = Run(self.config())
        run.prepare()
        prompts = run._build_prompts()
        return [(self.folders[c], [(item.prompt.text, item.seed, item.file_name) for item in
                                   (plan_item(run.dataset, prompts, run.config.seed, c, i)
                                    for i in range(self.args.images_per_class))])
                for c in range(run.dataset.num_classes)]

    def generate(self) -> float:
        from ddcore.api import Run

        shutil.rmtree(self.out / "synthetic", ignore_errors=True)
        run = Run(self.config())
        run.prepare()
        seconds, synthetic = C.timed(run.generate, self.args.device)
        assert len(synthetic.items) == self.args.images_per_class * self.args.classes
        return seconds


class Plain:
    """(b) reload per class (``reload=True``) or (c) load once and swap (``reload=False``)."""

    def __init__(self, args, base: Path, work: Path, plan, reload: bool) -> None:
        self.args, self.base, self.plan, self.reload = args, base, plan, reload
        self.out = work / ("official" if reload else "plain-swap")

    def _load(self):
        from diffusers import StableDiffusionPipeline

        pipe = StableDiffusionPipeline.from_pretrained(str(self.base), safety_checker=None,
                                                       requires_safety_checker=False,
                                                       **C.plain_dtype_kwargs(C.generation_dtype(self.args.device)))
        pipe.set_progress_bar_config(disable=True)
        return pipe.to(self.args.device)

    def generate(self) -> float:
        a = self.args
        shutil.rmtree(self.out, ignore_errors=True)

        def body() -> None:
            pipe = None if self.reload else self._load()
            for lora, items in self.plan:
                if self.reload:
                    del pipe
                    pipe = self._load()
                    pipe.load_lora_weights(str(lora), weight_name=WEIGHTS)
                else:
                    pipe.load_lora_weights(str(lora), weight_name=WEIGHTS, adapter_name="class")
                C.plain_generate(pipe, items, self.out, a)
                if not self.reload:
                    pipe.delete_adapters("class")

        seconds, _ = C.timed(body, a.device)
        return seconds


def main() -> None:
    args = arguments()
    base, work, data = C.generation_setup(args, "dd-bench-cls-")
    total = args.images_per_class * args.classes
    print(f"{args.model} on {args.device}: {args.classes} classes x {args.images_per_class} images = {total}, "
          f"{args.resolution} px, {args.steps} steps, batch {args.batch}; {args.repeats} repeats (+1 warm-up); "
          f"work dir {work}")
    ours = Ours(args, base, data, work)
    plan = ours.plan()
    sides = {"ours": ours, "official": Plain(args, base, work, plan, reload=True),
             "plain_swap": Plain(args, base, work, plan, reload=False)}
    for side in sides.values():  # warm-up
        torch.manual_seed(args.seed)
        side.generate()
    times = {name: [] for name in sides}
    names = list(sides)
    for r in range(args.repeats):
        order = names[r % len(names):] + names[:r % len(names)]  # rotate who goes first
        for name in order:
            torch.manual_seed(args.seed + r)
            seconds = sides[name].generate()
            times[name].append(seconds)
            print(f"  repeat {r + 1}: {name:10s} {seconds:.3f} s ({total / seconds:.2f} images/s)")

    result = {name: C.summary(t) for name, t in times.items()}
    for s in result.values():
        s["images_per_s_median"] = total / s["median_s"]
    result["ratio_ours_official_median"] = C.ratio(result["ours"]["median_s"], result["official"]["median_s"])
    result["ratio_ours_official_best"] = C.ratio(result["ours"]["best_s"], result["official"]["best_s"])
    result["ratio_ours_plain_swap_median"] = C.ratio(result["ours"]["median_s"], result["plain_swap"]["median_s"])
    result["ratio_ours_plain_swap_best"] = C.ratio(result["ours"]["best_s"], result["plain_swap"]["best_s"])
    o, b, c = result["ours"], result["official"], result["plain_swap"]
    rows = [
        [f"total s, {total} images (median)", o["median_s"], b["median_s"], result["ratio_ours_official_median"],
         c["median_s"], result["ratio_ours_plain_swap_median"]],
        ["total s (best)", o["best_s"], b["best_s"], result["ratio_ours_official_best"], c["best_s"],
         result["ratio_ours_plain_swap_best"]],
        ["images/s (median)", o["images_per_s_median"], b["images_per_s_median"], result["ratio_ours_official_median"],
         c["images_per_s_median"], result["ratio_ours_plain_swap_median"]],
    ]
    C.print_table(f"Per-class adapters, {args.classes} classes: {args.model}, {args.device}",
                  ["", "(a) ours", "(b) official: reload/class", "ours/official", "(c) plain swap", "ours/plain swap"],
                  rows, note="ratio = time ours / time other; < 1: ours is faster")
    C.write_json(args.out, {
        "benchmark": NAME, "model": args.model, "device": args.device,
        "settings": {k: getattr(args, k) for k in ("classes", "images_per_class", "steps", "batch", "resolution",
                                                   "guidance", "adapter_steps", "repeats", "seed")},
        "dtype": str(C.generation_dtype(args.device)), "env": C.environment(args.device), **result,
    })
    C.clean_workdir(args, work)


if __name__ == "__main__":
    main()
