"""`nebula-live ingest`: the RTMP and SRT listeners and their housekeeping, until SIGTERM."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import resource
import signal
import sys

from redis import Redis

from core.events import stop_following
from core.settings import Settings
from core.storage import ObjectStore, StorageError
from ingest.control import follow_control
from ingest.publisher import Publisher
from ingest.rtmp_server import RtmpConnectionHandler, serve_rtmp
from ingest.srt import libsrt
from ingest.srt_server import SrtListener

log = logging.getLogger(__name__)

# Storage and database calls run in threads; the default pool (cores + 4) is too small for
# dozens of streams each storing a segment every couple of seconds.
IO_THREADS = 64
# How long a thread holds the GIL while another waits for it (Python's default: 5 ms). The
# SRT epoll thread takes the GIL back after every packet it reads and the storage threads
# after every round trip; with the default, each waits out the event loop's slices and media
# queues up behind them. Measured at 30 streams (bench/rtmp_ingest_load.py): segment latency
# p50 RTMP 0.19 -> 0.06 s, SRT 0.9-1.3 -> 0.4-0.6 s, for no more CPU.
GIL_SWITCH_INTERVAL_SECONDS = 0.0005
# Between tries of the bucket at start while the object store does not answer.
BUCKET_RETRY_FIRST_SECONDS = 1.0
BUCKET_RETRY_MAX_SECONDS = 30.0


def raise_open_file_limit() -> int:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit (every connection is a file);
    returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == hard:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:
        log.warning("open-file limit stays %s (hard %s): %s", soft, hard, exc)
        return soft
    log.info("open-file limit raised from %s to %s", soft, hard)
    return hard


async def ensure_bucket(store: ObjectStore, settings: Settings) -> None:
    """The bucket and its CORS rule, tried until the store answers. The ingest does not wait
    for it to take publishes: its spool holds their segments (and what a stopped process
    left there) until the store is back."""
    delay = BUCKET_RETRY_FIRST_SECONDS
    while True:
        try:
            await asyncio.to_thread(store.ensure_bucket, settings.playback_cors_origin_list)
            return
        except StorageError as exc:
            log.warning("object store not answering (%s); trying again in %.0f s", exc, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, BUCKET_RETRY_MAX_SECONDS)


async def run_ingest(settings: Settings) -> None:
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_SECONDS)
    open_files = raise_open_file_limit()
    if settings.rtmp_max_connections > open_files // 2:
        log.warning(
            "NEBULA_RTMP_MAX_CONNECTIONS=%s is over half the open-file limit %s: sockets to "
            "storage and the database may run out first",
            settings.rtmp_max_connections,
            open_files,
        )
    loop = asyncio.get_running_loop()
    loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(IO_THREADS, "ingest-io"))
    store = ObjectStore.from_settings(settings)
    bucket = asyncio.create_task(ensure_bucket(store, settings))
    redis = Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=3)
    publisher = Publisher(settings, store, redis)
    publisher.start_replays()
    handler = RtmpConnectionHandler(publisher, settings)
    shared = settings.reuse_port
    server = await serve_rtmp(handler, settings.bind_host, settings.rtmp_port, reuse_port=shared)
    log.info("RTMP listening on %s:%s", settings.bind_host, settings.rtmp_port)
    srt = SrtListener(publisher, settings)
    await srt.start(settings.bind_host, settings.srt_port, reuse_port=shared)
    log.info(
        "SRT listening on %s:%s (UDP)%s",
        settings.bind_host,
        settings.srt_port,
        ", both ports shared with this host's other ingest processes" if shared else "",
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    housekeeping = asyncio.create_task(publisher.run_housekeeping())
    ladder_sweeps = asyncio.create_task(publisher.run_ladder_sweeps())
    control = asyncio.create_task(
        follow_control(
            settings.redis_url,
            lambda stream_id: handler.disconnect(stream_id) or srt.disconnect(stream_id),
        )
    )
    try:
        await stop.wait()
    finally:
        log.info("stopping: closing the listeners and storing what publishers sent")
        server.close()
        bucket.cancel()
        housekeeping.cancel()
        ladder_sweeps.cancel()
        await stop_following(control)
        await asyncio.gather(handler.close_all(), srt.close())
        libsrt.cleanup()
        redis.close()
