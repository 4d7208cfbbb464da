"""VariReal: minimal edits of a real shot that change one attribute (background, colour or
texture) to a feasible or an infeasible value (seed paper 002, "Does feasibility matter?").

Two stages and the presets of the paper's study:

- prompt builder ``attributes``: per class, prompts that name one value of the attribute, each a
  ``Prompt(text, info={"attribute", "value", "feasible", "value_source"})``; the core records the
  ``info`` fields in ``metadata.jsonl`` for every image. Values come, in this order, from
  ``values_file`` (a JSON file, e.g. lists an LLM wrote offline as in the paper), from
  ``text_model`` (any transformers causal LM, asked per class and feasibility, greedy, cached in
  ``<run>/varireal-values.json``) and from the built-in lists. The built-in lists are
  class-agnostic (a dog under water is infeasible, a fish is not); the file and the model give
  class-aware values as the paper's LLM did.
- generator ``varireal``: image ``i`` of a class edits shot ``i % K`` (img2img's rule, the source
  recorded in the metadata). The object is masked (SAM prompted with the image centre, or a
  folder of supplied masks), the mask grown by ``dilate`` pixels, and Stable Diffusion inpaints
  the background (attribute ``background``: everything outside the grown object mask) or the
  object (``color``, ``texture``: the grown object mask) with the attribute prompt.

See docs/varireal.md.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ddcore.api import (ConfigError, DataError, Method, Prompt, PromptBuilder, StageError, hookimpl, load_pretrained,
                        option, short_reason)

from .img2img import Img2Img, square_source

TINY = "tiny"
ATTRIBUTES = ("background", "color", "texture")
ALIASES = {"colour": "color"}
FEASIBILITIES = ("feasible", "infeasible", "mixed")
DEFAULT_SEGMENTER = "facebook/sam-vit-base"
VALUES_CACHE = "varireal-values.json"
MASKS_DIR = "varireal-masks"

# Which part of the image an attribute's edit repaints.
EDIT_REGION = {"background": "background", "color": "object", "texture": "object"}

# Prompt templates; ``{a}`` is "a" or "an" for the value that follows it.
TEMPLATES = {
    "background": "a {domain}photo of a {classname} in {value}",
    "color": "a {domain}photo of {a} {value} {classname}",
    "texture": "a {domain}photo of a {classname} {value}",
}

# Class-agnostic values: "feasible" for most everyday objects and animals, "infeasible" for
# (almost) any real object. A class can make them wrong (a fish at the bottom of the ocean is
# feasible): give class-aware values with values_file or text_model.
BUILTIN_VALUES: dict[str, dict[str, list[str]]] = {
    "background": {
        "feasible": [
            "a grassy park", "a city street", "a living room", "a forest", "a sandy beach", "a snowy field",
            "a garden", "a kitchen", "a country road", "a mountain trail", "a parking lot", "a farm field",
        ],
        "infeasible": [
            "the surface of the moon", "the bottom of the ocean", "outer space", "a field of lava",
            "the clouds high in the sky", "a giant teacup", "the surface of the sun", "a bowl of soup",
            "the rings of saturn", "a microwave oven", "a goldfish bowl", "a sea of jelly",
        ],
    },
    "color": {
        "feasible": [
            "black", "white", "brown", "grey", "beige", "dark green", "tan", "cream-coloured", "dark blue",
            "silver", "red", "light brown",
        ],
        "infeasible": [
            "neon pink", "rainbow-striped", "glowing lime green", "polka-dotted purple", "electric blue",
            "checkered orange and blue", "fluorescent yellow", "transparent", "hot magenta", "zebra-striped green",
            "glow-in-the-dark", "iridescent violet",
        ],
    },
    "texture": {
        "feasible": [
            "with a natural texture", "with a matte surface", "with a glossy surface", "with a rough surface",
            "with a smooth surface", "with a weathered surface", "with a fine-grained texture", "with a soft texture",
            "with a slightly worn surface", "with a dusty surface", "with a textured surface", "with a clean surface",
        ],
        "infeasible": [
            "made of glass", "covered in candy sprinkles", "made of lego bricks", "made of melting cheese",
            "made of crumpled paper", "knitted from wool", "made of liquid chrome", "made of ice",
            "covered in jelly beans", "made of chocolate", "made of origami paper", "made of sponge",
        ],
    },
}

# What the language model is asked, per attribute and feasibility ({n}, {classname}).
QUESTIONS = {
    ("background", "feasible"): "List {n} different backgrounds (places or scenes) where a {classname} could "
                                "realistically be photographed, each a short phrase such as 'a grassy park'.",
    ("background", "infeasible"): "List {n} different backgrounds where a {classname} could never realistically be, "
                                  "each a short phrase such as 'the surface of the moon'.",
    ("color", "feasible"): "List {n} colours that a real {classname} can realistically have, each a short phrase "
                           "such as 'brown'.",
    ("color", "infeasible"): "List {n} colours that a real {classname} could never have, each a short phrase such "
                             "as 'neon pink'.",
    ("texture", "feasible"): "List {n} surface textures that a real {classname} can realistically have, each a "
                             "short phrase such as 'with a smooth surface'.",
    ("texture", "infeasible"): "List {n} surface textures or materials that a real {classname} could never have, "
                               "each a short phrase such as 'made of glass'.",
}
ANSWER_FORMAT = " Answer with one per line, without numbering or explanations."

MAX_VALUE_WORDS = 8
MAX_VALUE_CHARS = 60


def canonical_attribute(name: str) -> str:
    attribute = ALIASES.get(name.strip().lower(), name.strip().lower())
    if attribute not in ATTRIBUTES:
        raise ConfigError(f"prompt_builder.attribute must be one of {', '.join(ATTRIBUTES)} (or colour), "
                          f"not {name!r}")
    return attribute


def article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


# --------------------------------------------------------------------------- loading models


class TextGenerator:
    """A causal language model and its tokenizer; :meth:`ask` decodes greedily (deterministic)."""

    def __init__(self, model, tokenizer, identity: str, device: str) -> None:
        self.model, self.tokenizer, self.identity, self.device = model, tokenizer, identity, device

    def ask(self, question: str, max_new_tokens: int) -> str:
        import torch

        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                           tokenize=False)
            encoded = tok(text, return_tensors="pt", add_special_tokens=False)
        else:
            encoded = tok(question + "\n", return_tensors="pt")
        inputs = {k: encoded[k].to(self.device) for k in ("input_ids", "attention_mask") if k in encoded}
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
        return tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


def load_text_generator(spec: str, *, device: str = "cpu", dtype=None) -> TextGenerator:
    """``tiny`` (a tiny random causal LM), a local folder or a hub id of any transformers causal LM."""
    import torch

    dtype = dtype or torch.float32

    def tiny():
        from ddcore.api import tiny_text_generator

        return tiny_text_generator()

    def load(source, **kwargs):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        return AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs), tokenizer

    (model, tokenizer), identity = load_pretrained(spec, what="text generation model",
                                                   use="--set prompt_builder.text_model=DIR", tiny=tiny, load=load)
    return TextGenerator(model.to(device=device, dtype=dtype).eval(), tokenizer, identity, device)


def parse_values(answer: str, classname: str = "") -> list[str]:
    """One value per line or comma: bullets, numbering, quotes and end punctuation removed,
    blanks, over-long entries and entries naming the class dropped, case-insensitive duplicates
    removed (first kept)."""
    values, seen = [], set()
    classname = classname.replace("_", " ").lower()
    for part in re.split(r"[\n,;]+", answer):
        value = re.sub(r"^\s*(?:[-*\u2022]+|\(?\d+[.):]|[a-z][.)](?=\s))\s*", "", part)
        value = " ".join(value.split()).strip(" \"'`.:!?*")
        key = value.lower()
        if (not value or not re.search(r"[a-zA-Z]", value) or len(value) > MAX_VALUE_CHARS
                or len(value.split()) > MAX_VALUE_WORDS
                or (classname and re.search(rf"\b{re.escape(classname)}\b", key.replace("_", " ")))):
            continue
        if key not in seen:
            seen.add(key)
            values.append(value)
    return values


# --------------------------------------------------------------------------- the prompt builder


class AttributePrompts(PromptBuilder):
    """Per class, prompts that name one feasible or infeasible value of one attribute."""

    @dataclass
    class Options:
        attribute: str = option("background", "the attribute the prompts change: background, color (or colour) or "
                                              "texture")
        feasibility: str = option("feasible", "feasible, infeasible, or mixed (half and half, alternating) values")
        values: int = option(10, "values per class (mixed: half of them feasible, rounded up)")
        values_file: str = option("", 'a JSON file of values, used first: {"background": {"feasible": [...], ...}} '
                                      'and/or {"<class>": {...}}; empty: none')
        text_model: str = option("", "a causal LM asked for the values the file lacks (tiny, a local folder or hub "
                                     "id); empty: none, the built-in lists fill up")
        max_new_tokens: int = option(200, "the longest answer of text_model, in new tokens (greedy decoding)")
        template: str = option("", "the prompt; may use {classname}, {value}, {domain}, {a}; empty: the attribute's")
        domain: bool = option(False, "put the data set's domain word before 'photo'")
        dtype: str = option("auto", "text_model's dtype: auto (fp16 on a GPU, fp32 on the CPU), fp32, fp16 or bf16")

        def __post_init__(self) -> None:
            self.attribute = canonical_attribute(self.attribute)
            if self.feasibility not in FEASIBILITIES:
                raise ConfigError(f"prompt_builder.feasibility must be one of {', '.join(FEASIBILITIES)}, "
                                  f"not {self.feasibility!r}")
            if self.values < 1 or self.max_new_tokens < 1:
                raise ConfigError("prompt_builder.values and prompt_builder.max_new_tokens must be at least 1")
            template = self.template or TEMPLATES[self.attribute]
            if "{value}" not in template or "{classname}" not in template:
                raise ConfigError(f"prompt_builder.template must contain {{classname}} and {{value}}: {template!r}")
            try:
                template.format(classname="x", value="y", domain="", a="a")
            except (KeyError, IndexError, ValueError):
                raise ConfigError(f"prompt_builder.template may only use {{classname}}, {{value}}, {{domain}} and "
                                  f"{{a}}: {template!r}") from None

    def fingerprint(self, context):
        """The values file's contents: editing the file makes new prompts (and a new set)."""
        from ddcore.api import file_sha256

        path = Path(self.options.values_file).expanduser() if self.options.values_file else None
        return {"values_file": file_sha256(path)} if path is not None and path.is_file() else None

    def wanted(self) -> dict[bool, int]:
        """How many values of each feasibility a class gets."""
        n, mode = self.options.values, self.options.feasibility
        if mode == "mixed":
            half = -(-n // 2)
            return {True: half, False: half}
        return {mode == "feasible": n}

    def build(self, context):
        o = self.options
        file_values = self._read_values_file(context)
        answers = self._model_answers(context, file_values) if o.text_model else {}
        template = o.template or TEMPLATES[o.attribute]
        domain = context.dataset.domain if o.domain else ""
        prompts: dict[int, list[Prompt]] = {}
        for label, name in enumerate(context.dataset.classnames):
            chosen = {}
            for feasible, n in self.wanted().items():
                chosen[feasible] = self._values(name, feasible, n, file_values, answers)
            if o.feasibility == "mixed":
                pairs = min(len(chosen[True]), len(chosen[False]))
                ordered = [v for k in range(pairs) for v in ((True, chosen[True][k]), (False, chosen[False][k]))]
            else:
                ((feasible, values),) = chosen.items()
                ordered = [(feasible, v) for v in values]
            if not ordered:
                raise StageError(f"prompt builder 'attributes' found no {o.feasibility} {o.attribute} value for "
                                 f"class '{name}'")
            prompts[label] = [
                Prompt(template.format(classname=name, value=value, domain=domain, a=article(value)),
                       info={"attribute": o.attribute, "value": value, "feasible": feasible, "value_source": source})
                for feasible, (value, source) in ordered
            ]
        return prompts

    # -- where values come from -------------------------------------------------------------

    def _values(self, classname, feasible, n, file_values, answers) -> list[tuple[str, str]]:
        """The first ``n`` distinct values: the file's, the model's, then the built-in list's."""
        key = "feasible" if feasible else "infeasible"
        candidates = [(v, "file") for v in file_values.get(classname, {}).get(key, [])]
        if self.options.text_model:
            candidates += [(v, "model") for v in parse_values(answers.get((classname, key), ""), classname)]
        candidates += [(v, "builtin") for v in BUILTIN_VALUES[self.options.attribute][key]]
        chosen, seen = [], set()
        for value, source in candidates:
            if value.lower() not in seen:
                seen.add(value.lower())
                chosen.append((value, source))
        return chosen[:n]

    def _read_values_file(self, context) -> dict[str, dict[str, list[str]]]:
        """{classname: {"feasible": [...], "infeasible": [...]}} for this attribute, from the file:
        top-level attribute keys apply to every class, class-name keys to that class (first)."""
        if not self.options.values_file:
            return {}
        path = Path(self.options.values_file).expanduser()
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"prompt_builder.values_file: no such file {path}") from None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"prompt_builder.values_file {path} is not valid JSON: {short_reason(exc)}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"prompt_builder.values_file {path} must hold a JSON object")
        dataset = context.dataset
        # A class is named by its class name or its folder name.
        key_of = {name: name for name in dataset.classnames}
        key_of.update({folder: name for folder, name in zip(dataset.class_dirs, dataset.classnames)})
        unknown = [k for k in raw if ALIASES.get(k, k) not in ATTRIBUTES and k not in key_of]
        if unknown:
            raise ConfigError(f"prompt_builder.values_file {path}: {', '.join(map(repr, unknown[:5]))} is neither an "
                              f"attribute ({', '.join(ATTRIBUTES)}) nor a class of the data set")

        def section(table: Any, where: str) -> dict[str, list[str]]:
            table = {ALIASES.get(k, k): v for k, v in table.items()} if isinstance(table, dict) else None
            if table is None:
                raise ConfigError(f"prompt_builder.values_file {path}: {where} must be a JSON object")
            entry = table.get(self.options.attribute, {})
            if not isinstance(entry, dict) or not all(
                    isinstance(v, list) and all(isinstance(s, str) for s in v) for v in entry.values()):
                raise ConfigError(f"prompt_builder.values_file {path}: {where}.{self.options.attribute} must map "
                                  f"feasible/infeasible to lists of strings")
            return {k: [" ".join(s.split()) for s in entry.get(k, []) if s.strip()] for k in ("feasible", "infeasible")}

        shared = section({k: v for k, v in raw.items() if ALIASES.get(k, k) in ATTRIBUTES}, "the top level")
        result = {name: dict(shared) for name in dataset.classnames}
        for key, table in raw.items():
            if key in key_of:
                own = section(table, repr(key))
                result[key_of[key]] = {k: own[k] + result[key_of[key]][k] for k in ("feasible", "infeasible")}
        return result

    # -- the language model -----------------------------------------------------------------

    def cache_key(self, identity: str, classname: str, feasibility: str, n: int) -> str:
        from ddcore.api import digest

        return digest({"model": identity, "class": classname, "attribute": self.options.attribute,
                       "feasibility": feasibility, "values": n, "max_new_tokens": self.options.max_new_tokens,
                       "question": QUESTIONS[(self.options.attribute, feasibility)] + ANSWER_FORMAT})

    def _model_answers(self, context, file_values) -> dict[tuple[str, str], str]:
        """The model's raw answer per (class, "feasible"/"infeasible"); asked once, cached in
        ``<run>/varireal-values.json``. With several processes the main one asks."""
        if context.world_size > 1:
            from ddcore.api import ProcessInfo, wait_for_everyone

            if context.is_main:
                self._ask_all(context, file_values)
            wait_for_everyone(ProcessInfo(context.rank, context.world_size))
        return self._ask_all(context, file_values)

    def _ask_all(self, context, file_values) -> dict[tuple[str, str], str]:
        from ddcore.api import atomic_write_json, model_identity

        path = Path(context.out) / VALUES_CACHE
        try:
            cache = json.loads(path.read_text()).get("answers", {}) if path.is_file() else {}
        except (ValueError, AttributeError):
            cache = {}  # unreadable: asked again and rewritten
        identity = model_identity(self.options.text_model)
        generator: TextGenerator | None = None
        answers = {}
        for name in context.dataset.classnames:
            for feasible, n in self.wanted().items():
                key = "feasible" if feasible else "infeasible"
                if len(file_values.get(name, {}).get(key, [])) >= n:
                    continue  # the file gives enough: nothing to ask
                digest_key = self.cache_key(identity, name, key, n)
                if digest_key not in cache:
                    if generator is None:
                        from ddcore.api import torch_dtype

                        context.reporter.log(f"asking '{self.options.text_model}' for {self.options.attribute} "
                                             f"values -> {path}")
                        generator = load_text_generator(self.options.text_model, device=context.device,
                                                        dtype=torch_dtype(self.options.dtype, context.device))
                    question = QUESTIONS[(self.options.attribute, key)].format(n=n, classname=name)
                    answer = generator.ask(question + ANSWER_FORMAT, self.options.max_new_tokens)
                    cache[digest_key] = {"model": identity, "class": name, "attribute": self.options.attribute,
                                         "feasibility": key, "values": n, "question": question,
                                         "answer": answer}
                    atomic_write_json(path, {"answers": cache})  # after each answer: resumable
                answers[(name, key)] = cache[digest_key]["answer"]
        return answers


