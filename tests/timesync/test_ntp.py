"""The NTP codec, the server's answer and the client's measurement (sans-IO), and the server over real UDP
answering a raw SNTP request built and read here with ``struct`` (not with the codec under test)."""

from __future__ import annotations

import asyncio
import socket
import struct
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from timesync import ntp
from timesync.server import NtpServer

NTP_DELTA = 2_208_988_800


def raw_request(version: int = 4, transmit: float | None = None, mode: int = 3, size: int = 48) -> bytes:
    """An SNTP client request as RFC 4330 describes it, built by hand."""
    t = time.time() if transmit is None else transmit
    secs = int(t) + NTP_DELTA
    frac = int((t % 1) * 2**32)
    head = struct.pack("!B3x11I", (version << 3) | mode, *([0] * 9), secs, frac)
    return head + b"\0" * (size - 48)


def raw_fields(packet: bytes) -> dict:
    first, stratum, poll, precision, rdelay, rdisp, refid = struct.unpack("!BBbbII4s", packet[:16])
    stamps = struct.unpack("!8I", packet[16:48])

    def ts(i: int) -> float:
        s, f = stamps[2 * i], stamps[2 * i + 1]
        return s - NTP_DELTA + f / 2**32 if s else 0.0

    return {"leap": first >> 6, "version": (first >> 3) & 7, "mode": first & 7, "stratum": stratum, "poll": poll,
            "precision": precision, "root_delay": rdelay / 65536, "root_dispersion": rdisp / 65536,
            "ref_id": refid, "reference": ts(0), "origin_raw": packet[24:32], "receive": ts(2),
            "transmit": ts(3)}


# ------------------------------------------------------------------------------------------ codec
def test_timestamp_round_trip_and_eras() -> None:
    now = 1_796_000_000.25
    assert ntp.from_ntp(ntp.to_ntp(now)) == pytest.approx(now, abs=1e-9)
    after_2036 = 2_100_000_000.5  # NTP era 1: seconds field wrapped
    assert ntp.to_ntp(after_2036) >> 32 < 0x8000_0000
    assert ntp.from_ntp(ntp.to_ntp(after_2036)) == pytest.approx(after_2036, abs=1e-9)
    assert ntp.to_ntp(0.0) >> 32 == NTP_DELTA


def test_precision_exponent() -> None:
    assert ntp.precision_exponent(1e-9) == -29
    assert ntp.precision_exponent(1e-6) == -19
    assert ntp.precision_exponent(1.0) == 0
    assert -32 <= ntp.precision_exponent(time.get_clock_info("time").resolution) <= 0


def test_reference_ids() -> None:
    assert ntp.reference_id("192.0.2.7") == bytes([192, 0, 2, 7])
    assert len(ntp.reference_id("2001:db8::1")) == 4
    assert ntp.reference_id("2001:db8::1") != ntp.reference_id("2001:db8::2")


@pytest.mark.parametrize("version", [3, 4])
def test_server_answer_local_reference(version: int) -> None:
    req = raw_request(version, transmit=1_796_000_000.123456)
    ref = ntp.local_reference(10, 1_796_000_000.0, precision=-20)
    out = ntp.server_answer(req, 1_796_000_000.5, 1_796_000_000.501, ref)
    assert out is not None and len(out) == 48
    f = raw_fields(out)
    assert (f["leap"], f["version"], f["mode"], f["stratum"]) == (0, version, 4, 10)
    assert f["ref_id"] == b"LOCL"
    assert f["precision"] == -20
    assert f["origin_raw"] == req[40:48]  # the client's transmit timestamp, bit for bit
    assert f["receive"] == pytest.approx(1_796_000_000.5, abs=1e-6)
    assert f["transmit"] == pytest.approx(1_796_000_000.501, abs=1e-6)
    assert f["reference"] == pytest.approx(1_796_000_000.0, abs=1e-6)
    assert (f["root_delay"], f["root_dispersion"]) == (0.0, 0.0)


def test_server_answer_unsynchronised_and_upstream() -> None:
    req = raw_request()
    f = raw_fields(ntp.server_answer(req, 1.7e9, 1.7e9, ntp.unsynchronised_reference()) or b"")
    assert (f["leap"], f["stratum"]) == (3, 16)
    up = ntp.upstream_reference("192.0.2.9", 2, 0.010, 0.020, 0.004, 1.7e9, precision=-22)
    f = raw_fields(ntp.server_answer(req, 1.7e9, 1.7e9, up) or b"")
    assert (f["leap"], f["stratum"], f["ref_id"]) == (0, 3, bytes([192, 0, 2, 9]))
    assert f["root_delay"] == pytest.approx(0.014, abs=1e-4)
    assert f["root_dispersion"] == pytest.approx(0.022, abs=1e-4)


