"""Text embeddings computed once per distinct prompt, not once per image.

DataDream's prompts repeat: every image of a class has the same "a photo of a {class}", so a
plain ``pipe(prompt=[...] * batch)`` runs the text encoder on the same text for each of the
500 images of a class. The cache encodes each distinct prompt alone (so its embedding never
depends on which batch it lands in) and hands the pipeline ``prompt_embeds`` (and the pooled and negative embeddings its family
has: ddcore/models/families.py).

An entry is keyed by the adapter selection too (the class, in cls mode), because a per-class
adapter may change the text encoder. It is small and bounded: captions (DISEF) are distinct
per image, and would otherwise fill the memory.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Hashable

MAX_ENTRIES = 256  # 256 prompts x 77 tokens x 1024 floats: 80 MB in fp32 at SD 2.1's width


class PromptEmbeddings:
    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, Any] = OrderedDict()
        self.encoded = 0  # text encoder calls so far (tests and benchmarks read it)

    def clear(self) -> None:
        self._entries.clear()

    def _one(self, pipe, family, key: Hashable, text: str, negative: str | None, guided: bool) -> dict[str, Any]:
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
            return found
        found = family.encode(pipe, text, negative, guided)
        self.encoded += 1
        self._entries[key] = found
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return found

    def arguments(self, pipe, texts: list[str], *, negative: str | None, guidance: float,
                  selection: Hashable = None) -> dict[str, Any]:
        """The embedding arguments of ``pipe(...)`` for ``texts`` (``prompt_embeds``, and by
        family the pooled and the negative ones), in place of ``prompt`` / ``negative_prompt``."""
        import torch

        from ddcore.api import family_of_pipeline

        family = family_of_pipeline(pipe)
        guided = family.guided(pipe, guidance)  # as the pipeline decides (LCM-style U-Nets never guide)
        rows = [self._one(pipe, family, (selection, text, negative, guided), text, negative or None, guided)
                for text in texts]
        return {name: torch.cat([row[name] for row in rows]) for name in rows[0]}
