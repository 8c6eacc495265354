"""Types shared by the media pipeline stages (RTP -> PS demux -> Stream -> outputs)."""

from __future__ import annotations

from dataclasses import dataclass, field

VIDEO_CODECS = ("h264", "h265")
AUDIO_CODECS = ("aac", "g711a", "g711u")


@dataclass(frozen=True, slots=True)
class AccessUnit:
    """One coded picture (video, Annex B byte stream with start codes) or one audio frame.

    ``pts``/``dts`` are 90 kHz ticks as carried in the PES header (33-bit, may wrap), or None when absent.
    ``keyframe``: an IDR (H.264) / IRAP (H.265) picture; decoding can start here given ``params``.
    """

    kind: str  # "video" | "audio"
    codec: str  # one of VIDEO_CODECS or AUDIO_CODECS
    data: bytes
    pts: int | None = None
    dts: int | None = None
    keyframe: bool = False


@dataclass(slots=True)
class VideoParams:
    """What a late joiner needs before the first keyframe: parameter sets and the picture size."""

    codec: str
    vps: bytes | None = None  # H.265 only; NAL unit without start code
    sps: bytes | None = None
    pps: bytes | None = None
    width: int | None = None
    height: int | None = None
    extra: dict = field(default_factory=dict)


class AccessUnitIterator:
    """Async iteration over a source's ``get()`` (which raises ``EOFError`` at the end of the stream):
    ``async for au in source``.  Mixed into every access-unit source (readers, transcoders, outputs)."""

    async def get(self) -> AccessUnit:
        raise NotImplementedError

    def __aiter__(self):
        return self

    async def __anext__(self) -> AccessUnit:
        try:
            return await self.get()
        except EOFError:
            raise StopAsyncIteration from None
