"""Main and sub-stream (issue 18): the SDP forms a live INVITE names the stream in, the SIP adapter's choice of
form per device, the stream manager's one upstream per (channel, stream), and the watermark encoders counted in
main-stream encoders so that a wall switched to sub-streams fits where its main streams did not."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gbcore.ids import ChannelRef
from gbops.media_signalling import SipSignalling
from media_relay.signalling import InviteAnswer, SessionEnded, StreamNotOffered
from media_relay.stream import MediaError
from sip_server.sip.sdp import STREAM_FORMS, build_offer, gb_offer, offered_stream, parse_sdp
from tests.media.fake_signalling import FakeSignalling
from tests.media.test_signalling_port import DEV, manager, udp_device
from watermark.pipeline import EncoderSlots

CHANNEL = ChannelRef(DEV, "34020000001310000001")


# ------------------------------------------------------------------------------------- SDP
@pytest.mark.parametrize("form", STREAM_FORMS)
@pytest.mark.parametrize("number", [0, 1])
def test_the_offer_names_the_stream_in_the_form_given(form: str, number: int) -> None:
    body = build_offer(origin_id="34020000002000000001", ip="192.0.2.10", port=30000, ssrc="0100000001",
                       stream=(form, number)).decode()
    lines = body.split("\r\n")
    assert f"a={form}:{number}" in lines
    assert sum(1 for line in lines if line.split(":")[0] in {f"a={f}" for f in STREAM_FORMS}) == 1
    # a media-level attribute, after the rtpmaps, before y= (devices read it with the m=video section)
    assert lines.index(f"a={form}:{number}") > lines.index("m=video 30000 RTP/AVP 96 98 97")
    assert lines.index(f"a={form}:{number}") < next(i for i, line in enumerate(lines) if line.startswith("y="))
    assert offered_stream(parse_sdp(body)) == number


def test_no_stream_named_without_a_form_and_bad_forms_refused() -> None:
    body = build_offer(origin_id="34020000002000000001", ip="192.0.2.10", port=30000, ssrc="0100000001")
    assert b"stream" not in body and offered_stream(parse_sdp(body)) is None
    for bad in [("streamid", 1), ("streamnumber", -1), ("streamnumber", 10), ("stream", "1")]:
        with pytest.raises(ValueError):
            gb_offer(origin_id="x", ip="192.0.2.10", port=30000, ssrc="0100000001", stream=bad)  # type: ignore[arg-type]


@given(st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=12))
def test_offered_stream_never_raises_on_what_a_peer_writes(value: str) -> None:
    clean = value  # one line
    body = ("v=0\r\no=x 0 0 IN IP4 192.0.2.1\r\ns=Play\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
            f"m=video 30000 RTP/AVP 96\r\na=rtpmap:96 PS/90000\r\na=streamnumber:{clean}\r\n")
    got = offered_stream(parse_sdp(body))
    number = clean.strip()
    if number.isascii() and number.isdigit() and len(number) <= 2:
        assert got == int(number)
    else:
        assert got is None


# ------------------------------------------------------------------------------------- the SIP adapter
class _Sip:
    """A SipService double recording the keywords of ``invite``."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def invite(self, device_id: str, channel_id: str, **kw: Any) -> Any:
        self.calls.append(kw)
        return SimpleNamespace(call_id="c1@x", ssrc=kw["ssrc"], remote_media=None, transport=kw["transport"],
                               filesize=None)


async def _invite(signalling: SipSignalling, stream: str) -> None:
    await signalling.invite(CHANNEL, media_ip="192.0.2.10", media_port=30000, ssrc="0100000001", transport="udp",
                            stream=stream)


@pytest.mark.parametrize("form", STREAM_FORMS)
async def test_the_adapter_asks_in_the_devices_own_form(form: str) -> None:
    sip = _Sip()
    asked: list[str] = []

    async def stream_form(device_id: str) -> str:
        asked.append(device_id)
        return form

    signalling = SipSignalling(sip, stream_form=stream_form)  # type: ignore[arg-type]
    await _invite(signalling, "sub")
    await _invite(signalling, "main")
    assert [c["stream"] for c in sip.calls] == [(form, 1), (form, 0)]
    assert asked == [DEV, DEV]


