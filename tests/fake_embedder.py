"""A deterministic Agno Embedder for tests: hashed bag of words, no network, no model."""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass

from agno.knowledge.embedder.base import Embedder


@dataclass
class HashingEmbedder(Embedder):
    dimensions: int | None = 64

    def get_embedding(self, text: str) -> list[float]:
        dims = self.dimensions or 64
        vector = [0.0] * dims
        for word in re.findall(r"\w+", text.lower()):
            vector[int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "big") % dims] += 1.0
        norm = math.sqrt(sum(v * v for v in vector)) or 1.0
        return [v / norm for v in vector]

    def get_embedding_and_usage(self, text: str) -> tuple[list[float], dict | None]:
        return self.get_embedding(text), None

    async def async_get_embedding(self, text: str) -> list[float]:
        return self.get_embedding(text)

    async def async_get_embedding_and_usage(self, text: str) -> tuple[list[float], dict | None]:
        return self.get_embedding(text), None


def make() -> HashingEmbedder:
    return HashingEmbedder()


def broken() -> object:
    return object()
