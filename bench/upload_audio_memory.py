#!/usr/bin/env python3
"""Peak memory of an upload planner's scan and audio cut, before and after audio was spooled.

    python bench/upload_audio_memory.py [--minutes 10 40] [--base 2617e7f]

For each length, the ffmpeg CLI makes a file whose video must be encoded (a small MPEG-4
part 2 picture, so the planner scans and splits it) and whose audio must be re-encoded
(MP3, 128 kb/s stereo at 48 kHz, into AAC). A fresh Python process then runs what the
planner (`packager.tasks.upload._split`) does with the audio: scan the whole file, snap
the units onto one grid, cut every chunk's audio object, with `--base` (the tree before
the spool, checked out in a temporary worktree) and with this tree. Each process reports
its peak resident memory (ru_maxrss) and its resident memory once the file was open, and a
digest of every chunk object it made; the digests must match: the same objects. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.media import make_media_file  # noqa: E402

# The commit before the planner spooled its audio.
BASE = "2617e7f"
CODECS = ["-c:v", "mpeg4", "-q:v", "10", "-c:a", "libmp3lame", "-b:a", "128k", "-ac", "2"]
CHUNK_SECONDS = 20.0  # NEBULA_UPLOAD_CHUNK_SECONDS' default
SEGMENT_SECONDS = 2.0

# Run in the tree under test (its modules first on sys.path): the planner's audio steps in
# whichever form that tree has them, each chunk object digested as the store would get it.
PLANNER = """
import hashlib, io, json, resource, sys, tempfile
import av
from media.types import AudioConfig
from packager.tasks import upload_chunks as chunks
from packager.transcoding.transcode import EncoderOptions
from packager.transcoding.upload_source import SourceOptions, UploadSource

path, chunk_seconds, segment_seconds = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
digests = []
with av.open(path) as container:
    source = UploadSource(container, SourceOptions(segment_seconds, EncoderOptions()))
    opened_kib = int(open("/proc/self/statm").read().split()[1]) * 4
    [config] = [c for c in source.configs if isinstance(c, AudioConfig)]
    spooled = hasattr(chunks, "read_audio_units")
    with tempfile.TemporaryFile() as spool:
        if spooled:
            scan = source.scan(lambda unit: spool.write(chunks.pack_audio_unit(unit)))
        else:
            scan = source.scan()
        plan = chunks.plan_chunks(scan.video_start, scan.video_end, segment_seconds, chunk_seconds)
        if spooled:
            spool.seek(0)
            units = chunks.snap_audio(
                chunks.read_audio_units(spool), config.sample_rate, config.frame_samples
            )
            parts = (part for _, part in chunks.chunk_audio(units, plan))
        else:
            units = chunks.snap_audio(scan.audio, config.sample_rate, config.frame_samples)
            parts = (chunks.chunk_audio(units, plan, i) for i in range(plan.count))
        for part in parts:
            digests.append(hashlib.sha256(chunks.encode_audio_units(part)).hexdigest())
peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({
    "spooled": spooled,
    "chunks": plan.count,
    "rss_opened_mib": round(opened_kib / 1024, 1),
    "peak_rss_mib": round(peak_kib / 1024, 1),
    "objects_sha256": hashlib.sha256("".join(digests).encode()).hexdigest(),
}))
"""


def run_planner(tree: Path, media: Path) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", PLANNER, str(media), str(CHUNK_SECONDS), str(SEGMENT_SECONDS)],
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if result.returncode != 0:
        raise SystemExit(f"the planner in {tree} failed:\n{result.stderr}")
    return json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[10, 40])
    parser.add_argument("--base", default=BASE, help="the commit to compare with")
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nebula-bench-base-") as scratch:
        base = Path(scratch) / "tree"
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", str(base), args.base],
            check=True,
            capture_output=True,
        )
        try:
            for minutes in args.minutes:
                media = args.folder / f"nebula-bench-audio-{minutes:g}min.mkv"
                if not media.exists():
                    make_media_file(
                        media, *CODECS, seconds=minutes * 60, size="64x64", rate=5, timeout=3600
                    )
                before, after = run_planner(base, media), run_planner(REPO, media)
                same = before["objects_sha256"] == after["objects_sha256"]
                print(
                    json.dumps(
                        {
                            "minutes": minutes,
                            "file_mib": round(media.stat().st_size / 2**20, 1),
                            "before": before,
                            "after": after,
                            "same_objects": same,
                        }
                    ),
                    flush=True,
                )
        finally:
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(base)],
                check=True,
                capture_output=True,
            )


if __name__ == "__main__":
    main()
