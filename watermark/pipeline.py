"""Live watermark pipeline: decode once per upstream Stream, draw and encode once per viewer.

::

    Stream ──reader──> SharedDecoder (one worker thread per Stream: H.264/H.265 -> frames)
                           │  the same decoded frame, read-only, to every viewer
              ┌────────────┼────────────┐
              v            v            v
    WatermarkedSource (one worker thread per viewer): copy + Overlay.apply (that viewer's text)
              -> H264Encoder (libx264, tune=zerolatency, preset ``ultrafast`` by default)
              -> signed SEI session tag before the first slice of every keyframe
              -> HTTP-FLV / WHEP (it is an AccessUnitSource: get / params / codec / close / request_keyframe)

The event loop only moves references: decoding and encoding run on dedicated threads (never the
loop's default executor).  A viewer whose encoder falls behind loses its *oldest* decoded frames
(bounded input, ``max_frames``), never slows the decoder or the other viewers.  The decoder is
refcounted by its viewers and closed with the last one; each viewer's encoder is freed with it.

:class:`TaggedSource` is the path for users whose watermark is switched off by policy: the upstream
access units pass through unchanged except that every keyframe gets the session tag.

Audio: the shared decoder also reads the Stream's audio access units and hands them to every viewer,
which queues them beside its encoded pictures (no per-viewer work; both keep the PS timestamps, so
the outputs line them up).  AAC passes as it is; G.711 is transcoded to AAC once per Stream, on the
decoder's thread, for the viewers that want AAC (HTTP-FLV, the default); a WebRTC viewer asks for the
camera's own audio (``audio_format = "raw"``: it decodes to PCM for Opus without an AAC generation).

:class:`EncoderSlots` bounds the number of concurrent watermark encoders on this node.  The default
limit is ``floor(cores * encoders_per_core)``; ``encoders_per_core`` is the number of 1080p25 viewers one
core sustains in real time with headroom, measured with ``bench/watermark.py`` (decode shared, copy +
overlay + ultrafast encode per viewer).  ``GBOPS_WATERMARK_MAX_ENCODERS`` overrides it.

Capture time: a picture whose upstream access unit carried the simulator's capture-time SEI
(``media_relay.nal.LATENCY_SEI_UUID``, used by ``bench/latency.py``) gets that message again in its re-encoded
access unit (:func:`capture_sei`; matched through the decoder's and the encoder's pts).  Only that UUID,
with at most :data:`CAPTURE_SEI_MAX_DIGITS` ASCII digits, is carried: any other SEI a device sends is
dropped by the re-encode, never forwarded into the signed output.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import av
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from media_relay.nal import (
    H264_SEI,
    H265_SEI_PREFIX,
    H265_SEI_SUFFIX,
    LATENCY_SEI_UUID,
    START_CODE,
    NalError,
    insert_before_first_slice,
    nal_type,
    sei_payloads,
    split_annexb,
    unescape_rbsp,
    user_data_sei,
)
from media_relay.outputs.audio import G711_CODECS, AacTranscoder
from media_relay.outputs.flv import PTS_WRAP, AccessUnitSource, audio_codec_of, close_source, next_au
from media_relay.outputs.transcode import H264Encoder, QueuedOutput, VideoDecoder
from media_relay.types import AccessUnit, AccessUnitIterator, VideoParams
from media_relay.viewers import TransformCapacityExceeded, TransformUnavailable, Viewer
from watermark.overlay import DIRECT_FORMATS, Overlay, WatermarkSettings, copy_frame
from watermark.render import WatermarkText
from watermark.tag import KINDS, SessionTag, TagError, add_tag, make_tag_nal, window_seconds

if TYPE_CHECKING:
    from watermark.config import WatermarkConfig

log = logging.getLogger("gbops.watermark.pipeline")

__all__ = [
    "DEFAULT_ENCODERS_PER_CORE",
    "EncoderSlots",
    "SharedDecoder",
    "TaggedSource",
    "WatermarkHub",
    "WatermarkPlan",
    "WatermarkedSource",
    "capture_sei",
    "default_max_encoders",
    "session_code",
]

#: 1080p25 watermarked viewers per core used for the default limit.  bench/watermark.py measured about
#: 5 (ultrafast, copy + overlay + encode, decode shared) on the reference machine; 3 leaves headroom for
#: the shared decoders, the relay itself and SIP.  Set GBOPS_WATERMARK_ENCODERS_PER_CORE from your own run.
DEFAULT_ENCODERS_PER_CORE = 3.0


def usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_max_encoders(encoders_per_core: float = DEFAULT_ENCODERS_PER_CORE, cores: int | None = None) -> int:
    """``floor(cores * encoders_per_core)``, at least 1."""
    return max(1, math.floor((cores or usable_cores()) * encoders_per_core))


#: The longest capture time carried through the re-encode (epoch milliseconds as ASCII digits; 13 today).
CAPTURE_SEI_MAX_DIGITS = 20
#: Pictures whose capture time waits for its decoded frame / encoded access unit (bounded: a decoder that
#: drops pictures must not grow it).
_CAPTURE_PENDING = 32
_SEI_TYPES = {"h264": (H264_SEI,), "h265": (H265_SEI_PREFIX, H265_SEI_SUFFIX)}


def capture_sei(au: AccessUnit) -> bytes | None:
    """The H.264 SEI NAL unit (header included, no start code) that carries ``au``'s capture time again
    after the re-encode, or None.  Only a ``user_data_unregistered`` message with the simulator's UUID
    followed by 1 to :data:`CAPTURE_SEI_MAX_DIGITS` ASCII digits is taken, rebuilt on its own (for an H.264
    upstream the result is that SEI NAL byte for byte); every other SEI message is left behind."""
    data = au.data
    # The UUID holds no 00 byte, so emulation prevention never splits it: absent here means absent.
    # This one substring search is all an access unit without it costs.
    if LATENCY_SEI_UUID not in data or au.kind != "video":
        return None
    types = _SEI_TYPES.get(au.codec or "")
    if types is None:
        return None
    header = 1 if au.codec == "h264" else 2
    for nal in split_annexb(data):
        try:
            if nal_type(au.codec, nal) not in types:
                continue
        except NalError:
            continue
        for ptype, payload in sei_payloads(unescape_rbsp(nal[header:])):
            if ptype != 5 or payload[:16] != LATENCY_SEI_UUID:
                continue
            digits = payload[16:]
            if 0 < len(digits) <= CAPTURE_SEI_MAX_DIGITS and digits.isdigit():
                return user_data_sei("h264", LATENCY_SEI_UUID + digits)
    return None


def _remember(pending: dict[int, bytes], pts: int | None, sei: bytes) -> None:
    if pts is None:
        return
    pending[pts] = sei
    while len(pending) > _CAPTURE_PENDING:
        del pending[next(iter(pending))]  # the oldest: its picture was never produced


def session_code(session_id: str) -> str:
    """The short code drawn in the picture and recorded as the audit entry's ``watermark_id``."""
    return hashlib.sha256(session_id.encode()).hexdigest()[:8].upper()