async def test_a_device_without_a_form_gets_main_plainly_and_no_sub() -> None:
    sip = _Sip()
    forms = {DEV: "none"}

    async def stream_form(device_id: str) -> str | None:
        return forms.get(device_id)

    signalling = SipSignalling(sip, stream_form=stream_form)  # type: ignore[arg-type]
    await _invite(signalling, "main")
    assert "stream" not in sip.calls[0]
    with pytest.raises(StreamNotOffered) as caught:
        await _invite(signalling, "sub")
    assert "子码流" in str(caught.value) and len(sip.calls) == 1  # nothing went to the device
    forms.clear()  # a device the registry does not know: the same
    with pytest.raises(StreamNotOffered):
        await _invite(signalling, "sub")


async def test_a_history_call_names_no_stream() -> None:
    from media_relay.signalling import HistoryRequest

    sip = _Sip()

    async def stream_form(device_id: str) -> str:
        return "streamnumber"

    signalling = SipSignalling(sip, stream_form=stream_form)  # type: ignore[arg-type]
    await signalling.invite(CHANNEL, media_ip="192.0.2.10", media_port=30000, ssrc="1100000001", transport="udp",
                            history=HistoryRequest("playback", 1_700_000_000, 1_700_000_600))
    assert "stream" not in sip.calls[0] and sip.calls[0]["session_name"] == "Playback"


# ------------------------------------------------------------------------------------- the stream manager
@pytest.fixture
def ps(shared_dir) -> bytes:
    return (shared_dir / "vectors" / "ps" / "zlm_h264_aac.ps").read_bytes()


async def test_main_and_sub_are_two_upstreams_of_one_channel(ps) -> None:
    tasks: set[asyncio.Task] = set()
    signalling = FakeSignalling({DEV})
    plain = udp_device(ps, tasks)

    async def on_invite(channel: ChannelRef, **kw: Any) -> InviteAnswer:
        return await plain(channel, **kw)

    signalling.on_invite = on_invite
    mgr = manager(signalling, idle_timeout=0.1)
    try:
        main = await asyncio.wait_for(mgr.open_reader(CHANNEL), 10)
        sub = await asyncio.wait_for(mgr.open_reader(CHANNEL, "udp", "sub"), 10)
        again = await asyncio.wait_for(mgr.open_reader(CHANNEL, "udp", "sub"), 10)
        assert main.stream is not sub.stream and again.stream is sub.stream  # the sub-stream is shared too
        assert (main.stream.stream, sub.stream.stream) == ("main", "sub")
        assert [offer.get("stream") for _, offer in signalling.invites] == [None, "sub"]  # main names none
        assert {(i["channel_id"], i["stream"]) for i in mgr.describe()} == {(CHANNEL.channel_id, "main"),
                                                                          (CHANNEL.channel_id, "sub")}
        # the device hanging up the sub-stream's call ends that upstream only
        signalling.emit(SessionEnded(sub.stream.call_id, CHANNEL, "device", "BYE from the device"))
        assert sub.stream.closed and not main.stream.closed
        assert mgr.live(CHANNEL, "sub") is None and mgr.live(CHANNEL) is main.stream
        with pytest.raises(MediaError) as caught:
            await mgr.open_reader(CHANNEL, "udp", "third")
        assert caught.value.code == "bad_stream"
    finally:
        mgr.close_all()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_device_without_a_sub_stream_is_refused_in_words() -> None:
    signalling = FakeSignalling({DEV})
    signalling.no_sub.add(DEV)
    mgr = manager(signalling)
    try:
        with pytest.raises(MediaError) as caught:
            await mgr.open_reader(CHANNEL, "udp", "sub")
        assert caught.value.code == "no_sub_stream" and "子码流" in str(caught.value)
        assert not mgr.streams and mgr.ports.in_use() == 0  # nothing held
    finally:
        mgr.close_all()


# ------------------------------------------------------------------------------------- watermark encoders
def test_sub_stream_viewers_cost_their_share_of_an_encoder() -> None:
    slots = EncoderSlots(2)
    a, b = slots.reserve(), slots.reserve()
    assert a is not None and b is not None and slots.reserve() is None and slots.reserve(0.25) is None
    a.release()
    subs = [slots.reserve(0.25) for _ in range(4)]
    assert all(s is not None for s in subs) and slots.reserve(0.25) is None
    assert slots.in_use == 2 and slots.viewers == 5
    for s in subs:
        s.release()
        s.release()  # idempotent
    assert slots.in_use == 1 and slots.viewers == 1 and slots.free == 1
