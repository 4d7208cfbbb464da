"""VariReal's language model: a causal LM asked, greedily, for an attribute's values (the
questions it is asked, per attribute and feasibility), and the parser that turns its answer
into clean values."""

from __future__ import annotations

import re


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

    from ddcore.api import load_pretrained

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
