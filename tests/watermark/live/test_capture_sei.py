"""The simulator's capture-time SEI survives the watermark re-encode; no other device SEI does."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gbcore.ids import ChannelRef
from gbsim.media import LATENCY_SEI_UUID, build_latency_sei, insert_sei, read_latency_sei
from media_relay.nal import (
    H264_SEI,
    START_CODE,
    escape_rbsp,
    nal_type,
    sei_payloads,
    split_annexb,
    unescape_rbsp,
    user_data_sei,
)
from media_relay.stream import Stream
from media_relay.types import AccessUnit
from tests.outputs._media import encode_access_units
from watermark.pipeline import CAPTURE_SEI_MAX_DIGITS, capture_sei, session_code
from watermark.render import WatermarkText
from watermark.tag import SESSION_TAG_UUID, SessionTag, find_tags

NOW = 1_790_000_000.0
T0 = 1_790_000_000_000
FRAMES = 30
TEXT = WatermarkText(display_name="张三", account="zhangsan", client_ip="10.1.2.3",
                     session_code=session_code("session-sei"))
TAG = SessionTag("session-sei", 7, "34020000001320000001", T0)
HOSTILE_UUID = bytes.fromhex("0badc0de0badc0de0badc0de0badc0de")


def sei_nal(codec: str, messages: list[tuple[int, bytes]]) -> bytes:
    """One SEI NAL unit (start code included) holding ``messages`` (payload type, payload) in order."""
    body = b""
    for ptype, payload in messages:
        n = len(payload)
        body += bytes([ptype]) + b"\xff" * (n // 255) + bytes([n % 255]) + payload
    header = b"\x06" if codec == "h264" else b"\x4e\x01"
    return START_CODE + header + escape_rbsp(body + b"\x80")


def user_data_uuids(data: bytes) -> list[bytes]:
    """The UUIDs of every ``user_data_unregistered`` message of an H.264 access unit."""
    out = []
    for nal in split_annexb(data):
        if nal and nal_type("h264", nal) == H264_SEI:
            out += [p[:16] for t, p in sei_payloads(unescape_rbsp(nal[1:])) if t == 5]
    return out


def with_sei(au: AccessUnit, *nals: bytes) -> AccessUnit:
    data = au.data
    for nal in nals:
        data = insert_sei(data, nal, au.codec)
    return replace(au, data=data)


@pytest.mark.parametrize(("codec", "bframes"), [("h264", 2), ("h265", 0)])
async def test_watermarked_output_carries_the_capture_time_of_its_picture_and_no_other_sei(hub, codec, bframes):
    src = encode_access_units(codec, frames=FRAMES, width=320, height=240, gop=10, bframes=bframes)
    expected: dict[int, int] = {}
    fed: list[AccessUnit] = []
    for i, au in enumerate(src):
        if i % 3 == 0:  # the simulator's capture time (every third picture, so a wrong match shows)
            expected[au.pts] = T0 + 40 * i
            au = with_sei(au, build_latency_sei(codec, T0 + 40 * i))
        elif i % 3 == 1:  # a hostile device: its own UUID, the latency UUID with junk or too long, mixed
            au = with_sei(au,
                          sei_nal(codec, [(5, HOSTILE_UUID + b"1790000000000")]),
                          sei_nal(codec, [(5, LATENCY_SEI_UUID + b"12<script>")]),
                          sei_nal(codec, [(5, LATENCY_SEI_UUID + b"9" * (CAPTURE_SEI_MAX_DIGITS + 1))]),
                          sei_nal(codec, [(5, HOSTILE_UUID + b"x" * 300), (4, b"\xb5\x00\x31")]))
        else:  # one SEI NAL with a hostile message before a valid capture time: only the latter is carried
            expected[au.pts] = T0 + 40 * i
            au = with_sei(au, sei_nal(codec, [(5, HOSTILE_UUID + b"42"),
                                              (5, LATENCY_SEI_UUID + str(T0 + 40 * i).encode())]))
        fed.append(au)
    assert len(expected) == 20

    stream = Stream(ChannelRef("34020000001180000001", "34020000001320000001"), "udp", port=0, ssrc="0")
    viewer = hub.viewer(stream, text=TEXT, tag=TAG, clock=lambda: NOW, max_frames=FRAMES + 5)

    async def feed() -> None:
        for au in fed:
            stream._on_au(au)
            await asyncio.sleep(0.004)
        await asyncio.sleep(0.3)
        stream.close("end of test media")

    out, _ = await asyncio.wait_for(asyncio.gather(_collect(viewer), feed()), 60)
    await viewer.aclose()
    # (a decoder with B-frames keeps its last pictures: the stream ends without a flush)
    assert FRAMES - bframes <= len(out) <= FRAMES and all(au.codec == "h264" for au in out)
    assert {au.pts for au in out} <= {au.pts for au in src}
    assert sum(au.pts in expected for au in out) >= len(expected) - bframes

    # each picture's capture time, on the access unit of that very picture (matched by pts), and no other
    assert {au.pts: read_latency_sei(au.data, "h264") for au in out} == {
        au.pts: expected.get(au.pts) for au in out}
    for au in out:
        if au.pts in expected:  # byte for byte the simulator's own SEI NAL
            assert build_latency_sei("h264", expected[au.pts]) in au.data
        uuids = user_data_uuids(au.data)
        assert HOSTILE_UUID not in au.data and b"<script>" not in au.data
        assert uuids.count(LATENCY_SEI_UUID) == (au.pts in expected)
        assert set(uuids) <= {LATENCY_SEI_UUID, SESSION_TAG_UUID, X264_INFO_UUID}
        # the session tag is still there, signed, on keyframes
        assert bool(find_tags(au.data, "h264", hub.key)) == au.keyframe


#: libx264 writes its version and options as one user data SEI in the first keyframe.
X264_INFO_UUID = bytes.fromhex("dc45e9bde6d948b7962cd820d923eeef")


async def _collect(source) -> list[AccessUnit]:
    return [au async for au in source]


def test_h264_capture_sei_is_the_simulators_nal_byte_for_byte_and_h265_is_rewrapped():
    for codec in ("h264", "h265"):
        au = encode_access_units(codec, frames=1)[0]
        au = with_sei(au, build_latency_sei(codec, T0))
        assert capture_sei(au) == build_latency_sei("h264", T0)[4:]
    plain = encode_access_units("h264", frames=1)[0]
    assert capture_sei(plain) is None
    assert capture_sei(replace(plain, kind="audio", data=build_latency_sei("h264", T0))) is None


@settings(max_examples=200, deadline=None)
@given(messages=st.lists(st.tuples(st.sampled_from([4, 5, 5, 5, 6]),
                                   st.one_of(st.binary(max_size=64),
                                             st.binary(max_size=40).map(lambda b: LATENCY_SEI_UUID + b),
                                             st.integers(0, 10**22).map(lambda n: LATENCY_SEI_UUID + str(n).encode()))),
                         max_size=4),
       codec=st.sampled_from(["h264", "h265"]))
def test_capture_sei_carries_only_a_bounded_latency_message(messages, codec):
    au = AccessUnit("video", codec, sei_nal(codec, messages) + START_CODE + b"\x65\x88\x84", 0, 0, True)
    got = capture_sei(au)
    valid = [p for t, p in messages if t == 5 and p[:16] == LATENCY_SEI_UUID
             and 0 < len(p) - 16 <= CAPTURE_SEI_MAX_DIGITS and p[16:].isdigit()]
    if not valid:
        assert got is None
    else:  # the first valid one, alone in its own H.264 SEI NAL
        assert got == user_data_sei("h264", valid[0])
        assert [p for _t, p in sei_payloads(unescape_rbsp(got[1:]))] == [valid[0]]
