"""Prompt builder ``captions`` and the ``disef`` method (da Costa et al., 2023).

DISEF starts img2img from a noised real shot and prompts it with the caption an image
captioner wrote for a DIFFERENT real shot of the same class, for diversity; a CLIP filter
(``clip``, in ``clip_filter``) then drops images zero-shot CLIP does not assign to their class.

Prompts. With K shots of a class, prompt ``p = (o - 1) * K + s`` (``o = 1..K-1``) starts from
shot ``s`` (``Prompt.source``) and carries the caption of shot ``(s + o) % K``: image ``i`` uses
prompt ``i % len(prompts)``, so image ``i`` is seeded by shot ``i % K`` and, for the first K
images, captioned from shot ``(s + 1) % K``; later images go through every other shot in turn.
That is DISEF's pairing (its code draws a random caption of the class for each image) made
deterministic. With ``other_shot=false``, or K = 1, a shot gets its own caption (one shot has no
other to borrow from).

Captions. Any transformers image-to-text model, by hub id or local folder: BLIP-style models
continue ``prefix`` (conditional captioning); chat models (LLaVA-style, those whose processor has a
chat template) answer ``query``; a ViT-GPT2 ``VisionEncoderDecoder`` captions unconditionally.
The prompt is always ``prefix`` followed by the new caption text, so it names the class even when
the caption does not. DISEF's reference code asks LLaVA-1.5 "Provide a detailed caption for the
image focusing on the object, knowing it's a {classname}." for that reason ("the final caption will
almost surely include the class name") and uses the caption alone: ``query`` is that question, and
the ``disef`` presets do that (LLaVA-1.5-7B, no prefix). The builder's own default captioner is
BLIP-large (much smaller than LLaVA-7B), with the prefix "a photo of a {classname}," --
DataDream's own class prompt -- given to it to continue.

Decoding is greedy, so a caption depends only on the image and the settings. Captions are cached
in ``<run>/captions/<settings digest>.json``, one entry per image path with the file's SHA-256
and the conditioning text; a rerun, or another method on the same run folder, reuses them and
recaptions only images whose file changed. With several processes the main one captions and the
others read its cache, so every process uses the same prompts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ddcore.api import ConfigError, Method, Prompt, PromptBuilder, StageError, file_sha256, hookimpl, option

DEFAULT_CAPTIONER = "Salesforce/blip-image-captioning-large"
DISEF_QUERY = "Provide a detailed caption for the image focusing on the object, knowing it's a {classname}."
CACHE_DIR = "captions"


# --------------------------------------------------------------------------- loading


class _ImageOnlyProcessor:
    """An image processor and a tokenizer, for models saved without a processor
    (ViT-GPT2 ``VisionEncoderDecoder`` captioners): images in, no text conditioning."""

    chat_template = None
    conditional = False

    def __init__(self, image_processor, tokenizer) -> None:
        self.image_processor, self.tokenizer = image_processor, tokenizer

    def __call__(self, images, text=None, return_tensors="pt", **_):
        return self.image_processor(images=images, return_tensors=return_tensors)

    def batch_decode(self, ids, **kwargs):
        return self.tokenizer.batch_decode(ids, **kwargs)


def _from_pretrained(source: str, dtype, **kwargs):
    from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

    processor = AutoProcessor.from_pretrained(source, **kwargs)
    if not hasattr(processor, "image_processor"):  # no processor_config: a bare tokenizer or image processor
        processor = _ImageOnlyProcessor(AutoImageProcessor.from_pretrained(source, **kwargs),
                                        AutoTokenizer.from_pretrained(source, **kwargs))
    model = AutoModelForImageTextToText.from_pretrained(source, dtype=dtype, **kwargs)
    return model, processor


def load_captioner(spec: str, *, device: str = "cpu", dtype=None) -> "Captioner":
    """``tiny`` (a tiny random BLIP), a local transformers model folder, or a hub id
    (``HF_HOME`` / ``HF_HUB_CACHE`` / ``HF_HUB_OFFLINE`` honoured). A model that cannot be found
    raises a one-line :class:`ModelNotFoundError` saying how to use a local folder."""
    import torch

    from ddcore.api import load_pretrained

    dtype = dtype or torch.float32

    def tiny():
        from ddcore.api import tiny_captioner

        model, processor = tiny_captioner()
        return model.to(dtype=dtype), processor

    (model, processor), identity = load_pretrained(spec, what="captioning model", use="--set prompt_builder.model=DIR",
                                                   tiny=tiny, load=lambda source, **kw: _from_pretrained(source, dtype, **kw))
    return Captioner(model.to(device).eval(), processor, identity, device)


class Captioner:
    """An image-to-text model with its processor; :meth:`caption` is greedy, so deterministic."""

    def __init__(self, model, processor, identity: str, device: str) -> None:
        self.model, self.processor, self.identity, self.device = model, processor, identity, device
        self.chat = getattr(processor, "chat_template", None) is not None
        self.conditional = getattr(processor, "conditional", True) and not self.chat
        tokenizer = getattr(processor, "tokenizer", None)
        if self.chat and tokenizer is not None:
            tokenizer.padding_side = "left"  # decoder-only models continue the prompt's last token

    def caption(self, images: list, prefix: str, query: str, max_new_tokens: int) -> list[str]:
        """The new text for each image (the prefix not included)."""
        import torch

        n = len(images)
        if self.chat:
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": query}]}]
            text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            inputs = self.processor(images=images, text=[text] * n, return_tensors="pt", padding=True)
        elif self.conditional and prefix:
            inputs = self.processor(images=images, text=[prefix] * n, return_tensors="pt", padding=True)
        else:
            inputs = self.processor(images=images, return_tensors="pt")
        dtype = next(self.model.parameters()).dtype
        inputs = inputs.to(self.device, dtype=dtype)  # casts only the floating tensors (pixels)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        ids = inputs.get("input_ids")
        width = ids.shape[1] if ids is not None else 0
        if ids is not None and out.shape[1] >= width and torch.equal(out[:, :width], ids):
            # a decoder-only model returns the prompt then the answer
            return [_clean(t) for t in self.processor.batch_decode(out[:, width:], skip_special_tokens=True)]
        texts = self.processor.batch_decode(out, skip_special_tokens=True)
        if ids is None:
            return [_clean(t) for t in texts]
        # BLIP returns the prompt re-tokenised (start token swapped, lower-cased): drop its decoded form
        prompts = self.processor.batch_decode(ids, skip_special_tokens=True)
        return [_clean(_strip_prompt(t, p)) for t, p in zip(texts, prompts)]

    def close(self) -> None:
        import torch

        self.model = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _strip_prompt(text: str, prompt: str) -> str:
    prompt = prompt.strip()
    at = text.find(prompt) if prompt else -1
    return text[at + len(prompt):] if 0 <= at <= 2 else text


def _clean(text: str) -> str:
    return " ".join(text.split()).strip(" ,")


# --------------------------------------------------------------------------- the cache




class CaptionCache:
    """``{image path: {"sha256", "prefix", "query", "caption"}}`` in one JSON file, written atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, dict] = {}
        if path.is_file():
            try:
                self.entries = json.loads(path.read_text()).get("captions", {})
            except (ValueError, AttributeError):
                self.entries = {}  # unreadable: everything is recaptioned and the file rewritten

    def get(self, image: Path, sha: str, conditioning: dict[str, str]) -> str | None:
        entry = self.entries.get(str(image))
        if entry and entry.get("sha256") == sha and all(entry.get(k) == v for k, v in conditioning.items()):
            return entry["caption"]
        return None

    def put(self, image: Path, sha: str, conditioning: dict[str, str], caption: str) -> None:
        self.entries[str(image)] = {"sha256": sha, **conditioning, "caption": caption}

    def save(self, settings: dict) -> None:
        from ddcore.api import atomic_write_json

        atomic_write_json(self.path, {"settings": settings, "captions": dict(sorted(self.entries.items()))})


