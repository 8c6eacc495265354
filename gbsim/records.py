"""The simulated devices' own recordings, sans-IO: the record store, RecordInfo answers, history calls.

:class:`RecordStore`
    What one channel "has on its SD card": files of ``file_seconds`` (aligned to multiples of that length
    in Unix time, so on the Beijing 10-minute marks by default) from ``hours`` before the simulator
    started, and on while it runs (the last file ends "now"), except one whole hour in the middle of the
    first ``hours`` that is missing, so a timeline shows a gap.  Nothing is stored: files are computed
    from the clock.  Types vary (``time``, a few ``alarm`` and ``manual``) so a console can colour them.

:func:`record_info_bodies`
    Response/RecordInfo bodies for one query: at most ``page_size`` items each, ``SumNum`` the total,
    times in Beijing time without an offset (``2025-01-01T08:00:00``); an empty answer is ``SumNum 0``
    without a list.  The device sends them one after another (each waits for the 200 of the one before).

:class:`HistoryWindow` / :func:`parse_history`
    The ``s=Playback`` / ``s=Download`` part of an INVITE offer: ``t=<start> <end>`` (Unix seconds) and
    ``a=downloadspeed``.

:func:`parse_mansrtsp` / :func:`rtsp_response`
    MANSRTSP (GB/T 28181 Annex B) carried by in-dialog INFO: ``PAUSE`` (``PauseTime: now``), ``PLAY``
    with ``Range: npt=now-`` (resume) or ``npt=N-`` (seek, N seconds from the window start) and/or
    ``Scale: x`` (0.25..8), ``TEARDOWN``.  :func:`control_for` checks a command against a call's window
    and gives the :class:`PlaybackControl` the media side applies.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime

from gbcore.timeutil import from_device_time, gb_time, to_device_time
from sip_server.gb import manscdp

RECORD_TYPES = ("time", "alarm", "manual")
MIN_SCALE = 0.25
MAX_SCALE = 8.0
MAX_DOWNLOAD_SPEED = 32


# ================================================================================================ store
@dataclass(frozen=True, slots=True)
class RecordFile:
    """One simulated recording file: ``[start, end)`` in Unix seconds."""

    start: int
    end: int
    type: str
    size: int  # bytes (the stream's bit rate times the duration)
    path: str

    @property
    def seconds(self) -> int:
        return self.end - self.start

    def item(self, channel_id: str, name: str | None = None, address: str | None = None) -> manscdp.RecordItem:
        """As a RecordInfo ``<Item>`` (times in Beijing time without an offset, as devices send them)."""
        return manscdp.RecordItem(
            device_id=channel_id, name=name, file_path=self.path, address=address,
            start_time=gb_time(self.start, millis=False), end_time=gb_time(self.end, millis=False),
            secrecy=0, type=self.type, file_size=self.size,
        )


class RecordStore:
    """One channel's simulated recordings; see the module docstring.

    *origin*: when the simulator started (Unix seconds); *hours*: how much was recorded before that;
    *file_seconds*: the file length; *gap*: leave one hour out (only when *hours* >= 3); *bitrate*: for
    the file sizes.  Every query takes ``now`` (Unix seconds): nothing exists at or after it.
    """

    def __init__(self, channel_id: str, *, origin: float, hours: float = 24.0, file_seconds: int = 600,
                 gap: bool = True, bitrate: int = 1_000_000) -> None:
        if file_seconds < 1 or hours < 0:
            raise ValueError("file_seconds must be >= 1 and hours >= 0")
        self.channel_id = channel_id
        self.origin = float(origin)
        self.file_seconds = int(file_seconds)
        self.bitrate = bitrate
        self.begin = math.floor((origin - hours * 3600) / file_seconds) * file_seconds
        self.gap: tuple[int, int] | None = None
        if gap and hours >= 3:
            g = math.floor((origin - hours * 3600 / 2) / 3600) * 3600
            self.gap = (g, g + 3600)

    # ------------------------------------------------------------------ coverage
    def recorded(self, t: float, now: float) -> bool:
        """Whether content exists at Unix second *t*."""
        if t < self.begin or t >= now:
            return False
        return self.gap is None or not self.gap[0] <= t < self.gap[1]

    def next_recorded(self, t: float, now: float) -> float | None:
        """The first instant at or after *t* with content (``t`` itself when recorded), or None."""
        t = max(t, float(self.begin))
        if self.gap is not None and self.gap[0] <= t < self.gap[1]:
            t = float(self.gap[1])
        return t if t < now else None

    def seconds_in(self, start: float, end: float, now: float) -> float:
        """Seconds of content within ``[start, end)``."""
        lo, hi = max(start, self.begin), min(end, now)
        if hi <= lo:
            return 0.0
        total = hi - lo
        if self.gap is not None:
            total -= max(0.0, min(hi, self.gap[1]) - max(lo, self.gap[0]))
        return total

    # ------------------------------------------------------------------ files
    def _type(self, slot: int) -> str:
        if slot % 9 == 4:
            return "alarm"
        if slot % 13 == 7:
            return "manual"
        return "time"

    def files(self, start: float, end: float, now: float, type: str = "all") -> list[RecordFile]:
        """Files overlapping ``[start, end)``, whole (a device reports its files as they are), by start."""
        lo, hi = max(start, self.begin), min(end, now)
        if hi <= lo:
            return []
        want = (type or "all").strip().lower()
        out: list[RecordFile] = []
        length = self.file_seconds
        for slot in range(math.floor(lo / length), math.ceil(hi / length)):
            s, e = slot * length, min((slot + 1) * length, math.floor(now))
            pieces = [(s, e)]
            if self.gap is not None:
                g0, g1 = self.gap
                pieces = [(a, b) for a, b in ((s, min(e, g0)), (max(s, g1), e)) if b > a]
            kind = self._type(slot)
            if want not in ("all", "") and want != kind:
                continue
            for a, b in pieces:
                if b <= lo or a >= hi or b <= a:
                    continue
                local = to_device_time(a)
                path = f"/mnt/sd/record/{self.channel_id}/{local:%Y%m%d}/{local:%H%M%S}.ps"
                out.append(RecordFile(a, b, kind, (b - a) * self.bitrate // 8, path))
        return out


# ================================================================================================ RecordInfo
def parse_query_time(value: str | None) -> float | None:
    """A RecordInfo ``StartTime``/``EndTime``: Beijing time without an offset (devices' convention), or
    ISO 8601 with an offset; Unix seconds, or None when unreadable."""
    if not value:
        return None
    naive = manscdp.parse_gb_time(value)
    if naive is not None:
        return from_device_time(naive).timestamp()
    try:
        dt = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return from_device_time(dt).timestamp()


def record_info_bodies(sn: int, channel_id: str, files: list[RecordFile], *, name: str | None = None,
                       address: str | None = None, page_size: int = 8, charset: str = "GB2312") -> list[bytes]:
    """Response/RecordInfo pages for *files* (see the module docstring)."""
    total = len(files)
    if total == 0:
        return [manscdp.build_message("Response", "RecordInfo", sn, channel_id, charset=charset,
                                      extra=[("Name", name), ("SumNum", 0)])]
    size = max(1, page_size)
    items = [f.item(channel_id, name, address) for f in files]
    return [manscdp.build_record_info_response(sn, channel_id, total, items[i:i + size], name=name, charset=charset)
            for i in range(0, total, size)]


def media_status_body(sn: int, device_id: str, notify_type: int = 121, *, charset: str = "GB2312") -> bytes:
    """Notify/MediaStatus (NotifyType 121: the history media file has been sent completely)."""
    return manscdp.build_message("Notify", "MediaStatus", sn, device_id, charset=charset,
                                 extra=[("NotifyType", notify_type)])


# ================================================================================================ INVITE
@dataclass(frozen=True, slots=True)
class HistoryWindow:
    """A history call: ``kind`` playback | download, ``[start, end)`` Unix seconds, ``speed`` (the
    download speed; 1 for playback)."""

    kind: str
    start: int
    end: int
    speed: int = 1

    @property
    def seconds(self) -> int:
        return self.end - self.start


_T_RE = re.compile(r"\s*(\d{1,12})\s+(\d{1,12})\s*", re.ASCII)


def parse_history(session: str, timing: str, attrs: list[tuple[str, str | None]]) -> HistoryWindow:
    """The window of a ``s=Playback``/``s=Download`` offer; ValueError (the device answers 488) when
    ``t=`` is not two Unix seconds with end > start, or ``a=downloadspeed`` is not 1..32."""
    kind = session.strip().lower()
    if kind not in ("playback", "download"):
        raise ValueError(f"not a history session: {session!r}")
    m = _T_RE.fullmatch(timing or "")
    if not m:
        raise ValueError(f"t= must be '<start> <end>' in Unix seconds, got {timing!r}")
    start, end = int(m.group(1)), int(m.group(2))
    if start <= 0 or end <= start:
        raise ValueError(f"t= end must be after start, got {timing!r}")
    speed = 1
    if kind == "download":
        values = [v for k, v in attrs if k.lower() == "downloadspeed"]
        if values:
            text = (values[-1] or "").strip()
            if not text.isdigit() or not 1 <= int(text) <= MAX_DOWNLOAD_SPEED:
                raise ValueError(f"a=downloadspeed must be 1..{MAX_DOWNLOAD_SPEED}, got {text!r}")
            speed = int(text)
    return HistoryWindow(kind, start, end, speed)


# ================================================================================================ MANSRTSP
class MansrtspError(ValueError):
    """A body that is not a MANSRTSP request at all (the INFO gets SIP 400)."""


@dataclass(frozen=True, slots=True)
class RtspCommand:
    method: str  # PLAY | PAUSE | TEARDOWN (upper case); anything else is kept for the 400
    cseq: int
    headers: dict[str, str]  # lower-case names


_METHOD_RE = re.compile(r"([A-Za-z]{1,16})\s+(?:MANS)?RTSP/1\.0", re.ASCII)


def parse_mansrtsp(body: bytes) -> RtspCommand:
    """``PLAY RTSP/1.0`` + headers (``CSeq`` required); :class:`MansrtspError` otherwise."""
    if len(body) > 4096:
        raise MansrtspError("MANSRTSP body too long")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MansrtspError("MANSRTSP body is not text") from exc
    lines = [line.strip() for line in text.replace("\r\n", "\n").split("\n")]
    lines = [line for line in lines if line]
    if not lines:
        raise MansrtspError("empty MANSRTSP body")
    m = _METHOD_RE.fullmatch(lines[0])
    if not m:
        raise MansrtspError(f"bad MANSRTSP request line {lines[0][:60]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise MansrtspError(f"bad MANSRTSP header line {line[:60]!r}")
        headers[name.strip().lower()] = value.strip()
    cseq = headers.get("cseq", "")
    if not cseq.isdigit() or len(cseq) > 10:
        raise MansrtspError("MANSRTSP CSeq missing or not a number")
    return RtspCommand(m.group(1).upper(), int(cseq), headers)


def rtsp_response(cseq: int | None, status: int = 200, reason: str = "OK", extra: tuple[str, ...] = ()) -> bytes:
    """The RTSP-style body of the 200 (or 4xx) answering an INFO."""
    lines = [f"RTSP/1.0 {status} {reason}"]
    if cseq is not None:
        lines.append(f"CSeq: {cseq}")
    lines.extend(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass(frozen=True, slots=True)
class PlaybackControl:
    """What the media side does: ``pause``, ``resume`` (with an optional new ``scale``), ``seek`` to
    ``position`` seconds from the window start (and maybe ``scale``), ``scale`` alone, or ``teardown``."""

    action: str
    position: float | None = None
    scale: float | None = None


_NPT_RE = re.compile(r"npt\s*=\s*(now|\d{1,9}(?:\.\d{1,6})?)\s*-\s*(\d{1,9}(?:\.\d{1,6})?)?", re.ASCII | re.I)


def control_for(cmd: RtspCommand, window: HistoryWindow) -> PlaybackControl:
    """The control a command asks for; ValueError (RTSP 400) for a bad Scale, Range or method."""
    if cmd.method == "PAUSE":
        return PlaybackControl("pause")
    if cmd.method == "TEARDOWN":
        return PlaybackControl("teardown")
    if cmd.method != "PLAY":
        raise ValueError(f"unsupported method {cmd.method}")
    scale: float | None = None
    if "scale" in cmd.headers:
        try:
            scale = float(cmd.headers["scale"])
        except ValueError:
            raise ValueError(f"bad Scale {cmd.headers['scale'][:20]!r}") from None
        if not math.isfinite(scale) or not MIN_SCALE <= scale <= MAX_SCALE:
            raise ValueError(f"Scale must be {MIN_SCALE:g}..{MAX_SCALE:g} (no reverse play)")
    rng = cmd.headers.get("range")
    if rng is None:
        return PlaybackControl("scale", scale=scale) if scale is not None else PlaybackControl("resume")
    m = _NPT_RE.fullmatch(rng.strip())
    if not m:
        raise ValueError(f"bad Range {rng[:40]!r}")
    if m.group(1).lower() == "now":
        return PlaybackControl("resume", scale=scale)
    position = float(m.group(1))
    if position > window.seconds:
        raise ValueError(f"Range beyond the window ({position:g} > {window.seconds} s)")
    return PlaybackControl("seek", position=position, scale=scale)
