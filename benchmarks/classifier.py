"""Speed and memory of classifier training and evaluation: our Run versus a plain open_clip + peft loop.

Ours: a Run with method ``real-finetune`` and classifier ``clip-vitb16`` (open_clip CLIP, LoRA
rank 16 on q/v of every attention block of both towers) on a small image folder, on a fresh
output folder each time: ``run.prepare()`` untimed, then ``run.train()`` timed (model load,
LoRA, the shared training loop with its seeded per-image augmentation, decoded-image cache and
per-epoch checkpoints, the trained weights and info written) and ``run.evaluate()`` timed (model
load, LoRA weights, zero-shot head, predictions, metrics and prediction files written). Ours runs
with the project's default options (the decoded-image cache is on from 2 epochs); one more row,
``ours, no cache``, sets ``classifier.cache_gb=0``.

Plain: what a user's own script does with the same model: ``ddcore.models.load_clip(spec)`` (the
very same weights), ``use_plain_attention`` + peft ``inject_adapter_in_model`` with the same
``LoraConfig``; torchvision ``ImageFolder`` over the same training images with the same
augmentations, a shuffling ``DataLoader`` of the same batch size, AdamW, a warm-up + cosine
``LambdaLR``; per step the class prompts' text features (with gradients) and the images'
features, ``logit_scale.exp() * image @ text.T``, cross-entropy, backward, clipping at 1,
optimiser and scheduler steps; the LoRA weights saved as safetensors at the end. Evaluation:
the model loaded again with its LoRA weights, open_clip's ``build_zero_shot_classifier`` over
the prompts, the test images through Resize + CenterCrop, argmax, accuracy. Same steps,
images per step, epochs, test images and batch size as ours.

Each side runs in its own child process (``--side``), all started together and driven by the
parent: first one untimed warm-up run (train + evaluate) per side, then ``--repeats`` timed runs
per side, the sides taking turns (order rotated each repeat) so that slow drifts of the machine
hit them alike. Peak RSS (``VmHWM``) is read per child: over the warm-up run as a whole (a fresh
process doing train + evaluate once; "above the imports" subtracts the RSS after importing torch,
torchvision, open_clip, peft and the side's own modules), and per phase of the timed runs, the
high-water mark being reset (``/proc/self/clear_refs``) before each phase. On a GPU,
``torch.cuda.max_memory_allocated`` per phase as well. Both sides use ``--workers`` DataLoader
workers (default 0; with workers, their memory is not in the RSS figures) and ``--threads``
torch threads. Each timed phase also records its process CPU time and the machine's load: with
2 torch threads on 2 cores, a third busy process makes every parallel op wait for a descheduled
thread and the timings swing 20-fold; ``--threads 1`` avoids that.

The ratios are ours / plain (time, or memory); below 1 means ours is faster (or smaller).

    python benchmarks/classifier.py --model tiny --device cpu
    python benchmarks/classifier.py --model vitb32-shapes --device cpu
    python benchmarks/classifier.py --model tiny --device cpu --threads 1   # on a machine shared with other work
    python benchmarks/classifier.py --model vitb32-shapes --device cuda --classes 10 --shots 16 --test 16 --batch 64 --epochs 3
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import _common as C  # first: sets the offline environment before the heavy imports
import torch

NAME = "classifier"
MODELS = ("tiny", "vitb32-shapes")
# The open_clip spec per model and device: ViT-B/32's shapes on the CPU (a 2-core machine can
# train it), ViT-B/16's (the paper's classifier) on a GPU; random weights, built offline.
SPECS = {"tiny": {"cpu": "tiny", "cuda": "tiny"},
         "vitb32-shapes": {"cpu": "ViT-B-32:random", "cuda": "ViT-B-16:random"}}
DEFAULTS = {
    # 4 classes x 16 shots = 64 training images (4 steps of 16 per epoch), 10 epochs; 128 test images.
    "tiny": {"classes": 4, "shots": 16, "test": 32, "batch": 16, "epochs": 10, "image_size": 64},
    # 3 x 16 = 48 training images (3 steps of 16), 1 epoch (so no cache, and no 'no cache' row); 24 test
    # images. About 3 minutes on 2 cores; on a GPU, ask for more (see the command above).
    "vitb32-shapes": {"classes": 3, "shots": 16, "test": 8, "batch": 16, "epochs": 1, "image_size": 256},
}
LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.1}  # clip-vitb16's defaults
LORA_TARGETS = (r"(text\.)?transformer\.resblocks\.\d+\.attn\.(q_proj|v_proj)"
                r"|visual\.transformer\.resblocks\.\d+\.attn\.(q_proj|v_proj)")
LR, WEIGHT_DECAY, WARMUP = 1e-4, 5e-4, 50  # TrainingOptions' defaults, set explicitly on both sides
SIDES = ("ours", "plain", "ours-nocache")


def arguments():
    p = C.parser(__doc__.split("\n\n")[0])
    for action in p._actions:  # this benchmark's models are CLIP classifiers, not SD pipelines
        if action.dest == "model":
            action.choices = list(MODELS)
            action.help = ("tiny: the project's tiny random open_clip CLIP (32 px); vitb32-shapes: ViT-B/32's "
                           "architecture with random weights (224 px) on the CPU, ViT-B/16's on a GPU")
        elif action.dest == "out":
            action.help = "JSON results file (default benchmarks/results/classifier-<model>-<device>-runN.json, N the next free)"
    p.set_defaults(repeats=2)
    p.add_argument("--classes", type=int, default=None)
    p.add_argument("--shots", type=int, default=None, help="training images per class (all are used)")
    p.add_argument("--test", type=int, default=None, help="test images per class")
    p.add_argument("--batch", type=int, default=None, help="images per training step (and per evaluation batch)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--image-size", type=int, default=None, help="side of the images on disk, px")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes, both sides")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads in each side's process (default: torch's own choice); 1 keeps "
                        "the timings meaningful on a small machine that other work shares")
    p.add_argument("--no-cache-row", action="store_true", help="skip the 'ours, no cache' row")
    p.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)  # internal: one side in a child process
    p.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--prompts", type=Path, help=argparse.SUPPRESS)
    auto_out = "--out" not in sys.argv
    args = C.finish_args(p.parse_args(), NAME, DEFAULTS)
    if auto_out and args.side is None:  # benchmarks/results/classifier-<model>-<device>-runN.json, N the next free
        n = 1
        while (C.RESULTS / f"{NAME}-{args.model}-{args.device}-run{n}.json").exists():
            n += 1
        args.out = C.RESULTS / f"{NAME}-{args.model}-{args.device}-run{n}.json"
    args.spec = SPECS[args.model][args.device]
    args.train_images = args.classes * args.shots
    args.steps_per_epoch = math.ceil(args.train_images / args.batch)
    args.test_images = args.classes * args.test
    return args


# --------------------------------------------------------------------------- memory


def reset_peak() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0); False where not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class Phase:
    """A timed phase with its own peak memory (RSS; CUDA allocated on a GPU)."""

    def __init__(self, device: str) -> None:
        self.device = device

    def __call__(self, fn) -> dict:
        resettable = reset_peak()
        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        cpu = time.process_time()
        seconds, result = C.timed(fn, self.device)
        out = {"s": seconds, "cpu_s": time.process_time() - cpu, "peak_rss_mb": C.peak_rss_mb(),
               "peak_rss_reset": resettable, **(result or {})}
        if self.device == "cuda":
            out["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
        return out


# --------------------------------------------------------------------------- ours


def ours_config(args, out: Path, cache: bool):
    from ddcore.api import resolve_config as resolve

    classifier = {"epochs": args.epochs, "batch_size": args.batch, "num_workers": args.workers, "augment": True,
                  "lr": LR, "weight_decay": WEIGHT_DECAY, "warmup_steps": WARMUP}
    if not cache:
        classifier["cache_gb"] = 0
    return resolve({}, {
        "data": str(args.data), "out": str(out), "method": "real-finetune", "shots": args.shots, "seed": args.seed,
        "classifier": "clip-vitb16", "classifier_model": args.spec, "device": args.device,
        "options": {"classifier": classifier},
    })


class Ours:
    def __init__(self, args, work: Path, cache: bool = True) -> None:
        # Imported before the baseline RSS is read: the libraries both sides use, and ours.
        import open_clip  # noqa: F401
        import peft  # noqa: F401
        import torchvision  # noqa: F401
        from dd_plugins import clip_classifier  # noqa: F401

        from ddcore.api import Run  # noqa: F401

        self.args, self.work, self.cache = args, work, cache
        self.count = 0

    def run(self, phase: Phase) -> dict:
        """run.train() then run.evaluate(), each timed, on a fresh output folder."""
        from ddcore.api import CLASSIFIER_INFO as INFO, Run

        args = self.args
        self.count += 1
        out = self.work / f"ours-{'cache' if self.cache else 'nocache'}-{self.count}"
        shutil.rmtree(out, ignore_errors=True)
        run = Run(ours_config(args, out, self.cache))
        run.prepare()
        assert len(run.context.shots) == args.train_images, (len(run.context.shots), args.train_images)
        classifier = run.stages["classifier"]
        build = classifier._build
        clock = []

        def timed_build(*a, **k):  # the model load + LoRA, reported apart
            seconds, model = C.timed(lambda: build(*a, **k), args.device, collect=False)
            clock.append(seconds)
            return model

        classifier._build = timed_build
        torch.manual_seed(args.seed)  # ViT-B-32:random takes its init from the global generator, as plain's
        train = phase(lambda: {"folder": str(run.train())})
        train["build_s"] = clock[-1]
        summary = json.loads((Path(train.pop("folder")) / INFO).read_text()).get("training") or {}
        train["steps"] = summary.get("steps")
        train["cached_images"] = summary.get("cached_images")
        assert train["steps"] == args.steps_per_epoch * args.epochs, (train["steps"], args.steps_per_epoch)
        metrics = {}
        evaluation = phase(lambda: metrics.update(run.evaluate()))
        evaluation["build_s"] = clock[-1]
        evaluation["top1"] = metrics.get("top1")
        shutil.rmtree(out, ignore_errors=True)
        return {"train": train, "evaluate": evaluation}


# --------------------------------------------------------------------------- plain


class Plain:
    """open_clip + peft + torchvision, no DataDream code but load_clip/use_plain_attention (same model)."""

    def __init__(self, args, work: Path, prompts: list[str]) -> None:
        import open_clip  # noqa: F401 - imported before the baseline RSS is read
        import peft  # noqa: F401
        import torchvision  # noqa: F401

        from ddcore.api import load_clip  # noqa: F401

        self.args, self.work, self.prompts = args, work, prompts
        self.count = 0

    def build(self):
        """The model with LoRA on q/v of every attention block of both towers, and the prompts' tokens."""
        from peft import LoraConfig, inject_adapter_in_model

        from ddcore.api import load_clip
        from dd_plugins.clip_attention import use_plain_attention

        args = self.args
        loaded = load_clip(args.spec, device=args.device)
        model = loaded.model
        model.requires_grad_(False)
        use_plain_attention(model)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(args.seed)
            inject_adapter_in_model(LoraConfig(target_modules=LORA_TARGETS, **LORA), model)
        for name, param in model.named_parameters():
            param.requires_grad_("lora_" in name)
        return loaded, model

    def autocast(self):
        import contextlib

        if self.args.device == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train(self, out: Path, clock: dict) -> dict:
        import torch.nn.functional as F
        from safetensors.torch import save_file
        from torchvision import datasets
        from torchvision import transforms as T

        args = self.args
        start = time.perf_counter()
        loaded, model = self.build()
        tokens = loaded.tokenizer(self.prompts).to(args.device)
        C.sync(args.device)
        clock["build_s"] = time.perf_counter() - start
        transform = T.Compose([
            T.RandomResizedCrop(loaded.image_size, scale=(0.5, 1.0), interpolation=T.InterpolationMode.BICUBIC),
            T.RandomHorizontalFlip(),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
            T.ToTensor(),
            T.Normalize(loaded.mean, loaded.std),
        ])
        dataset = datasets.ImageFolder(str(args.data / "train"), transform=transform)
        loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch, shuffle=True, num_workers=args.workers,
                                             pin_memory=args.device == "cuda",
                                             generator=torch.Generator().manual_seed(args.seed))
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=LR, weight_decay=WEIGHT_DECAY)
        total = len(loader) * args.epochs
        from ddcore.api import warmup_cosine  # the schedule formula only: the same as ours by definition

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(WARMUP, total))
        model.train()
        steps = images = 0
        for _ in range(args.epochs):
            for pixels, labels in loader:
                pixels, labels = pixels.to(args.device, non_blocking=True), labels.to(args.device)
                with self.autocast():
                    text = F.normalize(model.encode_text(tokens), dim=-1)
                    image = F.normalize(model.encode_image(pixels), dim=-1)
                    logits = model.logit_scale.exp() * image @ text.t()
                loss = F.cross_entropy(logits.float(), labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                scheduler.step()
                steps += 1
                images += len(labels)
        model.eval()
        out.mkdir(parents=True, exist_ok=True)
        save_file({n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if "lora_" in n},
                  str(out / "lora.safetensors"))
        return {"steps": steps, "images": images}

    def evaluate(self, out: Path, clock: dict) -> dict:
        import torch.nn.functional as F
        from open_clip.zero_shot_classifier import build_zero_shot_classifier
        from safetensors.torch import load_file
        from torchvision import datasets
        from torchvision import transforms as T

        args = self.args
        start = time.perf_counter()
        loaded, model = self.build()
        missing = model.load_state_dict(load_file(str(out / "lora.safetensors"), device=args.device), strict=False)
        assert not missing.unexpected_keys, missing.unexpected_keys
        model.eval()
        with torch.no_grad():
            head = build_zero_shot_classifier(model, loaded.tokenizer, self.prompts, ["{}"], device=args.device)
        C.sync(args.device)
        clock["build_s"] = time.perf_counter() - start
        transform = T.Compose([T.Resize(loaded.image_size, interpolation=T.InterpolationMode.BICUBIC),
                               T.CenterCrop(loaded.image_size), T.ToTensor(), T.Normalize(loaded.mean, loaded.std)])
        dataset = datasets.ImageFolder(str(args.data / "test"), transform=transform)
        loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch, num_workers=args.workers,
                                             pin_memory=args.device == "cuda")
        correct = seen = 0
        with torch.inference_mode():
            for pixels, labels in loader:
                with self.autocast():
                    image = F.normalize(model.encode_image(pixels.to(args.device, non_blocking=True)), dim=-1)
                    logits = model.logit_scale.exp() * image @ head
                correct += int((logits.float().argmax(-1).cpu() == labels).sum())
                seen += len(labels)
        return {"top1": correct / max(1, seen), "images": seen}

    def run(self, phase: Phase) -> dict:
        self.count += 1
        out = self.work / f"plain-{self.count}"
        shutil.rmtree(out, ignore_errors=True)
        clock = {}
        torch.manual_seed(self.args.seed)  # the same random init as ours for ViT-B-32:random
        train = phase(lambda: self.train(out, clock))
        train["build_s"] = clock["build_s"]
        assert train["steps"] == self.args.steps_per_epoch * self.args.epochs, train
        evaluation = phase(lambda: self.evaluate(out, clock))
        evaluation["build_s"] = clock["build_s"]
        assert evaluation["images"] == self.args.test_images, evaluation
        shutil.rmtree(out, ignore_errors=True)
        return {"train": train, "evaluate": evaluation}


