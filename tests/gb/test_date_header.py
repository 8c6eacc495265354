"""Beijing time at every device-facing edge whatever the host's zone (issue 16).

A real ``gbops run`` whose process has ``TZ=UTC`` or ``TZ=America/New_York`` answers a device's REGISTER
(digest, over UDP, from a raw socket here) with ``Date:`` in Beijing time (GB/T 28181 9.10: ``YYYY-MM-DDTHH:MM:
SS.mmm``, no zone), checked against ``zoneinfo`` here; the other device-facing times (RecordInfo windows,
alarm times, DeviceStatus DeviceTime, the ``t=`` of a playback offer) convert the same way in a process on
New York time.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from sip_server.sip.digest import build_authorization
from tests.e2e.platform import STRONG_SIP_PASSWORD, PlatformProcess

BEIJING = ZoneInfo("Asia/Shanghai")
DEVICE = "34020000001320000077"
SERVER_ID = "34020000002000000001"
DOMAIN = "3402000000"


def _register(port: int, local: socket.socket, cseq: int, call_id: str, tag: str,
              authorization: str | None = None) -> bytes:
    lport = local.getsockname()[1]
    lines = [
        f"REGISTER sip:{SERVER_ID}@{DOMAIN} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:{lport};rport;branch=z9hG4bK{secrets.token_hex(6)}",
        f"From: <sip:{DEVICE}@{DOMAIN}>;tag={tag}",
        f"To: <sip:{DEVICE}@{DOMAIN}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        f"Contact: <sip:{DEVICE}@127.0.0.1:{lport}>",
        "Max-Forwards: 70",
        "Expires: 3600",
        "User-Agent: date-header-test",
    ]
    if authorization:
        lines.append(f"Authorization: {authorization}")
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _response(sock: socket.socket, method: str) -> tuple[int, dict[str, str]]:
    """The next response to ``method`` (requests the platform sends meanwhile are ignored)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        data, _ = sock.recvfrom(65535)
        text = data.decode("utf-8", "replace")
        head = text.split("\r\n\r\n", 1)[0].split("\r\n")
        if not head[0].startswith("SIP/2.0 "):
            continue
        headers: dict[str, str] = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), value.strip())
        if headers.get("cseq", "").endswith(method):
            return int(head[0].split()[1]), headers
    raise AssertionError(f"no response to {method}")


def register_and_read_date(port: int) -> tuple[str, float, float]:
    """Digest REGISTER as a device; returns the 200 OK's Date and the wall time around the exchange."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(30)
        call_id, tag = secrets.token_hex(8), secrets.token_hex(4)
        sock.sendto(_register(port, sock, 1, call_id, tag), ("127.0.0.1", port))
        status, headers = _response(sock, "REGISTER")
        assert status == 401, (status, headers)
        auth = build_authorization(headers["www-authenticate"], method="REGISTER", uri=f"sip:{SERVER_ID}@{DOMAIN}",
                                   username=DEVICE, password=STRONG_SIP_PASSWORD, cnonce=secrets.token_hex(4))
        before = time.time()
        sock.sendto(_register(port, sock, 2, call_id, tag, auth), ("127.0.0.1", port))
        status, headers = _response(sock, "REGISTER")
        after = time.time()
        assert status == 200, (status, headers)
        return headers["date"], before, after


@pytest.fixture
def platform_in(tmp_path: Path) -> Iterator[object]:
    started: list[PlatformProcess] = []

    def start(tz: str) -> PlatformProcess:
        p = PlatformProcess(tmp_path / tz.replace("/", "_"), TZ=tz)
        started.append(p.start())
        return p

    yield start
    for p in started:
        p.stop()


@pytest.mark.parametrize("tz", ["UTC", "America/New_York"])
def test_register_date_is_beijing_time_whatever_the_process_zone(platform_in, tz: str) -> None:
    platform = platform_in(tz)
    date, before, after = register_and_read_date(platform.sip_port)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}", date), date
    sent = datetime.strptime(date, "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=BEIJING).timestamp()
    assert before - 0.01 <= sent <= after + 0.01, (date, before, after)
    # and not the host zone's wall time (which differs from Beijing by whole hours in both zones)
    host_wall = datetime.fromtimestamp(sent, ZoneInfo(tz)).strftime("%Y-%m-%dT%H")
    assert not date.startswith(host_wall)


@pytest.fixture
def new_york_host() -> Iterator[None]:
    old = os.environ.get("TZ")
    os.environ["TZ"] = "America/New_York"
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = old
        time.tzset()


def test_other_device_facing_times_on_a_new_york_host(new_york_host) -> None:
    from gbcore.timeutil import from_device_time, gb_time
    from sip_server.gb import manscdp
    from sip_server.gb.records import record_query_extra
    from sip_server.sip.sdp import build_offer
    from timesync.skew import parse_device_time

    assert time.strftime("%H", time.localtime(1_700_000_000)) == "17"  # the process really is on New York time
    start = datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)  # 2023-11-15 06:13:20 in Beijing
    # RecordInfo window: Beijing wall time, no offset
    extra = dict(record_query_extra(start, start + timedelta(hours=1)))
    assert (extra["StartTime"], extra["EndTime"]) == ("2023-11-15T06:13:20", "2023-11-15T07:13:20")
    # an alarm's AlarmTime (device wall time) read back as UTC
    when = manscdp.parse_gb_time("2023-11-15T06:13:20")
    assert when is not None and from_device_time(when) == start
    # DeviceStatus DeviceTime (the clock-skew sample)
    assert parse_device_time("2023-11-15T06:13:20") == (start.timestamp(), 1.0)
    # the Date the platform sends, from a POSIX time
    assert gb_time(start.timestamp()) == "2023-11-15T06:13:20.000"
    # a playback offer's t= is Unix seconds (2022 Annex G), the same instant whatever the zone
    sdp = build_offer(origin_id=SERVER_ID, ip="127.0.0.1", port=30000, ssrc="1000000001", transport="udp",
                      session_name="Playback", time=f"{int(start.timestamp())} {int(start.timestamp()) + 3600}",
                      uri="34020000001310000001:0")
    assert f"t={int(start.timestamp())} {int(start.timestamp()) + 3600}" in sdp.decode()
