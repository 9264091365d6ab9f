from __future__ import annotations

import pytest

from wcu_ai.errors import ConfigError
from wcu_ai.settings import load_settings, redact_url


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("WCU_") or name == "DATABASE_URL":
            monkeypatch.delenv(name)


def test_defaults_match_the_documented_ones() -> None:
    settings = load_settings()
    assert (settings.api_host, settings.api_port, settings.db_schema) == ("0.0.0.0", 8000, "public")
    assert settings.api_keys == ()
    assert settings.database_url is None
    assert settings.task_retention_days == 30


def test_api_keys_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WCU_API_KEYS", " key-aaaaaaaaaaaaaaaa, key-bbbbbbbbbbbbbbbb ,")
    assert load_settings().api_keys == ("key-aaaaaaaaaaaaaaaa", "key-bbbbbbbbbbbbbbbb")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WCU_API_PORT", "eighty"),
        ("WCU_API_PORT", "70000"),
        ("WCU_DB_SCHEMA", "Robert'); DROP TABLE x;--"),
        ("WCU_API_KEYS", "short"),
        ("DATABASE_URL", "mysql://user:hunter2hunter2@db/app"),
        ("WCU_RUNNER_CONCURRENCY", "0"),
        ("WCU_TASK_RETENTION_DAYS", "-1"),
    ],
)
def test_a_bad_value_names_its_variable_and_not_its_value(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.message.startswith(f"{name}: ")
    assert value not in info.value.message


def test_settings_repr_hides_the_password_and_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:hunter2hunter2@db:5432/app")
    monkeypatch.setenv("WCU_API_KEYS", "secret-key-0123456789")
    settings = load_settings()
    assert "hunter2" not in repr(settings) and "secret-key" not in repr(settings)
    assert settings.database_url_redacted == "postgresql://app:***@db:5432/app"


def test_redact_url_leaves_urls_without_password_alone() -> None:
    assert (
        redact_url("postgresql://postgres:@/postgres?host=/tmp/x")
        == "postgresql://postgres:@/postgres?host=/tmp/x"
    )
    assert redact_url("postgresql://u:p%40ss@h/d") == "postgresql://u:***@h/d"


def test_missing_database_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL is not set"):
        load_settings().require_database_url()


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("postgresql://app@db/app?password=hunter2hunter2", "postgresql://app@db/app?password=***"),
        (
            "postgresql://app:hunter2hunter2@db/app?sslmode=require&PASSWORD=hunter2hunter2",
            "postgresql://app:***@db/app?sslmode=require&PASSWORD=***",
        ),
        ("postgresql://app@db/app?pass%77ord=hunter2hunter2", "postgresql://app@db/app?pass%77ord=***"),
        (
            "postgresql://app@db/app?sslcert=c.pem&sslpassword=hunter2hunter2",
            "postgresql://app@db/app?sslcert=c.pem&sslpassword=***",
        ),
        (
            "postgresql://app@db/app?application_name=password",
            "postgresql://app@db/app?application_name=password",
        ),
    ],
)
def test_redact_url_hides_passwords_given_in_the_query_string(url: str, redacted: str) -> None:
    """libpq reads `password` (and `sslpassword`) from the query string as well as from the user info."""
    assert redact_url(url) == redacted


def test_the_metrics_key_is_16_characters_or_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WCU_METRICS_KEY", "")
    assert load_settings().metrics_key is None
    monkeypatch.setenv("WCU_METRICS_KEY", "short-key")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.message.startswith("WCU_METRICS_KEY: ") and "short-key" not in info.value.message
    monkeypatch.setenv("WCU_METRICS_KEY", "metrics-key-0123456789")
    settings = load_settings()
    assert settings.metrics_key == "metrics-key-0123456789"
    assert "metrics-key" not in repr(settings)


def test_the_runner_metrics_port_is_off_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().runner_metrics_port is None
    monkeypatch.setenv("WCU_RUNNER_METRICS_PORT", "")
    assert load_settings().runner_metrics_port is None
    monkeypatch.setenv("WCU_RUNNER_METRICS_PORT", "9464")
    assert load_settings().runner_metrics_port == 9464
    monkeypatch.setenv("WCU_RUNNER_METRICS_PORT", "0")
    with pytest.raises(ConfigError, match=r"^WCU_RUNNER_METRICS_PORT: "):
        load_settings()
