"""WCU_AGENT_MODEL: the same spec grammar and errors as WCU_EMBEDDER, through one loader."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

from tests.conftest import skip_or_fail
from tests.fake_model import ScriptedModel
from wcu_ai.agents.model import PROVIDERS, ModelCheck, build_model
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


# -- the check in a child, as `wcu-ai api` starts (ModelCheck) ------------------------------------


def test_a_check_gives_its_verdict_and_the_model_is_built_here_after() -> None:
    assert ModelCheck.start(None) is None and ModelCheck.start("") is None
    check = ModelCheck.start("python:tests.fake_model:make")
    assert check is not None
    check.wait()
    assert isinstance(check.build(), ScriptedModel)
    with pytest.raises(RuntimeError, match="already"):
        check.wait()
    check.close()  # nothing left to stop


@pytest.mark.parametrize(
    "spec", ["cohere:command-r", "python:tests.fake_model:missing", "python:tests.fake_model:not_a_model"]
)
def test_a_check_refuses_a_bad_spec_with_the_message_build_model_gives(spec: str) -> None:
    with pytest.raises(ConfigError) as direct:
        build_model(spec)
    check = ModelCheck.start(spec)
    assert check is not None
    with pytest.raises(ConfigError) as checked:
        check.wait()
    assert checked.value.message == direct.value.message


def test_a_factory_that_crashes_is_a_config_error_naming_the_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "crashing_factory.py").write_text("def make():\n    raise RuntimeError('no model today')\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # the forked child inherits the path
    check = ModelCheck.start("python:crashing_factory:make")
    assert check is not None
    with pytest.raises(ConfigError, match="no model today") as info:
        check.wait()
    assert info.value.message.startswith("WCU_AGENT_MODEL: ")


def test_a_check_nobody_waited_for_is_stopped_and_reaped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "slow_factory.py").write_text("import time\ndef make():\n    time.sleep(60)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    check = ModelCheck.start("python:slow_factory:make")
    assert check is not None
    pid = check._pid
    assert pid is not None
    check.close()
    with pytest.raises(ChildProcessError):  # reaped: no zombie left behind
        os.waitpid(pid, os.WNOHANG)


def test_no_child_is_forked_while_threads_run() -> None:
    """fork() copies one thread of many and the locks the others held: then the API checks in-process."""
    release = threading.Event()
    thread = threading.Thread(target=release.wait)
    thread.start()
    try:
        assert ModelCheck.start("python:tests.fake_model:make") is None
    finally:
        release.set()
        thread.join()
