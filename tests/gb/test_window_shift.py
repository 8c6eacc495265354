"""Playback answers whose ``t=`` is the offered window shifted by whole hours (NVRs writing Beijing wall time as
if it were UTC: +28800 s) are accepted and said in the log; the two real answers in ``shared/vectors/sip``."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from sip_server.gb.invite import InviteAnswered, window_shift
from tests.gb.test_invite import CHANNEL, events, online_server, respond, sent
from tests.gb.test_server import DEV

VECTORS = Path(__file__).resolve().parents[3] / "shared" / "vectors" / "sip"


def vector_body(name: str) -> bytes:
    raw = (VECTORS / name).read_bytes()
    return raw.split(b"\r\n\r\n", 1)[1]


def test_window_shift_rules() -> None:
    offered = (1_714_804_996, 1_714_806_986)
    assert window_shift(offered, offered) == 0
    assert window_shift(offered, (offered[0] + 28800, offered[1] + 28800)) == 28800
    assert window_shift(offered, (offered[0] - 3600, offered[1] - 3600)) == -3600
    assert window_shift(offered, (offered[0] + 14 * 3600, offered[1] + 14 * 3600)) == 14 * 3600
    assert window_shift(offered, (offered[0] + 15 * 3600, offered[1] + 15 * 3600)) is None  # no such zone
    assert window_shift(offered, (offered[0] + 1800, offered[1] + 1800)) is None  # not whole hours
    assert window_shift(offered, (offered[0] + 28800, offered[1] + 28801)) is None  # not the same window
    assert window_shift(offered, (0, 0)) is None
    assert window_shift(offered, None) is None and window_shift(None, offered) is None


# The offers these answers answered (PROVENANCE.md: the answer is the offer + 28800 s).
CASES = [
    ("hikvision_nvr_playback_invite_200ok.sip", 1_714_804_996, 1_714_806_986),
    ("ezviz_x5s_nvr_playback_invite_200ok.sip", 1_591_083_900, 1_591_084_602),
]


@pytest.mark.parametrize("name,start,end", CASES)
def test_vector_answers_shifted_by_eight_hours_are_accepted(name: str, start: int, end: int) -> None:
    server = online_server()
    call_id = server.invites.invite(DEV, CHANNEL, media_ip="192.0.2.1", media_port=30002, ssrc="1000000013",
                                    transport="udp", now=1.0, session_name="Playback", start=start, end=end)
    [req] = [m for m in sent(server) if getattr(m, "method", None) == "INVITE"]
    respond(server, req, 200, vector_body(name))
    out = sent(server)
    assert not [m for m in out if getattr(m, "method", None) == "BYE"]  # not hung up
    [answered] = [e for e in events(server) if isinstance(e, InviteAnswered)]
    assert answered.call_id == call_id and answered.window_shift_s == 28800
    assert answered.sdp.time_range == (start + 28800, end + 28800)
    assert server.invites.by_call[call_id].state == "confirmed"


def test_unshifted_and_live_answers_report_no_shift() -> None:
    server = online_server()
    server.invites.invite(DEV, CHANNEL, media_ip="192.0.2.1", media_port=30002, ssrc="1000000013",
                          transport="udp", now=1.0, session_name="Playback", start=1_591_112_700, end=1_591_113_402)
    [req] = [m for m in sent(server) if getattr(m, "method", None) == "INVITE"]
    respond(server, req, 200, vector_body("ezviz_x5s_nvr_playback_invite_200ok.sip"))
    [answered] = [e for e in events(server) if isinstance(e, InviteAnswered)]
    assert answered.window_shift_s == 0
    live = online_server()
    live.invites.invite(DEV, CHANNEL, media_ip="192.0.2.1", media_port=30002, ssrc="0200000013", transport="udp",
                        now=1.0)
    [req] = [m for m in sent(live) if getattr(m, "method", None) == "INVITE"]
    respond(live, req, 200, vector_body("hikvision_nvr_playback_invite_200ok.sip"))
    [answered] = [e for e in events(live) if isinstance(e, InviteAnswered)]
    assert answered.window_shift_s is None


async def test_the_sip_service_logs_the_shift(caplog: pytest.LogCaptureFixture) -> None:
    import asyncio

    from sip_server.service import SipService
    from sip_server.sip.sdp import parse_sdp
    from tests.gb.test_server import make_server

    server = make_server()
    svc = SipService(server.config, host="127.0.0.1", port=0)
    svc.gb = server
    caplog.set_level(logging.INFO, logger="gbops.sip")
    sdp = parse_sdp(vector_body("hikvision_nvr_playback_invite_200ok.sip"))
    waiters = {c: asyncio.get_running_loop().create_future() for c in ("c1@x", "c2@x")}
    svc._invite_waiters.update(waiters)
    svc._handle(InviteAnswered("c1@x", DEV, CHANNEL, "0000002000", ("192.168.6.60", 62000), "udp", sdp, None, 28800))
    shifted = [r for r in caplog.records if r.getMessage() == "invite.window_shifted"]
    assert len(shifted) == 1
    svc._handle(InviteAnswered("c2@x", DEV, CHANNEL, "0000002000", ("192.168.6.60", 62000), "udp", sdp, None, 0))
    assert len([r for r in caplog.records if r.getMessage() == "invite.window_shifted"]) == 1
    assert all(w.done() and w.result().window_shift_s is not None for w in waiters.values())  # both accepted