# ------------------------------------------------------------------------------------- capacity
class Slot:
    """One reserved encoder of ``cost`` main-stream encoders; :meth:`release` is idempotent."""

    def __init__(self, owner: EncoderSlots, cost: float = 1.0) -> None:
        self._owner = owner
        self.cost = cost
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._owner._in_use = max(0.0, self._owner._in_use - self.cost)
            self._owner.viewers -= 1


class EncoderSlots:
    """The watermark encoders of this node, counted in main-stream encoders (event loop only): a main-stream
    viewer costs 1, a sub-stream viewer its smaller share (``cost``), so that a wall switched to sub-streams
    fits where its main streams did not."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, int(limit))
        self._in_use = 0.0
        self.viewers = 0  # encoders running, whatever their cost

    @property
    def in_use(self) -> float:
        """Main-stream encoders' worth in use (a whole number while only main streams are watched)."""
        return round(self._in_use, 3) if self._in_use % 1 else int(self._in_use)

    @property
    def free(self) -> float:
        return max(0.0, self.limit - self._in_use)

    def reserve(self, cost: float = 1.0) -> Slot | None:
        if self._in_use + cost > self.limit + 1e-9:
            return None
        self._in_use += cost
        self.viewers += 1
        return Slot(self, cost)


# ------------------------------------------------------------------------------------- tag only
class TaggedSource(AccessUnitIterator):
    """``source`` with the session tag inserted into every video keyframe (no re-encode)."""

    def __init__(self, source: AccessUnitSource, tag: SessionTag, key: Ed25519PrivateKey) -> None:
        self.source = source
        self.tag = tag
        self._key = key
        self._nals: dict[str, bytes] = {}
        self.tagged = 0

    @property
    def codec(self) -> str | None:
        return self.source.codec

    @property
    def params(self) -> VideoParams | None:
        return self.source.params

    @property
    def audio_codec(self) -> str | None:
        return audio_codec_of(self.source)

    async def get(self) -> AccessUnit:
        au = await self.source.get()
        if au.kind == "video" and au.keyframe and au.codec in ("h264", "h265"):
            nal = self._nals.get(au.codec)
            if nal is None:
                nal = self._nals[au.codec] = make_tag_nal(self.tag, au.codec, self._key)
            au = add_tag(au, nal)
            self.tagged += 1
        return au

    def request_keyframe(self) -> Any:
        request = getattr(self.source, "request_keyframe", None)
        return request() if request is not None else None

    def close(self) -> Any:
        return self.source.close()

    async def aclose(self) -> None:
        await close_source(self.source)


