"""Simulated GB/T 28181 devices (IPCs and NVRs), sans-IO.

Nothing here touches sockets, asyncio or the clock: every entry point takes ``now`` (monotonic seconds),
and bytes go in and out through :class:`Fleet`.  The asyncio adapter is :mod:`gbsim.runner`.

:class:`SimDevice`
    One device's behaviour: REGISTER with digest authentication, refresh at ``expires * 0.8``,
    keepalives, back-off after failures, answers to MANSCDP queries, unregister on stop.  It never
    talks to the SIP endpoint itself: it appends ``(purpose, SipRequest)`` to :attr:`SimDevice.out` and
    is told about the outcome through :meth:`SimDevice.on_response` / :meth:`SimDevice.on_timeout`.

:class:`Fleet`
    All devices of one simulator process, grouped on *links* (one UDP socket for up to
    ``devices_per_socket`` devices, or one TCP connection per device).  Each link has its own
    :class:`~sip_server.sip.SipEndpoint` for transactions and retransmissions.  One heap holds the
    timers of every device and every endpoint, so thousands of devices cost no task or timer each.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

from gbcore.log import get_logger
from gbcore.timeutil import from_device_time, to_device_time
from gbsim.control import Controls
from gbsim.ptz import PtzLogEntry, PtzView
from gbsim.records import (
    HistoryWindow,
    MansrtspError,
    PlaybackControl,
    RecordStore,
    control_for,
    media_status_body,
    parse_history,
    parse_mansrtsp,
    parse_query_time,
    record_info_bodies,
    rtsp_response,
)
from media_relay.types import VIDEO_CODECS
from sip_server.gb import manscdp
from sip_server.sip.digest import build_authorization
from sip_server.sip.endpoint import (
    AckTimeout,
    RequestReceived,
    ResponseReceived,
    SipEndpoint,
    TransactionTimeout,
)
from sip_server.sip.message import (
    Headers,
    SipParseError,
    SipRequest,
    SipResponse,
    StreamFramer,
    contact_value,
    format_hostport,
    header_param,
    make_response,
    parse_name_addr,
    parse_uri,
    via_value,
)
from sip_server.sip.sdp import Media, Sdp, SdpError, gb_sdp, parse_sdp

log = get_logger("gbops.sim")

MANSCDP_TYPE = "Application/MANSCDP+xml"
ALLOW = "REGISTER, MESSAGE, ACK, BYE, CANCEL, OPTIONS, INVITE, INFO, SUBSCRIBE"
MANUFACTURER = "gbops-sim"
FIRMWARE = "V5.7.3 build 240815"

# GB/T 28181 type codes (digits 11-13 of a 20-digit id).
TYPE_NVR = "118"
TYPE_IPC = "132"
TYPE_CHANNEL = "131"

# Device states.
IDLE = "idle"  # no link (TCP not connected yet / lost)
WAITING = "waiting"  # a REGISTER is scheduled (start-up jitter or back-off)
REGISTERING = "registering"  # a REGISTER transaction is in flight
REGISTERED = "registered"
UNREGISTERING = "unregistering"
STOPPED = "stopped"

_REGISTER_PURPOSES = ("register", "refresh", "unregister")

_PLACES = (
    "东门入口", "西门出口", "南门岗亭", "北区停车场", "一号楼大厅", "二号楼电梯厅", "周界围墙",
    "仓库通道", "收银台", "地下车库", "食堂", "消防通道",
)


def _addressed_users(req: SipRequest) -> list[str | None]:
    """The user parts a request is addressed to: Request-URI first, then To (unparseable ones skipped)."""
    users: list[str | None] = []
    try:
        users.append(parse_uri(req.uri).user)
    except SipParseError:
        pass
    try:
        users.append(parse_name_addr(req.headers.get("To") or "").uri.user)
    except SipParseError:
        pass
    return users


# ================================================================================================ config
@dataclass
class SimConfig:
    """What to simulate.  The first twelve fields are what ``gbops sim`` passes; the rest have defaults."""

    server: tuple[str, int]
    devices: int = 1
    channels: int = 4
    password: str = ""
    transport: str = "udp"  # "udp" | "tcp" | "tls" (SIP over TLS, the platform's sips port)
    charset: str = "gb2312"  # "gb2312" | "utf-8" (MANSCDP bodies and their XML declaration)
    keepalive: float = 60.0  # keepalive interval, seconds
    expires: int = 3600  # requested registration expiry, seconds
    server_id: str = "34020000002000000001"
    domain: str = "3402000000"
    first_id: str = "34020000001180000001"
    local_host: str = "127.0.0.1"
    # ---- additions (defaults keep the CLI contract)
    devices_per_socket: int = 250  # UDP: devices sharing one local socket
    keepalive_failures: int = 3  # keepalives failed in a row before registering again
    retry_min: float = 5.0  # first back-off after a failure, seconds (doubles up to retry_max)
    retry_max: float = 120.0
    register_rate: float = 100.0  # first REGISTERs spread at about this many devices per second
    start_spread: float | None = None  # or: spread them over exactly this many seconds
    refresh_ratio: float = 0.8  # re-register at expires * refresh_ratio
    first_keepalive_max: float = 2.0  # first keepalive within [0, min(keepalive, this)] after registering
    device_type: str | None = None  # type code for device ids; None: 118 (NVR) if channels != 1 else 132 (IPC)
    user_agent: str = "gbops-sim/0.1"
    seed: int | None = None  # deterministic Call-IDs/tags/jitter when set
    progress_interval: float = 5.0  # run_simulator: seconds between progress lines
    message_window: int = 1  # MANSCDP responses in flight per device (NVRs wait for each 200, like real ones)
    # ---- media: what an INVITEd channel streams (one shared encoder per process, see gbsim/media.py)
    codec: str = "h264"  # "h264" | "h265"
    size: str = "640x360"  # WIDTHxHEIGHT, both even
    fps: int = 25
    bitrate: int = 1_000_000  # bits per second
    media: bool = True  # answer INVITE and stream; False: refuse INVITE with 488 (no media at all)
    # ---- issue 18: main/sub-stream. A live INVITE naming stream 1 or more (a=streamnumber:N of GB/T 28181-2022,
    # or the vendor forms a=stream:N / a=streamprofile:N, whichever of ``stream_forms`` the device reads) gets
    # the sub-stream: ``sub_size`` pictures at a quarter of the bit rate; a form the device does not read is
    # ignored, as real devices do, and the main stream is sent
    sub_size: str = "352x288"  # WIDTHxHEIGHT (CIF), both even
    stream_forms: tuple[str, ...] = ("streamnumber", "stream", "streamprofile")
    # ---- issue 11: channel identity
    # every device reports device 0's channel ids (NVRs shipping the same default ids: 34020000001310000001,
    # ...); each device then gets a socket of its own (devices_per_socket = 1), since a request for a
    # channel id alone could not tell the devices sharing a socket apart
    same_channel_ids: bool = False
    # draw the device id and a colour of its own into the picture (gbsim/media.py TestPattern label): a
    # decoded frame names its camera; costs one encoder per streaming device instead of one per process
    label_pictures: bool = False
    # ---- issue 13: history video (gbsim/records.py, gbsim/playback.py)
    record_hours: float = 24.0  # each channel has recordings from this long before the sim started
    record_file_minutes: int = 10  # length of one recording file
    record_gap: bool = True  # one hour missing in the middle of those hours (when record_hours >= 3)
    record_page_size: int = 8  # RecordInfo items per MESSAGE (the pages are sent one after another)
    refuse_history: int | None = None  # answer every s=Playback / s=Download INVITE with this (488 or 486)
    history_max_fps: int = 100  # fast playback: at most this many pictures per wall second
    history_bye_timeout: float = 30.0  # after MediaStatus 121, hang up ourselves when no BYE came in time
    # ---- issue 16: SIP over TLS (transport "tls"): the platform's certificate is checked against this CA
    # file (None: the system's); tls_verify=False accepts any certificate (a test's self-signed one only)
    tls_ca_file: str | None = None
    tls_verify: bool = True
    # ---- issue 14: domes, alarms, positions (gbsim/control.py, gbsim/ptz.py, gbsim/ptzpicture.py)
    alarm_every: float | None = None  # each device raises an alarm every this many seconds (None: on demand only)
    position_every: float | None = None  # each device sends Notify/MobilePosition every this many seconds
    alarm_latch: bool = True  # a device alarm (method 2) holds back the next one until AlarmCmd ResetAlarm
    ptz_log_size: int = 1000  # PTZ commands (and DeviceControls) remembered per channel (per device)
    # ---- issue 16: a wrong clock: every device time (DeviceStatus DeviceTime, alarm and position times) is
    # this many seconds ahead (negative: behind) of the time the platform's Date header set
    clock_error: float = 0.0

    def __post_init__(self) -> None:
        host, port = self.server
        if not host or not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"server must be (host, port), got {self.server!r}")
        self.server = (str(host), int(port))
        if self.devices < 1:
            raise ValueError("devices must be >= 1")
        if self.channels < 0:
            raise ValueError("channels must be >= 0")
        self.transport = self.transport.lower()
        if self.transport not in ("udp", "tcp", "tls"):
            raise ValueError(f"transport must be 'udp', 'tcp' or 'tls', got {self.transport!r}")
        if manscdp.canonical_charset(self.charset) is None:
            raise ValueError(f"unsupported charset {self.charset!r}")
        if not self.keepalive > 0 or self.expires <= 0:
            raise ValueError("keepalive and expires must be > 0")
        if len(self.first_id) != 20 or not self.first_id.isdigit():
            raise ValueError(f"first_id must be 20 digits, got {self.first_id!r}")
        if self.device_type is not None and (len(self.device_type) != 3 or not self.device_type.isdigit()):
            raise ValueError("device_type must be a 3-digit type code")
        first = int(self.first_id[13:])
        if first + self.devices - 1 > 9_999_999:
            raise ValueError("too many devices for first_id (the last 7 digits would overflow)")
        if (first + self.devices - 1) * max(self.channels, 1) > 9_999_999:
            raise ValueError("too many channels: channel ids would overflow 7 digits")
        if self.same_channel_ids:
            self.devices_per_socket = 1
        if self.devices_per_socket < 1 or self.keepalive_failures < 1 or self.message_window < 1:
            raise ValueError("devices_per_socket, keepalive_failures and message_window must be >= 1")
        if not self.register_rate > 0:
            raise ValueError("register_rate must be > 0")
        if not 0 < self.refresh_ratio < 1:
            raise ValueError("refresh_ratio must be between 0 and 1")
        self.codec = self.codec.lower()
        if self.codec not in VIDEO_CODECS:
            raise ValueError(f"codec must be 'h264' or 'h265', got {self.codec!r}")
        parse_size(self.size)
        parse_size(self.sub_size)
        if not isinstance(self.fps, int) or not 1 <= self.fps <= 60:
            raise ValueError("fps must be an integer 1..60")
        if not isinstance(self.bitrate, int) or not 10_000 <= self.bitrate <= 100_000_000:
            raise ValueError("bitrate must be 10000..100000000 bits/s")
        if not 0 <= self.record_hours <= 24 * 366:
            raise ValueError("record_hours must be 0..8784")
        if not isinstance(self.record_file_minutes, int) or not 1 <= self.record_file_minutes <= 1440:
            raise ValueError("record_file_minutes must be an integer 1..1440")
        if not isinstance(self.record_page_size, int) or not 1 <= self.record_page_size <= 1000:
            raise ValueError("record_page_size must be an integer 1..1000")
        if self.refuse_history is not None and not 400 <= self.refuse_history <= 699:
            raise ValueError("refuse_history must be a SIP error status (e.g. 488 or 486)")
        if self.history_max_fps < 1 or not self.history_bye_timeout > 0:
            raise ValueError("history_max_fps must be >= 1 and history_bye_timeout > 0")
        for name in ("alarm_every", "position_every"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int | float) and 0.05 <= value <= 86400):
                raise ValueError(f"{name} must be 0.05..86400 seconds (or None)")
        if not isinstance(self.ptz_log_size, int) or not 1 <= self.ptz_log_size <= 100_000:
            raise ValueError("ptz_log_size must be an integer 1..100000")

    @property
    def video_size(self) -> tuple[int, int]:
        return parse_size(self.size)

    @property
    def sub_video_size(self) -> tuple[int, int]:
        return parse_size(self.sub_size)

    # ---- identities
    @property
    def type_code(self) -> str:
        if self.device_type is not None:
            return self.device_type
        return TYPE_IPC if self.channels == 1 else TYPE_NVR

    @property
    def spread(self) -> float:
        """Seconds over which the first REGISTERs are spread."""
        return self.start_spread if self.start_spread is not None else self.devices / self.register_rate

    @property
    def stop_spread(self) -> float:
        """Seconds over which the unregistering REGISTERs of a clean stop are spread (4x the start rate)."""
        return self.spread / 4

    @property
    def manscdp_charset(self) -> str:
        canon = manscdp.canonical_charset(self.charset)
        assert canon is not None
        return canon

    def device_id(self, index: int) -> str:
        """The id of device *index*: ``first_id`` with the type code set and the last 7 digits + index."""
        base = self.first_id
        return f"{base[:10]}{self.type_code}{int(base[13:]) + index:07d}"

    def device_ids(self) -> list[str]:
        return [self.device_id(i) for i in range(self.devices)]

    def channel_ids(self, index: int) -> list[str]:
        """Channel ids of device *index*: type code 131 and a running number unique in the fleet (with
        ``same_channel_ids``: device 0's ids for every device)."""
        base = self.first_id
        per = max(self.channels, 1)
        if self.same_channel_ids:
            index = 0
        first = (int(base[13:]) + index - 1) * per + 1
        return [f"{base[:10]}{TYPE_CHANNEL}{first + k:07d}" for k in range(self.channels)]


def parse_size(size: str) -> tuple[int, int]:
    """``"640x360"`` -> ``(640, 360)``: both even, 64..4096 x 64..2304."""
    w, sep, h = str(size).lower().partition("x")
    if not sep or not w.strip().isdigit() or not h.strip().isdigit():
        raise ValueError(f"size must be WIDTHxHEIGHT, got {size!r}")
    width, height = int(w), int(h)
    if not (64 <= width <= 4096 and 64 <= height <= 2304) or width % 2 or height % 2:
        raise ValueError(f"size must be even numbers within 64..4096 x 64..2304, got {size!r}")
    return width, height


def channel_name(index: int, k: int, channels: int) -> str:
    """A plausible Chinese channel name, e.g. ``东门入口 1号`` or ``大华1.107 通道3``."""
    place = _PLACES[(index + k) % len(_PLACES)]
    if channels > 1 and k % 3 == 2:
        return f"大华1.{100 + (index + k) % 150} 通道{k + 1}"
    return f"{place} {k + 1}号"


# ================================================================================================ SDP
# Media modes of a call (what the device does): send RTP over UDP, connect over TCP (the offer said
# a=setup:passive), or listen over TCP for the platform to connect (the offer said a=setup:active).
MEDIA_UDP = "udp"
MEDIA_TCP_CONNECT = "tcp-connect"
MEDIA_TCP_LISTEN = "tcp-listen"

# GB/T 28181 f= codes: video codec (2 H.264, 5 H.265) and resolution (by picture height).
_F_CODEC = {"h264": 2, "h265": 5}
_F_RESOLUTION = ((144, 1), (288, 2), (576, 4), (720, 5))


@dataclass(frozen=True)
class SdpOffer:
    """What the simulator reads from a GB/T 28181 INVITE offer (parsed by :func:`parse_sdp`): the session and
    its first ``m=video``."""

    sdp: Sdp
    video: Media
    host: str  # c= (media level over session level)

    @property
    def session(self) -> str:
        """s=: Play | Playback | Download | Talk."""
        return self.sdp.session_name or "Play"

    @property
    def origin(self) -> str:
        """The o= user (the platform id)."""
        parts = self.sdp.origin.split()
        return parts[0] if parts else ""

    @property
    def port(self) -> int:
        return self.video.port

    @property
    def ssrc(self) -> str | None:
        """y="""
        return self.sdp.ssrc

    @property
    def timing(self) -> str:
        """t="""
        return self.sdp.time or "0 0"

    @property
    def tcp(self) -> bool:
        return "TCP" in self.video.proto.upper()

    @property
    def mode(self) -> str:
        if not self.tcp:
            return MEDIA_UDP
        setup = (_attr_values(self, "setup") or [""])[-1]
        return MEDIA_TCP_LISTEN if setup.strip().lower() == "active" else MEDIA_TCP_CONNECT

    def ps_payload(self) -> int | None:
        """The payload type offered for MPEG-PS (``PS/90000``; a bare 96 without rtpmap counts)."""
        rtpmap: dict[str, str] = {}
        for value in _attr_values(self, "rtpmap"):
            fmt, _, enc = value.strip().partition(" ")
            rtpmap[fmt.strip()] = enc.strip()
        for fmt in self.video.formats:
            if rtpmap.get(fmt, "").upper().startswith("PS/"):
                return int(fmt)
        if "96" in self.video.formats and "96" not in rtpmap:
            return 96
        return None


def _attr_values(offer: SdpOffer, name: str) -> list[str]:
    """The values of the session's and then the video section's ``a=<name>`` lines, in order (attribute
    names compared case-insensitively; a later line overrides an earlier one)."""
    return [value or "" for key, value in (*offer.sdp.attrs, *offer.video.attrs) if key.lower() == name]


def parse_sdp_offer(body: bytes) -> SdpOffer:
    """The session and first video section of an SDP offer; :class:`SdpError` when there is none usable."""
    sdp = parse_sdp(body)
    video = sdp.video
    if video is None:
        raise SdpError("no m=video in the offer")
    host = video.connection or sdp.connection
    if not host:
        raise SdpError("no c= address in the offer")
    if not 0 < video.port < 65536:
        raise SdpError(f"unusable media port {video.port}")
    return SdpOffer(sdp, video, host)


def build_sdp_answer(*, channel_id: str, host: str, port: int, offer: SdpOffer, payload: int, ssrc: str,
                     codec: str, size: tuple[int, int], fps: int, bitrate: int,
                     extra_attrs: list[tuple[str, str | None]] | tuple = ()) -> bytes:
    """The device's 200 OK SDP, shaped like those of real IPCs (see tests/vectors)."""
    res = next((code for limit, code in _F_RESOLUTION if size[1] <= limit), 6)
    return gb_sdp(
        origin_id=channel_id, ip=host, port=port, ssrc=ssrc, payloads=[(payload, "PS/90000")], direction="sendonly",
        tcp=offer.tcp, setup="passive" if offer.mode == MEDIA_TCP_LISTEN else "active",
        session_name=offer.session, time=offer.timing,
        media_format=f"v/{_F_CODEC.get(codec, 2)}/{res}/{fps}/1/{max(1, bitrate // 1000)}a///",
        extra_attrs=list(extra_attrs),
    ).to_bytes()


# Call states.
CALL_OFFERED = "offered"  # INVITE in, waiting for the media side to bind (Fleet.media_ready)
CALL_ANSWERED = "answered"  # 200 OK sent, waiting for ACK
CALL_CONFIRMED = "confirmed"  # ACK in: streaming
CALL_ENDED = "ended"


@dataclass(eq=False)
class Call:
    """One INVITE dialog of a simulated device (the device is the UAS)."""

    device_id: str
    channel_id: str
    call_id: str
    key: Any  # the INVITE server transaction of the link's SipEndpoint
    invite: SipRequest
    offer: SdpOffer
    ssrc: str  # 10 decimal digits, as in y=
    payload: int
    local_tag: str
    remote_target: str  # where an in-dialog request goes (the INVITE's Contact)
    route: list[str]
    started: float
    state: str = CALL_OFFERED
    local_addr: tuple[str, int] | None = None  # the media socket (in the SDP answer)
    answer: SipResponse | None = None
    local_cseq: int = 0
    end_reason: str | None = None
    history: HistoryWindow | None = None  # s=Playback / s=Download: the requested window
    media_status_sent: bool = False  # MediaStatus 121 sent (the window was streamed completely)
    stream_number: int = 0  # live: 0 the main stream, 1 or more the sub-stream (what the offer asked, if read)

    @property
    def mode(self) -> str:
        return self.offer.mode

    @property
    def ssrc_int(self) -> int:
        return int(self.ssrc) & 0xFFFFFFFF

    @property
    def remote_media(self) -> tuple[str, int]:
        return (self.offer.host, self.offer.port)


@dataclass(frozen=True)
class MediaEvent:
    """What the adapter must do for a call's media: ``prepare`` (bind a socket, then call
    :meth:`Fleet.media_ready` or :meth:`Fleet.media_failed`), ``start`` (the ACK came: send), ``stop``,
    ``control`` (a history call's MANSRTSP command: apply *control*), ``ptz`` (the channel was moved: stream
    its own dome picture from now on, see :meth:`SimDevice.ptz_moved`) or ``iframe`` (IFrameCmd: an IDR
    soon)."""

    kind: str
    call: Call
    control: PlaybackControl | None = None


# ================================================================================================ stats
@dataclass
class DeviceStats:
    registers_sent: int = 0
    challenges: int = 0
    registrations: int = 0
    register_failures: int = 0
    keepalives_sent: int = 0
    keepalives_ok: int = 0
    keepalives_failed: int = 0
    registrations_lost: int = 0
    queries_received: int = 0
    queries_answered: int = 0
    messages_sent: int = 0
    invites_received: int = 0
    calls_answered: int = 0
    calls_refused: int = 0
    calls_failed: int = 0  # ended by the media side (TCP refused/closed, no ACK)
    byes_received: int = 0
    byes_sent: int = 0
    cancels_received: int = 0
    record_queries: int = 0
    history_calls: int = 0
    controls_received: int = 0
    controls_refused: int = 0
    media_status_sent: int = 0


def _parse_server_date(value: str) -> float | None:
    """Epoch seconds from a ``Date:`` header: GB/T 28181 ``2026-11-21T13:50:00.123`` (Beijing time, whatever
    the host's zone) or RFC 1123."""
    dt = manscdp.parse_gb_time(value)
    if dt is not None:
        try:
            return from_device_time(dt).timestamp()
        except (OverflowError, OSError, ValueError):
            return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _call_id(req: SipRequest) -> str:
    try:
        return req.call_id
    except SipParseError:
        return ""


# ================================================================================================ device
class SimDevice:
    """One simulated device (sans-IO).  Driven by :class:`Fleet`; usable alone in tests.

    Inputs: :meth:`attach` / :meth:`detach` (link up/down), :meth:`handle_timer`, :meth:`on_response`,
    :meth:`on_timeout`, :meth:`on_request`, :meth:`stop`.  Outputs: requests appended to :attr:`out`
    as ``(purpose, SipRequest)`` with purpose one of ``register``, ``refresh``, ``unregister``,
    ``keepalive``, ``message``; the next time it wants :meth:`handle_timer` is :attr:`wakeup`.
    """

    def __init__(
        self,
        cfg: SimConfig,
        index: int,
        *,
        rng: random.Random | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.index = index
        self.device_id = cfg.device_id(index)
        self.channel_ids = cfg.channel_ids(index)
        self.rng = rng or random.Random()
        self.wall = wall
        self.charset = cfg.manscdp_charset
        self.link = 0  # index of the Fleet link carrying this device
        self.local_addr: tuple[str, int] | None = None
        self.state = IDLE
        self.registered = False
        self.ka_ok = False  # last keepalive answered 2xx
        self.failed = False  # last registration attempt failed (cleared by a successful one)
        self.last_error: str | None = None
        self.fail_count = 0  # consecutive failures (drives the back-off)
        self.ka_failures = 0  # consecutive keepalive failures
        self.call_id = f"{self._hex(16)}@{cfg.local_host}"
        self.from_tag = ""
        self.cseq = 0  # REGISTER CSeq (one Call-ID for the device's life, as RFC 3261 10.2 asks)
        self.reg_purpose = "register"
        self.auth_tries = 0
        self.req_expires = cfg.expires
        self.granted_expires: int | None = None
        self.registered_at: float | None = None
        self.server_date: str | None = None
        self.clock_offset = 0.0  # server Date minus our wall clock
        self.retry_at: float | None = None
        self.refresh_at: float | None = None
        self.keepalive_at: float | None = None
        self.stop_after = False  # unregister once the registration in flight completes
        self.stop_at: float | None = None  # a paced clean stop: unregister at this time
        self.stats = DeviceStats()
        self.out: list[tuple[str, SipRequest]] = []
        self.msg_queue: deque[bytes] = deque()
        self.msg_inflight = 0
        self._sn = self.rng.randrange(1, 100_000)
        self._msg_cseq = 0
        self._items: list[manscdp.CatalogItem] | None = None
        self._sched: float | None = None  # Fleet bookkeeping: the wake-up time pushed on its heap
        self.calls: dict[str, Call] = {}  # by Call-ID: INVITE dialogs not ended
        self.media_out: list[MediaEvent] = []  # for the adapter (through Fleet.media_events)
        self.answers: list[tuple[Any, SipResponse, str | None]] = []  # (server txn key, response, Call-ID)
        self.started_wall = wall()  # the simulated recordings end here (and go on while the device runs)
        self._stores: dict[str, RecordStore] = {}
        self.controls = Controls(self)  # DeviceControl, PresetQuery, alarms, subscriptions (gbsim/control.py)

    # ------------------------------------------------------------------ small helpers
    def _hex(self, n: int) -> str:
        return f"{self.rng.getrandbits(n * 4):0{n}x}"

    def _next_sn(self) -> int:
        self._sn += 1
        return self._sn

    @property
    def is_nvr(self) -> bool:
        return self.cfg.channels != 1

    @property
    def online(self) -> bool:
        return self.registered and self.ka_ok

    @property
    def done(self) -> bool:
        return self.state == STOPPED

    @property
    def wakeup(self) -> float | None:
        times = [t for t in (self.retry_at, self.refresh_at, self.keepalive_at, self.stop_at, self.controls.wakeup)
                 if t is not None]
        return min(times) if times else None

    @property
    def register_uri(self) -> str:
        return f"sip:{self.cfg.server_id}@{self.cfg.domain}"

    @property
    def device_uri(self) -> str:
        return f"sip:{self.device_id}@{self.cfg.domain}"

    def _base_headers(self, cseq: int, method: str, *, to_uri: str, from_tag: str, call_id: str) -> Headers:
        assert self.local_addr is not None
        host, port = self.local_addr
        h = Headers()
        h.add("Via", via_value(self.cfg.transport, host, port, branch=f"z9hG4bK{self._hex(16)}"))
        h.add("From", f"<{self.device_uri}>;tag={from_tag}")
        h.add("To", f"<{to_uri}>")
        h.add("Call-ID", call_id)
        h.add("CSeq", f"{cseq} {method}")
        h.add("Max-Forwards", "70")
        h.add("User-Agent", self.cfg.user_agent)
        return h

    def _backoff(self) -> float:
        base = min(self.cfg.retry_max, self.cfg.retry_min * 2 ** max(self.fail_count - 1, 0))
        return base * self.rng.uniform(0.75, 1.25)

    # ------------------------------------------------------------------ link
    def attach(self, local_addr: tuple[str, int], now: float, delay: float = 0.0) -> None:
        """The link is up (bound UDP socket / connected TCP): register after *delay*."""
        self.local_addr = (local_addr[0], local_addr[1])
        if self.state in (STOPPED, UNREGISTERING) or self.stop_after:
            return
        self.state = WAITING
        self.retry_at = now + max(delay, 0.0)

    def detach(self, now: float) -> None:
        """The link is gone (TCP connection lost): everything in flight is lost with it."""
        self.hangup_all(now, bye=False, reason="SIP link lost")
        self.local_addr = None
        if self.registered:
            self.stats.registrations_lost += 1
        self._clear_registration()
        self.msg_queue.clear()
        self.msg_inflight = 0
        if self.state == UNREGISTERING or self.stop_after:
            self._set_stopped()
        elif self.state != STOPPED:
            self.state = IDLE

    def link_failed(self, reason: str) -> None:
        """The link could not be brought up (TCP connect refused)."""
        self.failed = True
        self.fail_count += 1
        self.stats.register_failures += 1
        if reason != self.last_error:
            log.warning("sim.connect_failed", device_id=self.device_id, reason=reason)
        self.last_error = reason

    def _clear_registration(self) -> None:
        self.registered = False
        self.ka_ok = False
        self.ka_failures = 0
        self.retry_at = self.refresh_at = self.keepalive_at = None
        self.controls.on_unregistered()

    def _set_stopped(self) -> None:
        self._clear_registration()
        self.msg_queue.clear()
        self.stop_after = False
        self.stop_at = None
        self.state = STOPPED

    # ------------------------------------------------------------------ timers
    def handle_timer(self, now: float) -> None:
        if self.stop_at is not None and (self.stop_at <= now or self.state in (IDLE, WAITING)):
            self.stop(now, unregister=True)
            return
        if self.retry_at is not None and self.retry_at <= now:
            self.retry_at = None
            if self.state == WAITING:
                self._begin_register(now, refresh=False)
        if self.refresh_at is not None and self.refresh_at <= now:
            self.refresh_at = None
            if self.registered and self.state == REGISTERED:
                self._begin_register(now, refresh=True)
        if self.keepalive_at is not None and self.keepalive_at <= now:
            if self.registered:
                self._send_keepalive()
                nxt = self.keepalive_at + self.cfg.keepalive
                self.keepalive_at = nxt if nxt > now else now + self.cfg.keepalive
            else:
                self.keepalive_at = None
        if self.registered or self.controls.wakeup is not None:
            self.controls.handle_timer(now)

    # ------------------------------------------------------------------ registration
    def _begin_register(self, now: float, *, refresh: bool) -> None:
        if self.local_addr is None:
            self.state = IDLE
            return
        self.reg_purpose = "refresh" if refresh else "register"
        self.state = REGISTERING
        self.from_tag = self._hex(10)
        self.auth_tries = 0
        self.req_expires = max(self.req_expires, self.cfg.expires)
        self._send_register(self.req_expires)

    def _send_register(self, expires: int, authorization: tuple[str, str] | None = None) -> None:
        assert self.local_addr is not None
        host, port = self.local_addr
        self.cseq += 1
        h = self._base_headers(self.cseq, "REGISTER", to_uri=self.device_uri, from_tag=self.from_tag,
                               call_id=self.call_id)
        h.add("Contact", contact_value(self.device_id, format_hostport(host, port)))
        h.add("Expires", str(expires))
        if authorization is not None:
            h.add(*authorization)
        self.out.append((self.reg_purpose, SipRequest("REGISTER", self.register_uri, h, b"")))
        self.stats.registers_sent += 1

    def _send_unregister(self) -> None:
        self.stop_after = False
        self.registered = False
        self.ka_ok = False
        self.retry_at = self.refresh_at = self.keepalive_at = None
        self.reg_purpose = "unregister"
        self.state = UNREGISTERING
        self.from_tag = self._hex(10)
        self.auth_tries = 0
        self._send_register(0)

    def _authorization(self, resp: SipResponse) -> tuple[str, str] | None:
        name = "WWW-Authenticate" if resp.status == 401 else "Proxy-Authenticate"
        challenge = resp.headers.get(name)
        if not challenge:
            return None
        value = build_authorization(
            challenge,
            method="REGISTER",
            uri=self.register_uri,
            username=self.device_id,
            password=self.cfg.password,
            cnonce=self._hex(16),
            nc=1,
        )
        return ("Authorization" if resp.status == 401 else "Proxy-Authorization", value)

    def _on_register_response(self, purpose: str, resp: SipResponse, now: float) -> None:
        try:
            cseq = resp.cseq[0]
        except SipParseError:
            return
        if cseq != self.cseq or purpose != self.reg_purpose or self.state not in (REGISTERING, UNREGISTERING):
            return  # an answer to an attempt we have given up on
        status = resp.status
        if status in (401, 407):
            self.stats.challenges += 1
            name = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
            stale = (header_param(resp.headers.get(name) or "", "stale") or "").lower() == "true"
            self.auth_tries += 1
            if self.auth_tries > 1 and not stale or self.auth_tries > 4:
                self._register_failed(now, f"{status} {resp.reason} (credentials refused)")
                return
            try:
                authz = self._authorization(resp)
            except (ValueError, KeyError) as exc:
                self._register_failed(now, f"unusable challenge: {exc}")
                return
            if authz is None:
                self._register_failed(now, f"{status} without a challenge")
                return
            self._send_register(0 if purpose == "unregister" else self.req_expires, authz)
            return
        if 200 <= status < 300:
            if purpose == "unregister":
                self._set_stopped()
                return
            self._registered(resp, now)
            return
        if status == 423 and purpose != "unregister":
            try:
                minimum = int((resp.headers.get("Min-Expires") or "").strip())
            except ValueError:
                minimum = 0
            if minimum > self.req_expires and self.auth_tries < 4:
                self.req_expires = minimum
                self.auth_tries += 1
                self._send_register(self.req_expires)
                return
        if purpose == "unregister":
            self._set_stopped()
            return
        self._register_failed(now, f"{status} {resp.reason}")

    def _registered(self, resp: SipResponse, now: float) -> None:
        expires = self._granted_expires(resp)
        refresh = self.reg_purpose == "refresh"
        self.registered = True
        self.state = REGISTERED
        self.failed = False
        self.fail_count = 0
        self.last_error = None
        self.granted_expires = expires
        self.registered_at = now
        self.stats.registrations += 1
        date = resp.headers.get("Date")
        if date:
            self.server_date = date.strip()
            at = _parse_server_date(self.server_date)
            if at is not None:
                self.clock_offset = at - self.wall()
        self.refresh_at = now + max(1.0, expires * self.cfg.refresh_ratio)
        self.controls.on_registered(now, first=not refresh)
        if not refresh or self.keepalive_at is None:
            self.ka_failures = 0
            self.keepalive_at = now + self.rng.uniform(0.0, min(self.cfg.keepalive, self.cfg.first_keepalive_max))
        if self.stop_after:
            self._send_unregister()

    def _granted_expires(self, resp: SipResponse) -> int:
        value = resp.headers.get("Expires")
        if value is None:
            contact = resp.headers.get("Contact")
            if contact:
                try:
                    value = parse_name_addr(contact).params.get("expires")
                except SipParseError:
                    value = None
        try:
            granted = int((value or "").strip())
        except ValueError:
            granted = self.req_expires
        return granted if granted > 0 else self.req_expires

    def _register_failed(self, now: float, reason: str) -> None:
        if self.registered:
            self.stats.registrations_lost += 1
        self._clear_registration()
        self.failed = True
        self.fail_count += 1
        self.stats.register_failures += 1
        if self.stop_after:
            self._set_stopped()
            return
        self.state = WAITING
        delay = self._backoff()
        self.retry_at = now + delay
        if reason != self.last_error:
            log.warning("sim.register_failed", device_id=self.device_id, reason=reason,
                        retry_in=round(delay, 1))
        else:
            log.debug("sim.register_failed", device_id=self.device_id, reason=reason, retry_in=round(delay, 1))
        self.last_error = reason

    def _lose_registration(self, now: float, reason: str) -> None:
        """Keepalives keep failing: assume the platform forgot us and register again after a back-off."""
        self.stats.registrations_lost += 1
        self._clear_registration()
        self.fail_count += 1
        self.state = WAITING
        delay = self._backoff()
        self.retry_at = now + delay
        self.last_error = reason
        log.warning("sim.registration_lost", device_id=self.device_id, reason=reason, retry_in=round(delay, 1))

    # ------------------------------------------------------------------ keepalive and MESSAGEs
    def _message(self, body: bytes) -> SipRequest:
        self._msg_cseq += 1
        h = self._base_headers(self._msg_cseq, "MESSAGE", to_uri=self.register_uri, from_tag=self._hex(10),
                               call_id=f"{self._hex(16)}@{self.cfg.local_host}")
        h.add("Content-Type", MANSCDP_TYPE)
        return SipRequest("MESSAGE", self.register_uri, h, body)

    def _send_keepalive(self) -> None:
        body = manscdp.build_keepalive(self._next_sn(), self.device_id, charset=self.charset, status="OK")
        self.out.append(("keepalive", self._message(body)))
        self.stats.keepalives_sent += 1

    def _keepalive_failed(self, now: float, reason: str) -> None:
        self.stats.keepalives_failed += 1
        if not self.registered or self.state != REGISTERED:
            return
        self.ka_ok = False
        self.ka_failures += 1
        if self.ka_failures >= self.cfg.keepalive_failures:
            self._lose_registration(now, f"{self.ka_failures} keepalives failed, last: {reason}")

    def queue_message(self, body: bytes) -> None:
        """Send a MANSCDP body as a MESSAGE, at most ``message_window`` in flight."""
        if self.local_addr is None or self.state == STOPPED:
            return
        self.msg_queue.append(body)
        self._pump()

    def _pump(self) -> None:
        while self.msg_inflight < self.cfg.message_window and self.msg_queue and self.local_addr is not None:
            self.msg_inflight += 1
            self.out.append(("message", self._message(self.msg_queue.popleft())))
            self.stats.messages_sent += 1

    # ------------------------------------------------------------------ transaction outcomes
    def on_response(self, purpose: str, resp: SipResponse, now: float) -> None:
        """A final response to one of our requests."""
        if resp.status < 200:
            return
        if purpose in _REGISTER_PURPOSES:
            self._on_register_response(purpose, resp, now)
        elif purpose == "keepalive":
            if 200 <= resp.status < 300:
                self.stats.keepalives_ok += 1
                if self.registered:
                    self.ka_ok = True
                    self.ka_failures = 0
            else:
                self._keepalive_failed(now, f"{resp.status} {resp.reason}")
        elif purpose == "message":
            self.msg_inflight = max(0, self.msg_inflight - 1)
            self._pump()
        elif purpose == "notify":
            self.controls.on_notify_response(resp)

    def on_timeout(self, purpose: str, now: float, request: SipRequest | None = None) -> None:
        """No final response came (transaction timeout)."""
        if purpose in _REGISTER_PURPOSES:
            if request is not None:
                try:
                    if request.cseq[0] != self.cseq:
                        return
                except SipParseError:
                    return
            if purpose != self.reg_purpose or self.state not in (REGISTERING, UNREGISTERING):
                return
            if purpose == "unregister":
                self._set_stopped()
            else:
                self._register_failed(now, "no response (timeout)")
        elif purpose == "keepalive":
            self._keepalive_failed(now, "timeout")
        elif purpose == "message":
            self.msg_inflight = max(0, self.msg_inflight - 1)
            self._pump()
        elif purpose == "notify" and request is not None:  # RFC 6665 4.2.2: a NOTIFY timeout ends it
            self.controls.on_notify_response(make_response(request, 408))

    # ------------------------------------------------------------------ requests from the platform
    def on_request(self, req: SipRequest, now: float, key: Any = None) -> SipResponse | None:
        """Answer a request from the platform; MANSCDP answers are queued as MESSAGEs in :attr:`out`.

        *key* is the request's server transaction (an INVITE is answered later through :attr:`answers`
        with it, once the media side has a socket)."""
        method = req.method
        if method == "ACK":
            self._on_ack(req, now)
            return None
        if method == "MESSAGE":
            try:
                msg = manscdp.parse(req.body)
            except manscdp.ManscdpError:
                return self._reply(req, 400, "Bad MANSCDP body")
            if msg.root == "Query":
                self.stats.queries_received += 1
                bodies = self._answer_query(msg, now)
                resp = self._reply(req, 200)
                if bodies:
                    self.stats.queries_answered += 1
                    for body in bodies:
                        self.queue_message(body)
                return resp
            if msg.root == "Control":
                return self.controls.on_control(req, msg, now)
            return self._reply(req, 200)
        if method == "SUBSCRIBE":
            return self.controls.on_subscribe(req, now)
        if method == "OPTIONS":
            return self._reply(req, 200, headers=[("Allow", ALLOW)])
        if method == "INVITE":
            return self._on_invite(req, now, key)
        if method == "BYE":
            return self._on_bye(req, now)
        if method == "CANCEL":
            return self._on_cancel(req, now)
        if method == "INFO":
            return self._on_info(req, now)
        return self._reply(req, 405, headers=[("Allow", ALLOW)])

    # ------------------------------------------------------------------ INVITE dialogs (media)
    @property
    def active_calls(self) -> int:
        return len(self.calls)

    @property
    def streaming_calls(self) -> int:
        return sum(1 for c in self.calls.values() if c.state == CALL_CONFIRMED)

    def _requested_channel(self, req: SipRequest) -> str | None:
        users = _addressed_users(req)
        for user in users:
            if user and (user in self.channel_ids or user == self.device_id):
                return user
        return None

    def _call_ssrc(self, req: SipRequest, offer: SdpOffer) -> str:
        """The y= of the offer, else the SSRC of the Subject header, else one of our own making."""
        candidates = [offer.ssrc or ""]
        subject = req.headers.get("Subject") or ""
        first = subject.split(",")[0]
        if ":" in first:
            candidates.append(first.rsplit(":", 1)[1])
        for value in candidates:
            value = value.strip()
            if value.isdigit() and len(value) <= 10:
                return value.zfill(10)
        history = offer.session.lower() in ("playback", "download")
        return f"{1 if history else 0}{self.cfg.domain[3:8]}{self.rng.randrange(1, 10000):04d}"

    def _on_invite(self, req: SipRequest, now: float, key: Any) -> SipResponse | None:
        self.stats.invites_received += 1
        call_id = _call_id(req)
        if req.to_tag is not None:  # a re-INVITE: our only session stays as it is
            call = self.calls.get(call_id)
            if call is None or call.answer is None:
                return self._refuse(req, 481)
            return make_response(req, 200, headers=[
                ("Contact", call.answer.headers.get("Contact") or ""), ("User-Agent", self.cfg.user_agent),
                ("Content-Type", "application/sdp")], body=call.answer.body)
        if not self.cfg.media:
            return self._refuse(req, 488, "Not Acceptable Here (simulator media is off)")
        if self.state in (STOPPED, UNREGISTERING) or self.stop_after or self.stop_at is not None:
            return self._refuse(req, 480)
        channel = self._requested_channel(req)
        if channel is None:
            return self._refuse(req, 404)
        if call_id in self.calls:
            return self._refuse(req, 482, "Loop Detected (Call-ID in use)")
        ctype = (req.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/sdp" or not req.body:
            return self._refuse(req, 488, "Not Acceptable Here (SDP offer required)")
        try:
            offer = parse_sdp_offer(req.body)
        except SdpError as exc:
            return self._refuse(req, 488, f"Not Acceptable Here ({exc})")
        if offer.session.lower() == "talk":
            return self._refuse(req, 488, "Not Acceptable Here (no audio broadcast)")
        payload = offer.ps_payload()
        if payload is None:
            return self._refuse(req, 488, "Not Acceptable Here (only PS/90000 is sent)")
        history: HistoryWindow | None = None
        if offer.session.lower() in ("playback", "download"):
            if self.cfg.refuse_history is not None:
                return self._refuse(req, self.cfg.refuse_history)
            try:
                history = parse_history(offer.session, offer.timing, [*offer.sdp.attrs, *offer.video.attrs])
            except ValueError as exc:
                return self._refuse(req, 488, f"Not Acceptable Here ({exc})")
        contact = req.headers.get("Contact") or req.headers.get("From") or ""
        try:
            target = str(parse_name_addr(contact).uri)
        except SipParseError:
            return self._refuse(req, 400, "Bad Contact")
        call = Call(
            device_id=self.device_id, channel_id=channel, call_id=call_id, key=key, invite=req, offer=offer,
            ssrc=self._call_ssrc(req, offer), payload=payload, local_tag=self._hex(10),
            remote_target=target, route=req.headers.get_all("Record-Route"), started=now, history=history,
            stream_number=self._stream_number(offer) if history is None else 0,
        )
        self.calls[call_id] = call
        if history is not None:
            self.stats.history_calls += 1
        self.media_out.append(MediaEvent("prepare", call))
        log.info("sim.invite", device_id=self.device_id, channel_id=channel, call_id=call_id, ssrc=call.ssrc,
                 mode=call.mode, media=f"{offer.host}:{offer.port}")
        return None  # answered by media_ready / media_failed

    def _stream_number(self, offer: SdpOffer) -> int:
        """The encoder stream a live offer asks for in a form this device reads (0: the main stream)."""
        for form in self.cfg.stream_forms:
            values = _attr_values(offer, form)
            number = values[-1].strip() if values else ""
            if number.isascii() and number.isdigit() and len(number) <= 2:
                return min(int(number), 9)
        return 0

    def _refuse(self, req: SipRequest, status: int, reason: str | None = None) -> SipResponse:
        self.stats.calls_refused += 1
        return self._reply(req, status, reason)

    def media_ready(self, call_id: str, local_addr: tuple[str, int], now: float) -> None:
        """The media socket of an offered call is bound at *local_addr*: answer 200 OK with SDP."""
        call = self.calls.get(call_id)
        if call is None or call.state != CALL_OFFERED:
            return
        call.local_addr = (local_addr[0], local_addr[1])
        width, height = self.cfg.sub_video_size if call.stream_number else self.cfg.video_size
        extra: list[tuple[str, str | None]] = []
        if call.history is not None and call.history.kind == "download":
            h = call.history
            seconds = self.record_store(call.channel_id).seconds_in(h.start, h.end, self.wall())
            extra.append(("filesize", str(int(seconds * self.cfg.bitrate // 8))))
        body = build_sdp_answer(
            channel_id=call.channel_id, host=local_addr[0], port=local_addr[1], offer=call.offer,
            payload=call.payload, ssrc=call.ssrc, codec=self.cfg.codec, size=(width, height),
            fps=self.cfg.fps, bitrate=self.cfg.bitrate // 4 if call.stream_number else self.cfg.bitrate,
            extra_attrs=extra,
        )
        host, port = self.local_addr or (self.cfg.local_host, 5060)
        resp = make_response(call.invite, 200, to_tag=call.local_tag, headers=[
            ("Contact", contact_value(call.channel_id, format_hostport(host, port))),
            ("User-Agent", self.cfg.user_agent),
            ("Content-Type", "application/sdp"),
        ], body=body)
        call.answer = resp
        call.state = CALL_ANSWERED
        self.stats.calls_answered += 1
        self.answers.append((call.key, resp, call.call_id))

    def media_failed(self, call_id: str, reason: str, now: float) -> None:
        """The media side cannot serve the call: refuse it (before the 200) or hang up (after)."""
        call = self.calls.get(call_id)
        if call is None:
            return
        self.stats.calls_failed += 1
        if call.state == CALL_OFFERED:
            self.stats.calls_refused += 1
            self.answers.append((call.key, self._reply(call.invite, 500, "Server Internal Error (media)"),
                                 None))
            self._end_call(call, reason)
        else:
            self.hangup(call_id, now, reason=reason)

    def answer_lost(self, call_id: str, now: float) -> None:
        """The 200 could not be sent (the INVITE transaction is gone): forget the call."""
        call = self.calls.get(call_id)
        if call is not None:
            self._end_call(call, "INVITE transaction gone")

    def ack_timeout(self, call_id: str, now: float) -> None:
        """No ACK came for our 200 (RFC 3261 13.3.1.4): end the dialog with BYE."""
        call = self.calls.get(call_id)
        if call is not None and call.state == CALL_ANSWERED:
            self.stats.calls_failed += 1
            self.hangup(call_id, now, reason="no ACK")

    def _on_ack(self, req: SipRequest, now: float) -> None:
        call = self.calls.get(_call_id(req))
        if call is None or call.state != CALL_ANSWERED:
            return
        call.state = CALL_CONFIRMED
        self.media_out.append(MediaEvent("start", call))

    def _on_info(self, req: SipRequest, now: float) -> SipResponse:
        """MANSRTSP playback control (in-dialog INFO): 200 with an ``RTSP/1.0 200 OK`` body and a
        ``control`` media event; SIP 400 (with an RTSP 400 body when the CSeq was readable) for a body
        that is not MANSRTSP or a command that cannot be honoured.  A live call has nothing to control:
        200 as before."""
        call = self.calls.get(_call_id(req))
        if call is None:
            return self._reply(req, 481)
        if call.history is None:
            return self._reply(req, 200)
        self.stats.controls_received += 1
        try:
            cmd = parse_mansrtsp(req.body)
        except MansrtspError as exc:
            self.stats.controls_refused += 1
            return self._reply(req, 400, f"Bad Request ({exc})")
        try:
            control = control_for(cmd, call.history)
        except ValueError as exc:
            self.stats.controls_refused += 1
            resp = self._reply(req, 400, "Bad Request")
            resp.headers.add("Content-Type", "Application/MANSRTSP")
            resp.body = rtsp_response(cmd.cseq, 400, f"Bad Request ({exc})")
            return resp
        self.media_out.append(MediaEvent("control", call, control))
        log.info("sim.playback_control", device_id=self.device_id, call_id=call.call_id, action=control.action,
                 position=control.position, scale=control.scale)
        resp = self._reply(req, 200)
        resp.headers.add("Content-Type", "Application/MANSRTSP")
        resp.body = rtsp_response(cmd.cseq)
        return resp

    def media_finished(self, call_id: str, now: float) -> bool:
        """The history media of a call was sent completely: send the in-dialog MESSAGE MediaStatus 121
        (same Call-ID and tags as the INVITE's dialog, From/To as our side of it).  True when sent."""
        call = self.calls.get(call_id)
        if call is None or call.history is None or call.media_status_sent or self.local_addr is None:
            return False
        if call.state != CALL_CONFIRMED:
            return False
        call.media_status_sent = True
        h = self._in_call_headers(call, "MESSAGE")
        h.add("Content-Type", MANSCDP_TYPE)
        body = media_status_body(self._next_sn(), call.channel_id, 121, charset=self.charset)
        self.out.append(("media_status", SipRequest("MESSAGE", call.remote_target, h, body)))
        self.stats.media_status_sent += 1
        log.info("sim.media_status", device_id=self.device_id, call_id=call.call_id, notify_type=121)
        return True

    def _on_bye(self, req: SipRequest, now: float) -> SipResponse:
        call = self.calls.get(_call_id(req))
        if call is None:
            return self._reply(req, 481)
        self.stats.byes_received += 1
        self._end_call(call, "BYE from the platform")
        return self._reply(req, 200)

    def _on_cancel(self, req: SipRequest, now: float) -> SipResponse:
        call = self.calls.get(_call_id(req))
        try:
            same = call is not None and call.invite.cseq[0] == req.cseq[0]
        except SipParseError:
            same = False
        if call is None or not same:
            return self._reply(req, 481)
        self.stats.cancels_received += 1
        if call.state == CALL_OFFERED:  # not answered yet: the INVITE gets 487
            self.answers.append((call.key, make_response(call.invite, 487, to_tag=call.local_tag), None))
            self._end_call(call, "CANCEL")
        return self._reply(req, 200)  # too late (answered) is fine too: the platform sends BYE

    def hangup(self, call_id: str, now: float, *, reason: str = "hangup", bye: bool = True) -> None:
        """End a call from our side: BYE when it was answered (and *bye*), 487 when it was not."""
        call = self.calls.get(call_id)
        if call is None:
            return
        if call.state == CALL_OFFERED:
            if bye:
                self.answers.append((call.key, make_response(call.invite, 487, to_tag=call.local_tag), None))
        elif bye and self.local_addr is not None:
            self._send_bye(call)
        self._end_call(call, reason)

    def hangup_all(self, now: float, *, bye: bool = True, reason: str = "device stopping") -> None:
        for call_id in list(self.calls):
            self.hangup(call_id, now, reason=reason, bye=bye)

    def _end_call(self, call: Call, reason: str) -> None:
        if self.calls.get(call.call_id) is call:
            del self.calls[call.call_id]
        call.state = CALL_ENDED
        call.end_reason = reason
        self.media_out.append(MediaEvent("stop", call))
        log.info("sim.call_ended", device_id=self.device_id, channel_id=call.channel_id, call_id=call.call_id,
                 reason=reason)

    def _in_call_headers(self, call: Call, method: str) -> Headers:
        """Headers of a request we send inside ``call`` (we are the INVITE's callee: From/To swapped, the
        Record-Route as Route, the next CSeq of our side)."""
        assert self.local_addr is not None
        host, port = self.local_addr
        inv = call.invite.headers
        call.local_cseq += 1
        h = Headers()
        h.add("Via", via_value(self.cfg.transport, host, port, branch=f"z9hG4bK{self._hex(16)}"))
        h.add("From", f"{inv.get('To')};tag={call.local_tag}")
        h.add("To", inv.get("From") or "")
        h.add("Call-ID", call.call_id)
        h.add("CSeq", f"{call.local_cseq} {method}")
        for route in call.route:
            h.add("Route", route)
        h.add("Max-Forwards", "70")
        h.add("User-Agent", self.cfg.user_agent)
        return h

    def _send_bye(self, call: Call) -> None:
        h = self._in_call_headers(call, "BYE")
        self.out.append(("bye", SipRequest("BYE", call.remote_target, h, b"")))
        self.stats.byes_sent += 1

    def _reply(self, req: SipRequest, status: int, reason: str | None = None, *, headers=()) -> SipResponse:
        resp = make_response(req, status, reason, to_tag=self._hex(10), headers=list(headers))
        resp.headers.add("User-Agent", self.cfg.user_agent)
        return resp

    def _answer_query(self, msg: manscdp.ManscdpMessage, now: float) -> list[bytes]:
        cmd, sn = msg.cmd_type, msg.sn
        if cmd == "Catalog":
            return self.catalog_bodies(sn)
        if cmd == "DeviceInfo":
            return [self.device_info_body(sn)]
        if cmd == "DeviceStatus":
            target = msg.device_id if msg.device_id in self.channel_ids else self.device_id
            return [self.device_status_body(sn, target)]
        if cmd == "ConfigDownload":
            types = (msg.get("ConfigType") or "").replace(",", "/").split("/")
            if "BasicParam" in (t.strip() for t in types):
                return [self.basic_param_body(sn)]
        if cmd == "RecordInfo":
            return self.record_info_bodies(msg)
        if cmd == "PresetQuery" and self.controls.channel_for(msg.device_id) is not None:
            return self.controls.preset_bodies(msg)
        return []

    # ------------------------------------------------------------------ domes and alarms (issue 14)
    def ptz_moved(self, channel_id: str) -> bool:
        """True once the channel was moved (its live picture is its own dome view from then on)."""
        return self.controls.moved(channel_id)

    def ptz_log(self, channel_id: str) -> list[PtzLogEntry]:
        """The PTZ commands the channel received, oldest first (at most ``ptz_log_size``)."""
        return self.controls.ptz_log(channel_id)

    def ptz_view(self, channel_id: str, now: float) -> PtzView:
        """Where the channel's dome looks at *now*."""
        return self.controls.state(channel_id).view(now)

    def raise_alarm(self, source: str | None, now: float, **kw: Any) -> bool:
        """An alarm from *source* (a channel, or the device); see :meth:`gbsim.control.Controls.raise_alarm`."""
        return self.controls.raise_alarm(source, now, **kw)

    # ------------------------------------------------------------------ recordings (issue 13)
    def record_store(self, channel_id: str) -> RecordStore:
        """The simulated recordings of one of our channels (see :mod:`gbsim.records`)."""
        store = self._stores.get(channel_id)
        if store is None:
            store = self._stores[channel_id] = RecordStore(
                channel_id, origin=self.started_wall, hours=self.cfg.record_hours,
                file_seconds=self.cfg.record_file_minutes * 60, gap=self.cfg.record_gap, bitrate=self.cfg.bitrate)
        return store

    def _record_channel(self, target: str) -> str | None:
        if target in self.channel_ids:
            return target
        if target == self.device_id and len(self.channel_ids) == 1:
            return self.channel_ids[0]
        return None

    def record_info_bodies(self, msg: manscdp.ManscdpMessage) -> list[bytes]:
        """Response/RecordInfo pages for a query: the files overlapping StartTime..EndTime (Beijing time),
        ``record_page_size`` per MESSAGE; an unknown channel or unreadable times get ``SumNum 0``."""
        self.stats.record_queries += 1
        target = msg.device_id or self.device_id
        channel = self._record_channel(target)
        start, end = parse_query_time(msg.get("StartTime")), parse_query_time(msg.get("EndTime"))
        files = []
        name = None
        if channel is not None and start is not None and end is not None and end > start:
            files = self.record_store(channel).files(start, end, self.wall(), msg.get("Type") or "all")
            k = self.channel_ids.index(channel)
            name = channel_name(self.index, k, self.cfg.channels)
        return record_info_bodies(msg.sn, target, files, name=name, page_size=self.cfg.record_page_size,
                                  charset=self.charset)

    # ------------------------------------------------------------------ MANSCDP content
    @property
    def catalog_items(self) -> list[manscdp.CatalogItem]:
        if self._items is None:
            self._items = [self._catalog_item(k, ch) for k, ch in enumerate(self.channel_ids)]
        return self._items

    def _catalog_item(self, k: int, channel_id: str) -> manscdp.CatalogItem:
        i, n = self.index, self.cfg.channels
        return manscdp.CatalogItem(
            device_id=channel_id,
            name=channel_name(i, k, n),
            manufacturer=MANUFACTURER,
            model="SIM-IPC-2T" if k % 4 else "SIM-PTZ-4X",
            owner="Owner",
            civil_code=self.device_id[:6],
            address=f"模拟园区{i % 50 + 1}号楼",
            parental=0,
            parent_id=self.device_id,
            safety_way=0,
            register_way=1,
            secrecy=0,
            ip_address=self.cfg.local_host,
            port=5060,
            status="ON",
            longitude=round(116.3 + (i % 100) * 0.001 + k * 0.0001, 6),
            latitude=round(39.9 + (i // 100) * 0.001 + k * 0.0001, 6),
            ptz_type=1 if k % 4 == 0 else 3,
        )

    def catalog_bodies(self, sn: int) -> list[bytes]:
        """Response/Catalog bodies: one item per MESSAGE (SumNum = channels), as real NVRs send them."""
        items = self.catalog_items
        total = len(items)
        if total == 0:
            return [manscdp.build_catalog_response(sn, self.device_id, 0, [], charset=self.charset)]
        return [manscdp.build_catalog_response(sn, self.device_id, total, [item], charset=self.charset)
                for item in items]

    def device_info_body(self, sn: int) -> bytes:
        serial = self.device_id[-7:]
        return manscdp.build_device_info_response(
            sn,
            self.device_id,
            device_name=f"模拟{'NVR' if self.is_nvr else 'IPC'}-{serial}",
            manufacturer=MANUFACTURER,
            model=f"SIM-NVR-{self.cfg.channels}" if self.is_nvr else "SIM-IPC-2T",
            firmware=FIRMWARE,
            channel=self.cfg.channels,
            device_type="NVR" if self.is_nvr else "IPC",
            max_camera=self.cfg.channels,
            max_alarm=0,
            charset=self.charset,
        )

    def device_time(self) -> datetime:
        """The device's clock (the platform's Date plus the time since), naive Beijing time."""
        return to_device_time(self.wall() + self.clock_offset + self.cfg.clock_error).replace(tzinfo=None)

    def device_status_body(self, sn: int, target: str | None = None) -> bytes:
        target = target or self.device_id
        recording = self.controls.recording
        record = "ON" if target in recording or (target == self.device_id and recording) else "OFF"
        return manscdp.build_device_status_response(
            sn, target, online=True, status="OK", record=record,
            device_time=self.device_time(), charset=self.charset,
        )

    def basic_param_body(self, sn: int) -> bytes:
        return manscdp.build_message(
            "Response", "ConfigDownload", sn, self.device_id, charset=self.charset,
            extra=[
                ("Result", "OK"),
                ("BasicParam", [
                    ("Name", f"模拟设备-{self.device_id[-7:]}"),
                    ("DeviceID", self.device_id),
                    ("SIPServerID", self.cfg.server_id),
                    ("SIPServerIP", self.cfg.server[0]),
                    ("SIPServerPort", self.cfg.server[1]),
                    ("DomainName", self.cfg.domain),
                    ("Expiration", self.granted_expires or self.cfg.expires),
                    ("HeartBeatInterval", max(1, math.ceil(self.cfg.keepalive))),
                    ("HeartBeatCount", 3),
                    ("PositionCapability", 0),
                ]),
            ],
        )

    # ------------------------------------------------------------------ shutdown
    def schedule_stop(self, now: float, at: float) -> None:
        """A clean stop at time *at* (so a whole fleet does not unregister in one burst); a device that
        is not registered (or registering) stops at once."""
        if self.state in (REGISTERED, REGISTERING) and self.local_addr is not None and at > now:
            self.stop_at = at
        else:
            self.stop(now, unregister=True)

    def stop(self, now: float, unregister: bool = True) -> None:
        """Stop; with *unregister*, send ``REGISTER Expires: 0`` first (or right after the registration
        in flight completes)."""
        self.stop_at = None
        self.retry_at = self.refresh_at = self.keepalive_at = None
        self.msg_queue.clear()
        self.hangup_all(now, bye=unregister)
        if self.state in (STOPPED, UNREGISTERING):
            return
        if unregister and self.local_addr is not None:
            if self.state == REGISTERED:
                self._send_unregister()
                return
            if self.state == REGISTERING:
                self.stop_after = True
                self.registered = False
                self.ka_ok = False
                return
        self._set_stopped()


# ================================================================================================ fleet
@dataclass
class Link:
    """One local socket (UDP, shared by many devices) or one TCP connection (one device)."""

    index: int
    transport: str
    devices: list[SimDevice]
    endpoint: Any
    by_id: dict[str, SimDevice] = field(default_factory=dict)
    by_channel: dict[str, SimDevice] = field(default_factory=dict)
    local_addr: tuple[str, int] | None = None
    up: bool = False
    pending: dict[Any, tuple[SimDevice, str]] = field(default_factory=dict)
    framer: StreamFramer | None = None
    _sched: float | None = None


@dataclass
class FleetCounters:
    dropped: int = 0  # malformed / unroutable messages
    unknown_target: int = 0  # requests for a device id not on that link


class Fleet:
    """All simulated devices of one process (sans-IO).

    The adapter binds sockets / connects, then calls :meth:`link_up`; feeds received bytes to
    :meth:`receive`; calls :meth:`handle_timer` at :meth:`get_timer`; and writes what
    :meth:`outgoing` returns.
    """

    def __init__(
        self,
        cfg: SimConfig,
        *,
        rng: random.Random | None = None,
        wall: Callable[[], float] = time.time,
        endpoint_factory: Callable[[], Any] = SipEndpoint,
    ) -> None:
        self.cfg = cfg
        self.rng = rng or random.Random(cfg.seed)
        self.wall = wall
        self._endpoint_factory = endpoint_factory
        self.devices = [SimDevice(cfg, i, rng=self.rng, wall=wall) for i in range(cfg.devices)]
        self.by_id = {d.device_id: d for d in self.devices}
        per = cfg.devices_per_socket if cfg.transport == "udp" else 1
        self.links: list[Link] = []
        for start in range(0, len(self.devices), per):
            group = self.devices[start:start + per]
            link = Link(len(self.links), cfg.transport, group, endpoint_factory(),
                        by_id={d.device_id: d for d in group},
                        by_channel={ch: d for d in group for ch in d.channel_ids})
            if cfg.transport != "udp":  # tcp, tls: one stream per device
                link.framer = StreamFramer()
            for d in group:
                d.link = link.index
            self.links.append(link)
        self.counters = FleetCounters()
        self._heap: list[tuple[float, int, Any]] = []
        self._seq = itertools.count()
        self._dirty: set[int] = set()
        self.stopping = False
        self.media_events: list[MediaEvent] = []  # for the adapter: see take_media_events

    # ------------------------------------------------------------------ counters
    @property
    def registered(self) -> int:
        return sum(1 for d in self.devices if d.registered)

    @property
    def online(self) -> int:
        return sum(1 for d in self.devices if d.registered and d.ka_ok)

    @property
    def failed(self) -> int:
        return sum(1 for d in self.devices if d.failed and not d.registered)

    @property
    def queries_answered(self) -> int:
        return sum(d.stats.queries_answered for d in self.devices)

    @property
    def calls(self) -> int:
        """INVITE dialogs not ended (offered, answered or streaming)."""
        return sum(len(d.calls) for d in self.devices)

    @property
    def streaming(self) -> int:
        return sum(d.streaming_calls for d in self.devices)

    @property
    def all_stopped(self) -> bool:
        return all(d.state == STOPPED for d in self.devices)

    def stats(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for d in self.devices:
            for k, v in (*vars(d.stats).items(), *vars(d.controls.stats).items()):
                total[k] = total.get(k, 0) + v
        total.update(vars(self.counters))
        total.update(devices=len(self.devices), registered=self.registered, online=self.online,
                     failed=self.failed, calls=self.calls)
        return total

    # ------------------------------------------------------------------ scheduling
    def _schedule(self, obj: SimDevice | Link, when: float | None) -> None:
        if when is None:
            obj._sched = None
            return
        if obj._sched == when:
            return
        obj._sched = when  # any older heap entry for obj is now stale and skipped when popped
        heapq.heappush(self._heap, (when, next(self._seq), obj))

    def _after_device(self, device: SimDevice, now: float) -> None:
        while device.answers:
            answers, device.answers = device.answers, []
            link = self.links[device.link]
            for key, resp, call_id in answers:
                sent = link.up and key is not None and link.endpoint.send_response(key, resp, now)
                if not sent and call_id is not None:
                    device.answer_lost(call_id, now)
            self._touched(link)
        if device.out:
            out, device.out = device.out, []
            link = self.links[device.link]
            for purpose, req in out:
                if not link.up:
                    continue
                key = link.endpoint.send_request(req, self.cfg.server, now, link.transport)
                link.pending[key] = (device, purpose)
            self._touched(link)
        if device.media_out:
            self.media_events.extend(device.media_out)
            device.media_out = []
        self._schedule(device, device.wakeup)

    def _touched(self, link: Link) -> None:
        self._dirty.add(link.index)
        self._schedule(link, link.endpoint.get_timer())

    def get_timer(self) -> float | None:
        heap = self._heap
        while heap:
            when, _, obj = heap[0]
            if obj._sched == when:
                return when
            heapq.heappop(heap)
        return None

    def handle_timer(self, now: float) -> None:
        heap = self._heap
        due: list[Any] = []
        while heap and heap[0][0] <= now:
            when, _, obj = heapq.heappop(heap)
            if obj._sched == when:
                obj._sched = None
                due.append(obj)
        for obj in due:
            try:
                if isinstance(obj, SimDevice):
                    obj.handle_timer(now)
                    self._after_device(obj, now)
                else:
                    obj.endpoint.handle_timer(now)
                    self._drain(obj, now)
            except Exception:  # one broken device must not stall the others
                log.exception("sim.timer_failed", device_id=getattr(obj, "device_id", None),
                              link=getattr(obj, "index", None))
                if isinstance(obj, SimDevice):
                    obj.out.clear()
                    self._schedule(obj, obj.wakeup)
                else:
                    self._touched(obj)

    # ------------------------------------------------------------------ links
    def link_up(self, index: int, local_addr: tuple[str, int], now: float, spread: float = 0.0) -> None:
        """Link *index* is ready (socket bound / connection made); its devices register within *spread*."""
        link = self.links[index]
        link.up = True
        link.local_addr = (local_addr[0], local_addr[1])
        if link.framer is not None:
            link.framer = StreamFramer()
        if self.stopping:
            return
        for d in link.devices:
            d.attach(link.local_addr, now, self.rng.uniform(0.0, spread) if spread > 0 else 0.0)
            self._after_device(d, now)

    def link_down(self, index: int, now: float) -> None:
        """Link *index* is gone (TCP connection closed); its transactions are dropped."""
        link = self.links[index]
        link.up = False
        link.pending.clear()
        link.endpoint = self._endpoint_factory()
        link._sched = None
        for d in link.devices:
            d.detach(now)
            self._after_device(d, now)

    def link_failed(self, index: int, reason: str) -> None:
        """Link *index* could not be brought up (TCP connect failed)."""
        for d in self.links[index].devices:
            d.link_failed(reason)

    def link_backoff(self, index: int) -> float:
        """How long to wait before trying link *index* again."""
        devices = self.links[index].devices
        return devices[0]._backoff() if devices else self.cfg.retry_min

    # ------------------------------------------------------------------ input
    def receive(self, index: int, data: bytes, addr: tuple[str, int], now: float) -> bool:
        """Bytes received on link *index*; False when a TCP stream is unusable (drop the connection)."""
        link = self.links[index]
        if not link.up:
            return True
        if link.framer is None:
            link.endpoint.receive_datagram(data, addr, now, link.transport)
        else:
            try:
                messages = link.framer.feed(data)
            except SipParseError:
                self.counters.dropped += 1
                return False
            for msg in messages:
                link.endpoint.receive_message(msg, addr, now, link.transport)
        self._drain(link, now)
        return True

    def _target(self, link: Link, req: SipRequest) -> SimDevice | None:
        """The device a request is for: Request-URI user, else To user (the platform routes by id)."""
        users = _addressed_users(req)
        for user in users:
            if user and user in link.by_id:
                return link.by_id[user]
            if user and user in link.by_channel:
                return link.by_channel[user]
        if len(link.devices) == 1:
            return link.devices[0]
        if req.method in ("ACK", "BYE", "CANCEL", "INFO"):  # in-dialog: find the dialog
            call_id = _call_id(req)
            for d in link.devices:
                if call_id in d.calls:
                    return d
        return None

    def _drain(self, link: Link, now: float) -> None:
        endpoint = link.endpoint
        while (event := endpoint.next_event()) is not None:
            if isinstance(event, RequestReceived):
                req = event.request
                device = self._target(link, req)
                if device is None:
                    self.counters.unknown_target += 1
                    if req.method != "ACK":
                        endpoint.send_response(event.key, make_response(req, 404), now)
                    continue
                resp = device.on_request(req, now, key=event.key)
                if resp is not None:
                    endpoint.send_response(event.key, resp, now)
                self._after_device(device, now)
            elif isinstance(event, AckTimeout):
                device = self._target(link, event.request)
                if device is not None:
                    device.ack_timeout(_call_id(event.request), now)
                    self._after_device(device, now)
            elif isinstance(event, ResponseReceived):
                if event.response.status < 200:
                    continue
                entry = link.pending.pop(event.key, None)
                if entry is not None:
                    device, purpose = entry
                    device.on_response(purpose, event.response, now)
                    self._after_device(device, now)
            elif isinstance(event, TransactionTimeout):
                entry = link.pending.pop(event.key, None)
                if entry is not None:
                    device, purpose = entry
                    device.on_timeout(purpose, now, event.request)
                    self._after_device(device, now)
            else:
                self.counters.dropped += 1
        if link.endpoint is endpoint:
            self._touched(link)

    # ------------------------------------------------------------------ media
    def take_media_events(self) -> list[MediaEvent]:
        """What the adapter must do for calls' media since the last call (see :class:`MediaEvent`)."""
        events, self.media_events = self.media_events, []
        return events

    def media_ready(self, call: Call, local_addr: tuple[str, int], now: float) -> None:
        """The adapter bound the media socket of *call* (a ``prepare`` event): answer 200 OK."""
        device = self.by_id.get(call.device_id)
        if device is not None:
            device.media_ready(call.call_id, local_addr, now)
            self._after_device(device, now)

    def media_failed(self, call: Call, reason: str, now: float) -> None:
        """The media of *call* failed (no socket, TCP refused or closed): refuse the INVITE or send BYE."""
        device = self.by_id.get(call.device_id)
        if device is not None:
            log.warning("sim.media_failed", device_id=device.device_id, call_id=call.call_id, reason=reason)
            device.media_failed(call.call_id, reason, now)
            self._after_device(device, now)

    def media_finished(self, call: Call, now: float) -> bool:
        """The history media of *call* reached the end of its window: the device sends MediaStatus 121."""
        device = self.by_id.get(call.device_id)
        if device is None:
            return False
        sent = device.media_finished(call.call_id, now)
        self._after_device(device, now)
        return sent

    # ------------------------------------------------------------------ alarms
    def raise_alarm(self, device_id: str, source: str | None, now: float, **kw: Any) -> bool:
        """Device *device_id* raises an alarm from *source* (see :meth:`SimDevice.raise_alarm`)."""
        device = self.by_id.get(device_id)
        if device is None:
            raise KeyError(f"no simulated device {device_id!r}")
        sent = device.raise_alarm(source, now, **kw)
        self._after_device(device, now)
        return sent

    # ------------------------------------------------------------------ output
    def outgoing(self) -> list[tuple[int, bytes, tuple[str, int]]]:
        """``(link index, bytes, destination)`` for everything the endpoints want sent now."""
        dirty, self._dirty = self._dirty, set()
        result = []
        for index in sorted(dirty):
            link = self.links[index]
            for out in link.endpoint.messages_to_send():
                if link.up:
                    result.append((index, out.data, out.addr))
        return result

    # ------------------------------------------------------------------ shutdown
    def stop(self, now: float, unregister: bool = True, spread: float = 0.0) -> None:
        """Stop every device; a clean stop (*unregister*) is spread over *spread* seconds."""
        self.stopping = True
        for d in self.devices:
            d.hangup_all(now, bye=unregister)  # BYE at once, even when the unregistering is paced
            if unregister and spread > 0:
                d.schedule_stop(now, now + self.rng.uniform(0.0, spread))
            else:
                d.stop(now, unregister)
            self._after_device(d, now)
