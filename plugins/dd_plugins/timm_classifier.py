"""Classifier ``timm``: any timm image model with a fresh linear head, for a non-CLIP classifier.

Trained by the same loop as the CLIP classifiers (real + synthetic batches, the lambda loss,
the paper's augmentations); every weight is fine-tuned, or only the head with
``freeze_backbone``. Inference uses the model's own timm eval transform (its crop ratio and
interpolation).

``--classifier-model`` takes ``NAME`` (a timm name with its pretrained tag, weights from the
hub or its cache), ``NAME:/path/to/weights.safetensors``, ``NAME:random``, ``local-dir:DIR``
or ``hf-hub:ORG/REPO``, or ``tiny`` (timm's ``test_resnet``, random, for tests).
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass
from pathlib import Path

from ddcore.api import (Classifier, ConfigError, ModelNotFoundError, TrainableModel, TrainingOptions, hookimpl,
                        option, predict_scores, remove_checkpoint, train_classifier as train_loop, write_info)

from .classifier_files import load_trained

WEIGHTS = "model.safetensors"
TINY = "test_resnet:random"


def create_timm_model(spec: str, num_classes: int, device: str):
    """A timm model from ``spec`` with a ``num_classes`` head; one-line errors when it cannot be found."""
    import timm

    from ddcore.api import hub_cache_dir, hub_offline, hub_offline_mode

    spec = TINY if spec == "tiny" else spec.strip()
    kwargs: dict = {"num_classes": num_classes, "pretrained": True}
    if spec.startswith(("local-dir:", "hf-hub:")):
        name = spec
    else:
        name, _, weights = spec.partition(":")
        if not timm.is_model(name):
            close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
            hint = f" close names: {', '.join(close)};" if close else ""
            raise ModelNotFoundError(f"unknown timm model '{name}':{hint} timm.list_models() lists them all")
        if weights == "random":
            kwargs["pretrained"] = False
        elif weights:
            path = Path(weights).expanduser().resolve()
            if not path.is_file():
                raise ModelNotFoundError(f"cannot load timm model '{spec}': weights file '{path}' does not exist")
            kwargs["pretrained_cfg_overlay"] = {"file": str(path)}
    try:
        with hub_offline_mode():
            model = timm.create_model(name, cache_dir=hub_cache_dir(), **kwargs)
    except (OSError, RuntimeError, ValueError) as exc:
        why = "offline: HF_HUB_OFFLINE=1" if hub_offline() else " ".join(str(exc).split())[:160]
        repo = name.removeprefix("hf-hub:") if name.startswith("hf-hub:") else f"timm/{name}"
        raise ModelNotFoundError(
            f"cannot load timm weights '{spec}' ({why}); download them where there is internet "
            f"(`hf download {repo} --local-dir DIR`), then pass --classifier-model local-dir:DIR "
            f"or {name.split(':')[-1]}:/path/to/model.safetensors") from None
    return model.to(device)


class TimmModel(TrainableModel):
    def __init__(self, module, image_size: int, freeze_backbone: bool) -> None:
        import timm

        self.module = module
        config = timm.data.resolve_data_config({}, model=module)
        self.data_config = dict(config)
        if image_size:
            self.data_config["input_size"] = (3, image_size, image_size)
        self.image_size = self.data_config["input_size"][-1]
        self.mean, self.std = tuple(config["mean"]), tuple(config["std"])
        head = set(id(p) for p in module.get_classifier().parameters())
        for param in module.parameters():
            param.requires_grad_(not freeze_backbone or id(param) in head)

    def parameters_to_train(self):
        return [p for p in self.module.parameters() if p.requires_grad]

    def logits(self, images):
        return self.module(images)

    def trained_state(self):
        return {k: v.detach().cpu().contiguous() for k, v in self.module.state_dict().items()}

    def load_trained_state(self, state) -> None:
        self.module.load_state_dict(state)

    def eval_transform(self):
        import timm

        return timm.data.create_transform(**self.data_config, is_training=False)


class TimmClassifier(Classifier):
    """Any timm model with a linear head, fine-tuned on real + synthetic images."""

    @dataclass
    class Options(TrainingOptions):
        model: str = option("resnet50.a1_in1k", "a timm name with its pretrained tag, NAME:WEIGHTS.safetensors, "
                                                "NAME:random, local-dir:DIR, hf-hub:ORG/REPO or tiny; "
                                                "--classifier-model overrides it")
        image_size: int = option(0, "input size in pixels, training and inference; 0: the model's own")
        freeze_backbone: bool = option(False, "train the linear head only (a linear probe); false: every weight")

    def _build(self, context, spec: str) -> TimmModel:
        module = create_timm_model(spec, context.dataset.num_classes, context.device)
        self.model = TimmModel(module, self.options.image_size, self.options.freeze_backbone)
        return self.model

    def fit(self, context, data, out_dir: Path) -> None:
        from safetensors.torch import save_file

        if not (data.real or data.synthetic):
            raise ConfigError("the timm classifier has no zero-shot head (its linear head starts random); "
                              "train it (--method real-finetune or a method with synthetic data) or use a CLIP classifier")
        spec = context.config.classifier_model or self.options.model
        model = self._build(context, spec)
        summary = train_loop(model, data, self.options, num_classes=context.dataset.num_classes,
                             seed=context.config.seed, device=context.device, out_dir=out_dir, reporter=context.reporter)
        save_file(model.trained_state(), str(out_dir / WEIGHTS))
        write_info(out_dir, classifier=self.name, classnames=context.dataset.classnames, model=spec,
                   options=asdict(self.options), data_config=model.data_config, training=summary)
        remove_checkpoint(out_dir)
        self.model = None  # free it: evaluation loads the saved weights

    def load(self, context, out_dir: Path) -> None:
        def build(info):
            spec = info["model"]
            if spec != "tiny" and not spec.startswith(("local-dir:", "hf-hub:")):
                spec = spec.partition(":")[0] + ":random"  # the trained weights replace the pretrained ones
            return self._build(context, spec)

        load_trained(self, context, out_dir, WEIGHTS, build)

    def predict(self, context, samples):
        return predict_scores(self.model.logits, samples, self.model.eval_transform(),
                              num_classes=context.dataset.num_classes, batch_size=self.options.batch_size,
                              device=context.device, num_workers=self.options.num_workers, amp=self.options.amp,
                              reporter=context.reporter)


@hookimpl
def register_classifiers(register):
    register("timm", TimmClassifier)