# --------------------------------------------------------------------------- one side, in a child process


def child(args) -> None:
    """One side in this process, driven by the parent over stdin: ``warmup`` (one untimed run,
    the peak RSS left to build up over it), ``run`` (one timed run, the peak reset per phase),
    ``quit``. Each answer is one ``RESULT {json}`` line on stdout."""
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    work = C.workdir(args, f"dd-bench-cls-{args.side}-")
    if args.side == "plain":
        side = Plain(args, work, json.loads(args.prompts.read_text()))
    else:
        side = Ours(args, work, cache=args.side == "ours")
    baseline = C.rss_mb()
    answer({"ready": True, "rss_after_imports_mb": baseline, "torch_threads": torch.get_num_threads()})
    for line in sys.stdin:
        command = line.strip()
        if command == "warmup":
            start = time.perf_counter()
            result = side.run(_NoReset(args.device))
            answer({**result, "s": time.perf_counter() - start, "peak_rss_first_run_mb": C.peak_rss_mb()})
        elif command == "run":
            answer(side.run(Phase(args.device)))
        else:
            break
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


def answer(payload: dict) -> None:
    sys.stdout.write("RESULT " + json.dumps(payload) + "\n")
    sys.stdout.flush()


class _NoReset(Phase):
    """The warm-up's phases: timed, but the peak RSS is left to build up over the whole run."""

    def __call__(self, fn) -> dict:
        cpu = time.process_time()
        seconds, result = C.timed(fn, self.device)
        return {"s": seconds, "cpu_s": time.process_time() - cpu, "peak_rss_mb": C.peak_rss_mb(), **(result or {})}


