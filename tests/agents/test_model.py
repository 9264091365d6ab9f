"""WCU_AGENT_MODEL: the same spec grammar and errors as WCU_EMBEDDER, through one loader."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
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


FACTORIES = """
import os, sys, threading, time

def hang():
    time.sleep(600)

def leave():
    os._exit(0)

class Unprintable(Exception):
    def __str__(self):
        raise ValueError("no text")

def unprintable():
    raise Unprintable()

def leaky():
    raise RuntimeError("cannot connect to " + os.environ["DATABASE_URL"] + " with " + os.environ["WCU_API_KEYS"])

def holds_the_pipe():
    # a process of the factory's own that outlives the check, with every descriptor inherited
    if os.fork() == 0:
        time.sleep(5)
        os._exit(0)
    from tests.fake_model import make
    return make()
"""


@pytest.fixture
def factories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "odd_factories.py").write_text(FACTORIES)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "python:odd_factories"


def test_a_factory_that_never_returns_stops_the_start_after_the_time_allowed(factories: str) -> None:
    check = ModelCheck.start(f"{factories}:hang")
    assert check is not None
    pid = check._pid
    with pytest.raises(ConfigError, match=r"took longer than 0\.5 s"):
        check.wait(timeout=0.5)
    with pytest.raises(ChildProcessError):  # killed and reaped
        os.waitpid(pid or 0, os.WNOHANG)


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        ("leave", "exited with 0 without a verdict"),  # a factory that ends the process passes nothing
        ("unprintable", "building the model failed: Unprintable$"),
    ],
)
def test_a_check_without_a_verdict_or_with_an_odd_exception_is_a_config_error(
    factories: str, factory: str, message: str
) -> None:
    check = ModelCheck.start(f"{factories}:{factory}")
    assert check is not None
    with pytest.raises(ConfigError, match=message):
        check.wait()


def test_a_factory_error_does_not_carry_the_secrets_of_the_environment(
    factories: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://wcu:S3cretPwXYZ@db.internal/wcu")
    monkeypatch.setenv("WCU_API_KEYS", "key-AAAAAAAAAAAAAAAA,key-BBBBBBBBBBBBBBBB")
    check = ModelCheck.start(f"{factories}:leaky")
    assert check is not None
    with pytest.raises(ConfigError) as info:
        check.wait()
    assert "db.internal" in info.value.message  # the rest of what it said is kept
    for secret in ("S3cretPwXYZ", "key-AAAAAAAAAAAAAAAA", "key-BBBBBBBBBBBBBBBB"):
        assert secret not in info.value.message


def test_a_process_of_the_factory_holding_the_pipe_does_not_hold_the_start(factories: str) -> None:
    check = ModelCheck.start(f"{factories}:holds_the_pipe")
    assert check is not None
    check.wait(timeout=10)  # returns with the check's exit, not 5 s later with the pipe's end


def test_the_check_dies_with_the_api(factories: str, tmp_path: Path) -> None:
    """SIGKILL (or SIGTERM) of the API during its start leaves no check behind."""
    pid_file = tmp_path / "check.pid"
    script = (
        "import sys, time\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "from wcu_ai.agents.model import ModelCheck\n"
        f"check = ModelCheck.start({factories + ':hang'!r})\n"
        f"open({str(pid_file)!r}, 'w').write(str(check._pid))\n"
        "time.sleep(600)\n"
    )
    api = subprocess.Popen([sys.executable, "-c", script])
    try:
        for _ in range(500):
            if pid_file.exists() and pid_file.read_text():
                break
            time.sleep(0.02)
        child = int(pid_file.read_text())
    finally:
        api.kill()
        api.wait()
    for _ in range(500):  # bounded: 10 s
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        stat = Path(f"/proc/{child}/stat").read_text() if Path(f"/proc/{child}").exists() else ""
        if stat.rpartition(")")[2].split()[:1] == ["Z"]:
            break  # dead, waiting for init to reap it
        time.sleep(0.02)
    else:
        pytest.fail(f"the check {child} outlived the API")
