"""RTP packets, RFC 4571 framing, reordering, receiver statistics and PS packetizing."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media_relay.rtp import (
    ReorderBuffer,
    Rfc4571Framer,
    RtpError,
    RtpPacket,
    RtpStats,
    packetize_ps,
    seq_diff,
)

# A hand-assembled packet: V=2 P=1 X=1 CC=2, M=1 PT=96, seq 0xBEEF, ts 0x01020304, SSRC 0x0A0B0C0D,
# CSRCs 1 and 2, extension profile 0xBEDE with one word, payload "hello", 3 padding octets.
VECTOR = bytes.fromhex(
    "b2e0beef01020304 0a0b0c0d 00000001 00000002 bede0001 10ff0000 68656c6c6f 000003".replace(" ", "")
)


def test_parse_vector() -> None:
    p = RtpPacket.parse(VECTOR)
    assert p == RtpPacket(
        payload_type=96,
        sequence=0xBEEF,
        timestamp=0x01020304,
        ssrc=0x0A0B0C0D,
        payload=b"hello",
        marker=True,
        csrc=(1, 2),
        extension=(0xBEDE, b"\x10\xff\x00\x00"),
        padding=3,
    )
    assert bytes(p) == VECTOR
    assert p.to_bytes() == VECTOR


def test_minimal_round_trip() -> None:
    p = RtpPacket(8, 65535, 0xFFFFFFFF, 0xDEADBEEF, b"\x01" * 1400)
    raw = p.to_bytes()
    assert len(raw) == 1412 and raw[:2] == b"\x80\x08"
    assert RtpPacket.parse(raw) == p
    assert RtpPacket.parse(memoryview(raw)) == p
    assert RtpPacket.parse(bytearray(raw)) == p


@pytest.mark.parametrize(
    "raw,why",
    [
        (b"", "empty"),
        (b"\x80\x60\x00\x01\x00\x00\x00\x00\x00\x00\x00", "11 bytes"),
        (b"\x40" + bytes(11), "version 1"),
        (b"\x00" + bytes(11), "version 0"),
        (b"\x82" + bytes(11) + bytes(4), "CSRC list truncated"),
        (b"\x90" + bytes(11) + b"\xbe\xde", "extension header truncated"),
        (b"\x90" + bytes(11) + b"\xbe\xde\x00\x02" + bytes(4), "extension body truncated"),
        (b"\xa0" + bytes(11) + b"\x00", "zero padding count"),
        (b"\xa0" + bytes(11) + b"\x05", "padding longer than the payload"),
    ],
)
def test_parse_rejects(raw: bytes, why: str) -> None:
    with pytest.raises(RtpError):
        RtpPacket.parse(raw)


def test_padding_only_payload() -> None:
    raw = b"\xa0\x60" + bytes(10) + b"\x00\x00\x03"
    p = RtpPacket.parse(raw)
    assert p.payload == b"" and p.padding == 3


def test_to_bytes_rejects() -> None:
    with pytest.raises(RtpError):
        RtpPacket(96, 1, 1, 1, b"", csrc=tuple(range(16))).to_bytes()
    with pytest.raises(RtpError):
        RtpPacket(96, 1, 1, 1, b"", extension=(1, b"abc")).to_bytes()
    with pytest.raises(RtpError):
        RtpPacket(128, 1, 1, 1, b"").to_bytes()
    with pytest.raises(RtpError):
        RtpPacket(96, 1, 1, 1 << 32, b"").to_bytes()


packets = st.builds(
    RtpPacket,
    payload_type=st.integers(0, 127),
    sequence=st.integers(0, 0xFFFF),
    timestamp=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    payload=st.binary(max_size=64),
    marker=st.booleans(),
    csrc=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15).map(tuple),
    extension=st.none()
    | st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=12).map(lambda b: b + bytes(-len(b) % 4))),
    padding=st.integers(0, 255),
)


@given(packets)
def test_round_trip_property(p: RtpPacket) -> None:
    assert RtpPacket.parse(p.to_bytes()) == p


@settings(max_examples=500)
@given(st.binary(max_size=100))
def test_fuzz_parse(raw: bytes) -> None:
    try:
        p = RtpPacket.parse(raw)
    except RtpError:
        return
    assert p.to_bytes() == raw[: len(raw) - p.padding] + (
        bytes(p.padding - 1) + bytes((p.padding,)) if p.padding else b""
    )


def test_seq_diff() -> None:
    assert seq_diff(5, 3) == 2
    assert seq_diff(3, 5) == -2
    assert seq_diff(0, 65535) == 1
    assert seq_diff(65535, 0) == -1
    assert seq_diff(0x8000, 0) == -0x8000


# --- RFC 4571 -----------------------------------------------------------------------------------


def test_framer_partial_and_multiple() -> None:
    pkts = [bytes([i]) * (i * 37 + 1) for i in range(1, 20)]
    stream = b"".join(Rfc4571Framer.frame(p) for p in pkts)
    for step in (1, 2, 3, 7, 100, 1000, len(stream)):
        framer = Rfc4571Framer()
        got = []
        for i in range(0, len(stream), step):
            got += framer.feed(stream[i : i + step])
        assert got == pkts
        assert framer.buffered == 0
        assert framer.frames == len(pkts)


def test_framer_zero_length_and_cap() -> None:
    framer = Rfc4571Framer(max_frame=100)
    stream = b"\x00\x00" + Rfc4571Framer.frame(b"a" * 10) + b"\x00\x00" + Rfc4571Framer.frame(b"b" * 200)
    stream += Rfc4571Framer.frame(b"c" * 5)
    got = []
    for i in range(0, len(stream), 17):
        got += framer.feed(stream[i : i + 17])
    assert got == [b"a" * 10, b"c" * 5]
    assert framer.empty == 2 and framer.oversize == 1
    assert Rfc4571Framer.frame(b"x" * 65535)[:2] == b"\xff\xff"
    with pytest.raises(RtpError):
        Rfc4571Framer.frame(b"x" * 65536)
    with pytest.raises(RtpError):
        Rfc4571Framer(max_frame=0)


@given(st.lists(st.binary(max_size=300), max_size=10), st.lists(st.integers(1, 500), min_size=1, max_size=20))
def test_framer_property(pkts: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(Rfc4571Framer.frame(p) for p in pkts)
    framer = Rfc4571Framer()
    got: list[bytes] = []
    i = k = 0
    while i < len(stream):
        step = cuts[k % len(cuts)]
        got += framer.feed(stream[i : i + step])
        i += step
        k += 1
    assert got == [p for p in pkts if p]


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=200), max_size=10), st.integers(1, 65535))
def test_fuzz_framer(chunks: list[bytes], cap: int) -> None:
    framer = Rfc4571Framer(max_frame=cap)
    for c in chunks:
        for frame in framer.feed(c):
            assert 0 < len(frame) <= cap


# --- reordering ---------------------------------------------------------------------------------


def _pkt(seq: int, ts: int = 0) -> RtpPacket:
    return RtpPacket(96, seq & 0xFFFF, ts, 1234, seq.to_bytes(4, "big", signed=True))


def _seqs(pkts: list[RtpPacket]) -> list[int]:
    return [p.sequence for p in pkts]


def test_reorder_in_order_and_wrap() -> None:
    rb = ReorderBuffer()
    out = []
    for s in range(65530, 65546):
        out += rb.push(_pkt(s), 0.0)
    assert _seqs(out) == [s & 0xFFFF for s in range(65530, 65546)]
    assert (rb.received, rb.lost, rb.duplicates, rb.reordered) == (16, 0, 0, 0)


def test_reorder_across_wrap() -> None:
    order = [65533, 65535, 65534, 1, 0, 3, 2, 4]
    rb = ReorderBuffer()
    out = []
    for k, s in enumerate(order):
        out += rb.push(_pkt(s), k * 0.001)
    assert _seqs(out) == [65533, 65534, 65535, 0, 1, 2, 3, 4]
    assert rb.reordered == 3 and rb.lost == 0
    assert len(rb) == 0


def test_reorder_duplicates() -> None:
    rb = ReorderBuffer()
    out = []
    for s in (10, 11, 11, 13, 13, 10, 12):
        out += rb.push(_pkt(s), 0.0)
    assert _seqs(out) == [10, 11, 12, 13]
    assert rb.duplicates == 3 and rb.received == 4


def test_reorder_gap_timeout() -> None:
    rb = ReorderBuffer(window=64, max_delay=0.1)
    assert _seqs(rb.push(_pkt(100), 0.00)) == [100]
    assert _seqs(rb.push(_pkt(103), 0.01)) == []  # 101, 102 missing
    assert _seqs(rb.push(_pkt(104), 0.05)) == []
    assert rb.deadline() == pytest.approx(0.11)
    assert rb.poll(0.10) == []
    assert _seqs(rb.poll(0.12)) == [103, 104]
    assert rb.lost == 2
    # a straggler after its gap was skipped is dropped as late, not as a duplicate
    assert rb.push(_pkt(101), 0.13) == []
    assert rb.late == 1 and rb.duplicates == 0
    # the timeout also runs on push
    rb.push(_pkt(106), 0.2)
    assert _seqs(rb.push(_pkt(107), 0.31)) == [106, 107]
    assert rb.lost == 3


def test_reorder_window_overflow() -> None:
    rb = ReorderBuffer(window=8, max_delay=10)
    out = rb.push(_pkt(0), 0)
    for s in range(2, 10):  # 1 is lost; 9 - 1 >= 8 overflows the window
        out += rb.push(_pkt(s), 0)
    assert _seqs(out) == list(range(0, 1)) + list(range(2, 10))
    assert rb.lost == 1


def test_reorder_flush_counts_gaps() -> None:
    rb = ReorderBuffer(max_delay=10)
    rb.push(_pkt(1), 0)
    rb.push(_pkt(3), 0)
    rb.push(_pkt(6), 0)
    assert _seqs(rb.flush()) == [3, 6]
    assert rb.lost == 3
    assert _seqs(rb.push(_pkt(7), 0)) == [7]


def test_reorder_sender_restart() -> None:
    rb = ReorderBuffer()
    for s in range(1000, 1010):
        rb.push(_pkt(s), 0)
    assert rb.push(_pkt(20000), 0) == []  # a lone far packet is held back
    assert _seqs(rb.push(_pkt(20001), 0)) == [20000, 20001]  # confirmed: resync
    assert _seqs(rb.push(_pkt(20002), 0)) == [20002]
    assert rb.resyncs == 1 and rb.lost == 0
    # restart backwards too
    assert rb.push(_pkt(5), 0) == []
    assert _seqs(rb.push(_pkt(6), 0)) == [5, 6]
    assert rb.resyncs == 2


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 0xFFFF), st.lists(st.integers(0, 5), min_size=1, max_size=200), st.randoms())
def test_reorder_property(start: int, jitter: list[int], rnd: random.Random) -> None:
    """Bounded reordering with some loss and duplicates: output strictly in order, counters add up."""
    n = len(jitter)
    jitter[0] = 0  # the first packet to arrive defines the start of the sequence
    lost = {k for k in range(1, n - 1) if rnd.random() < 0.1}
    sent = [k for k in range(n) if k not in lost]
    arrivals = sorted(((k + jitter[k]) * 0.001, k) for k in sent)
    dups = [a for a in arrivals if rnd.random() < 0.05]
    events = sorted(arrivals + [(t + 0.0005, k) for t, k in dups])
    rb = ReorderBuffer(window=16, max_delay=1.0)
    out: list[RtpPacket] = []
    for t, k in events:
        out += rb.push(_pkt(start + k), t)
    out += rb.flush()
    got = [int.from_bytes(p.payload, "big", signed=True) - start for p in out]
    assert got == sent
    assert rb.lost == len(lost)
    assert rb.received == len(sent)
    assert rb.duplicates == len(dups)


# --- statistics ---------------------------------------------------------------------------------


def test_stats_jitter_constant_delay_is_zero() -> None:
    stats = RtpStats(90000)
    for k in range(100):
        stats.update(_pkt(k, ts=k * 3600), arrival=10.0 + k * 0.04)
    assert stats.jitter == pytest.approx(0.0, abs=1e-9)
    snap = stats.snapshot(10.0 + 99 * 0.04)
    assert snap["expected"] == 100 and snap["lost"] == 0 and snap["loss_fraction"] == 0


def test_stats_jitter_alternating() -> None:
    """Arrivals alternately 0 and +10 ms off schedule: |D| = 10 ms each step, jitter -> 10 ms."""
    stats = RtpStats(90000)
    for k in range(400):
        stats.update(_pkt(k, ts=k * 3600), arrival=k * 0.04 + (0.01 if k % 2 else 0.0))
    assert stats.jitter == pytest.approx(0.010, rel=1e-3)


def test_stats_jitter_recurrence() -> None:
    """The RFC 3550 A.8 recurrence, computed by hand for a short schedule."""
    ts = [0, 3600, 7200, 10800, 14400]
    arr = [0.0, 0.042, 0.079, 0.125, 0.160]
    stats = RtpStats(90000)
    j = 0.0
    for k in range(5):
        stats.update(_pkt(k, ts=ts[k]), arr[k])
        if k:
            d = (arr[k] - arr[k - 1]) * 90000 - (ts[k] - ts[k - 1])
            j += (abs(d) - j) / 16
    assert stats.jitter == pytest.approx(j / 90000)


def test_stats_timestamp_wrap() -> None:
    stats = RtpStats(90000)
    base = 0xFFFFFFFF - 3600
    for k in range(10):
        stats.update(_pkt(k, ts=(base + k * 3600) & 0xFFFFFFFF), k * 0.04)
    assert stats.jitter == pytest.approx(0.0, abs=1e-9)


def test_stats_loss_with_wrap() -> None:
    stats = RtpStats()
    seqs = [s & 0xFFFF for s in range(65000, 66100) if s % 10 != 3]  # 1 in 10 lost
    for k, s in enumerate(seqs):
        stats.update(_pkt(s), k * 0.001)
    assert stats.expected == 1100
    assert stats.lost == 110
    assert stats.loss_fraction == pytest.approx(0.1)
    assert stats.extended_max_seq == 65536 + (66099 & 0xFFFF)


def test_stats_bitrate_window() -> None:
    stats = RtpStats(bitrate_window=2.0)
    for k in range(500):  # 100 packets/s of 1000 bytes for 5 s = 800 kbit/s
        stats.update(RtpPacket(96, k, k * 900, 1, bytes(1000)), k * 0.01)
    assert stats.bitrate(4.995) == pytest.approx(800_000, rel=0.02)
    assert stats.bitrate(6.0) == pytest.approx(400_000, rel=0.02)  # last second only
    assert stats.bitrate(8.0) == 0
    snap = stats.snapshot(4.995)
    assert snap["packets"] == 500 and snap["bytes"] == 500_000 and snap["ssrc"] == 1
    assert RtpStats().snapshot(1.0)["bitrate"] == 0


def test_stats_restart() -> None:
    stats = RtpStats()
    for k in range(100):
        stats.update(_pkt(k), k * 0.01)
    stats.update(_pkt(40000), 1.0)
    stats.update(_pkt(40001), 1.01)
    stats.update(_pkt(40002), 1.02)
    assert stats.lost == 0 and stats.expected == 2


# --- packetizing --------------------------------------------------------------------------------


def test_packetize_ps() -> None:
    pack = bytes(range(256)) * 20  # 5120 bytes
    pkts = packetize_ps(pack, ssrc=0x1234, sequence=65534, timestamp=0x1_0000_0005, mtu_payload=1400)
    assert [len(p.payload) for p in pkts] == [1400, 1400, 1400, 920]
    assert [p.sequence for p in pkts] == [65534, 65535, 0, 1]
    assert [p.marker for p in pkts] == [False, False, False, True]
    assert {p.timestamp for p in pkts} == {5}
    assert b"".join(p.payload for p in pkts) == pack
    assert all(RtpPacket.parse(p.to_bytes()) == p for p in pkts)
    assert packetize_ps(b"", ssrc=1, sequence=0, timestamp=0) == []
    one = packetize_ps(b"x", ssrc=1, sequence=7, timestamp=0, payload_type=98)
    assert len(one) == 1 and one[0].marker and one[0].payload_type == 98
    with pytest.raises(RtpError):
        packetize_ps(b"x", ssrc=1, sequence=0, timestamp=0, mtu_payload=0)
