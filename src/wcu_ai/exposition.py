"""Serving metrics in Prometheus' text format: what the API's /metrics and the runner's listener share.

Each process builds its own CollectorRegistry in its composition root; nothing is registered in
prometheus_client's global registry, so importing a module never adds a metric and tests can
build as many registries as they like.
"""

from __future__ import annotations

import hmac

from prometheus_client import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST
UNAUTHORIZED = "missing or wrong metrics key: send 'Authorization: Bearer <WCU_METRICS_KEY>'"


def authorized(header: str, key: str | None) -> bool:
    """Whether an Authorization header opens /metrics: any request when no key is set, else the
    bearer key WCU_METRICS_KEY alone (compared in constant time; the API keys never open it)."""
    if key is None:
        return True
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(token.strip().encode(), key.encode())
