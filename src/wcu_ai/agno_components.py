"""Agno components chosen by a spec in the environment: the embedder (WCU_EMBEDDER), the agents'
model (WCU_AGENT_MODEL).

A spec is `provider:model`, one of Agno's classes listed by the caller (its SDK comes with the
matching extra, e.g. `wcu-ai-server[openai]`), or `python:module:factory`, a callable returning
the component: for providers Agno has and we do not list, and for tests. Agno and the provider
SDKs are imported only here and only when a spec names them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from wcu_ai.errors import ConfigError


@dataclass(frozen=True)
class Provider:
    """An Agno class for one provider, and the extra that brings its SDK.

    `clients` are the SDK's client classes ("module:attribute") the Agno class builds when it
    runs, sync and async: Agno imports some of them only then (AwsBedrock's aioboto3), so a
    start that only built the Agno class could fail on every run.
    """

    module: str
    cls: str
    extra: str
    clients: tuple[str, ...] = ()


def import_clients(clients: tuple[str, ...]) -> None:
    """Imports each "module:attribute"; ImportError when one is missing (no client is built)."""
    for client in clients:
        module_name, _, attr = client.partition(":")
        module = importlib.import_module(module_name)
        if attr and not hasattr(module, attr):
            raise ImportError(f"{module_name} has no {attr}")


def load_component(
    spec: str,
    *,
    variable: str,
    noun: str,
    providers: Mapping[str, Provider],
    is_component: Callable[[object], bool],
    kind: str,
    options: Mapping[str, Any] | None = None,
) -> Any:
    """The component a spec names; any problem is a ConfigError starting with the variable's name.

    `noun` is what the provider builds ("embedder", "model"), `kind` what a factory must return
    ("an Agno Embedder"); `options` are passed to a provider's class (never to a factory).
    """
    provider, _, rest = spec.partition(":")
    if provider == "python":
        module_name, _, attr = rest.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigError(f"{variable}: cannot load {rest!r}: {exc}") from None
        component = factory()
    elif provider in providers:
        entry = providers[provider]
        try:
            cls = getattr(importlib.import_module(entry.module), entry.cls)
            import_clients(entry.clients)
        except ImportError as exc:
            raise ConfigError(
                f"{variable}: the {provider} {noun} needs its SDK: install wcu-ai-server[{entry.extra}] ({exc})"
            ) from None
        kwargs: dict[str, Any] = {"id": rest} if rest else {}
        kwargs.update(options or {})
        component = cls(**kwargs)
    else:
        raise ConfigError(
            f"{variable}: unknown provider {provider!r}; use one of {', '.join(providers)} as "
            f"provider:model, or python:module:factory"
        )
    if not is_component(component):
        raise ConfigError(f"{variable}: the factory did not return {kind}")
    return component
