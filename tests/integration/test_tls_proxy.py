"""The repository's Caddyfile, run by the real Caddy in front of a real `nebula-live api`,
as docker-compose.yml's `proxy` runs it: HTTPS with HTTP/2 for playlists, segments and the
REST API, and websockets passed through. Only the site address (a loopback port), the
upstream and an internal certificate differ, all through the variables the Caddyfile reads;
with compose's own variables Caddy serves the public host on 443 from the API."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from core.settings import Settings
from core.storage import ObjectStore
from packager.keys import segment_name
from tests.integration.test_management_api import _add_session
from tests.services import REPO_ROOT, free_port, running_api, terminate_group, wait_for

# What the test changes of the deployment's proxy: no admin endpoint or system trust store
# touched, no port 80 taken for redirects, loopback only.
TEST_GLOBAL_OPTIONS = (
    "admin off\nskip_install_trust\nauto_https disable_redirects\ndefault_bind 127.0.0.1"
)


@contextmanager
def running_caddy(home: Path, port: int, upstream_port: int) -> Iterator[Path]:
    """Caddy with the repo's Caddyfile on 127.0.0.1:`port`; yields the certificate of the
    internal CA it made its own with."""
    caddy = shutil.which("caddy")
    assert caddy, "caddy is missing: `make system-deps` installs it (Debian package caddy)"
    env = {
        **os.environ,
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CONFIG_HOME": str(home / "config"),
        "NEBULA_PUBLIC_HOST": f"127.0.0.1:{port}",
        "NEBULA_UPSTREAM": f"127.0.0.1:{upstream_port}",
        "CADDY_TLS": "tls internal",
        "CADDY_GLOBAL_OPTIONS": TEST_GLOBAL_OPTIONS,
    }
    root = home / "data" / "caddy" / "pki" / "authorities" / "local" / "root.crt"
    with open(home / "caddy.log", "ab") as log:
        proc = subprocess.Popen(
            [caddy, "run", "--adapter", "caddyfile", "--config", str(REPO_ROOT / "Caddyfile")],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(lambda: root.exists() or proc.poll() is not None, 30, "caddy's internal CA")
        assert proc.poll() is None, (home / "caddy.log").read_text()[-3000:]

        def serves() -> bool:
            with httpx.Client(verify=_trusting(root), timeout=5) as client:
                return client.get(f"https://127.0.0.1:{port}/livez").status_code == 200

        wait_for(serves, 30, "caddy serving HTTPS")
        yield root
    finally:
        terminate_group(proc)


def _trusting(ca: Path) -> ssl.SSLContext:
    """A TLS context of its own per client (httpx sets the ALPN protocols of the one given)."""
    return ssl.create_default_context(cafile=str(ca))


@pytest.mark.timeout(180)
def test_the_caddyfile_serves_the_api_over_https_and_http2_and_passes_websockets(
    settings: Settings, store: ObjectStore, tmp_path: Path
) -> None:
    own = settings.model_copy(update={"http_port": free_port()})
    port = free_port()
    base = f"https://127.0.0.1:{port}"
    with (
        running_api(own, tmp_path / "api.log") as direct,
        running_caddy(tmp_path, port, own.http_port) as ca,
    ):
        created = direct.post("/api/v1/streams", json={"name": "behind the proxy"})
        stream_id = created.json()["id"]
        started = datetime.now(UTC) - timedelta(minutes=1)
        session_id = _add_session(own, stream_id, started=started, segments=4, store=store)
        playlist = f"/hls/sessions/{session_id}/source/index.m3u8"
        segment = f"/hls/{stream_id}/source/{session_id}/{segment_name(0)}"
        with httpx.Client(base_url=base, http2=True, verify=_trusting(ca), timeout=30) as client:
            proxied = client.get(playlist)
            assert proxied.status_code == 200, proxied.text
            assert proxied.http_version == "HTTP/2"
            assert proxied.text == direct.get(playlist).text
            assert "#EXT-X-ENDLIST" in proxied.text
            media = client.get(segment)
            assert media.http_version == "HTTP/2"
            assert media.content == direct.get(segment).content
            assert client.get(f"/api/v1/streams/{stream_id}").status_code == 401
            answer = client.get(f"/api/v1/streams/{stream_id}", headers=direct.headers)
            assert answer.status_code == 200 and answer.json()["name"] == "behind the proxy"
        with connect(f"wss://127.0.0.1:{port}/ws/streams/{stream_id}", ssl=_trusting(ca)) as socket:
            first = json.loads(socket.recv(timeout=30))
        assert first["type"] == "status"


def test_the_caddyfile_with_compose_s_environment_serves_the_host_on_443_from_the_api(
    tmp_path: Path,
) -> None:
    """What Caddy makes of the file with only the variables docker-compose.yml sets."""
    caddy = shutil.which("caddy")
    assert caddy, "caddy is missing: `make system-deps` installs it (Debian package caddy)"
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "NEBULA_PUBLIC_HOST": "live.example.com",
        "NEBULA_UPSTREAM": "api:8000",
    }
    adapted = subprocess.run(
        [caddy, "adapt", "--adapter", "caddyfile", "--config", str(REPO_ROOT / "Caddyfile")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    (server,) = json.loads(adapted.stdout)["apps"]["http"]["servers"].values()
    assert server["listen"] == [":443"]
    assert "automatic_https" not in server  # certificates and the :80 redirect on
    (route,) = server["routes"]
    assert route["match"] == [{"host": ["live.example.com"]}]
    (proxy,) = route["handle"][0]["routes"][0]["handle"]
    assert proxy["handler"] == "reverse_proxy"
    assert proxy["upstreams"] == [{"dial": "api:8000"}]
    assert proxy["flush_interval"] == -1
    assert "write_timeout" not in server and "read_timeout" not in server
