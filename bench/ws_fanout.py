"""Websocket fan-out: N clients on one API process, delay from a Redis publish to the last one.

Run against a running `nebula-live api` (it needs its database and Redis; S3 is not used):

    python bench/ws_fanout.py --api http://127.0.0.1:8000 --token TOKEN \\
        --redis redis://127.0.0.1:6379/0 --clients 1000 --events 50

It creates a stream, connects the clients to `/ws/streams/{id}`, then publishes `--events`
events on the stream's channel, one after the last client received the previous one, and
prints JSON: per event the delay until the last client had it (p50, p90, max) and the delay
over every single delivery (p50). The clients share this process's event loop, so the
figures include their own reading time: an upper bound for what the server adds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import time

import httpx
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect

CONNECT_BATCH = 100


def _raise_fd_limit(clients: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, max(soft, clients * 2 + 256))
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


async def _client(url: str) -> ClientConnection:
    ws = await connect(url, open_timeout=30, max_queue=None)
    first = json.loads(await ws.recv())
    assert first["type"] == "status", first
    return ws


async def _receive(ws: ClientConnection, arrivals: dict[int, list[float]]) -> None:
    async for raw in ws:
        message = json.loads(raw)
        if message.get("type") == "segment":
            arrivals[message["sequence"]].append(time.perf_counter())


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def run(api: str, token: str, redis_url: str, clients: int, events: int) -> dict:
    _raise_fd_limit(clients)
    async with httpx.AsyncClient(base_url=api, headers={"Authorization": f"Bearer {token}"}) as h:
        response = await h.post("/api/v1/streams", json={"name": "ws fan-out bench"})
        response.raise_for_status()
        stream_id = response.json()["id"]
    url = api.replace("http", "ws", 1) + f"/ws/streams/{stream_id}"
    sockets: list[ClientConnection] = []
    started = time.perf_counter()
    for first in range(0, clients, CONNECT_BATCH):
        batch = range(first, min(clients, first + CONNECT_BATCH))
        sockets += await asyncio.gather(*(_client(url) for _ in batch))
    connect_seconds = time.perf_counter() - started

    arrivals: dict[int, list[float]] = {n: [] for n in range(events)}
    readers = [asyncio.create_task(_receive(ws, arrivals)) for ws in sockets]
    redis = aioredis.Redis.from_url(redis_url)
    channel = f"nebula:stream:{stream_id}"
    last_delays, all_delays, lost = [], [], 0
    for sequence in range(events):
        payload = json.dumps({"type": "segment", "stream_id": stream_id, "sequence": sequence})
        sent = time.perf_counter()
        await redis.publish(channel, payload)
        deadline = sent + 10
        while len(arrivals[sequence]) < clients and time.perf_counter() < deadline:
            await asyncio.sleep(0.001)
        got = arrivals[sequence]
        lost += clients - len(got)
        if got:
            last_delays.append(max(got) - sent)
            all_delays += [t - sent for t in got]
        await asyncio.sleep(0.05)
    for task in readers:
        task.cancel()
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    await redis.aclose()
    ms = 1000.0
    return {
        "clients": clients,
        "events": events,
        "connect_seconds": round(connect_seconds, 2),
        "last_client_ms": {
            "p50": round(statistics.median(last_delays) * ms, 1),
            "p90": round(_percentile(last_delays, 0.9) * ms, 1),
            "max": round(max(last_delays) * ms, 1),
        },
        "any_client_p50_ms": round(statistics.median(all_delays) * ms, 1),
        "missed_deliveries": lost,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", default="http://127.0.0.1:8000")
    parser.add_argument("--token", required=True)
    parser.add_argument("--redis", required=True, help="the Redis URL the API process uses")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--events", type=int, default=50)
    args = parser.parse_args()
    result = asyncio.run(run(args.api, args.token, args.redis, args.clients, args.events))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
