"""Filter ``clip``: keep a generated image only if zero-shot CLIP assigns it to its class (DISEF).

The head is open_clip's ``build_zero_shot_classifier`` over the data set's class names and
templates (``templates=coop``: the data set's CoOp template, one prompt per class as DISEF's
reference code; ``datadream``: "a {domain}photo of a {}"; ``ensemble``: all of them; ``template``:
one of your own). An image is kept when
the argmax of its zero-shot logits is its own class.

The core retries: attempts of a class go on until ``images_per_class`` are kept or
``max_attempts_per_class`` attempts were made (never fewer than ``images_per_class``). A class that
reaches the bound keeps what passed; ``counts.json`` in the synthetic folder records kept and
dropped per class and ``dropped-<rank>.jsonl`` each dropped attempt. DISEF's reference code instead
accepts every image of a class after 100 rounds without success; here a short class stays short
and says so.

The default model is a large open_clip model as in DISEF's reference code, which filters with
LAION's ViT-H/14 (``hf-hub:laion/CLIP-ViT-H-14-laion2B-s32B-b79K``, the same weights as
``ViT-H-14:laion2b_s32b_b79k``). Any ``load_clip`` spec works (``tiny`` offline, ``local-dir:DIR``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ddcore.api import ConfigError, Filter, hookimpl, option

from .clip_text import check_templates, class_templates

DEFAULT_FILTER_MODEL = "ViT-H-14:laion2b_s32b_b79k"


class ClipFilter(Filter):
    """Zero-shot CLIP keeps an image only if it is assigned to its own class."""

    @dataclass
    class Options:
        model: str = option(DEFAULT_FILTER_MODEL, 'a load_clip spec: NAME:TAG, local-dir:DIR, hf-hub:ORG/REPO, tiny',
                            demo='tiny')
        template: str = option("", "one template ({} = class name) for every class; empty: per templates")
        templates: str = option("coop", "coop (the data set's CoOp template, one per data set as DISEF's code), "
                                        "datadream ('a {domain}photo of a {}') or ensemble (every template)")
        max_attempts_per_class: int = option(1000, "most images tried per class (never fewer than images_per_class); "
                                                   "a class that reaches it stays short (twice the paper's 500 images "
                                                   "per class)", demo=32)
        batch_size: int = option(32, "images CLIP classifies at once")

    def __init__(self, options=None) -> None:
        super().__init__(options)
        check_templates(self.options, "filter")
        if self.options.batch_size < 1 or self.options.max_attempts_per_class < 1:
            raise ConfigError("filter.batch_size and filter.max_attempts_per_class must be at least 1")

    def setup(self, context) -> None:
        import torch
        from open_clip.zero_shot_classifier import build_zero_shot_classifier

        from ddcore.api import eval_transform, load_clip

        self.device = context.device
        self.loaded = load_clip(self.options.model, device=self.device)
        self.templates = class_templates(self.options, context.dataset)
        self.transform = eval_transform(self.loaded.image_size, self.loaded.mean, self.loaded.std)
        with torch.inference_mode():
            # [embedding dim, classes]: normalised mean of the normalised template embeddings
            self.head = build_zero_shot_classifier(self.loaded.model, self.loaded.tokenizer, context.dataset.classnames,
                                                   self.templates, device=self.device)

    def logits(self, images) -> "torch.Tensor":  # noqa: F821 - torch is imported lazily
        """Zero-shot logits ``[len(images), num_classes]`` (cosine similarity times CLIP's scale)."""
        import torch
        import torch.nn.functional as F

        model = self.loaded.model
        out = []
        with torch.inference_mode():
            for start in range(0, len(images), self.options.batch_size):
                batch = torch.stack([self.transform(image.convert("RGB"))
                                     for image in images[start:start + self.options.batch_size]])
                features = F.normalize(model.encode_image(batch.to(self.device)).float(), dim=-1)
                out.append(model.logit_scale.exp().float() * features @ self.head.float())
        return torch.cat(out).cpu() if out else torch.zeros(0, self.head.shape[1])

    def keep(self, images, items):
        predicted = self.logits(images).argmax(dim=-1).tolist()
        return [p == item.label for p, item in zip(predicted, items)]


@hookimpl
def register_filters(register):
    register("clip", ClipFilter)
