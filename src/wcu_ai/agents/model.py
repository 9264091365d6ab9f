"""The agents' language model, chosen by WCU_AGENT_MODEL (same spec grammar as WCU_EMBEDDER).

`openai:gpt-4o-mini`, `anthropic:claude-sonnet-4-5`, `bedrock:<model id>` … pick one of Agno's
model classes (credentials come from the provider's usual environment variables, e.g.
OPENAI_API_KEY or the AWS credential chain, never from us); `python:module:factory` returns any
Agno Model. Unset: the agent endpoints answer 503.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import select
import signal
import sys
import threading
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from wcu_ai.agno_components import Provider, load_component
from wcu_ai.errors import ConfigError
from wcu_ai.settings import redact_url

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


# The most of a child's refusal that is passed on (messages are a line or two).
_MESSAGE_BYTES = 4096
# What the child writes first when the model was built; without it, the check failed.
_BUILT = b"\x06"
# How long the check may take: a model's build imports modules and constructs objects, seconds at most.
CHECK_SECONDS = 120.0
_SECRET_NAME = re.compile("KEY|SECRET|TOKEN|PASSWORD|CREDENTIAL", re.I)


class ModelCheck:
    """WCU_AGENT_MODEL built once in a forked child while the API goes on starting.

    Building the model imports Agno's model classes and the provider's SDK: 0.27 s of a 0.8 s
    API start for the tests' model, more with a provider's SDK. The child does exactly what
    build_model does, on another CPU while this process imports its web stack; `wait()` gives
    its verdict before the API serves anything, so a bad WCU_AGENT_MODEL still stops the start,
    with the same message. The API builds its own model afterwards, off the start path, with
    the agents (agents/catalog.py), and the first agent request waits for them: a factory
    (`python:module:factory`) runs twice, so it should do nothing but build its model.
    """

    def __init__(self, spec: str, pid: int, pidfd: int, reader: int) -> None:
        self.spec = spec
        self._pid: int | None = pid
        self._pidfd = pidfd  # readable once the child has exited
        self._reader = reader

    @classmethod
    def start(cls, spec: str | None) -> ModelCheck | None:
        """The check under way; None without a model, where forking is unsafe (threads running), or
        without pidfds (Linux 5.3+) to wait for the child with a time limit: then build_model it is."""
        if not spec or not hasattr(os, "pidfd_open") or threading.active_count() > 1:
            return None
        reader, writer = os.pipe()
        parent = os.getpid()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through the pipe, then leaves at once
            os.close(reader)
            _die_with(parent)
            os._exit(_check_in_child(spec, writer))
        os.close(writer)
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:  # a kernel without pidfd_open
            os.close(reader)
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None
        return cls(spec, pid, pidfd, reader)

    def wait(self, timeout: float = CHECK_SECONDS) -> None:
        """Returns once the child built the model; ConfigError with its reason when it could not."""
        if self._pid is None:
            raise RuntimeError("the model check was already waited for or closed")
        pid = self._pid
        # The child's exit, not the pipe's end: a process the factory started may hold the pipe.
        if not select.select([self._pidfd], [], [], timeout)[0]:
            self.close()
            raise ConfigError(
                f"{VARIABLE}: building the model took longer than {timeout:g} s; "
                "check that its factory does not wait for something (a network call, input)"
            )
        _, status = os.waitpid(pid, 0)
        self._pid = None
        os.close(self._pidfd)
        os.set_blocking(self._reader, False)
        try:
            report = os.read(self._reader, _MESSAGE_BYTES + 1)
        except BlockingIOError:
            report = b""
        finally:
            os.close(self._reader)
        if report.startswith(_BUILT):
            return
        code = os.waitstatus_to_exitcode(status)
        how = f"was killed by signal {-code}" if code < 0 else f"exited with {code}"
        message = report.decode("utf-8", errors="replace")
        raise ConfigError(
            message or f"{VARIABLE}: checking the model failed: the check {how} without a verdict"
        )

    def close(self) -> None:
        """Stops a check nobody waited for (the start failed before), and reaps it."""
        if self._pid is None:
            return
        pid, self._pid = self._pid, None
        os.close(self._reader)
        os.close(self._pidfd)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)

    def build(self) -> Model:
        """The model in this process (after a successful wait())."""
        model = build_model(self.spec)
        assert model is not None  # the spec is not empty
        return model


def _die_with(parent: int) -> None:  # pragma: no cover - runs in the child
    """The child is killed when the API dies (SIGTERM, SIGKILL during the start): no orphan left."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the API died before the line above
        os._exit(1)


def _check_in_child(spec: str, writer: int) -> int:  # pragma: no cover - runs in the child
    # os._exit follows: no atexit handler, no flush of buffers inherited from the parent.
    try:
        build_model(spec)
    except ConfigError as exc:
        message, code = exc.message, 2
    except BaseException as exc:  # whatever it was, the parent reports it
        message, code = f"{VARIABLE}: building the model failed: {_described(exc)}", 3
    else:
        os.write(writer, _BUILT)
        return 0
    os.write(writer, _without_secrets(message).encode("utf-8", errors="replace")[:_MESSAGE_BYTES])
    return code


def _described(exc: BaseException) -> str:
    try:
        text = str(exc).strip()
    except Exception:  # an exception whose __str__ fails still gets reported
        text = ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _without_secrets(text: str) -> str:
    """`text` with the values of this process's secret variables (keys, passwords) as ***."""
    secrets: list[str] = []
    for name, value in os.environ.items():
        if name == "DATABASE_URL":
            text = text.replace(value, redact_url(value))  # the URL, with passwords in its query too
            with contextlib.suppress(ValueError):
                secrets.append(urlsplit(value).password or "")
        elif _SECRET_NAME.search(name):
            secrets += value.split(",")
    for secret in sorted((s.strip() for s in secrets), key=len, reverse=True):
        if len(secret) >= 6:
            text = text.replace(secret, "***")
    return text