# ------------------------------------------------------------------------------------- decode once
class SharedDecoder:
    """Decodes one upstream (a Stream reader) on its own thread and offers each frame to every viewer."""

    def __init__(self, reader: AccessUnitSource, *, name: str = "") -> None:
        self.reader = reader
        self.name = name
        self.viewers: set[WatermarkedSource] = set()
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="wm-decode")
        self._dec = VideoDecoder(self.fps)
        self._task: asyncio.Task | None = None
        self.closed = False
        self.on_closed: Callable[[SharedDecoder], None] | None = None
        self.frames = 0
        self.decode_s = 0.0
        self._aac: AacTranscoder | None = None  # G.711 -> AAC, made on the first G.711 unit
        self.audio_units = 0  # audio access units read from the Stream
        self.aac_units = 0  # AAC access units made from G.711 (once for all the viewers)
        self.audio_s = 0.0  # worker CPU seconds spent on G.711 -> AAC
        self._capture: dict[int, bytes] = {}  # decoder pts -> capture-time SEI (worker thread only)

    def fps(self) -> float:
        params = getattr(self.reader, "params", None)
        fps = params.extra.get("framerate") if params is not None else None
        return float(fps) if fps else 25.0

    @property
    def audio_codec(self) -> str | None:
        """The upstream's audio codec ('aac', 'g711a', 'g711u'), None while unknown or without audio."""
        return audio_codec_of(self.reader)

    def subscribe(self, viewer: WatermarkedSource) -> None:
        if self.closed:
            raise RuntimeError("decoder closed")
        self.viewers.add(viewer)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._pump(), name=f"wm-decode-{self.name}")

    def unsubscribe(self, viewer: WatermarkedSource) -> None:
        self.viewers.discard(viewer)
        if not self.viewers:
            self.close()

    def _decode(self, au: AccessUnit) -> list[tuple[av.VideoFrame, bytes | None]]:
        """The frames decoded from ``au``, each with the capture-time SEI of the access unit it came from
        (None for nearly all of them: see :func:`capture_sei`)."""
        t0 = time.thread_time()
        frames = self._dec.decode(au)
        sei = capture_sei(au)
        if sei is not None:
            # the pts the decoder gave this access unit's packet (unwrapped): its frame comes out with it
            _remember(self._capture, getattr(self._dec, "_last_pts", None), sei)
        pending = self._capture
        out = [(f, pending.pop(f.pts, None) if pending else None) for f in frames]
        self.decode_s += time.thread_time() - t0
        return out

    def _to_aac(self, au: AccessUnit) -> list[AccessUnit]:
        t0 = time.thread_time()
        if self._aac is None:
            self._aac = AacTranscoder()
        out = self._aac.feed(au)
        self.audio_s += time.thread_time() - t0
        self.aac_units += len(out)
        return out

    async def _audio(self, loop: asyncio.AbstractEventLoop, au: AccessUnit) -> None:
        self.audio_units += 1
        viewers = tuple(self.viewers)
        wants_aac = [v for v in viewers if v.audio_format == "aac"]
        for viewer in viewers:
            if viewer.audio_format != "aac" or au.codec == "aac":
                viewer._offer_audio(au)
        if wants_aac and au.codec in G711_CODECS:
            for aac in await loop.run_in_executor(self._executor, self._to_aac, au):
                for viewer in wants_aac:
                    viewer._offer_audio(aac)

    async def _pump(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while not self.closed:
                au = await next_au(self.reader)
                if au is None:
                    break
                if au.kind == "audio":
                    await self._audio(loop, au)
                    continue
                if au.kind != "video":
                    continue
                frames = await loop.run_in_executor(self._executor, self._decode, au)
                for frame, sei in frames:
                    self.frames += 1
                    for viewer in tuple(self.viewers):
                        viewer._offer(frame, sei)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the viewers see the end of the stream
            log.exception("shared decoder stopped")
        for viewer in tuple(self.viewers):
            viewer._offer(None)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
        close = getattr(self.reader, "close", None)
        if close is not None:
            close()
        self._executor.submit(self._free)
        self._executor.shutdown(wait=False)
        if self.on_closed is not None:
            self.on_closed(self)

    def _free(self) -> None:
        self._dec = None  # type: ignore[assignment]
        self._aac = None


# ------------------------------------------------------------------------------------- per viewer
class WatermarkedSource(QueuedOutput):
    """One viewer's output: shared decoded frames -> this viewer's watermark -> H.264 -> session tag.

    ``clock`` gives the wall-clock time drawn in the picture (and the drift of the pattern); tests pass
    a fixed one.  ``on_close`` callbacks run once when the viewer closes (the encoder slot).
    """

    codec = "h264"
    _pump_name = "wm-encode-pump"
    #: "aac": the Stream's audio as AAC (G.711 transcoded once in the shared decoder), for HTTP-FLV;
    #: "raw": the camera's own audio units (the WebRTC output decodes them for Opus); None: no audio.
    audio_format: str | None = "aac"

    def __init__(self, decoder: SharedDecoder, overlay: Overlay, tag_nal: bytes, *,
                 preset: str = "ultrafast", crf: int = 23, gop_seconds: float = 2.0,
                 clock: Callable[[], float] = time.time, max_frames: int = 8, max_queue: int = 32) -> None:
        self.decoder = decoder
        self.overlay = overlay
        self._tag_nal = tag_nal
        self._clock = clock
        self._in: deque[tuple[av.VideoFrame, bytes | None] | None] = deque(maxlen=max_frames)
        self._capture: dict[int, bytes] = {}  # encoder pts -> capture-time SEI (worker thread only)
        self._in_ready = asyncio.Event()
        self._queue: asyncio.Queue[AccessUnit | None] = asyncio.Queue(max_queue)
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="wm-encode")
        self._enc = H264Encoder(preset=preset, crf=crf, gop_seconds=gop_seconds, fps=decoder.fps)
        self._pump_task: asyncio.Task | None = None
        self._freed: concurrent.futures.Future | None = None
        self._closed = False
        self._eof = False
        self.on_close: list[Callable[[], None]] = []
        self.error: BaseException | None = None
        self.frames_offered = 0
        self.frames_dropped = 0
        self.audio_queued = 0
        self.audio_dropped = 0
        self._video_started = False
        self.overlay_s = 0.0
        self.encode_s = 0.0
        self.boxes: list[tuple[int, int, int, int]] = []  # where the last picture got the watermark
        self.worker_threads: set[int] = set()
        self._canvas: av.VideoFrame | None = None

    # ------------------------------------------------------------------ source interface
    @property
    def params(self) -> VideoParams | None:
        return self._enc.params

    def request_keyframe(self) -> None:
        self._enc.request_keyframe()

    @property
    def audio_codec(self) -> str | None:
        """The codec of the audio this viewer gets (see ``audio_format``)."""
        upstream = self.decoder.audio_codec
        if upstream is None or self.audio_format is None:
            return None
        return "aac" if self.audio_format == "aac" else upstream

    # ------------------------------------------------------------------ from the decoder (event loop)
    def _offer_audio(self, au: AccessUnit) -> None:
        """Queue an audio unit beside the encoded pictures, from this viewer's first picture on; never
        waits (a full queue drops the audio unit: the viewer is behind anyway)."""
        if self._closed or not self._video_started or self.audio_format is None:
            return
        try:
            self._queue.put_nowait(au)
            self.audio_queued += 1
        except asyncio.QueueFull:
            self.audio_dropped += 1

    def _offer(self, frame: av.VideoFrame | None, sei: bytes | None = None) -> None:
        """A decoded frame (shared, read-only) with the capture-time SEI of its access unit, or None at the
        end of the stream."""
        if self._closed:
            return
        if frame is not None:
            self.frames_offered += 1
            if len(self._in) == self._in.maxlen:
                self.frames_dropped += 1  # the deque drops the oldest
        self._in.append(None if frame is None else (frame, sei))
        self._in_ready.set()

    async def _pump(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while not self._closed:
                if not self._in:
                    self._in_ready.clear()
                    await self._in_ready.wait()
                    continue
                item = self._in.popleft()
                if item is None:
                    break
                frame, sei = item
                for au in await loop.run_in_executor(self._executor, self._process, frame, self._clock(), sei):
                    await self._queue.put(add_tag(au, self._tag_nal))
                    self._video_started = True
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - reported through get() as the end of the stream
            self.error = exc
            log.exception("watermark encoder stopped")
        if not self._closed:
            await self._queue.put(None)

    # ------------------------------------------------------------------ worker thread
    def _process(self, frame: av.VideoFrame, now: float, sei: bytes | None = None) -> list[AccessUnit]:
        self.worker_threads.add(threading.get_ident())
        keyframe = bool(frame.key_frame)
        t0 = time.thread_time()
        if frame.format.name in DIRECT_FORMATS:
            # draw into this viewer's own canvas (the decoded frame is shared with the other viewers);
            # the encoder has copied the previous picture into x264's own buffers when encode() returned
            drawn = self._canvas = copy_frame(frame, into=self._canvas)
            self.overlay.apply(drawn, now, in_place=True)
        else:
            drawn = self.overlay.apply(frame, now)  # converted: a new frame
        self.boxes = list(self.overlay.last_boxes)
        t1 = time.thread_time()
        out = self._enc.encode(drawn, keyframe=keyframe)
        self.overlay_s += t1 - t0
        self.encode_s += time.thread_time() - t1
        if sei is not None:
            # the pts the encoder gave this picture: its access unit comes out with it (now with zerolatency)
            last = getattr(self._enc, "_last_pts", None)
            _remember(self._capture, None if last is None else last % PTS_WRAP, sei)
        if self._capture:
            out = [self._with_capture(au) for au in out]
        return out

    def _with_capture(self, au: AccessUnit) -> AccessUnit:
        sei = self._capture.pop(au.pts, None) if au.pts is not None else None
        if sei is None:
            return au
        return replace(au, data=insert_before_first_slice(au.data, START_CODE + sei, au.codec))

    def _free(self) -> None:
        self._enc.close()
        self._canvas = None

    # ------------------------------------------------------------------ tear-down
    def close(self) -> None:
        """Leave the decoder (closing it when this was its last viewer), free the encoder on its thread,
        run the ``on_close`` callbacks.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._pump_task is not None and not self._pump_task.done():
            self._pump_task.cancel()
        self._in.clear()
        try:
            self._queue.put_nowait(None)
        except asyncio.QueueFull:
            pass
        self.decoder.unsubscribe(self)
        self._freed = self._executor.submit(self._free)
        self._executor.shutdown(wait=False)
        for callback in self.on_close:
            try:
                callback()
            except Exception:  # noqa: BLE001
                log.exception("watermark viewer close callback failed")
        self.on_close = []

    async def aclose(self) -> None:
        self.close()
        if self._pump_task is not None:
            try:
                await self._pump_task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass
        if self._freed is not None:
            await asyncio.wrap_future(self._freed)


# ------------------------------------------------------------------------------------- the node's hub
@dataclass
class WatermarkPlan:
    """What :meth:`WatermarkHub.plan` decided for one viewer session (a ``media_relay.viewers.ViewerPlan``,
    kept as the session's ``plan``)."""

    on: bool
    text: WatermarkText
    tag: SessionTag
    code: str
    slot: Slot | None = None
    extra: dict = field(default_factory=dict)

    def release(self) -> None:
        """Free the reserved encoder slot (idempotent)."""
        if self.slot is not None:
            self.slot.release()


class WatermarkHub:
    """The node's live watermark service: shared decoders per Stream, encoder slots, signing key.

    Injected into the media relay as its ``media_relay.viewers.ViewerTransformFactory``
    (:meth:`plan`, :meth:`draw`, :meth:`tag`)."""

    def __init__(self, look: WatermarkSettings, key: Ed25519PrivateKey, *, max_encoders: int,
                 preset: str = "ultrafast", crf: int = 23, font_error: str | None = None,
                 sub_stream_cost: float = 0.25) -> None:
        self.look = look
        self.key = key
        self.slots = EncoderSlots(max_encoders)
        self.sub_stream_cost = sub_stream_cost
        self.preset = preset
        self.crf = crf
        self.font_error = font_error  # set when no CJK font was found: watermarked views are refused
        self.decoders: dict[Any, SharedDecoder] = {}
        self.policy: Any = None  # watermark.policy.WatermarkPolicy; None = on for everybody

    def applies(self, roles: Any) -> bool:
        """Whether a user holding ``roles`` gets the visible watermark (the policy decides; on by default)."""
        return True if self.policy is None else self.policy.applies(roles)

    @classmethod
    def from_config(cls, config: WatermarkConfig, look: WatermarkSettings | None = None) -> WatermarkHub:
        """The hub of ``gbops run``: look and policy from the package config (``GBOPS_WATERMARK_*``), key
        from ``<data_dir>/watermark-tag.key``.  A missing CJK font does not stop the platform: it is logged
        and every watermarked live request is answered 503 ``watermark_font_missing``."""
        from watermark.font import FontMissing, find_cjk_font
        from watermark.tag import load_or_create_key

        look = look or config.policy.look
        font_error = None
        try:
            font = find_cjk_font(look.font_path)
        except FontMissing as exc:
            font_error = str(exc)
            log.error("watermark font missing: %s", exc)
        else:
            look = replace(look, font_path=font)
        limit = config.max_encoders or default_max_encoders(config.encoders_per_core)
        hub = cls(look, load_or_create_key(config.data_dir, path=config.tag_key_path), max_encoders=limit, preset=config.preset,
                  crf=config.crf, font_error=font_error, sub_stream_cost=config.sub_stream_cost)
        hub.policy = config.policy
        return hub

    # ------------------------------------------------------------------ the media relay's transform factory
    def plan(self, viewer: Viewer, channel: Any, session_id: str, *, kind: str = "live",
             window: tuple[Any, Any] | None = None, stream: str = "main") -> WatermarkPlan:
        """The viewer's watermark (on unless the policy switches it off for all the viewer's roles) and
        session tag, with an encoder slot reserved when it is on. Raises ``TransformUnavailable`` (no CJK
        font) or ``TransformCapacityExceeded`` (no encoder slot free).

        ``kind`` (live / playback / download) and ``window`` (the history shown: aware datetimes or Unix
        seconds) are signed into the tag; ``ValueError`` (a :class:`~watermark.tag.TagError`) for an
        unknown kind or a window ending before it starts. ``stream="sub"`` (live): the encoder reserved
        costs ``sub_stream_cost`` main-stream encoders."""
        device_id, channel_id = channel
        if kind not in KINDS:
            raise TagError(f"unknown session kind {kind!r}")
        code = session_code(session_id)
        on = self.applies(viewer.roles)
        text = WatermarkText(display_name=viewer.display_name or viewer.username, account=viewer.username,
                             phone=viewer.phone, client_ip=viewer.client_ip or "-", session_code=code)
        tag = SessionTag(session_id, viewer.user_id, channel_id, int(time.time() * 1000), device_id=device_id,
                         kind=kind, window=window_seconds(window))
        plan = WatermarkPlan(on=on, text=text, tag=tag, code=code)
        if on:
            if self.font_error:
                raise TransformUnavailable(self.font_error)
            plan.slot = self.slots.reserve(self.sub_stream_cost if stream == "sub" else 1.0)
            if plan.slot is None:
                raise TransformCapacityExceeded(self.slots.limit)
        return plan

    def draw(self, reader: Any, plan: WatermarkPlan, output: str) -> WatermarkedSource | None:
        """The viewer's watermarked H.264 on ``reader``'s Stream (the shared decoder holds its own reader:
        ``reader`` is closed); frees the plan's slot when it closes. None when the plan is off."""
        if not plan.on:
            return None
        source = self.viewer(reader.stream, text=plan.text, tag=plan.tag)
        source.on_close.append(plan.release)
        reader.close()
        return source

    def tag(self, source: AccessUnitSource, plan: WatermarkPlan) -> TaggedSource:
        """``source`` with the plan's session tag in every keyframe."""
        return self.tagged(source, plan.tag)

    # ------------------------------------------------------------------ building blocks
    def viewer(self, stream: Any, *, text: WatermarkText, tag: SessionTag,
               clock: Callable[[], float] = time.time, max_frames: int = 8) -> WatermarkedSource:
        """A new watermarked output on ``stream`` (anything with ``add_reader()``: a Stream)."""
        decoder = self.decoders.get(stream)
        if decoder is None or decoder.closed:
            reader = stream.add_reader()
            if getattr(stream, "closed", False):
                reader._push(None)  # a Stream that already ended: the viewer sees the end at once
            decoder = SharedDecoder(reader, name=str(getattr(stream, "channel_id", "")))
            self.decoders[stream] = decoder

            def forget(d: SharedDecoder, key: Any = stream) -> None:
                if self.decoders.get(key) is d:
                    del self.decoders[key]

            decoder.on_closed = forget
        source = WatermarkedSource(decoder, Overlay(self.look, text), self.tag_nal(tag, "h264"),
                                   preset=self.preset, crf=self.crf, clock=clock, max_frames=max_frames)
        decoder.subscribe(source)
        return source

    def tag_nal(self, tag: SessionTag, codec: str) -> bytes:
        return make_tag_nal(tag, codec, self.key)

    def tagged(self, source: AccessUnitSource, tag: SessionTag) -> TaggedSource:
        return TaggedSource(source, tag, self.key)

    def describe(self) -> dict[str, Any]:
        return {"max_encoders": self.slots.limit, "encoders_in_use": self.slots.in_use,
                "encoders_running": self.slots.viewers, "sub_stream_cost": self.sub_stream_cost,
                "decoders": len(self.decoders),
                "viewers": sum(len(d.viewers) for d in self.decoders.values())}
