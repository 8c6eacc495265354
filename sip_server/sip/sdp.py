"""SDP (RFC 4566) as GB/T 28181 uses it: a data model, a parser and a serialiser.

GB/T 28181 sessions have one video m-line carrying PS over RTP (UDP ``RTP/AVP`` or TCP ``TCP/RTP/AVP``
with ``a=setup``/``a=connection``), ``s=Play|Playback|Download``, ``u=`` and a ``t=`` window for playback
and download, plus two lines of its own after the media: ``y=`` (the SSRC) and ``f=`` (media format).

:class:`Sdp` / :class:`Media` model a session; :func:`parse_sdp` reads one (only :class:`SdpError` escapes
it, whatever the input) and :meth:`Sdp.to_bytes` writes one, so that ``parse_sdp(sdp.to_bytes()) == sdp``
for every well-formed model (values without line breaks or surrounding white space, see
tests/sip/test_sdp_roundtrip.py). :func:`gb_sdp` builds the GB/T 28181 shape both ends use: the
platform's offers (:func:`build_offer`) and the device's answers. Sans-IO.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = [
    "SdpError",
    "Media",
    "Sdp",
    "parse_sdp",
    "serialise_sdp",
    "gb_sdp",
    "gb_offer",
    "build_offer",
    "origin_field",
    "OFFER_PAYLOADS",
]


class SdpError(ValueError):
    pass


Attr = tuple[str, str | None]  # a=name:value, or a=name (value None)


@dataclass
class Media:
    kind: str  # "video" | "audio"
    port: int
    proto: str  # "RTP/AVP" | "TCP/RTP/AVP"
    formats: list[str]
    attrs: list[Attr] = field(default_factory=list)
    connection: str | None = None  # c= of this media description (address only)

    def attr(self, name: str) -> str | None:
        for k, v in self.attrs:
            if k == name:
                return v if v is not None else ""
        return None

    @property
    def tcp(self) -> bool:
        return self.proto.upper().startswith("TCP")

    @property
    def setup(self) -> str | None:
        value = self.attr("setup")
        return value.strip().lower() if value else None

    @property
    def direction(self) -> str | None:
        for k, _ in self.attrs:
            if k in ("sendonly", "recvonly", "sendrecv", "inactive"):
                return k
        return None

    def lines(self) -> list[str]:
        """This media description as SDP lines (no line ends)."""
        fmts = "".join(f" {f}" for f in self.formats)
        out = [f"m={self.kind} {self.port} {self.proto}{fmts}"]
        if self.connection is not None:
            out.append(_conn_line(self.connection))
        out += [_attr_line(a) for a in self.attrs]
        return out


@dataclass
class Sdp:
    origin: str = ""  # o= as written: "<username> <sess-id> <sess-version> IN IP4 <address>"
    session_name: str = ""  # s=: Play | Playback | Download (GB/T 28181), anything from devices
    connection: str | None = None  # session-level c= (address only)
    time: str = "0 0"  # t=: "0 0" for live view, "<start> <stop>" (epoch seconds) for playback/download
    media: list[Media] = field(default_factory=list)
    ssrc: str | None = None  # y=
    media_format: str | None = None  # f=
    uri: str | None = None  # u= (playback/download: "<channel id>:<parameter>")
    info: str | None = None  # session-level i=
    attrs: list[Attr] = field(default_factory=list)  # session-level a= lines

    @property
    def video(self) -> Media | None:
        return next((m for m in self.media if m.kind == "video"), None)

    def media_address(self) -> tuple[str, int] | None:
        """Where the media of the video m-line comes from / goes to: (ip, port)."""
        v = self.video
        if v is None:
            return None
        ip = v.connection or self.connection
        if not ip:
            return None
        return ip, v.port

    @property
    def time_range(self) -> tuple[int, int] | None:
        """``t=`` as (start, stop) epoch seconds; (0, 0) for live view; None when not two integers."""
        parts = self.time.split()
        if len(parts) != 2 or not all(p.isascii() and p.isdigit() for p in parts):
            return None
        return int(parts[0]), int(parts[1])

    def lines(self) -> list[str]:
        """The session as SDP lines in RFC 4566 order (v o s i u c t a, media), then GB/T 28181's y= f=."""
        out = ["v=0", f"o={self.origin}", f"s={self.session_name}"]
        if self.info is not None:
            out.append(f"i={self.info}")
        if self.uri is not None:
            out.append(f"u={self.uri}")
        if self.connection is not None:
            out.append(_conn_line(self.connection))
        out.append(f"t={self.time}")
        out += [_attr_line(a) for a in self.attrs]
        for m in self.media:
            out += m.lines()
        if self.ssrc is not None:
            out.append(f"y={self.ssrc}")
        if self.media_format is not None:
            out.append(f"f={self.media_format}")
        return out

    def to_bytes(self) -> bytes:
        """Serialise with CRLF line ends (the inverse of :func:`parse_sdp`)."""
        return ("\r\n".join(self.lines()) + "\r\n").encode()


