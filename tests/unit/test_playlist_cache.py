"""The playlist cache's own rules: bounded in bytes, least recently used out first, one
render per version at a time, nothing kept from a render that failed; a URL's last
rendering served again only under its stream's change token, and only while fresh."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import pytest

from api.delivery import PlaylistBody
from api.playlist_cache import PlaylistCache
from api.stream_changes import StreamChanges
from core.events import stream_channel


def text(n: int) -> str:
    return f"#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:{n}\n" + "#EXTINF:2.0,\nx.m4s\n" * 50


def size_of(n: int) -> int:
    body = PlaylistBody(text(n))
    body.gzipped()
    return body.size


def test_a_kept_version_is_served_without_rendering_again() -> None:
    cache = PlaylistCache(10 * size_of(0))
    rendered: list[int] = []

    def render() -> str:
        rendered.append(0)
        return text(0)

    first = cache.body(lambda: "v0", render)
    again = cache.body(lambda: "v0", render)
    assert again is first and rendered == [0]
    assert (cache.hits, cache.renders, cache.held_bytes) == (1, 1, first.size)
    other = cache.body(lambda: "v1", lambda: text(1))
    assert other.text == text(1) and cache.renders == 2


def test_it_holds_no_more_than_its_bytes_dropping_the_least_recently_used() -> None:
    cache = PlaylistCache(2 * size_of(0) + size_of(0) // 2)
    for n in range(2):
        cache.body(lambda n=n: f"v{n}", lambda n=n: text(n))
    cache.body(lambda: "v0", pytest.fail)  # v0 used again: v1 is now the oldest
    cache.body(lambda: "v2", lambda: text(2))
    assert cache.held_bytes <= cache.max_bytes
    assert cache.body(lambda: "v0", pytest.fail).text == text(0)
    assert cache.body(lambda: "v1", lambda: "rendered again").text == "rendered again"


def test_a_playlist_larger_than_the_cache_is_served_and_not_kept() -> None:
    cache = PlaylistCache(size_of(0) // 2)
    assert cache.body(lambda: "v0", lambda: text(0)).text == text(0)
    assert cache.held_bytes == 0
    assert cache.body(lambda: "v0", lambda: "again").text == "again"


def test_with_no_bytes_it_renders_every_request_and_never_reads_a_version() -> None:
    cache = PlaylistCache(0)
    assert cache.body(pytest.fail, lambda: text(0)).text == text(0)
    assert cache.body(pytest.fail, lambda: text(1)).text == text(1)
    assert (cache.hits, cache.renders, cache.held_bytes) == (0, 0, 0)


def test_requests_that_miss_the_same_version_together_wait_for_one_render() -> None:
    cache = PlaylistCache(10 * size_of(0))
    release = threading.Event()
    renders: list[int] = []

    def slow_render() -> str:
        renders.append(0)
        release.wait(10)
        return text(0)

    arrived = threading.Barrier(9)  # all eight have read the version before it renders

    def version() -> str:
        arrived.wait(10)
        return "v0"

    bodies: list[PlaylistBody] = []
    threads = [
        threading.Thread(target=lambda: bodies.append(cache.body(version, slow_render)))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    arrived.wait(10)
    release.set()
    for thread in threads:
        thread.join(10)
    assert len(bodies) == 8 and renders == [0]
    assert all(body is bodies[0] for body in bodies)


def test_a_render_that_fails_keeps_nothing_and_the_next_request_renders() -> None:
    cache = PlaylistCache(10 * size_of(0))

    def broken() -> str:
        raise RuntimeError("database went away")

    with pytest.raises(RuntimeError):
        cache.body(lambda: "v0", broken)
    assert cache.held_bytes == 0
    assert cache.body(lambda: "v0", lambda: text(0)).text == text(0)


def test_a_stream_s_token_moves_with_its_events_and_all_move_with_a_new_subscription() -> None:
    changes = StreamChanges()
    one, other = uuid.uuid4(), uuid.uuid4()
    assert changes.token(one) is None  # not subscribed yet: events may go unseen
    changes.subscribed()
    before = changes.token(one), changes.token(other)
    changes.changed(stream_channel(one))
    assert changes.token(one) != before[0] and changes.token(other) == before[1]
    seen = {changes.token(one), changes.token(other)}
    changes.lost()
    assert changes.token(one) is None
    changes.subscribed()
    # A new subscription: no token from before comes back, not even after as many events.
    changes.changed(stream_channel(one))
    assert not {changes.token(one), changes.token(other)} & seen


def test_a_url_s_answer_is_served_only_under_its_token_and_while_fresh() -> None:
    cache = PlaylistCache(10 * size_of(0), fresh_seconds=60.0)
    body = PlaylistBody(text(0))

    def asks(url: str, token: tuple[int, int] | None) -> bool:
        """Whether a poll of `url` under `token` asks for a new answer."""
        fresh = PlaylistBody(text(1))
        return asyncio.run(cache.answer(url, token, lambda: fresh)) is fresh

    assert asyncio.run(cache.answer("s/source", (1, 1), lambda: body)) is body
    assert asyncio.run(cache.answer("s/source", (1, 1), pytest.fail)) is body
    assert asyncio.run(cache.answer("s/source", (1, 1), pytest.fail)) is body
    assert (cache.unqueried, cache.hits) == (2, 2)
    assert asks("s/source", (1, 2))  # an event came since
    assert asks("s/240p", (1, 1))
    assert asks("s/source", None) and asks("s/source", None)  # unseen events: never kept

    stale = PlaylistCache(10 * size_of(0), fresh_seconds=0.2)
    asyncio.run(stale.answer("s/source", (1, 1), lambda: body))
    time.sleep(0.3)
    again = PlaylistBody(text(1))
    # Past fresh_seconds: ask again.
    assert asyncio.run(stale.answer("s/source", (1, 1), lambda: again)) is again


def test_polls_that_miss_under_one_token_together_await_one_answer_holding_no_thread() -> None:
    cache = PlaylistCache(10 * size_of(0), fresh_seconds=60.0)
    asked: list[str] = []
    release = threading.Event()

    def answer() -> PlaylistBody:
        asked.append(threading.current_thread().name)
        release.wait(5)
        return PlaylistBody(text(0))

    async def polls() -> list[PlaylistBody]:
        waiting = [
            asyncio.ensure_future(cache.answer("s/source", (1, 1), answer)) for _ in range(8)
        ]
        await asyncio.sleep(0.2)
        assert threading.active_count() <= before + 1  # one thread for the one answer
        release.set()
        return await asyncio.gather(*waiting)

    before = threading.active_count()
    got = asyncio.run(polls())
    assert len(asked) == 1 and len({id(b) for b in got}) == 1


def test_an_answer_that_fails_fails_its_polls_and_keeps_nothing() -> None:
    cache = PlaylistCache(10 * size_of(0), fresh_seconds=60.0)

    def missing() -> PlaylistBody:
        raise LookupError("no such rendition")

    async def polls() -> list[object]:
        waiting = [cache.answer("s/source", (1, 1), missing) for _ in range(3)]
        return await asyncio.gather(*waiting, return_exceptions=True)

    assert all(isinstance(e, LookupError) for e in asyncio.run(polls()))
    assert asyncio.run(cache.answer("s/source", (1, 1), lambda: PlaylistBody("ok"))).text == "ok"


def test_with_no_fresh_seconds_every_poll_asks() -> None:
    cache = PlaylistCache(10 * size_of(0), fresh_seconds=0.0)
    asyncio.run(cache.answer("s/source", (1, 1), lambda: PlaylistBody(text(0))))
    asked = PlaylistBody(text(1))
    assert asyncio.run(cache.answer("s/source", (1, 1), lambda: asked)) is asked
    assert cache.unqueried == 0
