#!/usr/bin/env python3
"""Players through faults: hls.js and Shaka Player on one live stream for `--minutes`, while
a worker host is SIGKILLed mid-task, the publisher drops and comes back within the reconnect
grace window, and drops and comes back after it (a new session).

    python bench/player_faults.py [--minutes 10] [--workers 2] [--source FILE]

Runs `nebula-live up` (bench/stack.py, embedded stores, the default ladder), publishes a
looping 720p test pattern over RTMP, opens tests/players/two_players.html from another origin
in Debian's Chromium, and injects the three faults at a quarter, half and three quarters of
the run, while the HLS checker (tests/hls_checker.py) watches every playlist. Prints JSON,
then a table: each player's total stall time, longest stall and fatal errors; per fault
whether both players played on into media made after it and the stall it cost; how long
after the SIGKILL every rung listed media again; and the HLS rules broken, with counts.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stack import running_stack  # noqa: E402
from core.settings import Settings  # noqa: E402
from packager.celery_app import make_celery  # noqa: E402
from tests.faults.player_faults import FaultStage, play_through_faults, worker_host  # noqa: E402
from tests.hls_poller import CheckedHls  # noqa: E402
from tests.media import make_source  # noqa: E402

DEFAULT_SOURCE = Path(tempfile.gettempdir()) / "nebula-bench-src720-20s.flv"
# `up` runs with the default grace window; the bench says how long that is.
GRACE_SECONDS = Settings.model_fields["reconnect_grace_seconds"].default
START_TIMEOUT = 90


def run(minutes: float, workers: int, source: Path) -> dict:
    total = minutes * 60
    scratch = Path(tempfile.mkdtemp(prefix="nebula-bench-faults-"))
    with running_stack(workers=workers) as stack, CheckedHls(stack.base_url) as hls:
        stage = FaultStage(
            hls=hls,
            api_token=stack.token,
            stream=stack.create_stream("players through faults"),
            source=source,
            new_worker_host=lambda: worker_host(
                stack.service_env(scratch / "doomed-worker"), scratch / "doomed-worker.log"
            ),
            celery=make_celery(stack.redis_url),
            grace_seconds=GRACE_SECONDS,
            relist_timeout=total / 4,
            start_timeout=START_TIMEOUT,
        )
        played = play_through_faults(stage, spacing=total / 4, duration=total)
    return {
        "minutes": minutes,
        "workers": workers,
        "grace_s": GRACE_SECONDS,
        **played.figures(),
        "hls_rules_broken": hls.checker.rule_counts(),
    }


def table(figures: dict) -> str:
    rows = [f"{'player':<8} {'stall s':>8} {'longest s':>10} {'stalls':>7}  fatal errors"]
    for name, player in figures["players"].items():
        fatal = "; ".join(player["fatal_errors"]) or "none"
        rows.append(
            f"{name:<8} {player['stall_s']:>8} {player['longest_stall_s']:>10}"
            f" {player['stalls']:>7}  {fatal}"
        )
    rows.append("")
    rows.append(f"{'fault':<42} {'at s':>6}  played on  stall s (per player)  rungs relisted s")
    for fault in figures["faults"]:
        played = ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in fault["advanced"].items())
        stalls = ", ".join(f"{k}: {v}" for k, v in fault["stall_s"].items())
        relisted = fault.get("rungs_relisted_s", "")
        relisted = "not in time" if relisted is None else relisted
        rows.append(f"{fault['fault']:<42} {fault['at_s']:>6}  {played}  {stalls}  {relisted}")
    rows.append("")
    broken = figures["hls_rules_broken"]
    shown = ", ".join(f"{rule} ({n})" for rule, n in broken.items()) or "none"
    rows.append(f"HLS rules broken (responses): {shown}")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the live stream")
    parser.add_argument("--workers", type=int, default=2, help="Celery processes of `up`")
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="FLV to loop")
    args = parser.parse_args()
    source = args.source
    if source == DEFAULT_SOURCE:
        make_source(source, seconds=20, size="1280x720")
    figures = run(args.minutes, args.workers, source)
    print(json.dumps(figures, indent=2))
    print()
    print(table(figures))


if __name__ == "__main__":
    main()