def serialise_sdp(sdp: Sdp) -> bytes:
    return sdp.to_bytes()


def _addrtype(address: str) -> str:
    return "IP6" if ":" in address else "IP4"


def _conn_line(address: str) -> str:
    return f"c=IN {_addrtype(address)} {address}"


def _attr_line(attr: Attr) -> str:
    name, value = attr
    return f"a={name}" if value is None else f"a={name}:{value}"


def origin_field(username: str, address: str, sess_id: str = "0", sess_version: str = "0") -> str:
    """An ``o=`` value: ``<username> <sess-id> <sess-version> IN IP4|IP6 <address>``."""
    return f"{username} {sess_id} {sess_version} IN {_addrtype(address)} {address}"


def _conn_ip(value: str) -> str | None:
    parts = value.split()
    if len(parts) < 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SdpError(f"bad c= line: {value!r}")
    return parts[2].split("/")[0] or None  # "IN IP4 /x" names no address


def parse_sdp(body: bytes | str) -> Sdp:
    try:
        text = body.decode("utf-8", "replace") if isinstance(body, bytes | bytearray) else str(body)
    except Exception as exc:  # pragma: no cover - decode with "replace" does not raise
        raise SdpError(str(exc)) from None
    sdp = Sdp()
    current: Media | None = None
    seen_v = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if len(line) < 2 or line[1] != "=":
            raise SdpError(f"bad SDP line: {line[:60]!r}")
        kind, value = line[0], line[2:].strip()
        if kind == "v":
            seen_v = True
        elif kind == "o":
            sdp.origin = value
        elif kind == "s":
            sdp.session_name = value
        elif kind == "i":
            if current is None:
                sdp.info = value  # media titles are not kept
        elif kind == "c":
            ip = _conn_ip(value)
            if current is None:
                sdp.connection = ip
            else:
                current.connection = ip
        elif kind == "t":
            sdp.time = value
        elif kind == "m":
            parts = value.split()
            if len(parts) < 3:
                raise SdpError(f"bad m= line: {value!r}")
            port_text = parts[1].split("/")[0]
            if not (port_text.isascii() and port_text.isdigit()) or int(port_text) > 65535:
                raise SdpError(f"bad m= port: {value!r}")
            current = Media(parts[0].lower(), int(port_text), parts[2], parts[3:])
            sdp.media.append(current)
        elif kind == "a":
            name, sep, val = value.partition(":")
            entry = (name.strip(), val.strip() if sep else None)
            (sdp.attrs if current is None else current.attrs).append(entry)
        elif kind == "y":
            sdp.ssrc = value
        elif kind == "f":
            sdp.media_format = value
        elif kind == "u":
            sdp.uri = value
    if not seen_v:
        raise SdpError("not an SDP body (no v= line)")
    return sdp


# --------------------------------------------------------------------------- GB/T 28181 builders
# what the platform offers: PS first, then the elementary streams some devices send instead
OFFER_PAYLOADS: tuple[tuple[str, str], ...] = (("96", "PS/90000"), ("98", "H264/90000"), ("97", "MPEG4/90000"))


