"""`up --demo`: a stream fed by a generated test pattern, so a new user sees video at once."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

from core.db import session_scope
from core.models import Stream
from core.settings import Settings
from core.stream_keys import hash_stream_key, new_stream_key
from nebula_live.private_files import write_private
from nebula_live.processes import ManagedProcess

DEMO_FILE = "demo_stream.json"


def demo_stream(settings: Settings) -> tuple[uuid.UUID, str]:
    """The demo stream's id and key, created once and remembered in the data dir."""
    path = settings.data_dir / DEMO_FILE
    if path.exists():
        saved = json.loads(path.read_text())
        with session_scope(settings.database_url) as db:
            if db.get(Stream, uuid.UUID(saved["id"])) is not None:
                return uuid.UUID(saved["id"]), saved["key"]
    key = new_stream_key()
    with session_scope(settings.database_url) as db:
        stream = Stream(name="demo test pattern", stream_key_hash=hash_stream_key(key))
        db.add(stream)
        db.flush()
        stream_id = stream.id
    write_private(path, json.dumps({"id": str(stream_id), "key": key}))
    return stream_id, key


def demo_publisher(settings: Settings, key: str, log_dir: Path) -> ManagedProcess:
    """ffmpeg publishing a 720p30 test pattern with a tone, 2 s keyframes, over RTMP."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise FileNotFoundError("--demo needs the ffmpeg command (apt-get install ffmpeg)")
    return ManagedProcess(
        "demo",
        [
            ffmpeg,
            "-hide_banner",
            "-loglevel",
            "warning",
            "-re",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1280x720:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-tune",
            "zerolatency",
            "-b:v",
            "2500k",
            "-g",
            "60",
            "-keyint_min",
            "60",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-b:a",
            "128k",
            "-f",
            "flv",
            f"rtmp://127.0.0.1:{settings.rtmp_port}/live/{key}",
        ],
        log_dir / "demo.log",
    )
