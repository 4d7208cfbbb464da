"""Classifier ``clip``: open_clip CLIP with a class-prompt head and LoRA on both encoders.

Logits are ``exp(logit_scale) * cos(image embedding, text embedding of the class prompt)``,
the text side recomputed with its LoRA at every step, as in the paper. LoRA (peft) goes on the
q and v projections of every attention block of the image and text transformers (rank 16,
alpha 32, dropout 0.1, as the reference code); open_clip fuses q/k/v into one
``nn.MultiheadAttention``, so those are first swapped for an exact equivalent with separate
projections. With real and synthetic data each step sees one batch of each and the loss is
``lambda * CE(real) + (1 - lambda) * CE(synthetic)``; real shots are oversampled.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from ddcore.errors import StageError
from ddcore.hookspecs import hookimpl
from ddcore.stages import Classifier

CHECKPOINT = "checkpoint.pt"
WEIGHTS = "lora.safetensors"
INFO = "classifier.json"
LORA_TARGETS = r".*resblocks\.\d+\.attn\.(q_proj|v_proj)"
DEFAULT_MODEL = "ViT-B-16-quickgelu:openai"  # the paper's CLIP ViT-B/16 with OpenAI weights


class ImageList:
    """A torch dataset over samples: decoded to RGB by the data layer, then transformed."""

    def __init__(self, samples, transform):
        self.samples, self.transform = samples, transform

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        from ddcore.data import load_rgb

        sample = self.samples[i]
        return self.transform(load_rgb(sample.path)), sample.label


def warmup_cosine(warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


class ClipClassifier(Classifier):
    """open_clip CLIP, class-prompt head, LoRA on image and text encoders."""

    @dataclass
    class Options:
        epochs: int = 30
        batch_size: int = 64
        lr: float = 1e-4
        weight_decay: float = 5e-4
        warmup_steps: int = 50
        lora_rank: int = 16
        lora_alpha: int = 32
        lora_dropout: float = 0.1
        template: str = "a photo of a {}."
        augment: bool = True
        num_workers: int = -1  # -1: none on the CPU, up to 8 on a GPU

    # -- model ------------------------------------------------------------------------------

    def _model_spec(self, context) -> str:
        return context.config.classifier_model or DEFAULT_MODEL

    def _build(self, context, with_lora: bool):
        from peft import LoraConfig, inject_adapter_in_model

        from ddcore.models import load_clip, use_plain_attention

        loaded = load_clip(self._model_spec(context), device=context.device)
        model = loaded.model
        model.requires_grad_(False)
        if with_lora:
            use_plain_attention(model)
            config = LoraConfig(r=self.options.lora_rank, lora_alpha=self.options.lora_alpha,
                                lora_dropout=self.options.lora_dropout, target_modules=LORA_TARGETS)
            inject_adapter_in_model(config, model)
            for name, param in model.named_parameters():
                param.requires_grad_("lora_" in name)
        self.loaded, self.model = loaded, model
        return model

    def _prompts(self, classnames):
        return [self.options.template.format(name) for name in classnames]

    def _text_features(self, tokens):
        import torch.nn.functional as F

        return F.normalize(self.model.encode_text(tokens), dim=-1)

    def _logits(self, images, text_features):
        import torch.nn.functional as F

        image_features = F.normalize(self.model.encode_image(images), dim=-1)
        return self.model.logit_scale.exp() * image_features @ text_features.t()

    def _transforms(self, train: bool):
        from torchvision import transforms as T

        size, loaded = self.loaded.image_size, self.loaded
        normalize = [T.ToTensor(), T.Normalize(loaded.mean, loaded.std)]
        if train and self.options.augment:
            return T.Compose([
                T.RandomResizedCrop(size, scale=(0.5, 1.0), interpolation=T.InterpolationMode.BICUBIC),
                T.RandomHorizontalFlip(),
                T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
                T.RandomGrayscale(p=0.2),
                *normalize,
            ])
        return T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size), *normalize])

    def _workers(self, context) -> int:
        if self.options.num_workers >= 0:
            return self.options.num_workers
        return 0 if context.device == "cpu" else min(8, os.cpu_count() or 1)

    # -- training ---------------------------------------------------------------------------

    def fit(self, context, data, out_dir: Path) -> None:
        classnames = context.dataset.classnames
        trains = bool(data.real or data.synthetic)
        if trains:
            self._train(context, data, out_dir)
        info = {
            "model": self._model_spec(context),
            "classnames": classnames,
            "prompts": self._prompts(classnames),
            "options": asdict(self.options),
            "lora": trains,
            "lora_targets": LORA_TARGETS if trains else None,
        }
        (out_dir / INFO).write_text(json.dumps(info, indent=2))
        (out_dir / CHECKPOINT).unlink(missing_ok=True)  # the final weights supersede it

    def _loader(self, samples, context, generator, num_samples):
        from torch.utils.data import DataLoader, RandomSampler

        sampler = RandomSampler(range(len(samples)), replacement=num_samples > len(samples),
                                num_samples=num_samples, generator=generator)
        return DataLoader(ImageList(samples, self._transforms(train=True)), batch_size=self.options.batch_size,
                          sampler=sampler, num_workers=self._workers(context), drop_last=False,
                          pin_memory=context.device.startswith("cuda"), persistent_workers=False)

    def _train(self, context, data, out_dir: Path) -> None:
        import torch
        import torch.nn.functional as F
        from peft import get_peft_model_state_dict
        from safetensors.torch import save_file

        opts, device = self.options, context.device
        model = self._build(context, with_lora=True)
        tokens = self.loaded.tokenizer(self._prompts(context.dataset.classnames)).to(device)
        # The synthetic set (when present) defines an epoch; real shots are drawn alongside.
        primary = data.synthetic or data.real
        secondary = data.real if data.synthetic else []
        weights = (1.0 - data.real_weight, data.real_weight) if secondary else (1.0, 0.0)
        steps_per_epoch = math.ceil(len(primary) / opts.batch_size)
        total = steps_per_epoch * opts.epochs
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=opts.lr, weight_decay=opts.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(opts.warmup_steps, total))
        start_epoch = self._resume(out_dir, model, optimizer, scheduler)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else _null()

        with context.reporter.task("training classifier", total) as advance:
            advance(start_epoch * steps_per_epoch)
            for epoch in range(start_epoch, opts.epochs):
                model.train()
                seed = context.config.seed * 100_003 + epoch  # resumes draw the same batches
                main = self._loader(primary, context, torch.Generator().manual_seed(seed), len(primary))
                extra = iter(self._loader(secondary, context, torch.Generator().manual_seed(seed + 1),
                                          steps_per_epoch * opts.batch_size)) if secondary else None
                for images, labels in main:
                    with autocast:
                        text_features = self._text_features(tokens)
                        loss = weights[0] * F.cross_entropy(self._logits(images.to(device), text_features), labels.to(device))
                        if extra is not None:
                            real_images, real_labels = next(extra)
                            logits = self._logits(real_images.to(device), text_features)
                            loss = loss + weights[1] * F.cross_entropy(logits, real_labels.to(device))
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(params, 1.0)
                    optimizer.step()
                    scheduler.step()
                    advance(1)
                self._checkpoint(out_dir, model, optimizer, scheduler, epoch + 1)
        state = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(model).items()}
        save_file(state, str(out_dir / WEIGHTS))

    def _checkpoint(self, out_dir, model, optimizer, scheduler, epoch) -> None:
        import torch
        from peft import get_peft_model_state_dict

        tmp = out_dir / f".{CHECKPOINT}.tmp"
        torch.save({"epoch": epoch, "lora": get_peft_model_state_dict(model), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict()}, tmp)
        tmp.replace(out_dir / CHECKPOINT)

    def _resume(self, out_dir, model, optimizer, scheduler) -> int:
        import torch
        from peft import set_peft_model_state_dict

        path = out_dir / CHECKPOINT
        if not path.is_file():
            return 0
        state = torch.load(path, map_location="cpu", weights_only=False)
        set_peft_model_state_dict(model, state["lora"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        return int(state["epoch"])

    # -- inference --------------------------------------------------------------------------

    def load(self, context, out_dir: Path) -> None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        info = json.loads((out_dir / INFO).read_text())
        if info["classnames"] != context.dataset.classnames:
            raise StageError(f"the classifier in {out_dir} was trained on other classes than the data set's "
                             f"({len(info['classnames'])} vs {len(context.dataset.classnames)}); train it on this data")
        self.options = type(self.options)(**info["options"])
        model = self._build(context, with_lora=info["lora"])
        if info["lora"]:
            set_peft_model_state_dict(model, load_file(str(out_dir / WEIGHTS), device=context.device))
        model.eval()
        self.prompts = info["prompts"]

    def predict(self, context, samples):
        import numpy as np
        import torch
        from torch.utils.data import DataLoader

        loader = DataLoader(ImageList(samples, self._transforms(train=False)), batch_size=self.options.batch_size,
                            num_workers=self._workers(context))
        scores = []
        with torch.inference_mode(), context.reporter.task("evaluating", len(samples)) as advance:
            text_features = self._text_features(self.loaded.tokenizer(self.prompts).to(context.device))
            for images, _ in loader:
                scores.append(self._logits(images.to(context.device), text_features).float().cpu())
                advance(len(images))
        return torch.cat(scores).numpy() if scores else np.zeros((0, context.dataset.num_classes))


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


@hookimpl
def register_classifiers(register):
    register("clip", ClipClassifier)