def gb_sdp(*, origin_id: str, ip: str, port: int, ssrc: str | None, payloads: Iterable[tuple[int | str, str]],
           direction: str, tcp: bool = False, setup: str | None = None, session_name: str = "Play",
           time: str = "0 0", uri: str | None = None, media_format: str | None = None,
           extra_attrs: Iterable[Attr] = ()) -> Sdp:
    """A GB/T 28181 session (GB/T 28181-2016 appendix F): one video m-line at ``ip``:``port``.

    ``payloads``: (payload type, rtpmap encoding) in offer order. ``direction``: ``recvonly`` (the platform
    receives) or ``sendonly`` (the device sends). For TCP, ``setup`` is this side's role (``active`` connects,
    ``passive`` listens) and ``a=connection:new`` follows it. ``extra_attrs`` (e.g. ``downloadspeed``) come
    last.
    """
    pts = [(str(pt), enc) for pt, enc in payloads]
    attrs: list[Attr] = [(direction, None)]
    attrs += [("rtpmap", f"{pt} {enc}") for pt, enc in pts]
    if tcp:
        if setup:
            attrs.append(("setup", setup))
        attrs.append(("connection", "new"))
    attrs += list(extra_attrs)
    video = Media("video", port, "TCP/RTP/AVP" if tcp else "RTP/AVP", [pt for pt, _ in pts], attrs)
    return Sdp(origin=origin_field(origin_id, ip), session_name=session_name, connection=ip, time=time,
               media=[video], ssrc=ssrc, media_format=media_format, uri=uri)


# How a device is asked for one of its encoder's streams (0 main, 1 the first sub-stream, ...): GB/T 28181-2022's
# ``a=streamnumber:N`` and the two vendor forms that came before it, ``a=stream:N`` and ``a=streamprofile:N``.
STREAM_FORMS = ("streamnumber", "stream", "streamprofile")


def gb_offer(*, origin_id: str, ip: str, port: int, ssrc: str, transport: str = "udp", session_name: str = "Play",
             time: str = "0 0", uri: str | None = None, speed: int | None = None,
             stream: tuple[str, int] | None = None) -> Sdp:
    """The platform's INVITE offer to a GB/T 28181 device.

    ``transport``: ``udp`` (RTP/AVP), ``tcp-passive`` (we listen, the device connects) or ``tcp-active``
    (the device listens on the port it answers, we connect). Playback: ``session_name="Playback"``,
    ``time="<start> <stop>"``, ``uri="<channel>:0"``; download adds ``speed`` (``a=downloadspeed``).
    ``stream``: (form, number) asks for one of the encoder's streams, e.g. ``("streamnumber", 1)`` ->
    ``a=streamnumber:1`` (the sub-stream); the form is one of :data:`STREAM_FORMS` (ValueError otherwise)."""
    tcp = transport.startswith("tcp")
    extra: list[Attr] = [("downloadspeed", str(speed))] if speed is not None else []
    if stream is not None:
        form, number = stream
        if form not in STREAM_FORMS or not isinstance(number, int) or not 0 <= number <= 9:
            raise ValueError(f"码流标识无效 / invalid stream identification {stream!r}")
        extra.append((form, str(number)))
    return gb_sdp(origin_id=origin_id, ip=ip, port=port, ssrc=ssrc, payloads=OFFER_PAYLOADS, direction="recvonly",
                  tcp=tcp, setup=("passive" if transport == "tcp-passive" else "active") if tcp else None,
                  session_name=session_name, time=time, uri=uri or None, extra_attrs=extra)


def build_offer(*, origin_id: str, ip: str, port: int, ssrc: str, transport: str = "udp",
                session_name: str = "Play", time: str = "0 0", uri: str | None = None,
                speed: int | None = None, stream: tuple[str, int] | None = None) -> bytes:
    """:func:`gb_offer` serialised: the body of the platform's INVITE."""
    return gb_offer(origin_id=origin_id, ip=ip, port=port, ssrc=ssrc, transport=transport,
                    session_name=session_name, time=time, uri=uri, speed=speed, stream=stream).to_bytes()


def offered_stream(sdp: Sdp) -> int | None:
    """The stream number an offer asks for in any of the :data:`STREAM_FORMS` (video m-line or session level),
    None when it names none or the value is not a small number (the device side of :func:`gb_offer`)."""
    video = sdp.video
    for attrs in ((video.attrs if video is not None else []), sdp.attrs):
        for name, value in attrs:
            number = value.strip() if value is not None else ""
            if name in STREAM_FORMS and number.isascii() and number.isdigit() and len(number) <= 2:
                return int(number)
    return None
