"""The sampling shortcuts that change the images: how much faster, and how far from the default set.

Each setting generates the same plan (prompts, seeds) with our txt2img generator, timed as
``run.generate()`` on a fresh folder, against the default (the paper's protocol):

- ``dpm-solver++``: ``generator.scheduler=DPMSolverMultistepScheduler`` (2nd-order DPM-Solver++,
  diffusers' default algorithm of that class) with fewer steps (``--dpm-steps``);
- ``step_cache=N``: DeepCache-style caching, the U-Net's deep path on one step of every N;
- ``token_merging=R``: ToMe, R of the tokens merged in the finest self-attention layers;
- ``default, seed+1``: the default with another run seed, the yardstick: how far two sets
  of the same distribution are apart.

Distance to the default set: the mean absolute pixel difference per image (same seed, same
prompt), and ``dd quality``'s measures (``ddcore.api.per_class_quality``) with the default
set as the reference, all classes pooled, in the feature space ``--features`` (``pixels``
offline; ``clip`` / ``fid`` where their weights are on disk). With random weights (tiny,
sd21-shapes) the distances say how much a shortcut perturbs the sampler, not how good the
images are; with a real checkpoint (``--model`` folder path) they are the quality effect.

    python benchmarks/shortcuts.py --model tiny --device cpu
    python benchmarks/shortcuts.py --model sd21-shapes --device cuda --steps 50 --dpm-steps 20
"""

from __future__ import annotations

import shutil
import statistics

import _common as C  # first: sets the offline environment before the heavy imports
import numpy as np

NAME = "shortcuts"
DEFAULTS = {
    "tiny": {"images_per_class": 16, "classes": 3, "steps": 20, "batch": 4, "resolution": 32},
    "sd21-shapes": {"images_per_class": 2, "classes": 2, "steps": 10, "batch": 2, "resolution": 256},
}


def arguments():
    p = C.parser(__doc__.split("\n\n")[0])
    C.generation_arguments(p)
    p.add_argument("--dpm-steps", type=int, default=None, help="DPM-Solver++ steps (default: half of --steps)")
    p.add_argument("--step-cache", type=int, default=3, help="the step cache's interval")
    p.add_argument("--token-merging", type=float, default=0.5, help="ToMe's ratio (tomesd's default)")
    p.add_argument("--features", default="pixels", help="dd quality's feature space")
    args = C.finish_args(p.parse_args(), NAME, DEFAULTS)
    args.dpm_steps = args.dpm_steps or max(1, args.steps // 2)
    return args


def settings(args) -> list[tuple[str, dict, dict]]:
    """(name, generator options, run overrides) per setting; the first is the default."""
    return [
        ("default", {}, {}),
        ("default, seed+1", {}, {"seed": args.seed + 1}),
        (f"dpm-solver++ {args.dpm_steps} steps", {"scheduler": "DPMSolverMultistepScheduler"},
         {"steps": args.dpm_steps}),
        (f"step_cache={args.step_cache}", {"step_cache": str(args.step_cache)}, {}),
        (f"token_merging={args.token_merging}", {"token_merging": str(args.token_merging)}, {}),
    ]


def generate(args, base, data, out, generator: dict, overrides: dict):
    """One timed ``run.generate()``: (seconds, the set's samples, the run's data set, its keys)."""
    from ddcore.api import Run

    shutil.rmtree(out, ignore_errors=True)
    values = {"steps": args.steps, "seed": args.seed, **overrides}
    run = Run(C.run_config(data, out, method="sd-txt2img", base=base, device=args.device, shots=1,
                           images_per_class=args.images_per_class, steps=values["steps"], resolution=args.resolution,
                           batch_size=args.batch, seed=values["seed"], generator=generator))
    run.prepare()
    seconds, _, synthetic = C.timed_generation(run, args.device)
    return seconds, synthetic.samples(run.dataset), run.dataset, run.keys()["synthetic"]


def pixels(samples) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.open(s.path).convert("RGB"), dtype=np.float64) / 255 for s in samples])


def main() -> None:
    from ddcore.api import feature_space, per_class_quality

    args = arguments()
    base, work, data = C.generation_setup(args, "dd-bench-shortcuts-")
    total = args.images_per_class * args.classes
    print(f"{args.model} on {args.device}: {total} images, {args.resolution} px, {args.steps} steps, batch "
          f"{args.batch}; {args.repeats} repeats per setting (+1 warm-up of the default); work dir {work}")
    features, described = feature_space(args.features, device=args.device)

    generate(args, base, data, work / "warm-up", {}, {})
    results, reference, default_key = [], None, None
    for name, generator, overrides in settings(args):
        times = []
        for r in range(args.repeats):
            seconds, samples, dataset, key = generate(args, base, data, work / f"set-{len(results)}", generator,
                                                      overrides)
            times.append(seconds)
            print(f"  {name}: repeat {r + 1}: {seconds:.2f} s")
        row = {"setting": name, "options": generator, "overrides": overrides, "key": key,
               "times_s": [round(t, 4) for t in times], "median_s": statistics.median(times)}
        if reference is None:
            reference, default_key = samples, key
        else:
            row["mean_abs_pixel_difference"] = float(np.abs(pixels(samples) - pixels(reference)).mean())
            quality = per_class_quality(reference, samples, dataset.classnames, features)["all"]
            row.update({k: quality[k] for k in ("fd", "precision", "recall", "coverage")})
        row["ratio_time"] = C.ratio(row["median_s"], results[0]["median_s"] if results else row["median_s"])
        results.append(row)

    def figure(row, key, digits=3):
        value = row.get(key)
        return "-" if value is None else f"{value:.{digits}f}"

    C.print_table(f"Shortcuts: {args.model}, {args.device} (distances to the default set, {described})",
                  ["setting", "time (s)", "time / default", "mean |pixel diff|", "FD", "precision", "recall",
                   "coverage", "own key"],
                  [[r["setting"], f"{r['median_s']:.2f}", f"{r['ratio_time']:.2f}",
                    figure(r, "mean_abs_pixel_difference", 4), figure(r, "fd"), figure(r, "precision", 2),
                    figure(r, "recall", 2), figure(r, "coverage", 2), "yes" if r["key"] != default_key else "no"]
                   for r in results],
                  note="time / default < 1: faster; 'default, seed+1' is the yardstick for the distances")
    C.write_json(args.out, {
        "benchmark": NAME, "model": args.model, "device": args.device, "features": described,
        "settings": {k: getattr(args, k) for k in ("images_per_class", "classes", "steps", "dpm_steps", "batch",
                                                   "resolution", "step_cache", "token_merging", "repeats", "seed")},
        "env": C.environment(args.device), "rows": results,
        "ratios": {r["setting"]: r["ratio_time"] for r in results[1:]},  # time / the default's
    })
    C.clean_workdir(args, work)


if __name__ == "__main__":
    main()
