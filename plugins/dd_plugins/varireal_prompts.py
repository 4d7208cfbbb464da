"""VariReal's prompt builder ``attributes``: per class, prompts that name one feasible or
infeasible value of one attribute (background, colour or texture), the values taken from a
JSON file, a language model (varireal_text) and the built-in lists."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ddcore.api import ConfigError, Prompt, PromptBuilder, StageError, option

from .varireal_text import ANSWER_FORMAT, QUESTIONS, load_text_generator, parse_values

ATTRIBUTES = ("background", "color", "texture")
ALIASES = {"colour": "color"}
FEASIBILITIES = ("feasible", "infeasible", "mixed")
VALUES_CACHE = "varireal-values.json"

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


def canonical_attribute(name: str) -> str:
    attribute = ALIASES.get(name.strip().lower(), name.strip().lower())
    if attribute not in ATTRIBUTES:
        raise ConfigError(f"prompt_builder.attribute must be one of {', '.join(ATTRIBUTES)} (or colour), "
                          f"not {name!r}")
    return attribute


def article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


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
            from ddcore.api import short_reason

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
        from ddcore.api import model_identity

        path = Path(context.out) / VALUES_CACHE
        try:
            cache = json.loads(path.read_text()).get("answers", {}) if path.is_file() else {}
        except (ValueError, AttributeError):
            cache = {}  # unreadable: asked again and rewritten
        identity = model_identity(self.options.text_model)
        keys: dict[tuple[str, str], str] = {}  # (class, feasibility) -> its cache key
        questions: list[tuple[str, str, int, str]] = []  # what is not cached: (class, feasibility, n, key)
        for name in context.dataset.classnames:
            for feasible, n in self.wanted().items():
                key = "feasible" if feasible else "infeasible"
                if len(file_values.get(name, {}).get(key, [])) >= n:
                    continue  # the file gives enough: nothing to ask
                keys[(name, key)] = self.cache_key(identity, name, key, n)
                if keys[(name, key)] not in cache:
                    questions.append((name, key, n, keys[(name, key)]))
        if questions:
            self._ask(context, questions, identity, cache, path)
        return {pair: cache[digest_key]["answer"] for pair, digest_key in keys.items()}

    def _ask(self, context, questions: list[tuple[str, str, int, str]], identity: str, cache: dict,
             path: Path) -> None:
        """Ask the model ``questions`` into ``cache`` (written after each answer), a bar counting them."""
        from ddcore.api import atomic_write_json, torch_dtype

        attribute = self.options.attribute
        context.reporter.log(f"asking '{self.options.text_model}' for {attribute} values -> {path}")
        # Loaded before the bar opens: the bar's rate and eta count the answers only.
        generator = load_text_generator(self.options.text_model, device=context.device,
                                        dtype=torch_dtype(self.options.dtype, context.device))
        with context.reporter.task(f"asking the language model for {attribute} values", len(questions)) as advance:
            for name, key, n, digest_key in questions:
                question = QUESTIONS[(attribute, key)].format(n=n, classname=name)
                answer = generator.ask(question + ANSWER_FORMAT, self.options.max_new_tokens)
                cache[digest_key] = {"model": identity, "class": name, "attribute": attribute, "feasibility": key,
                                     "values": n, "question": question, "answer": answer}
                atomic_write_json(path, {"answers": cache})  # after each answer: resumable
                advance(1)
