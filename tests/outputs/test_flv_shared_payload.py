"""The FLV payload of an access unit is made once and shared by every viewer's muxer (issue 19, goal 3): the
shared path gives exactly the bytes of the per-viewer conversion it replaced, whatever the NAL units."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from media_relay.nal import nal_type, split_annexb
from media_relay.outputs.flv import _DROP_TYPES, FlvMuxer, avcc_payload
from media_relay.types import AccessUnit


def _reference(codec: str, data: bytes) -> bytes:
    """The conversion as it was done per viewer before the payload was shared."""
    out = bytearray()
    for nal in split_annexb(data):
        if nal_type(codec, nal) in _DROP_TYPES[codec]:
            continue
        out += struct.pack(">I", len(nal)) + nal
    return bytes(out)


nal_bodies = st.lists(st.binary(min_size=1, max_size=40).filter(lambda b: b"\x00\x00" not in b), min_size=1,
                      max_size=6)


@given(st.sampled_from(["h264", "h265"]), nal_bodies, st.booleans())
def test_shared_payload_equals_the_per_viewer_conversion(codec: str, nals: list[bytes], long_codes: bool) -> None:
    start = b"\x00\x00\x00\x01" if long_codes else b"\x00\x00\x01"
    data = b"".join(start + n for n in nals)
    assert avcc_payload(codec, data) == _reference(codec, data)
    assert avcc_payload(codec, data) is avcc_payload(codec, data)  # made once
    other = bytes(bytearray(data))  # equal bytes, another object: converted on its own, same result
    assert avcc_payload(codec, other) == _reference(codec, data)


def test_two_viewers_get_the_same_tag_bytes_and_their_own_timestamps() -> None:
    sps, pps = b"\x67\x42\x00\x1e\xab", b"\x68\xce\x38\x80"
    aud, idr = b"\x09\xf0", b"\x65" + bytes(range(200))
    au = AccessUnit("video", "h264", b"\x00\x00\x00\x01" + aud + b"\x00\x00\x00\x01" + sps + b"\x00\x00\x01" + pps
                    + b"\x00\x00\x01" + idr, pts=9000, dts=9000, keyframe=True)
    a, b = FlvMuxer("h264"), FlvMuxer("h264")
    ta, tb = a.video_tag(au, 0), b.video_tag(au, 0)
    assert ta == tb
    payload = _reference("h264", au.data)
    assert aud not in ta and ta.endswith(payload + struct.pack(">I", 11 + 5 + len(payload)))
    assert ta[:1] == b"\x09" and int.from_bytes(ta[1:4], "big") == 5 + len(payload)
    assert int.from_bytes(ta[4:7], "big") == 100 and ta[11] == 0x17 and ta[12] == 1  # 100 ms, key AVC NALU
    late = FlvMuxer("h264").video_tag(au, 4500)  # a viewer that joined later: its own base, the same payload
    assert late[4:7] == (50).to_bytes(3, "big") and late[11:] == ta[11:]


async def test_units_that_came_together_go_out_in_one_chunk() -> None:
    """A viewer that wakes up for one access unit takes the others already queued (one write, one wake-up)."""
    from gbcore.ids import ChannelRef
    from media_relay.outputs.flv import flv_stream, iter_tags
    from media_relay.stream import Stream

    sps, pps = b"\x67\x42\x00\x1e\xab\xc0\x50\x1e\xd0\x80", b"\x68\xce\x38\x80"
    stream = Stream(ChannelRef("34020000001320000001", "34020000001310000001"), "udp", port=1, ssrc="0000000001")
    reader = stream.add_reader()

    def au(k: int, key: bool) -> AccessUnit:
        body = (b"\x00\x00\x00\x01" + sps + b"\x00\x00\x00\x01" + pps if key else b"") + b"\x00\x00\x00\x01" + (
            b"\x65" if key else b"\x41") + bytes([k + 1]) * 50
        return AccessUnit("video", "h264", body, pts=3600 * k, dts=3600 * k, keyframe=key)

    reader._push(au(0, True))
    gen = flv_stream(reader, framerate=25.0, audio=False)
    chunks = [await gen.__anext__()]  # header, metadata, sequence header, the first picture
    for k in range(1, 5):
        reader._push(au(k, False))
    reader._push(None)  # the end, queued with them
    chunks += [c async for c in gen]
    assert len(chunks) == 3, [len(c) for c in chunks]  # the first, the four pictures together, end of sequence
    tags = list(iter_tags(b"".join(chunks)))
    pictures = [t for t in tags if t.is_video and t.packet_type == 1]
    assert [t.timestamp for t in pictures] == [0, 40, 80, 120, 160]
    assert [t.payload[-1] for t in pictures] == [1, 2, 3, 4, 5]
