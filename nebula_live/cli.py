"""The `nebula-live` command: the whole stack (`up`), or one service each for scale-out."""

from __future__ import annotations

import io
import logging
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from core.settings import get_settings, retention_off_warning
from nebula_live.worker_pools import WorkerPool, run_worker

app = typer.Typer(
    help="nebula-live: live-streaming ingest and HLS packaging.",
    no_args_is_help=True,
    add_completion=False,
)


def _configure_logging() -> None:
    logging.basicConfig(
        level=get_settings().log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@app.command()
def up(
    demo: bool = typer.Option(False, "--demo", help="Also publish a generated test pattern."),
) -> None:
    """Run everything in the foreground: embedded services where no URL is set, migrations,
    API, ingest and workers. Ctrl-C or SIGTERM stops every child."""
    from nebula_live.stack import run_up

    raise typer.Exit(run_up(get_settings(), demo=demo))


@app.command()
def api() -> None:
    """Serve the REST API, HLS, websockets and the player."""
    import uvicorn

    from api.app import create_app

    _configure_logging()
    settings = get_settings()
    if warning := retention_off_warning(settings):
        logging.getLogger("nebula_live.api").warning(warning)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.bind_host,
        port=settings.http_port,
        log_level=settings.log_level.lower(),
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        ws_max_size=settings.ws_max_message_bytes,
    )
    server = uvicorn.Server(config)
    if not settings.reuse_port:
        server.run()
        return
    # This host's other API processes listen on the same port; the kernel deals them
    # connections.
    family = socket.getaddrinfo(settings.bind_host, settings.http_port)[0][0]
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind((settings.bind_host, settings.http_port))
    server.run(sockets=[listener])


@app.command()
def ingest() -> None:
    """Accept publishers (RTMP) and package them into HLS."""
    import asyncio

    from ingest.service import run_ingest

    _configure_logging()
    asyncio.run(run_ingest(get_settings()))


@app.command()
def worker(
    pool: Annotated[
        WorkerPool,
        typer.Option(
            "--pool",
            help="live: the live ladder (NEBULA_LIVE_WORKERS processes); batch: uploads, "
            "webhooks and the housekeeping beat (NEBULA_WORKERS processes, niced); all: both.",
        ),
    ] = WorkerPool.ALL,
) -> None:
    """Run Celery workers: the live ladder on processes of its own, then uploads, webhooks
    and the housekeeping beat."""
    _configure_logging()  # for the startup warnings; Celery then sets up its own
    raise typer.Exit(run_worker(get_settings(), pool))


@app.command()
def migrate() -> None:
    """Prepare the stores: upgrade the database schema and create the bucket if missing."""
    from core.migrate import upgrade
    from core.storage import ObjectStore

    settings = get_settings()
    if not settings.database_url:
        typer.echo("NEBULA_DATABASE_URL is not set", err=True)
        raise typer.Exit(2)
    upgrade(settings.database_url)
    typer.echo("database schema is up to date")
    store = ObjectStore.from_settings(settings)
    store.ensure_bucket(settings.playback_cors_origin_list)
    typer.echo(f"bucket {store.bucket!r} is ready")


UPLOAD_POLL_SECONDS = 0.5
# Per request; the body itself may take as long as it takes to send.
UPLOAD_HTTP_TIMEOUT = httpx.Timeout(60.0)


class _CountingFile(io.FileIO):
    """A file that reports each read: httpx streams the body from it, the bar follows."""

    def __init__(self, path: Path, on_read: Callable[[int], None]) -> None:
        super().__init__(path, "rb")
        self.on_read = on_read

    def read(self, size: int = -1) -> bytes:
        data = super().read(size)
        self.on_read(len(data))
        return data


@app.command()
def upload(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    name: str | None = typer.Option(None, "--name", help="Display name (default: file name)."),
    api: str | None = typer.Option(
        None, "--api", help="API base URL (default: this host's, from NEBULA_* settings)."
    ),
    token: str | None = typer.Option(
        None, "--token", help="Bearer token (default: NEBULA_API_TOKEN, else the one `up` kept)."
    ),
) -> None:
    """Upload a media file, follow its processing, and print its playback URL."""
    from nebula_live.stack import kept_api_token

    settings = get_settings()
    base = (api or settings.public_http_url).rstrip("/")
    # Without a token the server answers 401, which is printed like any refusal.
    token = token or kept_api_token(settings)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    console = Console(stderr=True)
    try:
        with httpx.Client(base_url=base, headers=headers, timeout=UPLOAD_HTTP_TIMEOUT) as client:
            state = _send_upload(client, file, name, console)
            state = _follow_processing(client, state, console)
    except httpx.HTTPError as exc:
        typer.echo(f"cannot talk to {base}: {exc}", err=True)
        raise typer.Exit(1) from None
    if state["status"] != "ready":
        console.print(f"[red]upload {state['id']} failed:[/red] {state['error']}")
        raise typer.Exit(1)
    typer.echo(state["playback_url"])


def _send_upload(client: httpx.Client, file: Path, name: str | None, console: Console) -> dict:
    """POST the file, streamed from disk, with a bar following the bytes sent."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as bars:
        sending = bars.add_task("upload", total=file.stat().st_size)
        with _CountingFile(file, lambda n: bars.advance(sending, n)) as body:
            response = client.post(
                "/api/v1/uploads",
                files={"file": (file.name, body)},
                data={"name": name} if name else None,
            )
    return _answer_or_exit(response)


def _follow_processing(client: httpx.Client, state: dict, console: Console) -> dict:
    """Poll the upload until it is ready or failed, with a bar following its progress."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as bars:
        processing = bars.add_task("processing", total=1.0)
        while state["status"] == "processing":
            bars.update(processing, completed=state["progress"])
            time.sleep(UPLOAD_POLL_SECONDS)
            state = _answer_or_exit(client.get(f"/api/v1/uploads/{state['id']}"))
        bars.update(processing, completed=state["progress"])
    return state


def _answer_or_exit(response: httpx.Response) -> dict:
    """The JSON of a 2xx answer; otherwise print the server's `detail` and exit 1."""
    if response.is_success:
        return response.json()
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    typer.echo(f"refused ({response.status_code}): {detail}", err=True)
    raise typer.Exit(1)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
