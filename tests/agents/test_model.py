"""WCU_AGENT_MODEL: the same spec grammar and errors as WCU_EMBEDDER, through one loader."""

from __future__ import annotations

import sys

import pytest

from tests.conftest import skip_or_fail
from tests.fake_model import ScriptedModel
from wcu_ai.agents.model import PROVIDERS, build_model
from wcu_ai.errors import ConfigError


def test_no_spec_means_no_model() -> None:
    assert build_model(None) is None
    assert build_model("") is None


def test_a_python_factory_returns_an_agno_model() -> None:
    assert isinstance(build_model("python:tests.fake_model:make"), ScriptedModel)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("cohere:command-r", "unknown provider 'cohere'"),
        ("python:tests.no_such_module:make", "cannot load"),
        ("python:tests.fake_model:missing", "cannot load"),
        ("python:tests.fake_model:not_a_model", "did not return an Agno Model"),
    ],
)
def test_bad_specs_are_config_errors_naming_the_variable(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        build_model(spec)
    assert info.value.message.startswith("WCU_AGENT_MODEL: ")


ADVERTISED = [
    ("openai:gpt-4o-mini", "OpenAIChat", ("openai",)),
    ("azure_openai:gpt-4o-mini", "AzureOpenAI", ("openai",)),
    ("anthropic:claude-sonnet-4-5", "Claude", ("anthropic",)),
    ("bedrock:amazon.nova-lite-v1:0", "AwsBedrock", ("boto3", "aioboto3")),
]


def sdks_or_fail(sdks: tuple[str, ...]) -> None:
    """The provider extras are installed in CI (uv sync --all-extras) and in the images."""
    for sdk in sdks:
        try:
            __import__(sdk)
        except ImportError:
            skip_or_fail(f"{sdk} is not installed: uv sync --all-extras")


@pytest.mark.parametrize(("spec", "cls", "sdks"), ADVERTISED)
def test_every_advertised_provider_builds_with_its_clients_importable(
    spec: str, cls: str, sdks: tuple[str, ...]
) -> None:
    sdks_or_fail(sdks)
    model = build_model(spec)
    assert model is not None and type(model).__name__ == cls
    assert model.id == spec.partition(":")[2]
    provider = PROVIDERS[spec.partition(":")[0]]
    assert len(provider.clients) == 2  # the sync client and the async one (the API's path)


@pytest.mark.parametrize(("spec", "cls", "sdks"), ADVERTISED)
def test_a_provider_whose_async_or_sync_sdk_is_missing_names_the_extra(
    spec: str, cls: str, sdks: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    sdks_or_fail(sdks)
    extra = PROVIDERS[spec.partition(":")[0]].extra
    for client in PROVIDERS[spec.partition(":")[0]].clients:
        with monkeypatch.context() as patch:
            # None in sys.modules makes `import x` raise ImportError, as when the package is absent.
            patch.setitem(sys.modules, client.partition(":")[0], None)
            with pytest.raises(ConfigError, match=rf"install wcu-ai-server\[{extra}\]") as info:
                build_model(spec)
        assert info.value.message.startswith("WCU_AGENT_MODEL: ")
