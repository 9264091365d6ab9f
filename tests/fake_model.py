"""A deterministic Agno Model for tests: no network, no weights, the same answer every time.

It plays the parts a real model plays for the assistant, decided from the messages and tools it
is given:
- with the document search tool and a question: calls search_documents(query=<question>), then
  answers from the passages the tool returned, naming their document and page;
- "Remember …": calls update_user_memory; inside Agno's memory manager (which offers add_memory)
  it stores the sentence as the memory;
- "What did I ask before?": lists the earlier user messages it was given (the session history).
Token usage is the word count, so Agno's metrics have something to add up.

Directives in a message let tests drive timing and failures without sleeping:
- "[hold PATH]": the first model call of the run waits until the file PATH exists (at most
  HOLD_LIMIT_SECONDS, then fails), so a test decides when a run in flight may go on;
- "[fail-midway]": the answer streams a few words, then the provider fails (an error whose text
  quotes a fake key); without streaming the call fails at once;
- "[nul-search]": the search tool is called with a NUL in its query, which PostgreSQL refuses, so
  the tool fails (Agno logs "Could not run function ...").
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agno.exceptions import ModelProviderError
from agno.models.base import Model
from agno.models.message import Message
from agno.models.metrics import MessageMetrics
from agno.models.response import ModelResponse

HISTORY_QUESTION = "what did i ask before"
HOLD = re.compile(r"\[hold ([^\]]+)\]")
HOLD_LIMIT_SECONDS = 60.0
FAIL_MIDWAY = "[fail-midway]"
NUL_SEARCH = "[nul-search]"
# What a provider's error can look like: it quotes the request, key included.
SECRET = "api_key=sk-fake-0123456789abcdef"


def provider_down(model_id: str) -> ModelProviderError:
    return ModelProviderError(f"Error code: 503 - upstream said no (request had {SECRET})", model_id=model_id)


async def hold(messages: list[Message]) -> None:
    """Waits for the [hold PATH] file of the run's question, on the run's first model call only."""
    if not messages or messages[-1].role != "user":
        return
    found = HOLD.search(messages[-1].get_content_string())
    if found is None:
        return
    gate, deadline = Path(found.group(1)), time.monotonic() + HOLD_LIMIT_SECONDS
    while not gate.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the test never opened {gate}")
        await asyncio.sleep(0.02)


def _tool_names(tools: list[dict[str, Any]] | None) -> set[str]:
    return {t["function"]["name"] for t in tools or [] if t.get("type") == "function"}


def _tool_call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"call_{uuid.uuid4().hex[:12]}",
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments)},
    }


def _answer_from_passages(result: str) -> str:
    try:
        passages = json.loads(result).get("passages", [])
    except ValueError:  # the tool failed: Agno hands the model its error text
        return "The document search failed."
    if not passages:
        return "I found nothing about that in the documents."
    cited = "; ".join(f"document {p['document_id']} page {p['page']}: {p['text']}" for p in passages)
    return f"From the documents: {cited}"


def _words(messages: list[Message]) -> int:
    return sum(len(m.get_content_string().split()) for m in messages)


@dataclass
class ScriptedModel(Model):
    id: str = "scripted"
    name: str = "ScriptedModel"
    provider: str = "tests"

    def decide(self, messages: list[Message], tools: list[dict[str, Any]] | None) -> ModelResponse:
        names = _tool_names(tools)
        last = messages[-1]
        if "add_memory" in names:  # Agno's MemoryManager, run by the update_user_memory tool
            if last.role == "tool":
                return self._reply("Memory stored.", messages)
            return self._call("add_memory", {"memory": last.get_content_string()}, messages)
        if last.role == "tool":
            if last.tool_name == "search_documents":
                return self._reply(_answer_from_passages(last.get_content_string()), messages)
            return self._reply("I will remember that.", messages)
        question = last.get_content_string()
        if question.lower().startswith("remember") and "update_user_memory" in names:
            return self._call("update_user_memory", {"task": question}, messages)
        if HISTORY_QUESTION in question.lower():
            earlier = [m.get_content_string() for m in messages[:-1] if m.role == "user"]
            return self._reply("Earlier you asked: " + " | ".join(earlier), messages)
        if "search_documents" in names:
            query = HOLD.sub("", question).strip()  # a directive is not part of the question
            query = query + "\x00" if NUL_SEARCH in question else query
            return self._call("search_documents", {"query": query}, messages)
        return self._reply("I have no way to look that up.", messages)

    def _usage(self, messages: list[Message], output: str) -> MessageMetrics:
        inputs, outputs = _words(messages), len(output.split())
        return MessageMetrics(input_tokens=inputs, output_tokens=outputs, total_tokens=inputs + outputs)

    def _reply(self, content: str, messages: list[Message]) -> ModelResponse:
        return ModelResponse(role="assistant", content=content, response_usage=self._usage(messages, content))

    def _call(self, name: str, arguments: dict[str, Any], messages: list[Message]) -> ModelResponse:
        return ModelResponse(
            role="assistant",
            tool_calls=[_tool_call(name, arguments)],
            response_usage=self._usage(messages, json.dumps(arguments)),
        )

    def _deltas(self, response: ModelResponse) -> Iterator[ModelResponse]:
        if response.tool_calls:
            yield response
            return
        words = (response.content or "").split(" ")
        for i, word in enumerate(words):
            yield ModelResponse(role="assistant", content=word if i == 0 else f" {word}")
        yield ModelResponse(response_usage=response.response_usage)

    def invoke(
        self, messages: list[Message], tools: list[dict[str, Any]] | None = None, **_: Any
    ) -> ModelResponse:
        return self.decide(messages, tools)

    async def ainvoke(
        self, messages: list[Message], tools: list[dict[str, Any]] | None = None, **_: Any
    ) -> ModelResponse:
        await hold(messages)
        if FAIL_MIDWAY in messages[-1].get_content_string():
            raise provider_down(self.id)
        return self.decide(messages, tools)

    def invoke_stream(
        self, messages: list[Message], tools: list[dict[str, Any]] | None = None, **_: Any
    ) -> Iterator[ModelResponse]:
        yield from self._deltas(self.decide(messages, tools))

    async def ainvoke_stream(
        self, messages: list[Message], tools: list[dict[str, Any]] | None = None, **_: Any
    ) -> AsyncIterator[ModelResponse]:
        await hold(messages)
        if FAIL_MIDWAY in messages[-1].get_content_string():
            for word in ("The", " answer", " begins"):
                yield ModelResponse(role="assistant", content=word)
            raise provider_down(self.id)
        for delta in self._deltas(self.decide(messages, tools)):
            yield delta

    def _parse_provider_response(self, response: Any, **kwargs: Any) -> ModelResponse:
        return response

    def _parse_provider_response_delta(self, response: Any) -> ModelResponse:
        return response


def make() -> ScriptedModel:
    return ScriptedModel()


def not_a_model() -> object:
    return object()


@dataclass
class FailingModel(ScriptedModel):
    """A provider that is down: every call fails the way Agno's provider classes fail."""

    def decide(self, messages: list[Message], tools: list[dict[str, Any]] | None) -> ModelResponse:
        raise provider_down(self.id)


def failing() -> FailingModel:
    return FailingModel()
