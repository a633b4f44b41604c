"""The playlist cache's own rules: bounded in bytes, least recently used out first, one
render per version at a time, nothing kept from a render that failed."""

from __future__ import annotations

import threading

import pytest

from api.delivery import PlaylistBody
from api.playlist_cache import PlaylistCache


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