# --------------------------------------------------------------------------- masks


def dilate(mask, pixels: int):
    """``mask`` (bool array) grown by ``pixels`` in every direction (a square structuring element)."""
    import numpy as np
    from PIL import Image, ImageFilter

    if pixels <= 0:
        return mask
    image = Image.fromarray(mask.astype(np.uint8) * 255)
    return np.asarray(image.filter(ImageFilter.MaxFilter(2 * pixels + 1))) > 127


def square_mask(image, resolution: int, fit: str):
    """A mask image made square and resized like its source (``square_source``), as a bool
    array (white = object)."""
    import numpy as np

    return np.asarray(square_source(image.convert("L"), resolution, fit)) > 127


class SamSegmenter:
    """A transformers SAM prompted with one point, the image centre; the mask with the highest
    predicted IoU of SAM's three is kept."""

    def __init__(self, spec: str, device: str) -> None:
        def tiny():
            from ddcore.api import tiny_sam

            return tiny_sam()

        def load(source, **kwargs):
            from transformers import SamModel, SamProcessor

            processor = SamProcessor.from_pretrained(source, **kwargs)
            return SamModel.from_pretrained(source, **kwargs), processor

        (model, self.processor), self.identity = load_pretrained(
            spec, what="segmentation model (SAM)", use="--set generator.segmenter=DIR", tiny=tiny, load=load)
        self.model, self.device = model.to(device).eval(), device

    def object_mask(self, image):
        """Bool array (height, width): True on the object under the centre point."""
        import torch

        width, height = image.size
        inputs = self.processor(images=image, input_points=[[[width / 2, height / 2]]], return_tensors="pt")
        dtype = next(self.model.parameters()).dtype
        pixel_values = inputs["pixel_values"].to(self.device, dtype=dtype)
        with torch.inference_mode():
            out = self.model(pixel_values=pixel_values, input_points=inputs["input_points"].to(self.device),
                             multimask_output=True)
        masks = self.processor.post_process_masks(out.pred_masks.float().cpu(), inputs["original_sizes"],
                                                  inputs["reshaped_input_sizes"])[0]  # [points, 3, H, W]
        best = int(out.iou_scores[0, 0].float().argmax())
        return masks[0, best].numpy().astype(bool)


