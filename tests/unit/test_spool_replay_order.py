"""The pure parts of a replay: leftovers in their order, numbered on from the first, and a
publish resuming their session continuing after them."""

from __future__ import annotations

import uuid
from pathlib import Path

from ingest.publication import resume_after
from ingest.sessions import PublishGrant
from ingest.spool import Leftover, SpoolEntry
from ingest.spool_replay import leftovers_end, replay_records
from tests.media import bare_segment, spool_record


def leftovers(*spans: tuple[int, int, int, bool]) -> list[Leftover]:
    """(sequence, start ticks, init index, discontinuity) each, of one session."""
    session = uuid.uuid4()
    return [
        Leftover(
            spool_record(
                bare_segment(sequence, start_ticks=start, init=init, discontinuity=gap), session
            ),
            SpoolEntry(Path(f"{sequence:08d}-x.m4s"), 10),
        )
        for sequence, start, init, gap in spans
    ]


def test_leftovers_are_numbered_on_from_the_first_and_it_opens_a_discontinuity() -> None:
    # Two connections' segments: the second resumed the session (a new init, a discontinuity).
    left = leftovers((7, 0, 0, False), (8, 180_000, 0, False), (12, 360_000, 1, True))
    records = replay_records(left)
    assert [record.segment.sequence for record, _ in records] == [0, 1, 2]
    assert [record.segment.discontinuity for record, _ in records] == [True, False, True]
    assert [record.segment.init.index for record, _ in records] == [0, 0, 1]
    assert [entry for _, entry in records] == [leftover.entry for leftover in left]


def test_a_resumed_publish_continues_after_unrecorded_leftovers() -> None:
    end = leftovers_end(leftovers((7, 0, 0, False), (8, 180_000, 2, False)))
    grant = PublishGrant(uuid.uuid4(), uuid.uuid4(), True, 5, 90_000, 1, discontinuity=True)
    resumed = resume_after(grant, end)
    assert (resumed.first_sequence, resumed.timeline_start, resumed.init_index) == (9, 360_000, 3)
    assert resumed.target_duration == 2  # the leftovers', as the database has none yet
    ahead = PublishGrant(uuid.uuid4(), uuid.uuid4(), True, 20, 900_000, 4, target_duration=3)
    assert resume_after(ahead, end) == ahead  # what the database knows is further on
