"""The agents' language model, chosen by WCU_AGENT_MODEL (same spec grammar as WCU_EMBEDDER).

`openai:gpt-4o-mini`, `anthropic:claude-sonnet-4-5`, `bedrock:<model id>` … pick one of Agno's
model classes (credentials come from the provider's usual environment variables, e.g.
OPENAI_API_KEY or the AWS credential chain, never from us); `python:module:factory` returns any
Agno Model. Unset: the agent endpoints answer 503.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from wcu_ai.agno_components import Provider, load_component

if TYPE_CHECKING:
    from agno.models.base import Model

VARIABLE = "WCU_AGENT_MODEL"

# The API always runs agents on the async path (agent.arun): each provider's async client is
# imported at start, with the sync one, so a missing SDK stops the start instead of every run.
PROVIDERS = {
    "openai": Provider(
        "agno.models.openai.chat",
        "OpenAIChat",
        extra="openai",
        clients=("openai:OpenAI", "openai:AsyncOpenAI"),
    ),
    "azure_openai": Provider(
        "agno.models.azure.openai_chat",
        "AzureOpenAI",
        extra="openai",
        clients=("openai:AzureOpenAI", "openai:AsyncAzureOpenAI"),
    ),
    "anthropic": Provider(
        "agno.models.anthropic.claude",
        "Claude",
        extra="anthropic",
        clients=("anthropic:Anthropic", "anthropic:AsyncAnthropic"),
    ),
    "bedrock": Provider(
        "agno.models.aws.bedrock", "AwsBedrock", extra="bedrock", clients=("boto3:client", "aioboto3:Session")
    ),
}


def _is_model(component: object) -> bool:
    from agno.models.base import Model

    return isinstance(component, Model)


def build_model(spec: str | None) -> Model | None:
    """The configured model, or None; a bad spec or a missing SDK is a ConfigError naming WCU_AGENT_MODEL."""
    if not spec:
        return None
    return load_component(
        spec,
        variable=VARIABLE,
        noun="model",
        providers=PROVIDERS,
        is_component=_is_model,
        kind="an Agno Model",
    )