def test_longer_request_gets_a_plain_header_and_poll_is_clamped() -> None:
    req = bytearray(raw_request(size=68))  # NTPv4 with a MAC: never answered with more than 48 bytes
    req[2] = 40  # poll 2^40: clamped
    out = ntp.server_answer(bytes(req), 1.7e9, 1.7e9, ntp.local_reference(10, 1.7e9))
    assert out is not None and len(out) == 48
    assert raw_fields(out)["poll"] == ntp.MAX_POLL


@pytest.mark.parametrize("packet", [
    b"",
    b"\x23" * 47,  # one byte short
    raw_request(mode=4),  # a server packet: not answered (no reflection)
    raw_request(mode=1),  # symmetric active
    raw_request(mode=5),  # broadcast
    raw_request(mode=6),  # control (ntpq): never answered here
    raw_request(mode=7),  # private (monlist): never
    raw_request(version=0),
    raw_request(version=5),
], ids=["empty", "short", "mode4", "mode1", "mode5", "mode6", "mode7", "v0", "v5"])
def test_malformed_or_other_modes_dropped(packet: bytes) -> None:
    assert ntp.server_answer(packet, 1.7e9, 1.7e9, ntp.local_reference(10, 1.7e9)) is None


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_parser_and_server(data: bytes) -> None:
    """Any bytes: parse raises only NtpError; the server answers only mode-3 packets, with 48 bytes."""
    try:
        pkt = ntp.parse(data)
    except ntp.NtpError:
        pkt = None
    out = ntp.server_answer(data, 1.7e9, 1.7e9, ntp.local_reference(10, 1.7e9))
    if out is not None:
        assert pkt is not None and pkt.mode == ntp.MODE_CLIENT and len(out) == 48
        assert out[24:32] == data[40:48]
    elif pkt is not None:
        assert pkt.mode != ntp.MODE_CLIENT


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=48, max_size=48))
def test_fuzz_client_measure(data: bytes) -> None:
    req = ntp.build_request(1.7e9)
    try:
        ntp.measure(req, data, 1.7e9 + 0.01)
    except ntp.NtpError:
        return
    assert data[24:32] == req[40:48]  # only an answer echoing our transmit timestamp is believed


# ------------------------------------------------------------------------------------------ client maths
def test_measure_offset_and_delay() -> None:
    t1 = 1_796_000_000.0
    req = ntp.build_request(t1)
    # server clock 2.5 s ahead; 20 ms each way; 1 ms in the server
    t2, t3, t4 = t1 + 0.020 + 2.5, t1 + 0.021 + 2.5, t1 + 0.041
    resp = ntp.server_answer(req, t2, t3, ntp.local_reference(3, t1))
    m = ntp.measure(req, resp or b"", t4)
    assert m.offset == pytest.approx(2.5, abs=1e-6)
    assert m.delay == pytest.approx(0.040, abs=1e-6)
    assert m.stratum == 3 and m.server_synchronised


def test_measure_refuses_bogus_answers() -> None:
    req = ntp.build_request(1.7e9)
    other = ntp.build_request(1.7e9 + 1)
    forged = ntp.server_answer(other, 1.7e9, 1.7e9, ntp.local_reference(3, 1.7e9)) or b""
    with pytest.raises(ntp.NtpError, match="echo"):
        ntp.measure(req, forged, 1.7e9)
    kiss = bytearray(ntp.server_answer(req, 1.7e9, 1.7e9, ntp.local_reference(3, 1.7e9)) or b"")
    kiss[1] = 0
    kiss[12:16] = b"RATE"
    with pytest.raises(ntp.NtpError, match="kiss"):
        ntp.measure(req, bytes(kiss), 1.7e9)
    unsync = ntp.server_answer(req, 1.7e9, 1.7e9, ntp.unsynchronised_reference()) or b""
    assert not ntp.measure(req, unsync, 1.7e9).server_synchronised


# ------------------------------------------------------------------------------------------ over UDP
async def _server(reference=None) -> NtpServer:
    srv = NtpServer("127.0.0.1", 0, reference or (lambda: ntp.local_reference(10, time.time())))
    srv.port = -1  # not "off": bind an ephemeral port below
    loop = asyncio.get_running_loop()
    from timesync.server import _Protocol

    srv.transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(srv), local_addr=("127.0.0.1", 0))
    return srv


def _ask(port: int, request: bytes, timeout: float = 2.0) -> tuple[bytes, float, float]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        sent = time.time()
        s.sendto(request, ("127.0.0.1", port))
        data, _ = s.recvfrom(512)
        return data, sent, time.time()


