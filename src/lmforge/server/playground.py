"""The web playground at `/`: one static page (static/index.html, plain HTML/JS/CSS, no build
step) that talks to the server's own /v1 API. The page and its files are public; the API calls
it makes carry the API key the user types in, as any other client's do."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"


def install_playground(app: FastAPI) -> None:
    """GET / -> the page; GET /static/... -> its script and stylesheet."""

    @app.get("/", include_in_schema=False)
    async def playground() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
