"""SDP (RFC 4566) as GB/T 28181 uses it: one video m-line, PS over RTP, plus the ``y=`` (SSRC) and
``f=`` (media format) lines GB/T 28181 adds. Sans-IO: text in, dataclasses out; only :class:`SdpError`
escapes the parser."""

from __future__ import annotations

from dataclasses import dataclass, field


class SdpError(ValueError):
    pass


@dataclass
class Media:
    kind: str  # "video" | "audio"
    port: int
    proto: str  # "RTP/AVP" | "TCP/RTP/AVP"
    formats: list[str]
    attrs: list[tuple[str, str | None]] = field(default_factory=list)
    connection: str | None = None

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


@dataclass
class Sdp:
    origin: str = ""
    session_name: str = ""
    connection: str | None = None
    time: str = "0 0"
    media: list[Media] = field(default_factory=list)
    ssrc: str | None = None  # y=
    media_format: str | None = None  # f=
    uri: str | None = None  # u= (playback: channel id and parameter)

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


def _conn_ip(value: str) -> str:
    parts = value.split()
    if len(parts) < 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SdpError(f"bad c= line: {value!r}")
    return parts[2].split("/")[0]


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
            if not port_text.isdigit() or int(port_text) > 65535:
                raise SdpError(f"bad m= port: {value!r}")
            current = Media(parts[0].lower(), int(port_text), parts[2], parts[3:])
            sdp.media.append(current)
        elif kind == "a":
            name, sep, val = value.partition(":")
            entry = (name.strip(), val.strip() if sep else None)
            if current is None:
                continue  # session-level attributes are not used by GB/T 28181 devices
            current.attrs.append(entry)
        elif kind == "y":
            sdp.ssrc = value
        elif kind == "f":
            sdp.media_format = value
        elif kind == "u":
            sdp.uri = value
    if not seen_v:
        raise SdpError("not an SDP body (no v= line)")
    return sdp


def build_offer(*, origin_id: str, ip: str, port: int, ssrc: str, transport: str = "udp",
                session_name: str = "Play", time: str = "0 0", uri: str | None = None,
                speed: int | None = None) -> bytes:
    """The platform's INVITE offer to a GB/T 28181 device (GB/T 28181-2016 appendix F).

    ``transport``: ``udp`` (RTP/AVP), ``tcp-passive`` (we listen, the device connects) or ``tcp-active``
    (the device listens on the port it answers, we connect)."""
    tcp = transport.startswith("tcp")
    lines = [
        "v=0",
        f"o={origin_id} 0 0 IN IP4 {ip}",
        f"s={session_name}",
    ]
    if uri:
        lines.append(f"u={uri}")
    lines += [
        f"c=IN IP4 {ip}",
        f"t={time}",
        f"m=video {port} {'TCP/RTP/AVP' if tcp else 'RTP/AVP'} 96 98 97",
        "a=recvonly",
        "a=rtpmap:96 PS/90000",
        "a=rtpmap:98 H264/90000",
        "a=rtpmap:97 MPEG4/90000",
    ]
    if tcp:
        lines.append("a=setup:passive" if transport == "tcp-passive" else "a=setup:active")
        lines.append("a=connection:new")
    if speed is not None:
        lines.append(f"a=downloadspeed:{speed}")
    lines.append(f"y={ssrc}")
    return ("\r\n".join(lines) + "\r\n").encode()
