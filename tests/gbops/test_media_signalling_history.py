"""The assembly's adapter for history calls: HistoryRequest in, s=Playback / s=Download out; a=filesize into
InviteAnswer; the device's MediaStatus 121 out as media_relay.signalling.MediaFileEnded (real SipService,
real UDP, the scripted device of tests/gb/test_history_live.py)."""

from __future__ import annotations

import asyncio

import pytest

from gbcore.ids import ChannelRef
from gbops.media_signalling import SipSignalling, history_keywords
from media_relay.signalling import DeviceRefused, HistoryRequest, InviteAnswer, MediaFileEnded, SessionEnded
from sip_server.gb import manscdp
from sip_server.sip import make_response
from sip_server.sip.sdp import parse_sdp
from tests.gb import test_identity_live as live
from tests.gb.test_history_live import device
from tests.gb.test_identity_live import CHANNEL, DEV, until

service = live.service  # the SipService fixture (real sockets on 127.0.0.1)

START = 1_735_689_600


def test_history_keywords():
    assert history_keywords(None) == {}
    assert history_keywords(HistoryRequest("playback", START, START + 60, speed=4)) == {
        "session_name": "Playback", "start": START, "end": START + 60, "speed": None}
    assert history_keywords(HistoryRequest("download", START, START + 60, speed=8)) == {
        "session_name": "Download", "start": START, "end": START + 60, "speed": 8}
    with pytest.raises(ValueError, match=" / "):
        history_keywords(HistoryRequest("rewind", START, START + 60))


async def test_download_through_the_port(service):
    s = await service()
    dev = await device(s)
    dev.filesize = 123456
    signalling = SipSignalling(s.svc)
    seen: list = []
    signalling.subscribe(seen.append)
    answer = await asyncio.wait_for(signalling.invite(
        ChannelRef(DEV, CHANNEL), media_ip="127.0.0.1", media_port=30010, ssrc="1000000010", transport="udp",
        history=HistoryRequest("download", START, START + 60, speed=4)), 5)
    assert isinstance(answer, InviteAnswer) and answer.filesize == 123456 and answer.ssrc == "1000000010"
    offer = parse_sdp(dev.invites[0].body)
    assert offer.session_name == "Download" and offer.time == f"{START} {START + 60}"
    assert offer.video.attr("downloadspeed") == "4" and offer.uri == f"{CHANNEL}:0"

    assert (await dev.in_call(answer.call_id, manscdp.build_media_status_notify(3, CHANNEL))).status == 200
    assert await until(lambda: seen)
    assert seen == [MediaFileEnded(answer.call_id, ChannelRef(DEV, CHANNEL), "121")]
    signalling.bye(answer.call_id, "file ended")
    assert await until(lambda: ("BYE", None) in dev.methods())
    assert [type(e) for e in seen] == [MediaFileEnded, SessionEnded]


async def test_playback_and_live_through_the_port(service):
    s = await service()
    dev = await device(s)
    signalling = SipSignalling(s.svc)
    answer = await asyncio.wait_for(signalling.invite(
        ChannelRef(DEV, CHANNEL), media_ip="127.0.0.1", media_port=30012, ssrc="1000000011", transport="udp",
        history=HistoryRequest("playback", START, START + 600, speed=4)), 5)
    offer = parse_sdp(dev.invites[0].body)
    assert offer.session_name == "Playback" and offer.video.attr("downloadspeed") is None
    assert answer.filesize is None
    live = await asyncio.wait_for(signalling.invite(
        ChannelRef(DEV, CHANNEL), media_ip="127.0.0.1", media_port=30014, ssrc="0000000012", transport="udp"), 5)
    offer = parse_sdp(dev.invites[1].body)
    assert offer.session_name == "Play" and offer.time == "0 0" and live.call_id != answer.call_id


async def test_refused_history_call_is_a_device_refusal(service):
    s = await service()
    dev = await device(s)

    def refuse(msg):
        dev.send(make_response(msg, 488, to_tag="dev").to_bytes())

    dev._on_message = lambda msg, orig=dev._on_message: (refuse(msg) if msg.is_request and msg.method == "INVITE"
                                                          else orig(msg))
    with pytest.raises(DeviceRefused) as err:
        await asyncio.wait_for(SipSignalling(s.svc).invite(
            ChannelRef(DEV, CHANNEL), media_ip="127.0.0.1", media_port=30016, ssrc="1000000013", transport="udp",
            history=HistoryRequest("playback", START, START + 600)), 5)
    assert err.value.status == 488
    assert s.svc.gb.invites.by_call == {}
