"""Opaque keyset cursors: (created_at, id) of the last row of a page."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from uuid import UUID

from fastapi.exceptions import RequestValidationError


def encode_cursor(created_at: datetime, row_id: UUID) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{row_id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    try:
        created_at, _, row_id = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        return datetime.fromisoformat(created_at), UUID(row_id)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        # The shape of FastAPI's own 422 (HTTPValidationError), which the OpenAPI schema promises.
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ("query", "cursor"),
                    "msg": "invalid cursor: pass next_cursor from a previous page",
                    "input": cursor,
                }
            ]
        ) from None
