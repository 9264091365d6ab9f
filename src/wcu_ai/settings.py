"""Configuration, read from the environment only here.

Production injects these variables from AWS Secrets Manager; names are shared by README,
deployment.md, the images and the tests. load_settings() is called by the composition roots
(CLI, app factory, runner) — importing this module reads nothing.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from wcu_ai.errors import ConfigError

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WCU_", extra="ignore", frozen=True)

    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL", repr=False)
    db_schema: str = "public"
    db_pool_size: int = Field(default=10, ge=1, le=200)
    db_connect_timeout_seconds: float = Field(default=10.0, gt=0)
    # The longest one statement of a request may run (API pool, agents' storage); 0 turns it off.
    db_statement_timeout_seconds: float = Field(default=30.0, ge=0)

    api_host: str = "0.0.0.0"  # noqa: S104 - the API listens behind a load balancer
    api_port: int = Field(default=8000, ge=1, le=65535)
    api_keys: Annotated[tuple[str, ...], NoDecode] = Field(default=(), repr=False)

    runner_concurrency: int = Field(default=2, ge=1, le=64)
    runner_poll_seconds: float = Field(default=5.0, gt=0)
    runner_grace_seconds: float = Field(default=30.0, ge=0)
    runner_standby_poll_seconds: float = Field(default=2.0, gt=0)
    task_lease_seconds: float = Field(default=60.0, ge=1)
    task_timeout_seconds: float = Field(default=900.0, gt=0)
    task_max_attempts: int = Field(default=3, ge=1, le=100)
    task_retry_base_seconds: float = Field(default=5.0, ge=0)
    task_retry_max_seconds: float = Field(default=600.0, ge=0)

    upload_max_bytes: int = Field(default=50 * 1024 * 1024, ge=1)
    doc_max_pages: int = Field(default=2000, ge=1)
    doc_timeout_seconds: float = Field(default=300.0, gt=0)
    docx_max_uncompressed_bytes: int = Field(default=200 * 1024 * 1024, ge=1)
    doc_max_pdf_bytes: int = Field(default=200 * 1024 * 1024, ge=1)
    work_dir: Path | None = None
    embedder: str | None = None
    embedder_dimensions: int | None = Field(default=None, ge=1, le=16000)
    agent_model: str | None = None
    agent_history_runs: int = Field(default=5, ge=0, le=100)
    agent_search_limit: int = Field(default=5, ge=1, le=50)
    agent_metrics_delay_seconds: float = Field(default=60.0, ge=0)
    # One run at a time per session: a second one waits this long for the first, then is answered 409.
    agent_session_wait_seconds: float = Field(default=10.0, ge=0, le=600)
    # A run's hold on its session, renewed every third of it; an API that died frees it after this.
    agent_session_lease_seconds: float = Field(default=30.0, ge=3, le=3600)
    # Server-sent events: a comment this often while the model is silent (load balancers cut idle streams).
    agent_stream_heartbeat_seconds: float = Field(default=15.0, gt=0, le=300)

    log_level: str = "INFO"
    log_format: str = "json"

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("postgresql", "postgres", "postgresql+psycopg"):
            raise ValueError("must be a postgresql:// URL")
        return value

    @field_validator("db_schema")
    @classmethod
    def _check_schema(cls, value: str) -> str:
        if not _IDENTIFIER.match(value):
            raise ValueError("must be a lower-case SQL identifier (letters, digits, _; max 63)")
        return value

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(k.strip() for k in value.split(",") if k.strip())
        return value

    @field_validator("api_keys")
    @classmethod
    def _check_keys(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(len(k) < 16 for k in value):
            raise ValueError("every key must be at least 16 characters")
        return value

    @field_validator("log_level")
    @classmethod
    def _check_level(cls, value: str) -> str:
        level = value.upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
        return level

    @field_validator("log_format")
    @classmethod
    def _check_format(cls, value: str) -> str:
        if value not in ("json", "text"):
            raise ValueError("must be json or text")
        return value

    def require_database_url(self) -> str:
        if not self.database_url:
            raise ConfigError("DATABASE_URL is not set: give it a postgresql:// URL")
        return self.database_url

    @property
    def database_url_redacted(self) -> str:
        return redact_url(self.database_url or "")


def env_name(loc: str) -> str:
    """The environment variable behind a validation error's location.

    pydantic reports an aliased field (DATABASE_URL) under its alias, which is the variable
    itself; every other field is read from WCU_<FIELD>.
    """
    return f"WCU_{loc.upper()}" if loc in Settings.model_fields else loc


def redact_url(url: str) -> str:
    """The URL without its password, safe for logs and error messages."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def load_settings() -> Settings:
    """Read settings from the environment; a bad value raises ConfigError naming the variable."""
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "?"
        # Never echo the input: it may be a password or a key.
        raise ConfigError(f"{env_name(field)}: {first['msg']}") from None
