"""`wcu-ai healthcheck`: the API's own probe, for orchestrators that run a command in the container.

The images have no shell and no curl, so an ECS container healthCheck (or a Docker HEALTHCHECK)
cannot call `curl -f`: it runs this instead, which asks the API in the same container, on the
loopback address only, for /health (liveness) or /health/ready.
"""

from __future__ import annotations

import http.client

from wcu_ai.settings import Settings


def check_health(settings: Settings, *, ready: bool = False, timeout: float = 3.0) -> tuple[bool, str]:
    """(healthy, what was seen): GET /health or /health/ready on 127.0.0.1:WCU_API_PORT."""
    path = "/health/ready" if ready else "/health"
    conn = http.client.HTTPConnection("127.0.0.1", settings.api_port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read(2000).decode("utf-8", errors="replace").strip()
    except OSError as exc:
        return False, f"{path}: no answer on 127.0.0.1:{settings.api_port} ({exc.__class__.__name__}: {exc})"
    finally:
        conn.close()
    return response.status == 200, f"{path}: {response.status} {body}"
