"""History signalling against the real SipService over real UDP on 127.0.0.1, with a scripted device.

The device registers (digest), answers a RecordInfo query in two MESSAGEs (the same SN, one after the
other), answers a Playback / Download INVITE with SDP (``a=filesize`` for a download), and at the end of
the file sends ``Notify/MediaStatus`` 121 inside the call; the platform answers 200 and reports it, then
BYEs when asked. Times in the query are Beijing time on a UTC host.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import UTC, datetime, timedelta

import pytest

from sip_server.gb import manscdp
from sip_server.gb.invite import InviteAnswered, MediaStatusReceived, SessionEnded
from sip_server.service import DeviceNotReachable, QueryError
from sip_server.sip import make_response, parse_name_addr
from sip_server.sip.sdp import parse_sdp
from tests.gb import test_identity_live as live
from tests.gb.test_identity_live import CHANNEL, DEV, DOMAIN, SERVER_ID, Peer, until

service = live.service  # the SipService fixture (real sockets on 127.0.0.1)

T0 = datetime(2025, 1, 1, 0, 0, tzinfo=UTC)  # 08:00 Beijing
_seq = itertools.count(500)


def record_items(n: int) -> list[manscdp.RecordItem]:
    base = datetime(2025, 1, 1, 8, 0)
    return [manscdp.RecordItem(device_id=CHANNEL, name="东门", file_path=f"/rec/{k}.ps",
                               start_time=manscdp.format_gb_time(base + timedelta(minutes=10 * k)),
                               end_time=manscdp.format_gb_time(base + timedelta(minutes=10 * k + 10)),
                               secrecy=0, type="time", file_size=1000 + k) for k in range(n)]


class HistoryDevice(Peer):
    """A GB device with recordings: RecordInfo in pages, history INVITEs answered with SDP, MediaStatus."""

    def __init__(self) -> None:
        super().__init__("udp")
        self.items = record_items(5)
        self.page_size = 3
        self.pages_to_send: int | None = None  # None: all
        self.filesize: int | None = None
        self.invites: list = []
        self.queries: list[manscdp.ManscdpMessage] = []
        self.dialogs: dict[str, tuple[str, str]] = {}  # call id -> (platform's tag, our tag)

    def _on_message(self, msg) -> None:
        if msg.is_request and msg.method == "INVITE":
            self.requests.append(msg)
            self.invites.append(msg)
            offer = parse_sdp(msg.body)
            answer = (f"v=0\r\no={CHANNEL} 0 0 IN IP4 127.0.0.1\r\ns={offer.session_name}\r\nc=IN IP4 127.0.0.1\r\n"
                      f"t={offer.time}\r\nm=video 40000 RTP/AVP 96\r\na=sendonly\r\na=rtpmap:96 PS/90000\r\n"
                      + (f"a=filesize:{self.filesize}\r\n" if self.filesize is not None else "")
                      + f"y={offer.ssrc}\r\n").encode()
            resp = make_response(msg, 200, to_tag="dev", body=answer, content_type="application/sdp")
            resp.headers.add("Contact", f"<sip:{CHANNEL}@{self.local[0]}:{self.local[1]}>")
            self.dialogs[msg.call_id] = (parse_name_addr(msg.headers.get("From")).params["tag"], "dev")
            self.send(resp.to_bytes())
            return
        if msg.is_request and msg.method == "MESSAGE":
            query = manscdp.parse(msg.body)
            if query.cmd_type == "RecordInfo":
                self.queries.append(query)
                super()._on_message(msg)  # 200 first, then the answer
                asyncio.get_running_loop().create_task(self._answer_records(query.sn))
                return
        super()._on_message(msg)

    async def _answer_records(self, sn: int) -> None:
        pages = [self.items[k:k + self.page_size] for k in range(0, len(self.items), self.page_size)] or [[]]
        if self.pages_to_send is not None:
            pages = pages[:self.pages_to_send]
        for items in pages:
            await asyncio.sleep(0.02)  # one after another, as devices do
            body = manscdp.build_record_info_response(sn, CHANNEL, len(self.items), items, name="东门")
            await self.message(body)

    async def in_call(self, call_id: str, body: bytes):
        """A MESSAGE inside the call (the dialog's Call-ID and tags), as devices send MediaStatus."""
        platform_tag, own_tag = self.dialogs[call_id]
        n = next(_seq)
        head = (f"MESSAGE sip:{SERVER_ID}@{DOMAIN} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {self.local[0]}:{self.local[1]};rport;branch=z9hG4bKms{n}\r\n"
                f"From: <sip:{CHANNEL}@{DOMAIN}>;tag={own_tag}\r\nTo: <sip:{SERVER_ID}@{DOMAIN}>;tag={platform_tag}\r\n"
                f"Call-ID: {call_id}\r\nCSeq: {n} MESSAGE\r\nContent-Type: Application/MANSCDP+xml\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        return await self.request(head + body)


async def device(s) -> HistoryDevice:
    dev = HistoryDevice()
    await dev.open(("127.0.0.1", s.svc.bound_port))
    s.peers.append(dev)
    assert (await dev.register()).status == 200
    return dev


# ------------------------------------------------------------------------------------------ RecordInfo
async def test_record_info_in_two_messages_in_beijing_time(service, utc_host):
    s = await service()
    dev = await device(s)
    result = await asyncio.wait_for(s.svc.record_info(DEV, CHANNEL, T0, T0 + timedelta(hours=2)), 5)
    [query] = dev.queries
    assert query.device_id == CHANNEL
    assert (query.get("StartTime"), query.get("EndTime")) == ("2025-01-01T08:00:00", "2025-01-01T10:00:00")
    assert query.get("Type") == "all" and query.get("Secrecy") == "0"
    assert result.complete and result.sum_num == 5 and result.messages == 2
    assert result.items == dev.items  # sorted by start, as the device reported them
    assert result.items[0].start == datetime(2025, 1, 1, 8, 0)


async def test_record_info_timeout_returns_what_arrived(service):
    s = await service(cfg={"record_query_timeout": 0.5})
    dev = await device(s)
    dev.pages_to_send = 1
    started = time.monotonic()
    result = await asyncio.wait_for(s.svc.record_info(DEV, CHANNEL, T0, T0 + timedelta(hours=2)), 5)
    assert 0.4 < time.monotonic() - started < 3
    assert not result.complete and result.sum_num == 5 and result.items == dev.items[:3] and result.messages == 1


async def test_record_info_empty_answer(service):
    s = await service()
    dev = await device(s)
    dev.items = []
    result = await asyncio.wait_for(s.svc.record_info(DEV, CHANNEL, T0, T0 + timedelta(hours=2), timeout=3), 5)
    assert result.complete and result.items == [] and result.sum_num == 0


async def test_record_info_refused_offline_and_bad_input(service):
    s = await service()
    with pytest.raises(DeviceNotReachable):
        await s.svc.record_info(DEV, CHANNEL, T0, T0 + timedelta(hours=1))
    dev = await device(s)
    with pytest.raises(ValueError):
        await s.svc.record_info(DEV, CHANNEL, T0, T0 - timedelta(hours=1))
    dev.answer = lambda req: 404 if req.method == "MESSAGE" else 200
    with pytest.raises(QueryError, match="404"):
        await asyncio.wait_for(s.svc.record_info(DEV, CHANNEL, T0, T0 + timedelta(hours=1)), 5)
    assert len(s.svc.gb.records) == 0


# ------------------------------------------------------------------------------------------ playback call
async def test_playback_ends_with_media_status_then_bye(service):
    s = await service()
    dev = await device(s)
    start, end = int(T0.timestamp()), int(T0.timestamp()) + 600
    answered = await asyncio.wait_for(
        s.svc.invite(DEV, CHANNEL, media_ip="127.0.0.1", media_port=30000, ssrc="1000000001", transport="udp",
                     session_name="Playback", start=start, end=end), 5)
    [inv] = dev.invites
    offer = parse_sdp(inv.body)
    assert (offer.session_name, offer.uri, offer.time, offer.ssrc) == ("Playback", f"{CHANNEL}:0", f"{start} {end}",
                                                                       "1000000001")
    assert answered.filesize is None and answered.ssrc == "1000000001"
    resp = await dev.in_call(answered.call_id, manscdp.build_media_status_notify(9, CHANNEL, "121"))
    assert resp.status == 200
    assert await until(lambda: any(isinstance(e, MediaStatusReceived) for e in s.events))
    [status] = [e for e in s.events if isinstance(e, MediaStatusReceived)]
    assert status == MediaStatusReceived(answered.call_id, DEV, CHANNEL, "121")
    s.svc.end_session(answered.call_id, "file ended")
    assert await until(lambda: ("BYE", None) in dev.methods())
    assert [e.by for e in s.events if isinstance(e, SessionEnded)] == ["platform"]
    # a MediaStatus for a call that is gone: 481, nothing else happens
    resp = await dev.in_call(answered.call_id, manscdp.build_media_status_notify(10, CHANNEL, "121"))
    assert resp.status == 481
    assert len([e for e in s.events if isinstance(e, MediaStatusReceived)]) == 1
    assert s.svc.gb.invites.by_call == {}


async def test_download_carries_speed_and_filesize(service):
    s = await service()
    dev = await device(s)
    dev.filesize = 734003200
    start = int(T0.timestamp())
    answered = await asyncio.wait_for(
        s.svc.invite(DEV, CHANNEL, media_ip="127.0.0.1", media_port=30002, ssrc="1000000002", transport="udp",
                     session_name="Download", start=start, end=start + 60, speed=4), 5)
    offer = parse_sdp(dev.invites[0].body)
    assert offer.session_name == "Download" and offer.video.attr("downloadspeed") == "4"
    assert isinstance(answered, InviteAnswered) and answered.filesize == 734003200
    s.svc.end_session(answered.call_id)


async def test_media_status_from_a_spoofer_is_refused(service):
    s = await service()
    dev = await device(s)
    answered = await asyncio.wait_for(
        s.svc.invite(DEV, CHANNEL, media_ip="127.0.0.1", media_port=30004, ssrc="1000000003", transport="udp",
                     session_name="Playback", start=1_700_000_000, end=1_700_000_600), 5)
    spoofer = HistoryDevice()
    await spoofer.open(("127.0.0.1", s.svc.bound_port))
    s.peers.append(spoofer)
    spoofer.dialogs = dict(dev.dialogs)  # it sniffed the Call-ID and the tags
    resp = await spoofer.in_call(answered.call_id, manscdp.build_media_status_notify(9, CHANNEL))
    assert resp.status == 403
    assert not [e for e in s.events if isinstance(e, MediaStatusReceived)]
    assert [k for k, *_ in s.security] == ["address_mismatch"]
    assert answered.call_id in s.svc.gb.invites.by_call
