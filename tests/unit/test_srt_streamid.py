"""Which stream an SRT caller may publish, from its stream id."""

from __future__ import annotations

import re

import pytest

from ingest.srt.libsrt import RejectReason
from ingest.srt.streamid import StreamIdError, stream_key_from_stream_id

KEY = "aB3_x-9"


@pytest.mark.parametrize(
    "stream_id",
    [
        f"#!::r=live/{KEY},m=publish",
        f"#!::m=publish,r=live/{KEY}",
        f"#!::u=alice,r={KEY}",
        f"#!::r=live/{KEY},m=publish,s=session-1",
        KEY,
        f"live/{KEY}",
    ],
)
def test_the_stream_key_is_found_in_every_accepted_form(stream_id: str) -> None:
    assert stream_key_from_stream_id(stream_id) == KEY


@pytest.mark.parametrize(
    ("stream_id", "reason", "message"),
    [
        (f"#!::r=live/{KEY},m=request", RejectReason.BAD_MODE, "only m=publish"),
        (f"#!::r=live/{KEY},m=bidirectional", RejectReason.BAD_MODE, "only m=publish"),
        ("#!::m=publish", RejectReason.BAD_REQUEST, "no r= resource"),
        ("#!::r=live/", RejectReason.NOTFOUND, "expected live/STREAM_KEY"),
        (f"#!::r=vod/{KEY}", RejectReason.NOTFOUND, "'vod/...'"),
        (f"#!::r=live/{KEY},oops", RejectReason.BAD_REQUEST, "item 2 of 2 is not key=value"),
        (f"#!::{KEY}", RejectReason.BAD_REQUEST, "item 1 of 1 is not key=value"),
        (f"#!::r=live/x/{KEY}", RejectReason.NOTFOUND, "'live/x/...'"),
        ("", RejectReason.BAD_REQUEST, "empty stream id"),
        (f"other/{KEY}", RejectReason.NOTFOUND, "is not served"),
    ],
)
def test_a_stream_id_that_cannot_publish_says_why(
    stream_id: str, reason: RejectReason, message: str
) -> None:
    with pytest.raises(StreamIdError, match=re.escape(message)) as refused:
        stream_key_from_stream_id(stream_id)
    assert refused.value.reason is reason
    assert KEY not in str(refused.value)  # the message is logged: it never holds the key