# --------------------------------------------------------------------------- the prompt builder


class CaptionPrompts(PromptBuilder):
    """Captions of the real shots from an image captioner; image i starts from one shot and is
    prompted with the caption of another shot of its class (DISEF)."""

    @dataclass
    class Options:
        model: str = option(DEFAULT_CAPTIONER, 'a hub id, a local transformers folder, or tiny', demo='tiny')
        max_new_tokens: int = option(40, "the longest caption, in new tokens (greedy decoding; the disef presets: 77)")
        prefix: str = option("a photo of a {classname},", "the prompt's start, may use {classname}; BLIP-style "
                                                         "captioners continue it (the disef presets: none)")
        query: str = option(DISEF_QUERY, "the question chat captioners (LLaVA-style) answer, may use {classname} "
                                         "(DISEF's code's)")
        other_shot: bool = option(True, "prompt with the caption of a different shot of the class (DISEF); false: "
                                        "the shot's own")
        batch_size: int = option(8, "images captioned at once")
        dtype: str = option("auto", "captioner dtype: auto (fp16 on a GPU, fp32 on the CPU), fp32, fp16 or bf16")

    def __init__(self, options=None) -> None:
        super().__init__(options)
        for name in ("prefix", "query"):
            try:
                getattr(self.options, name).format(classname="x")
            except (KeyError, IndexError, ValueError):
                raise ConfigError(f"prompt_builder.{name} may only use {{classname}}: "
                                  f"{getattr(self.options, name)!r}") from None
        if self.options.max_new_tokens < 1 or self.options.batch_size < 1:
            raise ConfigError("prompt_builder.max_new_tokens and prompt_builder.batch_size must be at least 1")

    def settings(self) -> dict:
        """What a caption depends on besides its image and conditioning text (names the cache file)."""
        from ddcore.api import model_identity

        o = self.options
        return {"model": model_identity(o.model), "max_new_tokens": o.max_new_tokens, "dtype": o.dtype}

    def cache_path(self, context) -> Path:
        from ddcore.api import digest

        return Path(context.out) / CACHE_DIR / f"{digest(self.settings())}.json"

    def build(self, context):
        by_class = context.shots_by_class()
        empty = [context.dataset.classnames[c] for c, shots in by_class.items() if not shots]
        if empty:
            raise StageError(f"prompt builder 'captions' needs real shots to caption; none for class(es): "
                             f"{', '.join(empty[:5])}")
        if context.world_size > 1:
            from ddcore.api import ProcessInfo, wait_for_everyone

            if context.is_main:
                self.captions(context)
            wait_for_everyone(ProcessInfo(context.rank, context.world_size))  # the others read the main's cache
        captions = self.captions(context)
        prompts = {}
        for label, shots in by_class.items():
            name = context.dataset.classnames[label]
            prefix = self.options.prefix.format(classname=name).strip()
            texts = [_join(prefix, captions[str(shot.path)], name) for shot in shots]
            k = len(shots)
            offsets = range(1, k) if self.options.other_shot and k > 1 else range(0, 1)
            prompts[label] = [Prompt(texts[(s + o) % k], source=shots[s].path) for o in offsets for s in range(k)]
        return prompts

    def captions(self, context) -> dict[str, str]:
        """Caption every shot once (cached); returns {str(shot path): caption}."""
        cache = CaptionCache(self.cache_path(context))
        result: dict[str, str] = {}
        todo: list[tuple[dict[str, str], list]] = []  # per class: its conditioning and its uncached shots
        for label, shots in context.shots_by_class().items():
            name = context.dataset.classnames[label]
            # Both texts key the entry whatever the model uses, so nothing is loaded to look it up.
            conditioning = {"prefix": self.options.prefix.format(classname=name).strip(),
                            "query": self.options.query.format(classname=name)}
            missing = []
            for shot in shots:
                sha = file_sha256(shot.path)
                found = cache.get(shot.path, sha, conditioning)
                if found is None:
                    missing.append((shot, sha))
                else:
                    result[str(shot.path)] = found
            if missing:
                todo.append((conditioning, missing))
        if todo:
            self._caption(context, cache, todo, result)
        return result

    def _caption(self, context, cache: CaptionCache, todo: list[tuple[dict[str, str], list]],
                 result: dict[str, str]) -> None:
        """Caption the shots of ``todo`` into ``cache`` and ``result``, a bar counting images."""
        from PIL import Image

        from ddcore.api import torch_dtype

        context.reporter.log(f"captioning the real shots with '{self.options.model}' -> {cache.path}")
        # Loaded before the bar opens: the bar's rate and eta count captioning only.
        captioner = load_captioner(self.options.model, device=context.device,
                                   dtype=torch_dtype(self.options.dtype, context.device))
        try:
            total = sum(len(missing) for _, missing in todo)
            with context.reporter.task("captioning real shots", total) as advance:
                for conditioning, missing in todo:
                    for start in range(0, len(missing), self.options.batch_size):
                        batch = missing[start:start + self.options.batch_size]
                        images = []
                        for shot, _ in batch:
                            with Image.open(shot.path) as image:
                                images.append(image.convert("RGB"))
                        texts = captioner.caption(images, conditioning["prefix"], conditioning["query"],
                                                  self.options.max_new_tokens)
                        for (shot, sha), text in zip(batch, texts):
                            cache.put(shot.path, sha, conditioning, text)
                            result[str(shot.path)] = text
                        advance(len(batch))
                    cache.save(self.settings())  # after each class: an interruption keeps what was done
        finally:
            captioner.close()


