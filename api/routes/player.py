"""The demo player page at `/player`, public like playback: plain HTML, CSS and JS from
`player_demo/`, with hls.js copied into `player_demo/static/vendor/` by `make player`."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

PLAYER_DIR = Path(__file__).resolve().parents[2] / "player_demo"
STATIC_DIR = PLAYER_DIR / "static"
HLS_JS = STATIC_DIR / "vendor" / "hls.min.js"

NOT_BUILT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>nebula-live player</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 40rem; margin: 4rem auto">
<h1>The player page is not built yet</h1>
<p>hls.js is missing from <code>player_demo/static/vendor/</code>. Build it from the
repository root with <code>make player</code> (runs <code>npm ci</code> in
<code>player_demo/</code> and copies <code>hls.min.js</code>), then reload this page.</p>
</body></html>
"""

router = APIRouter(tags=["player"])


@router.get("/player", include_in_schema=False)
def player_page() -> Response:
    if not HLS_JS.is_file():
        return HTMLResponse(NOT_BUILT)
    return FileResponse(PLAYER_DIR / "index.html", headers={"Cache-Control": "no-cache"})


def static_files() -> StaticFiles:
    """Mounted at `/player/static`; the API still starts when the page is not built."""
    return StaticFiles(directory=STATIC_DIR, check_dir=False)
