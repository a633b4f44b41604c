"""HealthMonitor: one check shared by every caller, its result kept, run off the threadpool
that the sync routes share."""

from __future__ import annotations

import asyncio
import threading

import anyio.to_thread

from api.health import HealthMonitor


class GatedProbe:
    """A probe that counts its runs and blocks until `gate` is set."""

    def __init__(self) -> None:
        self.runs = 0
        self.started = threading.Event()
        self.gate = threading.Event()

    def __call__(self) -> str:
        self.runs += 1
        self.started.set()
        self.gate.wait(10)
        return "fine"


def test_callers_during_a_check_share_it_and_later_ones_get_its_result() -> None:
    probe = GatedProbe()
    monitor = HealthMonitor({"database": probe}, cache_seconds=60)

    async def scenario() -> tuple[list, list, int]:
        callers = [asyncio.create_task(monitor.current()) for _ in range(50)]
        await asyncio.to_thread(probe.started.wait, 10)
        # While the probe blocks, none of the anyio threadpool's slots is taken.
        borrowed = anyio.to_thread.current_default_thread_limiter().borrowed_tokens
        probe.gate.set()
        results = await asyncio.gather(*callers)
        return results, await monitor.current(), borrowed

    try:
        results, later, borrowed = asyncio.run(scenario())
    finally:
        monitor.close()
    assert probe.runs == 1
    assert borrowed == 0
    assert all(r == results[0] for r in results)
    assert later == results[0]
    assert results[0][0].ok and results[0][0].detail == "fine"


def test_without_a_cache_each_call_checks_again() -> None:
    probe = GatedProbe()
    probe.gate.set()
    monitor = HealthMonitor({"redis": probe}, cache_seconds=0)

    async def scenario() -> None:
        await monitor.current()
        await monitor.current()

    try:
        asyncio.run(scenario())
    finally:
        monitor.close()
    assert probe.runs == 2


def test_a_failing_probe_is_reported_down_with_its_reason() -> None:
    def broken() -> str:
        raise ConnectionRefusedError("db.internal:5432 refused")

    monitor = HealthMonitor({"database": broken}, cache_seconds=0)
    try:
        (result,) = asyncio.run(monitor.current())
    finally:
        monitor.close()
    assert not result.ok
    assert result.detail == "ConnectionRefusedError: db.internal:5432 refused"
