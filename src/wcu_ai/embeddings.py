"""The optional embedder behind hybrid search, chosen by WCU_EMBEDDER.

`provider:model` picks one of Agno's embedders (its SDK comes with the matching extra, e.g.
`wcu-ai-server[openai]`); `python:module:callable` names a factory returning any Agno
Embedder, for providers Agno has and we do not list, or for tests. Unset: full-text search only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from wcu_ai.agno_components import Provider, load_component

if TYPE_CHECKING:
    from agno.knowledge.embedder.base import Embedder

PROVIDERS = {
    "openai": Provider("agno.knowledge.embedder.openai", "OpenAIEmbedder", extra="openai"),
    "azure_openai": Provider("agno.knowledge.embedder.azure_openai", "AzureOpenAIEmbedder", extra="openai"),
    "bedrock": Provider("agno.knowledge.embedder.aws_bedrock", "AwsBedrockEmbedder", extra="bedrock"),
}


def build_embedder(spec: str | None, dimensions: int | None = None) -> Embedder | None:
    """The configured embedder, or None; a bad spec or a missing SDK is a ConfigError naming WCU_EMBEDDER."""
    if not spec:
        return None
    return load_component(
        spec,
        variable="WCU_EMBEDDER",
        noun="embedder",
        providers=PROVIDERS,
        is_component=lambda c: hasattr(c, "async_get_embedding"),
        kind="an Agno Embedder",
        options={"dimensions": dimensions} if dimensions else None,
    )


async def embed_texts(embedder: Embedder, texts: list[str]) -> list[list[float]]:
    vectors = [await embedder.async_get_embedding(text) for text in texts]
    if any(not v for v in vectors):
        raise RuntimeError("the embedder returned an empty embedding")
    return vectors