class Side:
    """The parent's handle on one side's child process."""

    def __init__(self, args, name: str, data: Path, prompts: Path, work: Path) -> None:
        cmd = [sys.executable, __file__, "--side", name, "--data", str(data), "--prompts", str(prompts),
               "--model", args.model, "--device", args.device, "--seed", str(args.seed),
               "--classes", str(args.classes), "--shots", str(args.shots), "--test", str(args.test),
               "--batch", str(args.batch), "--epochs", str(args.epochs), "--image-size", str(args.image_size),
               "--workers", str(args.workers), "--out", str(work / "unused.json"), "--workdir", str(work / name)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        self.name = name
        self.log = (work / f"{name}.stderr").open("w+")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.info = self._read()

    def _read(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith("RESULT "):
                return json.loads(line[7:])
        self.proc.wait()
        self.log.seek(0)
        raise SystemExit(f"side {self.name} failed (exit {self.proc.returncode}):\n{self.log.read()[-6000:]}")

    def ask(self, command: str) -> dict:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait()
        self.log.close()


# --------------------------------------------------------------------------- main


def stats(args, result: dict) -> dict:
    """Medians and bests over the timed runs of one side."""
    out = {}
    for phase, images in (("train", args.train_images * args.epochs), ("evaluate", args.test_images)):
        runs = [r[phase] for r in result["runs"]]
        total = C.summary([r["s"] for r in runs])
        work = C.summary([r["s"] - r["build_s"] for r in runs])
        out[phase] = {
            "images": images, **total, "images_per_s_median": images / total["median_s"],
            "images_per_s_best": images / total["best_s"], "build_median_s": statistics.median(r["build_s"] for r in runs),
            "without_build_median_s": work["median_s"], "images_per_s_without_build_median": images / work["median_s"],
            "cpu_median_s": statistics.median(r["cpu_s"] for r in runs),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        }
        if args.device == "cuda":
            out[phase]["cuda_max_allocated_mb"] = max(r["cuda_max_allocated_mb"] for r in runs)
        if "top1" in runs[0]:
            out[phase]["top1"] = runs[0]["top1"]
    out["peak_rss_first_run_mb"] = result["warmup"]["peak_rss_first_run_mb"]
    out["rss_after_imports_mb"] = result["rss_after_imports_mb"]
    return out


def loadavg() -> float:
    """The machine's 1-minute load average: the timings mean little when other work shares the CPUs."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return float("nan")


def main() -> None:
    args = arguments()
    if args.side:
        return child(args)
    C.quiet_libraries()
    work = C.workdir(args, "dd-bench-cls-")
    data = C.write_image_folder(work / "data", args.classes, train=args.shots, size=args.image_size, test=args.test)
    args.data = data
    # The prompts ours builds (the data set's template over its class names), for the plain side.
    from dd_plugins.clip_classifier import class_templates

    from ddcore.api import Run

    run = Run(ours_config(args, work / "probe", cache=True))
    templates = class_templates(run.stages["classifier"].options, run.dataset)
    assert len(templates) == 1, templates
    prompts = [templates[0].format(c) for c in run.dataset.classnames]
    (work / "prompts.json").write_text(json.dumps(prompts))
    del run
    sides = ["ours", "plain"] + ([] if args.no_cache_row or args.epochs < 2 else ["ours-nocache"])
    print(f"{args.model} ({args.spec}) on {args.device}: {args.classes} classes x {args.shots} shots = "
          f"{args.train_images} training images, batch {args.batch}, {args.epochs} epochs x {args.steps_per_epoch} "
          f"steps; {args.test_images} test images; {args.image_size} px on disk; prompts {prompts[0]!r}...; "
          f"{args.repeats} repeats (+1 warm-up) per side, each side in its own process; work dir {work}")

    # Every side's process is started and warmed up first; then the timed runs take turns, in
    # an order rotated each repeat, so slow drifts of the machine hit every side alike.
    load_start = loadavg()
    handles = {side: Side(args, side, data, work / "prompts.json", work) for side in sides}
    raw = {side: {"rss_after_imports_mb": h.info["rss_after_imports_mb"], "torch_threads": h.info["torch_threads"],
                  "runs": []} for side, h in handles.items()}
    try:
        for side, handle in handles.items():
            raw[side]["warmup"] = handle.ask("warmup")
            w = raw[side]["warmup"]
            print(f"  warm-up {side:12s} train {w['train']['s']:.2f} s, evaluate {w['evaluate']['s']:.2f} s; "
                  f"peak RSS {w['peak_rss_first_run_mb']:.0f} MiB")
        for r in range(args.repeats):
            order = sides[r % len(sides):] + sides[:r % len(sides)]
            for side in order:
                load = loadavg()
                run = handles[side].ask("run")
                run["loadavg_1min_before_after"] = [load, loadavg()]
                raw[side]["runs"].append(run)
                print(f"  repeat {r + 1}: {side:12s} train {run['train']['s']:.2f} s "
                      f"({args.train_images * args.epochs / run['train']['s']:.1f} images/s; build "
                      f"{run['train']['build_s']:.2f} s), evaluate {run['evaluate']['s']:.2f} s "
                      f"({args.test_images / run['evaluate']['s']:.1f} images/s; build {run['evaluate']['build_s']:.2f} s); "
                      f"train CPU {run['train']['cpu_s']:.2f} s; load {load:.2f}")
    finally:
        for handle in handles.values():
            handle.close()
    result = {side: stats(args, raw[side]) for side in sides}
    result["loadavg_1min_start_end"] = [load_start, loadavg()]

    o, p = result["ours"], result["plain"]
    ratios = {}
    for phase in ("train", "evaluate"):
        ratios[f"{phase}_time_median"] = C.ratio(o[phase]["median_s"], p[phase]["median_s"])
        ratios[f"{phase}_time_best"] = C.ratio(o[phase]["best_s"], p[phase]["best_s"])
        ratios[f"{phase}_time_without_build_median"] = C.ratio(o[phase]["without_build_median_s"],
                                                               p[phase]["without_build_median_s"])
        ratios[f"{phase}_peak_rss"] = C.ratio(o[phase]["peak_rss_mb"], p[phase]["peak_rss_mb"])
    ratios["peak_rss_first_run"] = C.ratio(o["peak_rss_first_run_mb"], p["peak_rss_first_run_mb"])
    if "ours-nocache" in result:
        n = result["ours-nocache"]
        ratios["nocache_train_time_median"] = C.ratio(n["train"]["median_s"], p["train"]["median_s"])
        ratios["nocache_train_time_without_build_median"] = C.ratio(n["train"]["without_build_median_s"],
                                                                    p["train"]["without_build_median_s"])
    result["ratios"] = ratios

    ti, ei = args.train_images * args.epochs, args.test_images
    rows = [
        [f"train images/s (median; {ti} images)", o["train"]["images_per_s_median"],
         p["train"]["images_per_s_median"], ratios["train_time_median"]],
        ["train images/s (best)", o["train"]["images_per_s_best"], p["train"]["images_per_s_best"],
         ratios["train_time_best"]],
        ["  train CPU s, all threads (median)", o["train"]["cpu_median_s"], p["train"]["cpu_median_s"],
         C.ratio(o["train"]["cpu_median_s"], p["train"]["cpu_median_s"])],
        ["  train model build s (median)", o["train"]["build_median_s"], p["train"]["build_median_s"],
         C.ratio(o["train"]["build_median_s"], p["train"]["build_median_s"])],
        ["  train images/s without the build", o["train"]["images_per_s_without_build_median"],
         p["train"]["images_per_s_without_build_median"], ratios["train_time_without_build_median"]],
    ]
    if "ours-nocache" in result:
        n = result["ours-nocache"]
        rows += [
            ["  ours, no cache: train images/s", n["train"]["images_per_s_median"], p["train"]["images_per_s_median"],
             ratios["nocache_train_time_median"]],
            ["  ours, no cache: without the build", n["train"]["images_per_s_without_build_median"],
             p["train"]["images_per_s_without_build_median"], ratios["nocache_train_time_without_build_median"]],
        ]
    rows += [
        [f"eval images/s (median; {ei} images)", o["evaluate"]["images_per_s_median"],
         p["evaluate"]["images_per_s_median"], ratios["evaluate_time_median"]],
        ["eval images/s (best)", o["evaluate"]["images_per_s_best"], p["evaluate"]["images_per_s_best"],
         ratios["evaluate_time_best"]],
        ["  eval model build s (median)", o["evaluate"]["build_median_s"], p["evaluate"]["build_median_s"],
         C.ratio(o["evaluate"]["build_median_s"], p["evaluate"]["build_median_s"])],
        ["  eval images/s without the build", o["evaluate"]["images_per_s_without_build_median"],
         p["evaluate"]["images_per_s_without_build_median"], ratios["evaluate_time_without_build_median"]],
        ["peak RSS MiB, train + eval, fresh process", o["peak_rss_first_run_mb"], p["peak_rss_first_run_mb"],
         ratios["peak_rss_first_run"]],
        ["  of which above the imports", o["peak_rss_first_run_mb"] - o["rss_after_imports_mb"],
         p["peak_rss_first_run_mb"] - p["rss_after_imports_mb"],
         C.ratio(o["peak_rss_first_run_mb"] - o["rss_after_imports_mb"],
                 p["peak_rss_first_run_mb"] - p["rss_after_imports_mb"])],
        ["  peak RSS MiB while training", o["train"]["peak_rss_mb"], p["train"]["peak_rss_mb"],
         ratios["train_peak_rss"]],
        ["  peak RSS MiB while evaluating", o["evaluate"]["peak_rss_mb"], p["evaluate"]["peak_rss_mb"],
         ratios["evaluate_peak_rss"]],
    ]
    if args.device == "cuda":
        for phase in ("train", "evaluate"):
            oc, pc = o[phase]["cuda_max_allocated_mb"], p[phase]["cuda_max_allocated_mb"]
            rows.append([f"peak CUDA allocated MiB, {phase}", oc, pc, C.ratio(oc, pc)])
    rows.append(["top-1 (sanity; random model)", o["evaluate"].get("top1", float("nan")),
                 p["evaluate"].get("top1", float("nan")), float("nan")])
    C.print_table(f"Classifier training + evaluation: {args.model} ({args.spec}), {args.device}",
                  ["", "ours", "plain", "ours/plain (time, MiB)"], rows,
                  note="ratio < 1: ours is faster (or smaller); each side in its own process")
    C.write_json(args.out, {
        "benchmark": NAME, "model": args.model, "spec": args.spec, "device": args.device,
        "settings": {k: getattr(args, k) for k in ("classes", "shots", "test", "batch", "epochs", "image_size",
                                                   "workers", "threads", "repeats", "seed", "train_images",
                                                   "steps_per_epoch",
                                                   "test_images")},
        "lora": {**LORA, "target_modules": LORA_TARGETS}, "optimizer": {"lr": LR, "weight_decay": WEIGHT_DECAY,
                                                                        "warmup_steps": WARMUP},
        "env": C.environment(args.device), **result, "raw": raw,
    })
    C.clean_workdir(args, work)


if __name__ == "__main__":
    main()
