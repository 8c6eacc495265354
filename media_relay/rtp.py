"""RTP (RFC 3550) packets, RFC 4571 framing over TCP, reordering, receiver statistics, PS packetizing.

Sans-IO: bytes and arrival times go in, objects come out. Nothing here reads a clock; callers pass
``now`` / ``arrival`` (seconds, any monotonic origin).
"""

from __future__ import annotations

import bisect
import struct
from collections import deque
from dataclasses import dataclass

__all__ = [
    "RtpError",
    "RtpPacket",
    "Rfc4571Framer",
    "ReorderBuffer",
    "RtpStats",
    "packetize_ps",
    "seq_diff",
]

RTP_VERSION = 2
_HEADER = struct.Struct("!BBHII")
_U16 = struct.Struct("!H")
_EXT = struct.Struct("!HH")


class RtpError(ValueError):
    """Malformed RTP packet or framing."""


def seq_diff(a: int, b: int) -> int:
    """Signed distance ``a - b`` between two 16-bit sequence numbers, in [-32768, 32767]."""
    return ((a - b + 0x8000) & 0xFFFF) - 0x8000


@dataclass(slots=True)
class RtpPacket:
    """One RTP packet (RFC 3550 section 5.1).

    ``extension`` is ``(profile_defined_16_bits, data)`` with ``len(data)`` a multiple of 4;
    ``padding`` is the number of padding octets at the end (the last one holds the count).
    """

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False
    csrc: tuple[int, ...] = ()
    extension: tuple[int, bytes] | None = None
    padding: int = 0

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> RtpPacket:
        n = len(data)
        if n < 12:
            raise RtpError(f"RTP packet too short ({n} bytes)")
        b0, b1, seq, ts, ssrc = _HEADER.unpack_from(data, 0)
        if b0 >> 6 != RTP_VERSION:
            raise RtpError(f"unsupported RTP version {b0 >> 6}")
        offset = 12
        cc = b0 & 0x0F
        if cc:
            offset += 4 * cc
            if offset > n:
                raise RtpError("truncated CSRC list")
            csrc = struct.unpack_from(f"!{cc}I", data, 12)
        else:
            csrc = ()
        extension = None
        if b0 & 0x10:
            if offset + 4 > n:
                raise RtpError("truncated header extension")
            profile, words = _EXT.unpack_from(data, offset)
            offset += 4
            end = offset + 4 * words
            if end > n:
                raise RtpError("truncated header extension")
            extension = (profile, bytes(data[offset:end]))
            offset = end
        end = n
        padding = 0
        if b0 & 0x20:
            padding = data[n - 1]
            if padding == 0 or offset + padding > n:
                raise RtpError(f"invalid padding length {padding}")
            end = n - padding
        return cls(
            b1 & 0x7F,
            seq,
            ts,
            ssrc,
            bytes(data[offset:end]),
            bool(b1 & 0x80),
            csrc,
            extension,
            padding,
        )

    def to_bytes(self) -> bytes:
        cc = len(self.csrc)
        if cc > 15:
            raise RtpError("more than 15 CSRC identifiers")
        if not 0 <= self.payload_type <= 127:
            raise RtpError(f"payload type {self.payload_type} out of range")
        if not 0 <= self.padding <= 255:
            raise RtpError(f"padding {self.padding} out of range")
        b0 = (RTP_VERSION << 6) | cc
        if self.padding:
            b0 |= 0x20
        if self.extension is not None:
            b0 |= 0x10
        b1 = self.payload_type | (0x80 if self.marker else 0)
        try:
            parts = [_HEADER.pack(b0, b1, self.sequence & 0xFFFF, self.timestamp & 0xFFFFFFFF, self.ssrc)]
            if cc:
                parts.append(struct.pack(f"!{cc}I", *self.csrc))
        except struct.error as exc:
            raise RtpError(str(exc)) from None
        if self.extension is not None:
            profile, ext = self.extension
            if len(ext) % 4 or len(ext) > 4 * 0xFFFF or not 0 <= profile <= 0xFFFF:
                raise RtpError("header extension data must be a multiple of 4 bytes (and < 256 KiB)")
            parts.append(_EXT.pack(profile, len(ext) // 4))
            parts.append(bytes(ext))
        parts.append(self.payload)
        if self.padding:
            parts.append(bytes(self.padding - 1) + bytes((self.padding,)))
        return b"".join(parts)

    __bytes__ = to_bytes


class Rfc4571Framer:
    """RTP over a byte stream (RFC 4571): each packet is preceded by a 16-bit big-endian length.

    ``feed`` takes whatever a read returned and gives back the complete packets. Zero-length frames
    are skipped; frames longer than ``max_frame`` are skipped and counted in ``oversize``.
    """

    __slots__ = ("_buf", "max_frame", "frames", "oversize", "empty", "_skip")

    def __init__(self, max_frame: int = 65535) -> None:
        if not 0 < max_frame <= 65535:
            raise RtpError("max_frame must be in 1..65535")
        self.max_frame = max_frame
        self._buf = bytearray()
        self._skip = 0  # bytes of an oversize frame still to discard
        self.frames = 0
        self.oversize = 0
        self.empty = 0

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        buf = self._buf
        if self._skip:
            k = min(self._skip, len(data))
            self._skip -= k
            data = memoryview(data)[k:]
        buf += data
        out: list[bytes] = []
        pos = 0
        n = len(buf)
        max_frame = self.max_frame
        while n - pos >= 2:
            size = (buf[pos] << 8) | buf[pos + 1]
            if size == 0:
                self.empty += 1
                pos += 2
                continue
            if size > max_frame:
                self.oversize += 1
                avail = n - pos - 2
                if avail >= size:
                    pos += 2 + size
                    continue
                self._skip = size - avail
                pos = n
                break
            end = pos + 2 + size
            if end > n:
                break
            out.append(bytes(buf[pos + 2 : end]))
            pos = end
        if pos:
            del buf[:pos]
        self.frames += len(out)
        return out

    @staticmethod
    def frame(packet: bytes) -> bytes:
        n = len(packet)
        if n > 0xFFFF:
            raise RtpError(f"packet of {n} bytes does not fit an RFC 4571 frame")
        return _U16.pack(n) + bytes(packet)


class ReorderBuffer:
    """Puts RTP packets of one SSRC back in sequence order (16-bit wrap handled).

    ``push(pkt, now)`` returns the packets that are now in order; the first packet pushed is handed
    out at once and defines the start of the sequence. A gap is waited for at most
    ``max_delay`` seconds (measured from the arrival of the first packet after it) and at most
    ``window`` packets; then the missing packets are counted in ``lost`` and skipped. ``poll(now)``
    applies the time limit without a new packet (call it from a timer; ``deadline()`` says when).
    Duplicates are dropped (``duplicates``); packets arriving after their gap was skipped are
    dropped too (``late``). Two consecutive packets more than ``max_dropout`` ahead or
    ``max_misorder`` behind are taken as a sender restart: the buffer resynchronises (``resyncs``)
    without counting loss; a lone far packet is dropped as ``late``.
    """

    def __init__(
        self,
        window: int = 64,
        max_delay: float = 0.1,
        *,
        max_dropout: int = 3000,
        max_misorder: int = 100,
    ) -> None:
        if window < 1:
            raise ValueError("window must be >= 1")
        self.window = window
        self.max_delay = max_delay
        self.max_dropout = max(max_dropout, window)
        self.max_misorder = max(max_misorder, window)
        self._bad_pkt: RtpPacket | None = None
        self._next: int | None = None  # extended sequence number expected next
        self._pending: dict[int, tuple[RtpPacket, float]] = {}
        self._keys: list[int] = []  # sorted extended sequence numbers in _pending
        self._highest = -1
        self._skipped: deque[int] = deque(maxlen=4096)  # recently skipped (lost) numbers
        self._skipped_set: set[int] = set()
        self.received = 0
        self.lost = 0
        self.duplicates = 0
        self.reordered = 0
        self.late = 0
        self.resyncs = 0

    def __len__(self) -> int:
        return len(self._keys)

    def _extend(self, seq: int) -> int:
        assert self._next is not None
        return self._next + seq_diff(seq, self._next & 0xFFFF)

    def _remember_skipped(self, start: int, stop: int) -> None:
        for s in range(max(start, stop - self._skipped.maxlen), stop):  # type: ignore[operator]
            if len(self._skipped) == self._skipped.maxlen:
                self._skipped_set.discard(self._skipped[0])
            self._skipped.append(s)
            self._skipped_set.add(s)

    def _release_in_order(self, out: list[RtpPacket]) -> None:
        keys = self._keys
        pending = self._pending
        while keys and keys[0] == self._next:
            k = keys.pop(0)
            out.append(pending.pop(k)[0])
            self._next = k + 1

    def _skip_to_first(self, out: list[RtpPacket]) -> None:
        first = self._keys[0]
        assert self._next is not None
        if first > self._next:
            self.lost += first - self._next
            self._remember_skipped(self._next, first)
            self._next = first
        self._release_in_order(out)

    def _resync(self, pkt: RtpPacket, out: list[RtpPacket]) -> None:
        """Sender restart: hand out what is buffered, then start again at the confirming packets."""
        out.extend(self._pending[k][0] for k in self._keys)
        self._pending.clear()
        self._keys.clear()
        self._skipped.clear()
        self._skipped_set.clear()
        if self._bad_pkt is not None:
            out.append(self._bad_pkt)
            self.received += 1
            self._bad_pkt = None
        out.append(pkt)
        self.received += 1
        self.resyncs += 1
        self._next = pkt.sequence + 1
        self._highest = pkt.sequence

    def push(self, pkt: RtpPacket, now: float) -> list[RtpPacket]:
        out: list[RtpPacket] = []
        if self._next is None:
            self._next = pkt.sequence + 1
            self._highest = pkt.sequence
            self.received += 1
            out.append(pkt)
            return out
        ext = self._extend(pkt.sequence)
        delta = ext - self._next
        if delta > self.max_dropout or delta < -self.max_misorder:
            # Far away: a sender restart is confirmed by the next packet following this one.
            bad = self._bad_pkt
            if bad is not None and pkt.sequence == (bad.sequence + 1) & 0xFFFF:
                self._resync(pkt, out)
                out.extend(self.poll(now))
                return out
            if bad is not None:
                self.late += 1
            self._bad_pkt = pkt
            return self.poll(now)
        if self._bad_pkt is not None:
            self.late += 1
            self._bad_pkt = None
        if delta < 0:
            if ext in self._skipped_set:
                self.late += 1
            else:
                self.duplicates += 1
            return self.poll(now)
        if ext in self._pending:
            self.duplicates += 1
            return self.poll(now)
        self.received += 1
        if ext < self._highest:
            self.reordered += 1
        else:
            self._highest = ext
        if delta == 0 and not self._keys:
            self._next = ext + 1
            out.append(pkt)
            return out
        self._pending[ext] = (pkt, now)
        bisect.insort(self._keys, ext)
        self._release_in_order(out)
        # Window overflow: skip gaps until the span fits.
        while self._keys and self._keys[-1] - self._next >= self.window:
            self._skip_to_first(out)
        out.extend(self.poll(now))
        return out

    def deadline(self) -> float | None:
        """When the oldest gap times out (None when nothing waits)."""
        if not self._keys:
            return None
        return self._pending[self._keys[0]][1] + self.max_delay

    def poll(self, now: float) -> list[RtpPacket]:
        """Skip gaps whose first following packet has waited ``max_delay`` or more."""
        out: list[RtpPacket] = []
        while self._keys and now - self._pending[self._keys[0]][1] >= self.max_delay:
            self._skip_to_first(out)
        return out

    def flush(self) -> list[RtpPacket]:
        """Hand out everything buffered in order, counting the gaps as lost."""
        out: list[RtpPacket] = []
        while self._keys:
            self._skip_to_first(out)
        return out


class RtpStats:
    """Receiver statistics for one SSRC (RFC 3550 section 6.4.1 and appendix A.1, A.3, A.8).

    ``bytes`` and the bitrate count RTP payload octets. Jitter is reported in seconds.
    """

    MAX_DROPOUT = 3000
    MAX_MISORDER = 100

    def __init__(self, clock_rate: int = 90000, bitrate_window: float = 2.0) -> None:
        if clock_rate <= 0:
            raise ValueError("clock_rate must be positive")
        self.clock_rate = clock_rate
        self.bitrate_window = bitrate_window
        self.packets = 0
        self.bytes = 0
        self.ssrc: int | None = None
        self._jitter = 0.0  # timestamp units
        self._last_arrival: float | None = None
        self._last_ts = 0
        self._base_seq = 0
        self._max_seq = 0
        self._cycles = 0
        self._bad_seq: int | None = None
        self._received = 0  # packets counted for loss (since the last resync)
        self._window: deque[tuple[float, int]] = deque()
        self._window_bytes = 0
        self.first_arrival: float | None = None
        self.last_arrival: float | None = None

    def update(self, pkt: RtpPacket, arrival: float) -> None:
        size = len(pkt.payload)
        self.packets += 1
        self.bytes += size
        if self.first_arrival is None:
            self.first_arrival = arrival
            self.ssrc = pkt.ssrc
            self._base_seq = self._max_seq = pkt.sequence
        else:
            self._update_seq(pkt.sequence)
        self._received += 1
        self.last_arrival = arrival
        self._window.append((arrival, size))
        self._window_bytes += size
        self._trim(arrival)
        # Interarrival jitter (RFC 3550 A.8), with 32-bit timestamp wrap handled.
        if self._last_arrival is not None:
            dts = ((pkt.timestamp - self._last_ts + 0x80000000) & 0xFFFFFFFF) - 0x80000000
            d = (arrival - self._last_arrival) * self.clock_rate - dts
            self._jitter += (abs(d) - self._jitter) / 16.0
        self._last_arrival = arrival
        self._last_ts = pkt.timestamp

    def _update_seq(self, seq: int) -> None:
        udelta = (seq - self._max_seq) & 0xFFFF
        if udelta < self.MAX_DROPOUT:
            if seq < self._max_seq:
                self._cycles += 0x10000  # wrapped
            self._max_seq = seq
        elif udelta <= 0x10000 - self.MAX_MISORDER:
            # A very large jump: restart when two sequential packets confirm it.
            if self._bad_seq is not None and seq == self._bad_seq:
                self._base_seq = self._max_seq = seq
                self._cycles = 0
                self._received = 0
                self._bad_seq = None
            else:
                self._bad_seq = (seq + 1) & 0xFFFF
                self._received -= 1  # not counted until confirmed
        # else: duplicate or reordered packet, counted as received only

    def _trim(self, now: float) -> None:
        limit = now - self.bitrate_window
        w = self._window
        while w and w[0][0] <= limit:
            self._window_bytes -= w.popleft()[1]

    @property
    def jitter(self) -> float:
        """Interarrival jitter in seconds."""
        return self._jitter / self.clock_rate

    @property
    def extended_max_seq(self) -> int:
        return self._cycles + self._max_seq

    @property
    def expected(self) -> int:
        if self.first_arrival is None:
            return 0
        return self.extended_max_seq - self._base_seq + 1

    @property
    def lost(self) -> int:
        """Cumulative number of packets lost (may be negative with duplicates, RFC 3550 6.4.1)."""
        return self.expected - self._received

    @property
    def loss_fraction(self) -> float:
        expected = self.expected
        if expected <= 0:
            return 0.0
        return max(0.0, self.lost / expected)

    def bitrate(self, now: float) -> float:
        """Payload bits per second over the last ``bitrate_window`` seconds."""
        self._trim(now)
        if self.first_arrival is None:
            return 0.0
        span = min(self.bitrate_window, now - self.first_arrival)
        if span <= 0:
            return 0.0
        return self._window_bytes * 8 / span

    def snapshot(self, now: float) -> dict:
        return {
            "ssrc": self.ssrc,
            "packets": self.packets,
            "bytes": self.bytes,
            "expected": self.expected,
            "lost": self.lost,
            "loss_fraction": self.loss_fraction,
            "jitter": self.jitter,
            "bitrate": self.bitrate(now),
            "extended_max_seq": self.extended_max_seq if self.first_arrival is not None else None,
            "idle": (now - self.last_arrival) if self.last_arrival is not None else None,
        }


def packetize_ps(
    ps_bytes: bytes,
    *,
    ssrc: int,
    sequence: int,
    timestamp: int,
    payload_type: int = 96,
    mtu_payload: int = 1400,
) -> list[RtpPacket]:
    """Split one PS pack (one frame) into RTP packets sharing ``timestamp``; marker on the last.

    Sequence numbers start at ``sequence`` and wrap at 16 bits.
    """
    if mtu_payload <= 0:
        raise RtpError("mtu_payload must be positive")
    n = len(ps_bytes)
    timestamp &= 0xFFFFFFFF
    out = [
        RtpPacket(
            payload_type,
            (sequence + k) & 0xFFFF,
            timestamp,
            ssrc,
            bytes(ps_bytes[off : off + mtu_payload]),
        )
        for k, off in enumerate(range(0, n, mtu_payload))
    ]
    if out:
        out[-1].marker = True
    return out
