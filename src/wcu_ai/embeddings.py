"""The optional embedder behind hybrid search, chosen by WCU_EMBEDDER.

`provider:model` picks one of Agno's embedders (its SDK comes with the matching extra, e.g.
`wcu-ai-server[openai]`); `python:module:callable` names a factory returning any Agno
Embedder, for providers Agno has and we do not list, or for tests. Unset: full-text search only.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from wcu_ai.errors import ConfigError

if TYPE_CHECKING:
    from agno.knowledge.embedder.base import Embedder

# provider -> (module, class, the extra that brings its SDK)
PROVIDERS = {
    "openai": ("agno.knowledge.embedder.openai", "OpenAIEmbedder", "openai"),
    "azure_openai": ("agno.knowledge.embedder.azure_openai", "AzureOpenAIEmbedder", "openai"),
    "bedrock": ("agno.knowledge.embedder.aws_bedrock", "AwsBedrockEmbedder", "bedrock"),
}


def build_embedder(spec: str | None, dimensions: int | None = None) -> Embedder | None:
    """The configured embedder, or None; a bad spec or a missing SDK is a ConfigError naming WCU_EMBEDDER."""
    if not spec:
        return None
    kind, _, rest = spec.partition(":")
    if kind == "python":
        module_name, _, attr = rest.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigError(f"WCU_EMBEDDER: cannot load {rest!r}: {exc}") from None
        embedder = factory()
    elif kind in PROVIDERS:
        module_name, class_name, extra = PROVIDERS[kind]
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except ImportError as exc:
            raise ConfigError(
                f"WCU_EMBEDDER: the {kind} embedder needs its SDK: install wcu-ai-server[{extra}] ({exc})"
            ) from None
        kwargs: dict[str, object] = {"id": rest} if rest else {}
        if dimensions:
            kwargs["dimensions"] = dimensions
        embedder = cls(**kwargs)
    else:
        raise ConfigError(
            f"WCU_EMBEDDER: unknown provider {kind!r}; use one of {', '.join(PROVIDERS)} as provider:model, "
            "or python:module:factory"
        )
    if not hasattr(embedder, "async_get_embedding"):
        raise ConfigError("WCU_EMBEDDER: the factory did not return an Agno Embedder")
    return embedder


async def embed_texts(embedder: Embedder, texts: list[str]) -> list[list[float]]:
    vectors = [await embedder.async_get_embedding(text) for text in texts]
    if any(not v for v in vectors):
        raise RuntimeError("the embedder returned an empty embedding")
    return vectors
