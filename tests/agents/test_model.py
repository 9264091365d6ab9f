"""WCU_AGENT_MODEL: the same spec grammar and errors as WCU_EMBEDDER, through one loader."""

from __future__ import annotations

import pytest

from tests.fake_model import ScriptedModel
from wcu_ai.agents.model import build_model
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


@pytest.mark.parametrize(
    ("spec", "sdk", "extra"),
    [
        ("openai:gpt-4o-mini", "openai", "openai"),
        ("azure_openai:gpt-4o-mini", "openai", "openai"),
        ("anthropic:claude-sonnet-4-5", "anthropic", "anthropic"),
        ("bedrock:amazon.nova-lite-v1:0", "boto3", "bedrock"),
    ],
)
def test_a_provider_whose_sdk_is_missing_names_the_extra(spec: str, sdk: str, extra: str) -> None:
    try:
        __import__(sdk)
    except ImportError:
        with pytest.raises(ConfigError, match=rf"install wcu-ai-server\[{extra}\]"):
            build_model(spec)
    else:
        model = build_model(spec)
        assert model is not None and model.id == spec.partition(":")[2]
