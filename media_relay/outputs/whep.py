"""WebRTC output (WHEP, RFC 9725) with aiortc: H.264 access units are sent as they are, no re-encoding.

How the passthrough works in aiortc 1.16: ``RTCRtpSender._next_encoded_frame`` awaits ``track.recv()``;
when the result is an :class:`av.VideoFrame` it is encoded, but anything else is handed to the codec's
``pack()``.  For H.264 that is ``H264Encoder.pack(packet: av.Packet)``, which splits ``bytes(packet)``
as an Annex B stream, packetizes the NAL units (single NAL / STAP-A / FU-A, packetization-mode 1) and
converts ``packet.pts`` from ``packet.time_base`` to the 90 kHz RTP clock.  So the track below returns
one :class:`av.Packet` per access unit, with ``time_base = 1/90000`` and a pts derived from the access
unit's.  Parameter sets travel in-band in front of each IDR, which is what browsers expect.

Keyframe requests (RTCP PLI/FIR) normally make aiortc force an I-frame in its own encoder; with
pre-encoded packets that is a no-op, so the session hooks the sender's ``_send_keyframe`` and forwards
the request to ``source.request_keyframe()`` when the source has one (the Transcoder does; a Stream
reader could ask the device for an IDR with the GB/T 28181 ``IFameCmd``).

Audio: when the offer has an audio m-line the session adds a sendonly audio transceiver (Opus
preferred, PCMU/PCMA if the peer offers nothing else).  One pump reads the source and splits it
(:class:`_Split`): video access units to the video track, audio access units to an
:class:`AudioTrack`, which decodes them (AAC or G.711, on its own worker thread) to PCM frames that
aiortc encodes to Opus.  aiortc maps RTP time to wall time by when it sends a packet, so the audio
track holds each audio frame until the video track has sent the picture of the same PS timestamp
(at most ``max_hold`` seconds): the watermark re-encode delays pictures, not sound.

Only host candidates are gathered (no STUN/TURN servers: ``iceServers=[]``, else aiortc would add
Google's public STUN server).  aioice leaves out loopback addresses; LAN addresses are used.

H.265 sources need a :class:`~media_relay.outputs.transcode.Transcoder` in front (see
:func:`h264_source`): WebRTC H.265 is not negotiated by aiortc.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fractions
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import av
from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from media_relay.outputs.flv import AccessUnitSource, TimestampUnwrapper, close_source, next_au

log = logging.getLogger("gbops.media.whep")

CLOCK = 90_000
TIME_BASE = fractions.Fraction(1, CLOCK)
WHEP_CONTENT_TYPE = "application/sdp"


class WhepError(Exception):
    """An offer this server cannot answer; ``status`` is the HTTP status to reply with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def h264_source(source: AccessUnitSource, **transcoder_options: Any) -> AccessUnitSource:
    """``source`` itself when it is H.264, else a Transcoder to H.264 (baseline, zerolatency) over it."""
    if getattr(source, "codec", None) == "h264":
        return source
    from media_relay.outputs.transcode import Transcoder

    return Transcoder(source, **transcoder_options)


def h264_codec_preferences() -> list:
    """aiortc's H.264 capabilities with packetization-mode 1 (both profile-level-ids), then RTX."""
    caps = RTCRtpSender.getCapabilities("video").codecs
    h264 = [c for c in caps if c.mimeType.lower() == "video/h264"
            and str(c.parameters.get("packetization-mode")) == "1"]
    rtx = [c for c in caps if c.mimeType.lower() == "video/rtx"]
    return h264 + rtx


class RtpClock:
    """Access unit timestamps -> RTP timestamps (90 kHz, starting at 0) for live playout.

    Follows the source's frame spacing, but never runs ahead of the wall clock since the first frame:
    when access units come in a burst (a new reader gets the GOP since the latest keyframe at once),
    they get stamps close together, so the browser decodes them at once and shows the live picture
    instead of adding the GOP's age as latency.  Without source timestamps the wall clock is used.
    """

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self.now = now
        self.unwrapper = TimestampUnwrapper()
        self.start: float | None = None
        self.last_src: int | None = None
        self.last_out = 0

    def stamp(self, pts: int | None) -> int:
        now = self.now()
        if self.start is None:
            self.start = now
            self.last_src = self.unwrapper.unwrap(pts) if pts is not None else None
            return 0
        wall = int((now - self.start) * CLOCK)
        delta = wall - self.last_out
        if pts is not None:
            src = self.unwrapper.unwrap(pts)
            if self.last_src is not None and 0 <= src - self.last_src <= 10 * CLOCK:
                delta = src - self.last_src
            self.last_src = src
        out = max(self.last_out + 1, min(self.last_out + delta, wall))
        self.last_out = out
        return out


