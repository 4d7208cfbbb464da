"""CLIP classifiers: ``clip-vitb16`` (the paper's), ``clip-vitl14`` and ``clip-rn50``.

Logits are ``exp(logit_scale) * cos(image embedding, text embedding of the class prompt)``,
the text side recomputed with its LoRA at every step, as in the paper. LoRA (peft) goes on the
q and v projections of every attention block (``LORA_TARGETS``; rank 16, alpha 32, dropout 0.1,
as the reference code). open_clip fuses q/k/v into one ``nn.MultiheadAttention``, so those are
first swapped for an exact equivalent with separate projections.

The image tower is trained per ``visual``: ``lora`` (the same LoRA as the text tower),
``full`` (every weight, the paper's appendix setting for ViT-L/14 and RN50), or ``frozen``.
RN50's image tower is a ResNet with no attention blocks, so its preset trains it ``full``.

With no training data at all (the ``zero-shot`` method) the classifier is open_clip's zero-shot
head over the prompts, built by open_clip's own ``build_zero_shot_classifier``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from ddcore.api import (Classifier, ConfigError, StageError, TrainableModel, TrainingOptions, eval_transform, hookimpl,
                        option, predict_scores, read_info, remove_checkpoint, train_classifier as train_loop,
                        write_info)

from .classifier_files import load_trained
from .clip_text import ENSEMBLE, TEMPLATE_ALIASES, TEMPLATE_SETS, check_templates, class_templates  # noqa: F401
from .fidelity import CLASSIFIER, CLASSIFIERS

WEIGHTS = "trained.safetensors"
_ATTN = r"transformer\.resblocks\.\d+\.attn\.(q_proj|v_proj)"
TEXT_TARGETS = rf"(text\.)?{_ATTN}"  # CLIP's text tower is `transformer`, CustomTextCLIP's `text.transformer`
VISUAL_TARGETS = rf"visual\.{_ATTN}"
LORA_TARGETS = {"lora": rf"({TEXT_TARGETS})|({VISUAL_TARGETS})", "full": TEXT_TARGETS, "frozen": TEXT_TARGETS}
VISUAL_MODES = tuple(LORA_TARGETS)


class ClipModel(TrainableModel):
    """An open_clip model with LoRA, trainable as the loop expects."""

    def __init__(self, loaded, options, classnames: list[str], templates: list[str], device: str, lora: bool,
                 seed: int = 0) -> None:
        import torch
        from peft import LoraConfig, inject_adapter_in_model

        from .clip_attention import use_plain_attention

        self.loaded, self.module = loaded, loaded.model
        self.image_size, self.mean, self.std = loaded.image_size, loaded.mean, loaded.std
        self.classnames, self.templates, self.device = classnames, templates, device
        self.visual = options.visual
        module = self.module
        module.requires_grad_(False)
        if lora:
            use_plain_attention(module)
            targets = LORA_TARGETS[self.visual]
            config = LoraConfig(r=options.lora_rank, lora_alpha=options.lora_alpha,
                                lora_dropout=options.lora_dropout, target_modules=targets)
            try:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed)  # the LoRA init: a rerun trains the same classifier
                    inject_adapter_in_model(config, module)
            except ValueError as exc:
                raise StageError(f"no attention blocks to put LoRA on in CLIP model '{loaded.spec}' ({exc})") from None
            names = [n for n, _ in module.named_parameters() if "lora_" in n]
            if self.visual == "lora" and not any(n.startswith("visual.") for n in names):
                raise ConfigError(f"the image tower of '{loaded.spec}' has no transformer attention blocks for LoRA "
                                  "(a ResNet); use --set classifier.visual=full (the paper's RN50 setting) or frozen")
            for name, param in module.named_parameters():
                param.requires_grad_("lora_" in name or (self.visual == "full" and name.startswith("visual.")))
        self.tokens = loaded.tokenizer([t.format(c) for c in classnames for t in templates]).to(device)

    def parameters_to_train(self):
        return [p for p in self.module.parameters() if p.requires_grad]

    def text_features(self):
        """Per class, the mean of the normalised template embeddings, renormalised: open_clip's
        zero-shot head, but with gradients."""
        import torch.nn.functional as F

        features = F.normalize(self.module.encode_text(self.tokens), dim=-1)
        features = features.view(len(self.classnames), len(self.templates), -1).mean(dim=1)
        return F.normalize(features, dim=-1)

    def logits(self, images, text_features=None):
        import torch.nn.functional as F

        text = self.text_features() if text_features is None else text_features
        image = F.normalize(self.module.encode_image(images), dim=-1)
        return self.module.logit_scale.exp() * image @ text.t()

    def _trained_names(self) -> set[str]:
        names = {n for n, p in self.module.named_parameters() if p.requires_grad}
        if self.visual == "full":  # BatchNorm statistics of a ResNet tower change too
            names |= {n for n, _ in self.module.named_buffers() if n.startswith("visual.")}
        return names

    def trained_state(self):
        names = self._trained_names()
        return {k: v.detach().cpu().contiguous() for k, v in self.module.state_dict().items() if k in names}

    def load_trained_state(self, state) -> None:
        result = self.module.load_state_dict(state, strict=False)
        if result.unexpected_keys:
            raise StageError(f"the saved classifier weights do not fit model '{self.loaded.spec}' "
                             f"(unexpected: {', '.join(result.unexpected_keys[:3])})")


class ClipClassifier(Classifier):
    """open_clip CLIP with a class-prompt head; LoRA on the text tower and the image tower per ``visual``."""

    @dataclass
    class Options(TrainingOptions):
        model: str = option("ViT-B-16-quickgelu:openai", "a load_clip spec: NAME:TAG (the paper's: OpenAI weights, "
                                                         "QuickGELU), local-dir:DIR, hf-hub:ORG/REPO, tiny; "
                                                         "--classifier-model overrides it")
        visual: str = option("lora", "the image tower: lora (as the text tower; official code), full (every weight; "
                                     "the paper's for ViT-L/14 and RN50) or frozen")
        lora_rank: int = option(16, "LoRA rank on the q and v projections of every attention block (paper: 16)")
        lora_alpha: int = option(32, "LoRA alpha (official code: 32)")
        lora_dropout: float = option(0.1, "LoRA dropout (official code: 0.1)")
        template: str = option("", "one template ({} = class name) for every class; empty: per templates")
        templates: str = option("datadream", "datadream ('a {domain}photo of a {}', the official code's), coop (the "
                                              "data set's CoOp template) or ensemble (every template)")

    name = "clip-vitb16"
    protocol = CLASSIFIER

    def __init__(self, options=None) -> None:
        super().__init__(options)
        if self.options.visual not in VISUAL_MODES:
            raise ConfigError(f"classifier.visual must be one of {', '.join(VISUAL_MODES)}, not {self.options.visual!r}")
        check_templates(self.options, "classifier")

    def _model_spec(self, context) -> str:
        return context.config.classifier_model or self.options.model

    def _build(self, context, spec: str, templates: list[str], lora: bool) -> ClipModel:
        from ddcore.api import load_clip

        loaded = load_clip(spec, device=context.device)
        self.model = ClipModel(loaded, self.options, context.dataset.classnames, templates, context.device, lora,
                               seed=context.config.seed)
        return self.model

    # -- training ---------------------------------------------------------------------------

    def fit(self, context, data, out_dir: Path) -> None:
        from safetensors.torch import save_file

        dataset = context.dataset
        templates = class_templates(self.options, dataset)
        trains = bool(data.real or data.synthetic)
        model = self._build(context, self._model_spec(context), templates, lora=trains)
        summary = None
        if trains:
            summary = train_loop(model, data, self.options, num_classes=dataset.num_classes, seed=context.config.seed,
                                 device=context.device, out_dir=out_dir, reporter=context.reporter)
            save_file(model.trained_state(), str(out_dir / WEIGHTS))
        write_info(
            out_dir, classifier=self.name, classnames=dataset.classnames, model=model.loaded.spec,
            model_cfg=model.loaded.model_cfg, templates=templates,
            prompts={c: [t.format(c) for t in templates] for c in dataset.classnames},
            options=asdict(self.options), trained=trains, visual=self.options.visual,
            lora_targets=LORA_TARGETS[self.options.visual] if trains else None, training=summary,
        )
        remove_checkpoint(out_dir)
        self.model = None  # free it: evaluation loads the saved weights

    # -- inference --------------------------------------------------------------------------

    def load(self, context, out_dir: Path) -> None:
        import torch
        from open_clip.zero_shot_classifier import build_zero_shot_classifier

        info, model = load_trained(self, context, out_dir, WEIGHTS, lambda info: self._build(
            context, info["model"], info["templates"], lora=info["trained"]))
        with torch.no_grad():
            self.head = build_zero_shot_classifier(model.module, model.loaded.tokenizer, info["classnames"],
                                                   info["templates"], device=context.device).t()

    def predict(self, context, samples):
        model = self.model
        transform = eval_transform(model.image_size, model.mean, model.std)
        return predict_scores(lambda images: model.logits(images, self.head), samples, transform,
                              num_classes=len(self.head), batch_size=self.options.batch_size, device=context.device,
                              num_workers=self.options.num_workers, amp=self.options.amp, reporter=context.reporter)

    # -- export -----------------------------------------------------------------------------

    def feature_model(self, config) -> str:
        return config.classifier_model or self.options.model

    def export(self, context, out_dir: Path, dest: Path) -> Path:
        """An open_clip ``local-dir:`` folder with the LoRA merged into the weights, plus the
        class names, prompts and zero-shot head (``dd_head.safetensors``) it was trained with.
        Called after ``load``."""
        from safetensors.torch import save_file

        from ddcore.api import save_open_clip_folder

        model = self.model
        if model.loaded.model_cfg is None:
            raise StageError(f"cannot export '{model.loaded.spec}': its open_clip config is unknown "
                             "(an hf-hub model that is not in the local cache)")
        merge_lora(model.module)
        save_open_clip_folder(model.module, model.loaded, dest)
        save_file({"head": self.head.detach().float().cpu().contiguous()}, str(dest / "dd_head.safetensors"))
        info = read_info(out_dir)
        write_info(dest, classifier=self.name, classnames=info["classnames"], templates=info["templates"],
                   prompts=info["prompts"], source=str(out_dir), model=f"local-dir:{dest.resolve()}")
        return dest


def merge_lora(module) -> int:
    """Merge every peft LoRA layer into its base Linear and put the plain Linear back; then fold
    the split attention back into ``nn.MultiheadAttention``. Returns the layers merged."""
    from peft.tuners.lora import LoraLayer

    from .clip_attention import restore_fused_attention

    merged = 0
    for name, layer in list(module.named_modules()):
        if isinstance(layer, LoraLayer):
            layer.merge(safe_merge=True)
            parent_name, _, child = name.rpartition(".")
            setattr(module.get_submodule(parent_name) if parent_name else module, child, layer.get_base_layer())
            merged += 1
    restore_fused_attention(module)
    return merged


def _preset(name: str, model: str, visual: str, doc: str) -> type[ClipClassifier]:
    helps = {key: f.metadata["help"] for key, f in ClipClassifier.Options.__dataclass_fields__.items()}
    options = dataclass(type("Options", (ClipClassifier.Options,), {
        "__annotations__": {"model": str, "visual": str}, "model": option(model, helps["model"]),
        "visual": option(visual, helps["visual"])}))
    # The shared rows, with this model's own in place of the ViT-B/16 ones.
    own = {row.key: row for row in CLASSIFIERS[name]}
    protocol = tuple(own.pop(row.key, row) for row in CLASSIFIER)
    return type(name.replace("-", "_"), (ClipClassifier,), {"Options": options, "name": name, "__doc__": doc,
                                                            "protocol": protocol})


PRESETS = {
    "clip-vitb16": ClipClassifier,
    # Appendix D: "For both, we fully fine-tune the visual encoder and LoRA fine-tune the text
    # encoder" (the official code puts LoRA on ViT-L/14's image tower: visual=lora).
    "clip-vitl14": _preset("clip-vitl14", "ViT-L-14-quickgelu:openai", "full",
                           "CLIP ViT-L/14 (OpenAI weights, QuickGELU); the image tower fully fine-tuned, LoRA on the "
                           "text tower (the paper's appendix setting; visual=lora as the official code)."),
    "clip-rn50": _preset("clip-rn50", "RN50-quickgelu:openai", "full",
                         "CLIP RN50 (OpenAI weights, QuickGELU); the ResNet image tower fully fine-tuned, LoRA on the "
                         "text tower (the paper's appendix setting)."),
}


@hookimpl
def register_classifiers(register):
    for name, factory in PRESETS.items():
        register(name, factory, default=name == "clip-vitb16")  # the paper's classifier
