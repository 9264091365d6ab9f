"""Configuration, read from the environment only here.

Production injects these variables from AWS Secrets Manager; names are shared by README,
deployment.md, the images and the tests. load_settings() is called by the composition roots
(CLI, app factory, runner) — importing this module reads nothing.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import unquote, urlsplit

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
    # Slow or stalled clients (deployment.md, "Reliability"): a request's headers must arrive
    # within this many seconds of its first byte (or of the connection), each chunk of its body
    # within the other; an idle keep-alive connection is closed after the third.
    api_header_timeout_seconds: float = Field(default=10.0, gt=0)
    api_body_timeout_seconds: float = Field(default=30.0, gt=0)
    # All of a body's waits together: a 50 MiB upload at 100 KiB/s takes 512 s.
    api_body_max_seconds: float = Field(default=600.0, gt=0)
    api_keepalive_seconds: int = Field(default=5, ge=1)
    # Requests served at once by one API process (/health* not counted); more are answered 503.
    api_max_concurrent_requests: int = Field(default=200, ge=1)
    # Swagger UI at /docs and ReDoc at /redoc, served from the image (no CDN); false removes both.
    api_docs: bool = True
    # /v1/search: longer queries, or queries of more words, are refused with 422 naming the setting.
    search_max_query_chars: int = Field(default=500, ge=1, le=10000)
    search_max_terms: int = Field(default=24, ge=1, le=1000)
    # On SIGTERM the API fails readiness and keeps serving this long (the load balancer's
    # deregistration delay) before it stops; 0 stops at once.
    api_drain_seconds: float = Field(default=0.0, ge=0, le=3600)
    # GET /metrics on the API's port; off unless switched on.
    api_metrics_enabled: bool = False
    # The bearer key of /metrics (API and runner) when set; the API keys never open it.
    metrics_key: str | None = Field(default=None, repr=False, min_length=16)
    # The runner's metrics listener: off unless a port is given (9464 by convention).
    runner_metrics_host: str = "0.0.0.0"  # noqa: S104 - scraped from outside the container
    runner_metrics_port: int | None = Field(default=None, ge=1, le=65535)

    runner_concurrency: int = Field(default=2, ge=1, le=64)
    runner_poll_seconds: float = Field(default=5.0, gt=0)
    runner_grace_seconds: float = Field(default=30.0, ge=0)
    runner_standby_poll_seconds: float = Field(default=2.0, gt=0)
    task_lease_seconds: float = Field(default=60.0, ge=1)
    task_timeout_seconds: float = Field(default=900.0, gt=0)
    task_max_attempts: int = Field(default=3, ge=1, le=100)
    task_retry_base_seconds: float = Field(default=5.0, ge=0)
    task_retry_max_seconds: float = Field(default=600.0, ge=0)
    # Finished tasks older than this are deleted by the runner's retention schedule; 0 keeps them.
    task_retention_days: int = Field(default=30, ge=0, le=36500)

    upload_max_bytes: int = Field(default=50 * 1024 * 1024, ge=1)
    doc_max_pages: int = Field(default=2000, ge=1)
    # Per document, conversion and text together: see deployment.md (Reliability) for the measurements.
    doc_timeout_seconds: float = Field(default=120.0, gt=0)
    docx_max_uncompressed_bytes: int = Field(default=200 * 1024 * 1024, ge=1)
    # Any one file inside a DOCX, uncompressed; XML deeper than the depth is refused unread.
    docx_max_part_bytes: int = Field(default=64 * 1024 * 1024, ge=1)
    docx_max_xml_depth: int = Field(default=128, ge=16, le=100_000)
    # Address space of each soffice process; "auto" runs it in a network namespace of its own
    # where the kernel allows one, "required" fails DOCX tasks where it cannot.
    office_memory_bytes: int = Field(default=2 * 1024 * 1024 * 1024, ge=256 * 1024 * 1024)
    office_private_network: Literal["auto", "required", "off"] = "auto"
    doc_max_pdf_bytes: int = Field(default=200 * 1024 * 1024, ge=1)
    # What one document may produce. 10M characters is 2,000 pages (WCU_DOC_MAX_PAGES) of ~5,000,
    # a dense page; 100,000 on one page is ten times that; 20,000 chunks is what 10M characters
    # give at the chunker's shortest cut (half a chunk), so only abnormal splits reach it.
    doc_max_text_chars: int = Field(default=10_000_000, ge=1)
    doc_max_page_chars: int = Field(default=100_000, ge=1)
    doc_max_chunks: int = Field(default=20_000, ge=1)
    # Kernel limits on every poppler process (pdftotext, pdfinfo, pdftoppm). pdftotext needs ~30 MiB
    # of address space for an ordinary PDF; a hostile 35 KB page drove it to 712 MiB.
    poppler_max_memory_bytes: int = Field(default=512 * 1024 * 1024, ge=64 * 1024 * 1024)
    poppler_max_cpu_seconds: int = Field(default=60, ge=1)
    # OCR of pages without a text layer: pdftoppm renders, Tesseract reads (1-2 s of CPU per page).
    ocr_enabled: bool = True
    ocr_languages: str = Field(default="eng", pattern=r"^[A-Za-z0-9_]+(\+[A-Za-z0-9_]+)*$")
    ocr_max_pages: int = Field(default=50, ge=1)
    ocr_dpi: int = Field(default=300, ge=72, le=600)
    # Tesseract with eng needs ~200 MiB of address space on a letter page at 300 DPI.
    ocr_max_memory_bytes: int = Field(default=1024 * 1024 * 1024, ge=256 * 1024 * 1024)
    ocr_max_cpu_seconds: int = Field(default=60, ge=1)
    # The most characters of page text one GET /v1/documents/{id}/text answers with (the JSON body
    # is at most a few times this: each page's text and the joined text, escaped).
    text_response_max_chars: int = Field(default=1_000_000, ge=1000)
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

    @field_validator("metrics_key", "runner_metrics_port", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # An empty variable (a template's blank) means "not set", not a zero-length key or port 0.
        return None if isinstance(value, str) and not value.strip() else value

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


# libpq takes connection parameters in the query string too, percent-decoding their names.
_SECRET_PARAMS = {"password", "sslpassword"}


def redact_url(url: str) -> str:
    """The URL without its passwords (user info and query string), safe for logs and error messages."""
    parts = urlsplit(url)
    redacted = parts
    if parts.password:
        redacted = redacted._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1))
    params = parts.query.split("&") if parts.query else []
    hidden = [
        f"{name}=***" if sep and unquote(name).strip().lower() in _SECRET_PARAMS else f"{name}{sep}{value}"
        for name, sep, value in (param.partition("=") for param in params)
    ]
    if hidden != params:
        redacted = redacted._replace(query="&".join(hidden))
    return url if redacted == parts else redacted.geturl()


def load_settings() -> Settings:
    """Read settings from the environment; a bad value raises ConfigError naming the variable."""
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "?"
        # Never echo the input: it may be a password or a key.
        raise ConfigError(f"{env_name(field)}: {first['msg']}") from None
