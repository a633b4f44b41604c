"""The `nebula-live` command: the whole stack (`up`), or one service each for scale-out."""

from __future__ import annotations

import logging
import sys

import typer

from core.settings import get_settings

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
    from core.stack import run_up

    raise typer.Exit(run_up(get_settings(), demo=demo))


@app.command()
def api() -> None:
    """Serve the REST API, HLS, websockets and the player."""
    import uvicorn

    from api.app import create_app

    _configure_logging()
    settings = get_settings()
    uvicorn.run(
        create_app(settings),
        host=settings.bind_host,
        port=settings.http_port,
        log_level=settings.log_level.lower(),
        proxy_headers=True,
    )


@app.command()
def ingest() -> None:
    """Accept publishers (RTMP) and package them into HLS."""
    import asyncio

    from ingest.service import run_ingest

    _configure_logging()
    asyncio.run(run_ingest(get_settings()))


@app.command()
def worker() -> None:
    """Run Celery workers (transcoding, uploads, webhooks) and the housekeeping beat."""
    import os

    from packager.celery_app import celery_app

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    celery_app.worker_main(
        [
            "worker",
            f"--loglevel={settings.log_level}",
            f"--concurrency={settings.workers}",
            f"--hostname=worker-{os.getpid()}@%h",
            "--queues=nebula",
            "--without-gossip",
            "--without-mingle",
            # The embedded beat schedules the retention sweep (see packager/celery_app.py).
            "--beat",
            f"--schedule={settings.data_dir / 'celerybeat-schedule'}",
        ]
    )


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
    store.ensure_bucket()
    typer.echo(f"bucket {store.bucket!r} is ready")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
