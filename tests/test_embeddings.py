from __future__ import annotations

import asyncio

import pytest

from tests.fake_embedder import HashingEmbedder
from wcu_ai.embeddings import build_embedder, embed_texts
from wcu_ai.errors import ConfigError


def test_no_spec_means_no_embedder() -> None:
    assert build_embedder(None) is None
    assert build_embedder("") is None


def test_a_python_factory_returns_an_agno_embedder() -> None:
    embedder = build_embedder("python:tests.fake_embedder:make")
    assert isinstance(embedder, HashingEmbedder)
    [vector] = asyncio.run(embed_texts(embedder, ["hello world"]))
    assert len(vector) == 64


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("cohere:embed-v3", "unknown provider 'cohere'"),
        ("python:tests.no_such_module:make", "cannot load"),
        ("python:tests.fake_embedder:missing", "cannot load"),
        ("python:tests.fake_embedder:broken", "did not return an Agno Embedder"),
    ],
)
def test_bad_specs_are_config_errors_naming_the_variable(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        build_embedder(spec)
    assert info.value.message.startswith("WCU_EMBEDDER: ")


def test_a_provider_whose_sdk_is_missing_names_the_extra() -> None:
    try:
        import openai  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match=r"install wcu-ai-server\[openai\]"):
            build_embedder("openai:text-embedding-3-small")
    else:
        embedder = build_embedder("openai:text-embedding-3-small", 256)
        assert embedder is not None and embedder.dimensions == 256
