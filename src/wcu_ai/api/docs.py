"""The API's documentation pages, Swagger UI at /docs and ReDoc at /redoc, with every asset served
by the API itself: they work air-gapped and load no third-party script.

FastAPI's default pages load Swagger UI, ReDoc and a favicon from CDNs. The assets here are the
ones the fastapi-offline wheel ships (pinned in uv.lock, so the images carry them); only its
static files are used, not its app factory. Swagger UI's validator badge, which would send the
schema to validator.swagger.io, is off. WCU_API_DOCS=false leaves both pages out (/openapi.json
stays: clients generate code from it).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_PATH = "/docs/assets"


def asset_directory() -> Path:
    return Path(str(resources.files("fastapi_offline") / "static"))


def add_docs(app: FastAPI) -> None:
    """Mounts /docs, /docs/oauth2-redirect, /redoc and their assets on an app built with docs_url=None."""
    openapi_url = app.openapi_url or "/openapi.json"
    redirect_url = "/docs/oauth2-redirect"
    app.mount(ASSETS_PATH, StaticFiles(directory=asset_directory()), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=f"{root}{redirect_url}",
            swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get(redirect_url, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS_PATH}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
            with_google_fonts=False,
        )
