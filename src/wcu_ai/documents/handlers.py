"""The runner's parse_document task: original bytes -> parse -> pages and chunks in the database.

The document row mirrors its task: parsing while a runner works it, parsed or failed (with the
reason) when done, queued again when the attempt is handed back for a retry or at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID

from wcu_ai.documents import store
from wcu_ai.documents.office import OfficeConverter, office_limits, probe_private_network
from wcu_ai.documents.parse import DocumentLimits, parse_document
from wcu_ai.documents.process import missing_tools
from wcu_ai.documents.workdir import RunnerWorkDir
from wcu_ai.embeddings import embed_texts
from wcu_ai.errors import ConfigError, PermanentTaskError
from wcu_ai.settings import Settings
from wcu_ai.tasks.model import Task, error_text
from wcu_ai.tasks.registry import TaskContext

if TYPE_CHECKING:
    from agno.knowledge.embedder.base import Embedder

logger = logging.getLogger(__name__)


class ParseMetrics(Protocol):
    """What the parser counts (task_runner/metrics.py RunnerMetrics is one)."""

    def document_parsed(self, kind: str) -> None: ...

    def document_failed(self, kind: str, exc: BaseException) -> None: ...

    def libreoffice_restarted(self, reason: str) -> None: ...


def kind_label(head: bytes) -> str:
    """A document's kind for counting, from its first bytes (detect_type's magic numbers, without
    opening the zip): known before parsing, so failures are counted by kind too."""
    if head.startswith(b"PK\x03\x04"):
        return "docx"
    if b"%PDF-" in head[:1024]:
        return "pdf"
    return "other"


def work_dir(settings: Settings) -> Path:
    return settings.work_dir or Path(tempfile.gettempdir()) / "wcu-ai"


class DocumentParser:
    """Holds one LibreOffice profile per worker slot for the runner's lifetime.

    start() (at runner start, before any task) cleans what dead runners left in the work
    directory and takes this runner's own directory there; everything parsing writes goes in it.
    """

    def __init__(
        self,
        settings: Settings,
        blobs: store.BlobStore | None = None,
        embedder: Embedder | None = None,
        *,
        metrics: ParseMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.embedder = embedder
        self.metrics = metrics
        self.blobs = blobs or store.PostgresBlobStore()
        self.limits = DocumentLimits.from_settings(settings)
        self.work_dir = work_dir(settings)
        self._own = RunnerWorkDir(self.work_dir)
        self._converters: dict[int, OfficeConverter] = {}

    def start(self) -> None:
        """Clean the dead runners' leftovers, take this runner's directory, report the sandbox."""
        try:
            self._own.open()
        except OSError as exc:
            raise ConfigError(
                f"WCU_WORK_DIR ({self.work_dir}) is not usable: {exc.strerror or exc}; give a writable directory"
            ) from exc
        mode = self.settings.office_private_network
        probe = probe_private_network() if mode != "off" else None
        if probe is None:
            logger.info(
                "LibreOffice runs without a private network namespace (WCU_OFFICE_PRIVATE_NETWORK=off)",
                extra={"action": "office.private_network", "state": "off"},
            )
        elif probe.available:
            logger.info(
                "LibreOffice runs in a private network namespace",
                extra={"action": "office.private_network", "state": "on"},
            )
        else:
            (logger.error if mode == "required" else logger.warning)(
                "LibreOffice cannot run in a private network namespace here; "
                + (
                    "DOCX tasks fail until it can (WCU_OFFICE_PRIVATE_NETWORK=required)"
                    if mode == "required"
                    else "the package rewrite and its profile still keep documents off the network"
                ),
                extra={"action": "office.private_network", "state": "unavailable", "reason": probe.reason},
            )

    @property
    def scratch_dir(self) -> Path:
        """This runner's own directory (start() takes it; until then, it is taken on first use)."""
        return self._own.open()

    def report_tools(self) -> list[str]:
        missing = missing_tools()
        if missing:
            logger.warning(
                "document tools missing: parse_document tasks will fail until they are on PATH",
                extra={"action": "runner.tools_missing", "missing": missing},
            )
        return missing

    def converter(self, slot: int) -> OfficeConverter:
        if slot not in self._converters:
            settings = self.settings
            on_restart = self.metrics.libreoffice_restarted if self.metrics is not None else None
            self._converters[slot] = OfficeConverter(
                slot,
                self.scratch_dir / "office",
                limits=office_limits(
                    memory_bytes=settings.office_memory_bytes,
                    timeout_seconds=settings.doc_timeout_seconds,
                    max_pdf_bytes=settings.doc_max_pdf_bytes,
                ),
                private_network=settings.office_private_network,
                on_restart=on_restart,
            )
        return self._converters[slot]

    def close(self) -> None:
        for converter in self._converters.values():
            converter.close()
        self._converters.clear()
        self._own.close()

    async def handle(self, task: Task, ctx: TaskContext) -> dict[str, Any]:
        try:
            document_id = UUID(str(task.payload["document_id"]))
        except (KeyError, ValueError):
            raise PermanentTaskError("parse_document needs payload.document_id, a document UUID") from None
        async with ctx.pool.connection() as conn, conn.transaction():
            if await store.lock_for_parsing(conn, document_id) is None:
                return {"document_id": str(document_id), "skipped": "the document was deleted"}
            await store.set_status(conn, document_id, "parsing")

        kind = "other"  # until the original's first bytes say, for counting a failure by kind
        scratch_dir = self.scratch_dir
        try:
            with tempfile.TemporaryDirectory(dir=scratch_dir, prefix="upload-") as scratch:
                source = Path(scratch) / "document"
                # Streamed to the scratch file a chunk at a time: never the whole document in memory.
                async with ctx.pool.connection() as conn:
                    with source.open("wb") as sink:
                        found = await self.blobs.read_into(conn, document_id, sink)
                if not found:
                    return {"document_id": str(document_id), "skipped": "the document was deleted"}
                with source.open("rb") as head:
                    kind = kind_label(head.read(1024))
                parsed = await parse_document(
                    source, converter=self.converter(ctx.slot), limits=self.limits, work_dir=scratch_dir
                )
        except asyncio.CancelledError:
            await asyncio.shield(self._set_status(ctx, document_id, "queued"))
            raise
        except PermanentTaskError as exc:
            self._count_failure(kind, exc)
            await asyncio.shield(self._set_status(ctx, document_id, "failed", error_text(exc)))
            raise
        except Exception as exc:
            last_attempt = task.attempts >= task.max_attempts
            if last_attempt:
                self._count_failure(kind, exc)
            await asyncio.shield(
                self._set_status(ctx, document_id, "failed" if last_attempt else "queued", error_text(exc))
            )
            raise

        embeddings = None
        if self.embedder is not None and parsed.chunks:
            # A failing embedder (network, quota) fails the attempt; the task is retried.
            embeddings = await embed_texts(self.embedder, [c.text for c in parsed.chunks])
        async with ctx.pool.connection() as conn, conn.transaction():
            if await store.lock_for_parsing(conn, document_id) is None:
                return {"document_id": str(document_id), "skipped": "the document was deleted while parsing"}
            await store.save_parsed(
                conn, document_id, parsed, embeddings=embeddings, embedding_model=self.settings.embedder
            )
        if self.metrics is not None:
            self.metrics.document_parsed(parsed.kind)
        return {
            "document_id": str(document_id),
            "kind": parsed.kind,
            "page_count": parsed.page_count,
            "chunks": len(parsed.chunks),
            "seconds": round(parsed.seconds, 3),
        }

    def _count_failure(self, kind: str, exc: BaseException) -> None:
        if self.metrics is not None:
            self.metrics.document_failed(kind, exc)

    async def _set_status(
        self, ctx: TaskContext, document_id: UUID, status: str, reason: str | None = None
    ) -> None:
        async with ctx.pool.connection() as conn:
            await store.set_status(conn, document_id, status, reason)