class AccessUnitTrack(MediaStreamTrack):
    """A video track whose ``recv()`` returns the source's H.264 access units as ``av.Packet``s."""

    kind = "video"

    def __init__(self, source: AccessUnitSource, on_end: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.source = source
        self.on_end = on_end
        self.clock = RtpClock()
        self.waiting_keyframe = True
        self.frames_sent = 0
        self.keyframes_sent = 0
        self.bytes_sent = 0
        self.skipped = 0

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        while True:
            au = await next_au(self.source)
            if au is None:
                self._ended()
                raise MediaStreamError
            if au.kind != "video":
                continue
            if au.codec != "h264":
                log.warning("WHEP track got %s; H.265 needs a Transcoder in front", au.codec)
                self._ended()
                raise MediaStreamError
            if self.waiting_keyframe and not au.keyframe:
                self.skipped += 1
                continue
            self.waiting_keyframe = False
            packet = av.Packet(au.data)
            packet.pts = self.clock.stamp(au.pts)
            packet.time_base = TIME_BASE
            self.frames_sent += 1
            self.keyframes_sent += au.keyframe
            self.bytes_sent += len(au.data)
            return packet

    def _ended(self) -> None:
        self.stop()
        if self.on_end is not None:
            self.on_end()


def audio_codec_preferences() -> list:
    """aiortc's audio capabilities, Opus first (it encodes Opus from PCM frames)."""
    caps = RTCRtpSender.getCapabilities("audio").codecs
    return sorted(caps, key=lambda c: c.mimeType.lower() != "audio/opus")


def _signed_33(delta: int) -> int:
    delta %= 1 << 33
    return delta - (1 << 33) if delta >= 1 << 32 else delta


class _Split:
    """One pump over ``source`` feeding two tracks: video access units through a small queue (its back
    pressure is the source's), audio access units into a bounded deque (oldest dropped).  Records the
    PS timestamp of the last picture handed to the video track, for the audio track's alignment."""

    def __init__(self, source: AccessUnitSource, *, video_queue: int = 4, audio_queue: int = 100) -> None:
        self.source = source
        self._video: asyncio.Queue[Any] = asyncio.Queue(video_queue)
        self._audio: collections.deque[tuple[Any, float]] = collections.deque(maxlen=audio_queue)
        self._audio_ready = asyncio.Event()
        self.video_sent = asyncio.Event()  # set (and cleared by waiters) when a picture went out
        self.video_pts: int | None = None
        self._task: asyncio.Task | None = None
        self.ended = False
        self.audio_dropped = 0

    def _start(self) -> None:
        if self._task is None and not self.ended:
            self._task = asyncio.get_running_loop().create_task(self._pump(), name="whep-split")

    async def _pump(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                au = await next_au(self.source)
                if au is None:
                    break
                if au.kind == "video":
                    await self._video.put(au)
                elif au.kind == "audio":
                    if len(self._audio) == self._audio.maxlen:
                        self.audio_dropped += 1
                    self._audio.append((au, loop.time()))
                    self._audio_ready.set()
        finally:
            self.ended = True
            self._audio_ready.set()
            self.video_sent.set()
            with contextlib.suppress(asyncio.QueueFull):
                self._video.put_nowait(None)

    # -- the video track's side (an access-unit source)
    async def get(self) -> Any:
        self._start()
        if self.ended and self._video.empty():
            raise EOFError("source ended")
        au = await self._video.get()
        if au is None:
            raise EOFError("source ended")
        if au.pts is not None:
            self.video_pts = au.pts
            self.video_sent.set()
        return au

    # -- the audio track's side
    async def get_audio(self) -> tuple[Any, float]:
        self._start()
        while not self._audio:
            if self.ended:
                raise EOFError("source ended")
            self._audio_ready.clear()
            await self._audio_ready.wait()
        return self._audio.popleft()

    def close(self) -> None:
        self.ended = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._audio_ready.set()
        self.video_sent.set()


class AudioTrack(MediaStreamTrack):
    """An audio track whose ``recv()`` returns the source's audio as s16 48 kHz PCM frames (aiortc
    encodes them to Opus), each held until the video track has sent the picture of its timestamp or
    ``max_hold`` seconds have passed since it arrived."""

    kind = "audio"

    def __init__(self, split: _Split, *, max_hold: float = 0.5) -> None:
        super().__init__()
        import concurrent.futures

        from media_relay.outputs.audio import AudioDecoder

        self.split = split
        self.max_hold = max_hold
        self._decoder = AudioDecoder()
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="whep-audio")
        self._pending: collections.deque[av.AudioFrame] = collections.deque()
        self.frames_sent = 0
        self.units_in = 0

    async def _hold(self, pts: int | None, arrived: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = arrived + self.max_hold
        split = self.split
        while pts is not None and not split.ended:
            if split.video_pts is not None and _signed_33(pts - split.video_pts) <= 0:
                return
            left = deadline - loop.time()
            if left <= 0:
                return
            split.video_sent.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(split.video_sent.wait(), left)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        while not self._pending:
            try:
                au, arrived = await self.split.get_audio()
            except EOFError:
                self.stop()
                raise MediaStreamError from None
            self.units_in += 1
            await self._hold(au.pts, arrived)
            self._pending.extend(await loop.run_in_executor(self._executor, self._decoder.decode, au))
        self.frames_sent += 1
        return self._pending.popleft()

    def stop(self) -> None:
        super().stop()
        self._executor.shutdown(wait=False)


class WhepSession:
    """One WHEP viewer: an RTCPeerConnection sending one H.264 video track from ``source``, and an
    Opus audio track from the source's audio when the offer has an audio m-line.

    ``source`` is a Stream reader of an H.264 stream or a Transcoder (see :func:`h264_source`); the
    session owns it and closes it on :meth:`close`.  The session closes itself when the peer
    connection fails or closes, when the source ends, or when ICE has not connected within
    ``connect_timeout`` seconds of the answer.  Then ``on_close(session)`` is called, and the
    zero-argument ``on_closed()`` if that attribute is set (either may be a coroutine function).
    """

    def __init__(self, source: AccessUnitSource, *, session_id: str | None = None,
                 connect_timeout: float = 30.0, keyframe_request_interval: float = 1.0,
                 on_close: Callable[[WhepSession], Awaitable[None] | None] | None = None) -> None:
        self.id = session_id or secrets.token_urlsafe(12)
        self.source = source
        self.connect_timeout = connect_timeout
        self.keyframe_request_interval = keyframe_request_interval
        self.on_close = on_close
        self.on_closed: Callable[[], Awaitable[None] | None] | None = None
        self._close_listeners: list[Callable[[WhepSession], None]] = []  # the registry's
        self.created_at = time.time()
        self.connected_at: float | None = None
        self.pc: RTCPeerConnection | None = None
        self.track: AccessUnitTrack | None = None
        self.audio_track: AudioTrack | None = None
        self._split: _Split | None = None
        self.sender: RTCRtpSender | None = None
        self.keyframe_requests = 0
        self._last_keyframe_request = 0.0
        self._closed = asyncio.Event()
        self._closing = False
        self._tasks: set[asyncio.Task] = set()

    # ------------------------------------------------------------------ state
    @property
    def state(self) -> str:
        """'new' before the answer, then the peer connection's connectionState, 'closed' at the end."""
        if self._closing or self._closed.is_set():
            return "closed"
        if self.pc is None:
            return "new"
        return self.pc.connectionState

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    # ------------------------------------------------------------------ signalling
    async def answer(self, offer_sdp: str) -> str:
        """Apply the client's offer and return the answer SDP (after ICE gathering, no trickle)."""
        if self.pc is not None or self._closing:
            raise WhepError("session already negotiated", status=409)
        if "m=video" not in offer_sdp:
            await self.close()
            raise WhepError("the offer has no video m-line")
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc = pc
        video_source: Any = self.source
        if "m=audio" in offer_sdp:
            if getattr(self.source, "audio_format", None) == "aac":
                self.source.audio_format = "raw"  # a watermarked viewer: the camera's own audio
            self._split = video_source = _Split(self.source)
        self.track = AccessUnitTrack(video_source, on_end=self._source_ended)
        transceiver = pc.addTransceiver(self.track, direction="sendonly")
        transceiver.setCodecPreferences(h264_codec_preferences())
        if self._split is not None:
            self.audio_track = AudioTrack(self._split)
            pc.addTransceiver(self.audio_track, direction="sendonly").setCodecPreferences(
                audio_codec_preferences())
        self.sender = transceiver.sender
        # pre-encoded packets: route PLI/FIR to the source instead of aiortc's (unused) encoder
        self.sender._send_keyframe = self._keyframe_requested  # type: ignore[method-assign]
        pc.on("connectionstatechange", self._on_state)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
            if transceiver.mid is None:
                raise WhepError("the offer has no usable video m-line")
            if not getattr(transceiver, "_codecs", True):  # aiortc raises before this; a guard
                raise WhepError("the offer has no H.264 with packetization-mode=1", status=406)
            await pc.setLocalDescription(await pc.createAnswer())
        except WhepError:
            await self.close()
            raise
        except Exception as exc:  # aiortc: ValueError (bad SDP), OperationError (no common codec)
            await self.close()
            raise WhepError(f"cannot answer the offer: {exc}") from exc
        self._spawn(self._connect_watchdog())
        return pc.localDescription.sdp

    # ------------------------------------------------------------------ events
    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _on_state(self) -> None:
        pc = self.pc
        if pc is None:
            return
        log.debug("WHEP %s: %s", self.id, pc.connectionState)
        if pc.connectionState == "connected" and self.connected_at is None:
            self.connected_at = time.time()
        elif pc.connectionState in ("failed", "closed"):
            self._spawn(self.close())

    async def _connect_watchdog(self) -> None:
        await asyncio.sleep(self.connect_timeout)
        if self.connected_at is None and not self._closing:
            log.info("WHEP %s: not connected after %.0f s, closing", self.id, self.connect_timeout)
            await self.close()

    def _source_ended(self) -> None:
        if not self._closing:
            self._spawn(self.close())

    def _keyframe_requested(self) -> None:
        now = time.monotonic()
        if now - self._last_keyframe_request < self.keyframe_request_interval:
            return
        self._last_keyframe_request = now
        self.keyframe_requests += 1
        request = getattr(self.source, "request_keyframe", None)
        if request is not None:
            try:
                result = request()
                if asyncio.iscoroutine(result):
                    self._spawn(result)
            except Exception:  # noqa: BLE001
                log.exception("keyframe request failed")

    # ------------------------------------------------------------------ tear-down
    async def close(self) -> None:
        """Close the peer connection (RTCP BYE, DTLS close) and the source.  Idempotent."""
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        try:
            if self.pc is not None:
                with contextlib.suppress(Exception):
                    await self.pc.close()
            if self._split is not None:
                self._split.close()
            if self.audio_track is not None:
                self.audio_track.stop()
            await close_source(self.source)
            current = asyncio.current_task()
            for task in list(self._tasks):
                if task is not current:
                    task.cancel()
        finally:
            self._closed.set()
        for listener in self._close_listeners:
            listener(self)
        for callback in (self.on_close, self.on_closed):
            if callback is None:
                continue
            try:
                result = callback(self) if callback is self.on_close else callback()
                if asyncio.iscoroutine(result):
                    await result
            except Exception:  # noqa: BLE001
                log.exception("WHEP close callback failed")

    # ------------------------------------------------------------------ stats
    async def stats(self) -> dict[str, Any]:
        """A JSON-able summary: state, frames sent, RTP counters, loss/RTT reported by the viewer."""
        out: dict[str, Any] = {
            "id": self.id,
            "state": self.state,
            "created_at": self.created_at,
            "connected_at": self.connected_at,
            "keyframe_requests": self.keyframe_requests,
        }
        if self.track is not None:
            out.update(frames_sent=self.track.frames_sent, keyframes_sent=self.track.keyframes_sent,
                       video_bytes=self.track.bytes_sent)
        if self.audio_track is not None:
            out.update(audio_frames_sent=self.audio_track.frames_sent)
        if self.sender is not None and self.pc is not None and not self._closing:
            codec = None
            for t in self.pc.getTransceivers():
                negotiated = getattr(t, "_codecs", None)
                if t.sender is self.sender and negotiated:
                    c = negotiated[0]
                    codec = {"mimeType": c.mimeType, "payloadType": c.payloadType,
                             "parameters": dict(c.parameters)}
            out["codec"] = codec
            try:
                report = await self.sender.getStats()
            except Exception:  # noqa: BLE001 - transport not started yet
                report = {}
            for s in report.values():
                if s.type == "outbound-rtp":
                    out.update(packets_sent=s.packetsSent, bytes_sent=s.bytesSent)
                elif s.type == "remote-inbound-rtp":
                    out.update(packets_lost=s.packetsLost, fraction_lost=s.fractionLost,
                               round_trip_time=s.roundTripTime, jitter=s.jitter)
        return out


class WhepRegistry:
    """session id -> :class:`WhepSession`, for the HTTP layer (``POST`` creates, ``DELETE`` ends).

    Sessions that end by themselves (peer gone, source ended, never connected) leave the registry.
    """

    def __init__(self, *, max_sessions: int | None = None) -> None:
        self.max_sessions = max_sessions
        self._sessions: dict[str, WhepSession] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._sessions

    def get(self, session_id: str) -> WhepSession | None:
        return self._sessions.get(session_id)

    def sessions(self) -> list[WhepSession]:
        return list(self._sessions.values())

    def add(self, session_or_id: WhepSession | str, session: WhepSession | None = None) -> WhepSession:
        """Register a session: ``add(session)``, or ``add(session_id, session)`` to file it under an id
        chosen by the caller (the viewer session's), which then becomes ``session.id``."""
        if session is None:
            if not isinstance(session_or_id, WhepSession):
                raise TypeError("add(session) or add(session_id, session)")
            session = session_or_id
        else:
            session.id = str(session_or_id)
        if self.max_sessions is not None and len(self._sessions) >= self.max_sessions:
            raise WhepError("too many WebRTC viewers", status=503)
        if session.id in self._sessions:
            raise WhepError("duplicate session id", status=409)
        if session.closed:
            return session  # ended already (peer gone before it was filed): nothing to find later
        session._close_listeners.append(self._forget)
        self._sessions[session.id] = session
        return session

    def _forget(self, session: WhepSession) -> None:
        if self._sessions.get(session.id) is session:
            del self._sessions[session.id]

    async def create(self, source: AccessUnitSource, offer_sdp: str, **session_options: Any
                     ) -> tuple[WhepSession, str]:
        """New session over ``source`` answering ``offer_sdp``: returns (session, answer SDP).

        On any failure the source is closed and :class:`WhepError` is raised.
        """
        session = WhepSession(source, **session_options)
        try:
            self.add(session)
        except WhepError:
            await close_source(source)
            raise
        try:
            answer = await session.answer(offer_sdp)
        except BaseException:
            await session.close()
            raise
        return session, answer

    async def close(self, session_id: str) -> bool:
        """End a session (HTTP ``DELETE``); False when there is none with that id."""
        session = self._sessions.pop(session_id, None)
        if session is None:
            return False
        await session.close()
        return True

    async def describe(self) -> list[dict[str, Any]]:
        """:meth:`WhepSession.stats` of every session (for an API listing)."""
        return list(await asyncio.gather(*(s.stats() for s in self.sessions())))

    async def close_all(self) -> None:
        sessions = list(self._sessions.values())
        self._sessions.clear()
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)


def enable_loopback_candidates() -> None:
    """Offer 127.0.0.1 as an ICE host candidate too (aioice leaves loopback out).

    For a browser on the same machine as the platform (a demo laptop, the browser tests): the browser
    must also allow loopback (Chromium: ``--allow-loopback-in-peer-connection``)."""
    import aioice.ice

    original = aioice.ice.get_host_addresses
    if getattr(original, "_gbops_loopback", False):
        return

    def with_loopback(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        addresses = list(original(use_ipv4, use_ipv6))
        return ["127.0.0.1", *[a for a in addresses if a != "127.0.0.1"]] if use_ipv4 else addresses

    with_loopback._gbops_loopback = True  # type: ignore[attr-defined]
    aioice.ice.get_host_addresses = with_loopback