def _join(prefix: str, caption: str, classname: str) -> str:
    text = " ".join(part for part in (prefix, caption) if part)
    return text or f"a photo of a {classname}"


@hookimpl
def register_prompt_builders(register):
    register("captions", CaptionPrompts)


# DISEF's captions: LLaVA-1.5 answers DISEF's question, and the caption alone is the prompt
# (CLIP's tokenizer truncates it at 77 tokens, as in DISEF's code).
LLAVA = "llava-hf/llava-1.5-7b-hf"
DISEF_CAPTIONS = {"prompt_builder.model": LLAVA, "prompt_builder.prefix": "", "prompt_builder.max_new_tokens": 77}


@hookimpl
def register_methods(register):
    from .fidelity import PROTOCOLS
    from .img2img import DISEF_GENERATION, DISEF_GENERATOR

    register("disef", Method(
        adapter="none", prompt_builder="captions", generator="img2img", filter="none", train_on="real+synthetic",
        options={**DISEF_CAPTIONS, **DISEF_GENERATOR}, settings=dict(DISEF_GENERATION),
        protocol=PROTOCOLS["disef"],
        description="DISEF as DataDream's Table 1 ran it: img2img from a real shot (DPM-Solver, 20 steps, strength "
                    "0.75, guidance 8), prompted with LLaVA-1.5's caption of another shot of its class; unfiltered",
    ))
    register("disef-original", Method(
        adapter="none", prompt_builder="captions", generator="img2img", filter="clip", train_on="real+synthetic",
        options={**DISEF_CAPTIONS, **DISEF_GENERATOR}, settings=dict(DISEF_GENERATION),
        protocol=PROTOCOLS["disef-original"],
        description="DISEF as its own paper ran it: as disef, then a CLIP ViT-H/14 filter keeps an image only if "
                    "zero-shot CLIP assigns it to its class (DISEF used 64 images per class on Realistic Vision 2.0)",
    ))


__all__ = ["CaptionCache", "CaptionPrompts", "Captioner", "load_captioner"]
