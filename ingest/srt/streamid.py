"""Which stream an SRT caller publishes: its stream id, parsed before the handshake completes.

Accepted forms (the SRT Access Control guidelines' `#!::` syntax, and the bare form OBS and
most encoders are configured with):

* ``#!::r=live/KEY,m=publish`` (``r`` may also be the bare ``KEY``; ``u`` and other keys are
  ignored; without ``m`` the caller is taken to publish, as no mode is served otherwise);
* ``KEY`` (or ``live/KEY``).

Playback over SRT (``m=request`` or ``bidirectional``) is not served.
"""

from __future__ import annotations

from ingest.srt.libsrt import RejectReason

ACCESS_CONTROL_PREFIX = "#!::"
APP_NAME = "live"


class StreamIdError(ValueError):
    """The stream id cannot name a publish; `reason` is the SRT_REJX code the caller gets."""

    def __init__(self, reason: RejectReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _key_from_resource(resource: str) -> str:
    app, _, key = resource.rpartition("/")
    if app not in ("", APP_NAME) or not key:
        # Rejections are logged: name the app, never what may be the key after it.
        shown = f"{app}/..." if key else f"{app}/"
        raise StreamIdError(
            RejectReason.NOTFOUND,
            f"resource {shown!r} is not served; expected {APP_NAME}/STREAM_KEY",
        )
    return key


def stream_key_from_stream_id(stream_id: str) -> str:
    """The stream key a caller names, or `StreamIdError` saying why it cannot publish."""
    if not stream_id.startswith(ACCESS_CONTROL_PREFIX):
        if not stream_id.strip():
            raise StreamIdError(
                RejectReason.BAD_REQUEST, "empty stream id; expected the stream key"
            )
        return _key_from_resource(stream_id.strip())
    fields: dict[str, str] = {}
    items = stream_id[len(ACCESS_CONTROL_PREFIX) :].split(",")
    for position, item in enumerate(items, 1):
        name, sep, value = item.partition("=")
        if not sep or not name:
            # By position only: a stray item is often the key itself, and this gets logged.
            raise StreamIdError(
                RejectReason.BAD_REQUEST,
                f"stream id item {position} of {len(items)} is not key=value",
            )
        fields[name.strip()] = value.strip()
    mode = fields.get("m", "publish")
    if mode != "publish":
        raise StreamIdError(
            RejectReason.BAD_MODE, f"mode {mode!r} is not served; only m=publish is"
        )
    if not fields.get("r"):
        raise StreamIdError(
            RejectReason.BAD_REQUEST, "stream id has no r= resource; expected r=live/STREAM_KEY"
        )
    return _key_from_resource(fields["r"])