@pytest.mark.parametrize("version", [3, 4])
async def test_udp_server_answers_raw_sntp_within_10_ms(version: int) -> None:
    srv = await _server()
    try:
        port = srv.bound_port
        assert port
        req = raw_request(version)
        data, sent, received = await asyncio.to_thread(_ask, port, req)
        f = raw_fields(data)
        assert len(data) == 48
        assert (f["leap"], f["version"], f["mode"], f["stratum"], f["ref_id"]) == (0, version, 4, 10, b"LOCL")
        assert f["origin_raw"] == req[40:48]
        assert -32 <= f["precision"] <= -10
        # the server's clock is this host's: its timestamps lie within the exchange, and the SNTP offset is
        # within 10 ms of zero
        assert sent - 0.010 <= f["receive"] <= f["transmit"] <= received + 0.010
        offset = ((f["receive"] - sent) + (f["transmit"] - received)) / 2
        assert abs(offset) < 0.010
        assert srv.answered == 1
    finally:
        srv.close()


async def test_udp_server_drops_garbage_and_other_modes() -> None:
    srv = await _server()
    try:
        port = srv.bound_port
        with pytest.raises(TimeoutError):
            await asyncio.to_thread(_ask, port, raw_request(mode=7), 0.3)
        with pytest.raises(TimeoutError):
            await asyncio.to_thread(_ask, port, b"hello", 0.3)
        assert (srv.answered, srv.dropped) == (0, 2)
        # still serving after garbage
        data, _, _ = await asyncio.to_thread(_ask, port, raw_request())
        assert raw_fields(data)["mode"] == 4
    finally:
        srv.close()


async def test_udp_server_follows_the_reference() -> None:
    state = {"ref": ntp.unsynchronised_reference()}
    srv = await _server(lambda: state["ref"])
    try:
        data, _, _ = await asyncio.to_thread(_ask, srv.bound_port, raw_request())
        assert (raw_fields(data)["leap"], raw_fields(data)["stratum"]) == (3, 16)
        state["ref"] = ntp.upstream_reference("192.0.2.1", 1, 0, 0, 0.002, time.time())
        data, _, _ = await asyncio.to_thread(_ask, srv.bound_port, raw_request())
        assert (raw_fields(data)["leap"], raw_fields(data)["stratum"]) == (0, 2)
    finally:
        srv.close()


async def test_bind_failure_is_reported_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        srv = NtpServer("127.0.0.1", port, lambda: ntp.local_reference(10, time.time()))
        assert await srv.start() is False
        assert not srv.running
        assert "in use" in (srv.error or "")
        assert srv.status()["running"] is False and srv.status()["error"] == srv.error
    off = NtpServer("127.0.0.1", 0, lambda: ntp.local_reference(10, time.time()))
    assert await off.start() is False and "disabled" in (off.error or "")


async def test_privileged_port_refused_for_non_root() -> None:
    import os

    if os.geteuid() == 0:  # root may bind 123: then it must work (and is closed again)
        srv = NtpServer("127.0.0.1", 123, lambda: ntp.local_reference(10, time.time()))
        ok = await srv.start()
        srv.close()
        assert ok or "in use" in (srv.error or "")
        return
    srv = NtpServer("127.0.0.1", 123, lambda: ntp.local_reference(10, time.time()))
    assert await srv.start() is False
    assert "permission denied" in (srv.error or "") or "in use" in (srv.error or "")


async def test_client_against_the_server() -> None:
    from timesync.client import check_servers, parse_servers, query_server

    srv = await _server()
    try:
        answer = await query_server("127.0.0.1", srv.bound_port)
        assert answer.ok and answer.measurement is not None
        assert abs(answer.measurement.offset) < 0.010 and 0 <= answer.measurement.delay < 0.1
        # a server 3 s ahead (the client's clock behind)
        behind = await query_server("127.0.0.1", srv.bound_port, clock=lambda: time.time() - 3.0)
        assert behind.measurement is not None and behind.measurement.offset == pytest.approx(3.0, abs=0.02)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
            silent.bind(("127.0.0.1", 0))
            answers = await check_servers([("127.0.0.1", srv.bound_port), ("127.0.0.1", silent.getsockname()[1])],
                                          timeout=0.5)
        assert [a.ok for a in answers] == [True, False]
        assert "timeout" in (answers[1].error or "")
    finally:
        srv.close()
    assert parse_servers(" ntp.example , 10.0.0.5:1123,[2001:db8::1]:124, ,[::1]") == [
        ("ntp.example", 123), ("10.0.0.5", 1123), ("2001:db8::1", 124), ("::1", 123)]
