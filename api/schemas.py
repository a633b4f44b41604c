"""Response and request bodies of the public API (the interface contract)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from core.models import Stream
from core.settings import Settings


class StreamCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)


class StreamOut(BaseModel):
    id: uuid.UUID
    name: str
    stream_key: str | None = Field(
        None, description="Only in the answers that issue a key (create, reset-key)."
    )
    status: Literal["idle", "live", "disabled"]
    rtmp_url: str
    srt_url: str
    playback_url: str
    created_at: datetime

    @classmethod
    def build(cls, stream: Stream, settings: Settings, stream_key: str | None = None) -> StreamOut:
        key = stream_key or "{stream_key}"
        host = settings.public_host
        return cls(
            id=stream.id,
            name=stream.name,
            stream_key=stream_key,
            status=stream.status,
            rtmp_url=f"rtmp://{host}:{settings.rtmp_port}/live/{key}",
            srt_url=f"srt://{host}:{settings.srt_port}?streamid=#!::r=live/{key},m=publish",
            playback_url=f"{settings.public_http_url}/hls/{stream.id}/master.m3u8",
            created_at=stream.created_at,
        )