# --------------------------------------------------------------------------- the generator


def load_inpaint_pipeline(model: str, *, device: str, dtype=None):
    """A dedicated inpainting checkpoint (hub id or diffusers folder) as a
    ``StableDiffusionInpaintPipeline``; one-line :class:`ModelNotFoundError` when not reachable."""
    import torch
    from diffusers import StableDiffusionInpaintPipeline

    from ddcore.api import load_sd_pipeline

    return load_sd_pipeline(model, device=device, dtype=dtype or torch.float32,
                            pipeline_class=StableDiffusionInpaintPipeline, what="inpainting model",
                            use="--set generator.inpaint_model=DIR")


def relative_mask_name(path: Path, root: Path | None) -> Path:
    """``path`` relative to the data root (its name alone when outside it), with ``.png``."""
    path = Path(path)
    if root is not None:
        try:
            return path.resolve().relative_to(Path(root).resolve()).with_suffix(".png")
        except ValueError:
            pass
    return Path(path.name).with_suffix(".png")


class VariRealGenerator(Img2Img):
    """Inpaints the background or the object of a real shot with the attribute prompt."""

    pretrained_options = ("segmenter",)

    @dataclass
    class Options(Img2Img.Options):
        strength: float = option(1.0, "how much noise the edited region starts from, in (0, 1]; 1: it is repainted "
                                      "from pure noise")
        source_fit: str = option("crop", "how a shot and its mask become square: crop (a padded border would be "
                                         "background to fill) or pad")
        mask: str = option("sam", "sam (segment the object at the image centre) or folder (supplied masks, mask_dir)")
        segmenter: str = option(DEFAULT_SEGMENTER, 'a transformers SAM hub id or folder, or tiny', demo='tiny')
        mask_dir: str = option("", "for mask=folder: <mask_dir>/<shot path relative to the data root>.png, white = "
                                   "object")
        dilate: int = option(4, "pixels the object mask grows by before use (at --resolution)")
        region: str = option("auto", "what the edit repaints: auto (from the prompt's attribute), background or object")
        inpaint_model: str = option("", "a dedicated inpainting checkpoint (hub id or folder); empty: the base model's "
                                        "modules")
        paste_back: bool = option(False, "copy the source's pixels back outside the edited region after decoding")

        def __post_init__(self) -> None:
            super().__post_init__()
            if self.mask not in ("sam", "folder"):
                raise ConfigError(f"generator.mask must be sam or folder, not {self.mask!r}")
            if self.mask == "folder" and not self.mask_dir:
                raise ConfigError("generator.mask=folder needs generator.mask_dir=DIR (one PNG per shot, white = "
                                  "object)")
            if self.dilate < 0:
                raise ConfigError(f"generator.dilate must be 0 or more pixels, not {self.dilate}")
            if self.region not in ("auto", "background", "object"):
                raise ConfigError(f"generator.region must be auto, background or object, not {self.region!r}")

    def setup(self, context, adapter_dir):
        o = self.options
        if o.mask == "folder" and not Path(o.mask_dir).expanduser().is_dir():
            raise DataError(f"generator.mask_dir {Path(o.mask_dir).expanduser()} is not a folder")
        super().setup(context, adapter_dir)  # img2img's checks, the base pipeline, the adapter
        self._masks: dict[Path, Any] = {}
        self.segmenter = SamSegmenter(o.segmenter, context.device) if o.mask == "sam" else None

    def fingerprint(self, context):
        """The supplied masks of the run's shots: editing one makes a new set."""
        from ddcore.api import file_sha256

        if self.options.mask != "folder":
            return None
        folder = Path(self.options.mask_dir).expanduser()
        files = {str(name): file_sha256(folder / name) if (folder / name).is_file() else None
                 for name in sorted({relative_mask_name(s.path, context.dataset.root) for s in context.shots})}
        return {"masks": files}

    def load_base(self, context):
        """A dedicated inpainting checkpoint replaces the base model (adapters load into it)."""
        if not self.options.inpaint_model:
            return super().load_base(context)
        from ddcore.api import torch_dtype

        return load_inpaint_pipeline(self.options.inpaint_model, device=context.device,
                                     dtype=torch_dtype(self.options.dtype, context.device))

    def image_pipeline(self):
        from diffusers import StableDiffusionInpaintPipeline

        if isinstance(self.base, StableDiffusionInpaintPipeline):
            return self.base
        # The base (4-channel) UNet: diffusers keeps the source outside the edited region by
        # putting the source latents, noised to the current step, back there after every step.
        return StableDiffusionInpaintPipeline(**self.base.components, requires_safety_checker=False)

    # -- masks ------------------------------------------------------------------------------

    def object_mask(self, source: Path):
        """The object mask of a shot at --resolution (bool array), computed once per shot and
        saved as ``<run>/varireal-masks/<shot path relative to the data root>.png``."""
        from PIL import Image

        from ddcore.api import atomic_save_image

        path = self.resolve(Path(source))
        if path in self._masks:
            return self._masks[path]
        name = relative_mask_name(path, self.context.dataset.root)
        if self.options.mask == "folder":
            file = Path(self.options.mask_dir).expanduser() / name
            if not file.is_file():
                raise DataError(f"generator.mask=folder: no mask for shot {path}; expected {file} (white = object)")
            from ddcore.api import load_rgb

            mask = square_mask(load_rgb(file), self.context.config.resolution, self.options.source_fit)
        else:
            mask = self.segmenter.object_mask(self._source_image(path))
        self._masks[path] = mask
        if not 0.01 <= mask.mean() <= 0.99:  # a segmenter that missed the object: the edit is (nearly) empty
            self.context.reporter.log(
                f"[yellow]the object mask of shot {path} covers {100 * mask.mean():.0f}% of the image[/]; the "
                f"edit will change {'nothing' if mask.mean() > 0.99 else 'almost everything'} there. Check "
                f"{Path(self.context.out) / MASKS_DIR / name} or supply masks (generator.mask=folder)")
        atomic_save_image(Path(self.context.out) / MASKS_DIR / name, Image.fromarray(mask.astype("uint8") * 255))
        return mask

    def region(self, item) -> str:
        """``background`` or ``object``: what the edit of ``item`` repaints."""
        if self.options.region != "auto":
            return self.options.region
        attribute = item.prompt.info.get("attribute")
        if attribute is None:
            raise StageError("generator 'varireal' needs prompts that name their attribute (prompt builder "
                             "'attributes'), or set generator.region=background or generator.region=object")
        return EDIT_REGION[canonical_attribute(attribute)]

    def edit_mask(self, item):
        """Bool array, True where the edit repaints: outside the grown object mask (background)
        or inside it (object)."""
        grown = dilate(self.object_mask(self.source(item)), self.options.dilate)
        return ~grown if self.region(item) == "background" else grown

    # -- rendering --------------------------------------------------------------------------

    def generate(self, items):
        import numpy as np
        import torch
        from PIL import Image

        resolution = self.context.config.resolution
        sources = [self._source_image(self.source(item)) for item in items]
        edits = [self.edit_mask(item) for item in items]
        masks = [Image.fromarray(e.astype(np.uint8) * 255) for e in edits]
        with torch.inference_mode():
            images = self.pipe(**self.call_arguments(items), image=sources, mask_image=masks,
                               strength=self.options.strength, height=resolution, width=resolution).images
        if self.options.paste_back:
            images = [Image.fromarray(np.where(e[..., None], np.asarray(img.convert("RGB")), np.asarray(src)))
                      for img, src, e in zip(images, sources, edits)]
        return images

    def metadata(self):
        o = self.options
        return {
            **super().metadata(),
            "mask": o.mask,
            "segmenter": self.segmenter.identity if self.segmenter is not None else None,
            "mask_prompt": "image centre point, highest predicted IoU" if o.mask == "sam" else None,
            "mask_dir": str(Path(o.mask_dir).expanduser().resolve()) if o.mask == "folder" else None,
            "edit_region_rule": ("auto: background -> outside the object, color/texture -> the object"
                                 if o.region == "auto" else o.region),
            "dilate": o.dilate,
            "inpaint_model": self.base_identity if o.inpaint_model else "base model (latent blending)",
            "paste_back": o.paste_back,
        }

    def item_metadata(self, item):
        edit = self.edit_mask(item)
        return {"edit_region": self.region(item), "edited_fraction": round(float(edit.mean()), 4)}


@hookimpl
def register_prompt_builders(register):
    register("attributes", AttributePrompts)


@hookimpl
def register_generators(register):
    register("varireal", VariRealGenerator)


@hookimpl
def register_methods(register):
    common = dict(adapter="none", prompt_builder="attributes", generator="varireal", filter="none",
                  train_on="real+synthetic")
    from .fidelity import PROTOCOLS

    register("varireal", Method(
        **common, protocol=PROTOCOLS["varireal"],
        description="VariReal (seed paper 002): inpaint the background of a real shot (SAM object mask) with a "
                    "feasible background; --set prompt_builder.attribute=color|texture, feasibility=infeasible|mixed",
    ))
    for attribute in ATTRIBUTES:
        for feasibility in FEASIBILITIES:
            what = "background" if attribute == "background" else f"object's {attribute}"
            register(f"varireal-{attribute}-{feasibility}", Method(
                **common,
                options={"prompt_builder.attribute": attribute, "prompt_builder.feasibility": feasibility},
                description=f"VariReal study: the {what} of a real shot inpainted with {feasibility} values",
            ))


__all__ = ["AttributePrompts", "SamSegmenter", "TextGenerator", "VariRealGenerator", "load_text_generator",
           "parse_values"]
