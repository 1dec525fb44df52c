"""The web playground at `/`: one static page (static/index.html, plain HTML/JS/CSS, no build
step) that talks to the server's own /v1 API. The page and its files are public; the API calls
it makes carry the API key the user types in, as any other client's do."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import Scope

STATIC = Path(__file__).parent / "static"


def install_playground(app: FastAPI) -> None:
    """GET / -> the page; GET /static/... -> its script and stylesheet."""

    @app.get("/", include_in_schema=False)
    async def playground() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", Revalidated(directory=STATIC), name="static")


class Revalidated(StaticFiles):
    """The page's scripts and stylesheet with `Cache-Control: no-cache`, as the page itself: a
    browser asks again each time (a 304 by ETag while they are unchanged). Without it Chromium kept
    them by heuristic freshness (a tenth of the file's age: days for an installed package) and,
    after an upgrade, ran the old scripts under the new index.html."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["Cache-Control"] = "no-cache"
        return response
