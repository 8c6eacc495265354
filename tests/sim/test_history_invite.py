"""History calls of the sans-IO fleet (no sockets, fake clock): s=Playback / s=Download INVITEs, MANSRTSP
over INFO and the MediaStatus 121 MESSAGE; the parsers fuzzed with hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gbsim.records import (
    HistoryWindow,
    MansrtspError,
    PlaybackControl,
    control_for,
    parse_history,
    parse_mansrtsp,
    rtsp_response,
)
from sip_server.gb import manscdp
from sip_server.sip import SipRequest, make_response, parse_message, parse_name_addr
from tests.sim.media_fakes import in_dialog, make_invite, sdp_lines
from tests.sim.test_sim_invite import SERVER, Rig

WALL = 1_790_000_000  # the Rig's wall clock


def history_invite(channel: str, session: str, t: str, *extra: str, ssrc: str = "1200000001") -> SipRequest:
    inv = make_invite(channel, ("127.0.0.1", 6000), ("127.0.0.1", 5060), media_port=30000, session=session,
                      ssrc=ssrc, extra_sdp=(*extra, ))
    inv.body = inv.body.replace(b"t=0 0", f"t={t}".encode()).replace(
        b"c=IN IP4", f"u={channel}:0\r\nc=IN IP4".encode(), 1)
    return inv


def rtsp_info(inv, resp, cseq: int, text: str) -> SipRequest:
    req = in_dialog(inv, resp, "INFO", cseq)
    req.headers.add("Content-Type", "Application/MANSRTSP")
    req.body = text.replace("\n", "\r\n").encode()
    return req


def test_playback_invite_answered_and_controlled_then_media_status() -> None:
    rig = Rig(devices=1, channels=2)
    rig.up()
    dev = rig.fleet.devices[0]
    channel = dev.channel_ids[0]
    start, end = WALL - 7200, WALL - 7200 + 600
    inv = history_invite(channel, "Playback", f"{start} {end}")
    resp = rig.send(inv)
    assert resp is not None and resp.status == 200
    lines = sdp_lines(resp.body.decode())
    assert "s=Playback" in lines and f"t={start} {end}" in lines and "y=1200000001" in lines
    assert not any(x.startswith("a=filesize") for x in lines)
    call = dev.calls[inv.call_id]
    assert call.history == HistoryWindow("playback", start, end, 1)
    rig.send(in_dialog(inv, resp, "ACK", 20))
    assert rig.media[-1] == ("start", inv.call_id)

    # MANSRTSP: each command answered 200 with an RTSP body, and handed to the media side.
    controls = []
    for cseq, text in enumerate(("PAUSE RTSP/1.0\nCSeq: 1\nPauseTime: now\n",
                                 "PLAY RTSP/1.0\nCSeq: 2\nRange: npt=now-\n",
                                 "PLAY RTSP/1.0\nCSeq: 3\nRange: npt=30-\n",
                                 "PLAY MANSRTSP/1.0\nCSeq: 4\nScale: 4.000000\n"), start=21):
        before = len(dev.media_out) + len(rig.fleet.media_events)
        answer = rig.send(rtsp_info(inv, resp, cseq, text))
        assert answer is not None and answer.status == 200
        assert answer.body.decode().startswith("RTSP/1.0 200 OK\r\nCSeq: ")
        assert f"CSeq: {cseq - 20}" in answer.body.decode()
        assert before == 0
        controls.append(rig.media[-1])
    assert [c[0] for c in controls] == ["control"] * 4
    assert dev.stats.controls_received == 4

    # Refused: a body that is not MANSRTSP (SIP 400), a bad scale or a seek beyond the window (RTSP 400 too).
    bad = rig.send(rtsp_info(inv, resp, 30, "hello"))
    assert bad is not None and bad.status == 400
    for cseq, text in ((31, "PLAY RTSP/1.0\nCSeq: 9\nScale: 16\n"),
                       (32, f"PLAY RTSP/1.0\nCSeq: 10\nRange: npt={end - start + 5}-\n"),
                       (33, "PLAY RTSP/1.0\nCSeq: 11\nScale: -1\n"),
                       (34, "DESCRIBE RTSP/1.0\nCSeq: 12\n")):
        refused = rig.send(rtsp_info(inv, resp, cseq, text))
        assert refused is not None and refused.status == 400, text
        assert refused.body.decode().startswith("RTSP/1.0 400 ")
    assert dev.stats.controls_refused == 5 and inv.call_id in dev.calls

    # The end of the window: an in-dialog MESSAGE MediaStatus 121 from the device's side of the dialog.
    assert rig.fleet.media_finished(call, rig.now)
    out = [parse_message(data) for _i, data, _a in rig.fleet.outgoing()]
    assert len(out) == 1 and isinstance(out[0], SipRequest) and out[0].method == "MESSAGE"
    msg = out[0]
    assert msg.call_id == inv.call_id
    assert parse_name_addr(msg.headers.get("From")).params.get("tag") == resp.to_tag
    assert msg.headers.get("To") == inv.headers.get("From")
    assert msg.uri == str(parse_name_addr(inv.headers.get("Contact")).uri)
    assert msg.cseq[1] == "MESSAGE"
    body = manscdp.parse(msg.body)
    assert body.root == "Notify" and body.cmd_type == "MediaStatus" and body.get("NotifyType") == "121"
    assert body.device_id == channel
    rig.fleet.receive(0, make_response(msg, 200).to_bytes(), SERVER, rig.now)
    assert not rig.fleet.media_finished(call, rig.now)  # once only
    bye = rig.send(in_dialog(inv, resp, "BYE", 40))
    assert bye is not None and bye.status == 200 and rig.media[-1] == ("stop", inv.call_id)


def test_download_answers_filesize_and_speed() -> None:
    rig = Rig(devices=1, channels=1, bitrate=800_000)
    rig.up()
    dev = rig.fleet.devices[0]
    channel = dev.channel_ids[0]
    start = WALL - 3 * 3600
    inv = history_invite(channel, "Download", f"{start} {start + 120}", "a=downloadspeed:4")
    resp = rig.send(inv)
    assert resp is not None and resp.status == 200
    lines = sdp_lines(resp.body.decode())
    assert "s=Download" in lines and f"a=filesize:{120 * 800_000 // 8}" in lines
    assert dev.calls[inv.call_id].history == HistoryWindow("download", start, start + 120, 4)


@pytest.mark.parametrize(("t", "extra"), [
    ("0 0", ()), ("1790000000 1789999000", ()), ("1790000000 1790000000", ()), ("abc def", ()),
    ("1790000000", ()), ("-5 10", ()),
])
def test_bad_windows_are_refused_with_488(t: str, extra: tuple[str, ...]) -> None:
    rig = Rig(devices=1, channels=1)
    rig.up()
    channel = rig.fleet.devices[0].channel_ids[0]
    resp = rig.send(history_invite(channel, "Playback", t, *extra))
    assert resp is not None and resp.status == 488
    bad_speed = rig.send(history_invite(channel, "Download", "1789990000 1789990060", "a=downloadspeed:x"))
    assert bad_speed is not None and bad_speed.status == 488
    assert rig.fleet.calls == 0 and not [m for m in rig.media if m[0] == "prepare"]


@pytest.mark.parametrize("status", [488, 486])
def test_refuse_history_option(status: int) -> None:
    rig = Rig(devices=1, channels=1, refuse_history=status)
    rig.up()
    channel = rig.fleet.devices[0].channel_ids[0]
    resp = rig.send(history_invite(channel, "Playback", f"{WALL - 600} {WALL - 60}"))
    assert resp is not None and resp.status == status
    live, _ = rig.invite(channel)  # live view is not affected
    assert rig.fleet.calls == 1


def test_live_info_and_media_status_for_live_calls() -> None:
    rig = Rig(devices=1, channels=1)
    rig.up()
    channel = rig.fleet.devices[0].channel_ids[0]
    inv, resp = rig.invite(channel)
    assert resp is not None and resp.status == 200
    rig.send(in_dialog(inv, resp, "ACK", 20))
    info = rig.send(rtsp_info(inv, resp, 21, "PAUSE RTSP/1.0\nCSeq: 1\n"))
    assert info is not None and info.status == 200  # as before: nothing to control in live view
    assert not rig.fleet.media_finished(rig.fleet.devices[0].calls[inv.call_id], rig.now)


def test_control_for_and_rtsp_response() -> None:
    w = HistoryWindow("playback", 1000, 1600)
    parse = parse_mansrtsp
    assert control_for(parse(b"PAUSE RTSP/1.0\r\nCSeq: 1\r\nPauseTime: now\r\n\r\n"), w) == PlaybackControl("pause")
    assert control_for(parse(b"PLAY RTSP/1.0\r\nCSeq: 2\r\nRange: npt=now-\r\n"), w) == PlaybackControl("resume")
    assert control_for(parse(b"PLAY RTSP/1.0\r\nCSeq: 3\r\nRange: npt=100.5-\r\n"), w) == \
        PlaybackControl("seek", position=100.5)
    assert control_for(parse(b"PLAY RTSP/1.0\r\nCSeq: 3\r\nRange: npt=0-600\r\nScale: 2\r\n"), w) == \
        PlaybackControl("seek", position=0.0, scale=2.0)
    assert control_for(parse(b"PLAY RTSP/1.0\r\nCSeq: 4\r\nScale: 0.25\r\n"), w) == PlaybackControl("scale", scale=0.25)
    assert control_for(parse(b"PLAY RTSP/1.0\r\nCSeq: 4\r\n"), w) == PlaybackControl("resume")
    assert control_for(parse(b"TEARDOWN RTSP/1.0\r\nCSeq: 5\r\n"), w) == PlaybackControl("teardown")
    for bad in (b"PLAY RTSP/1.0\r\nCSeq: 1\r\nScale: nan\r\n", b"PLAY RTSP/1.0\r\nCSeq: 1\r\nScale: 0.1\r\n",
                b"PLAY RTSP/1.0\r\nCSeq: 1\r\nRange: clock=20250101T000000Z-\r\n",
                b"PLAY RTSP/1.0\r\nCSeq: 1\r\nRange: npt=601-\r\n"):
        with pytest.raises(ValueError):
            control_for(parse(bad), w)
    for bad in (b"", b"PLAY RTSP/1.0\r\n", b"PLAY HTTP/1.1\r\nCSeq: 1\r\n", b"PLAY RTSP/1.0\r\nCSeq: x\r\n",
                b"\xff\xfe", b"PLAY RTSP/1.0\r\nno colon\r\nCSeq: 1\r\n", b"x" * 5000):
        with pytest.raises(MansrtspError):
            parse(bad)
    assert rtsp_response(7) == b"RTSP/1.0 200 OK\r\nCSeq: 7\r\n\r\n"
    assert parse_history("Playback", "1 2", []) == HistoryWindow("playback", 1, 2, 1)
    assert parse_history("download", " 10  20 ", [("downloadspeed", "8")]).speed == 8
    with pytest.raises(ValueError):
        parse_history("Play", "1 2", [])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_mansrtsp_parser_fuzz(body: bytes) -> None:
    w = HistoryWindow("playback", 1000, 1600)
    try:
        cmd = parse_mansrtsp(body)
    except MansrtspError:
        return
    try:
        ctl = control_for(cmd, w)
    except ValueError:
        return
    assert ctl.action in ("pause", "resume", "seek", "scale", "teardown")
    if ctl.position is not None:
        assert 0 <= ctl.position <= w.seconds
    if ctl.scale is not None:
        assert 0.25 <= ctl.scale <= 8


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40), st.lists(st.tuples(st.sampled_from(["downloadspeed", "DownloadSpeed", "x"]),
                                                st.one_of(st.none(), st.text(max_size=6)))))
def test_history_window_parser_fuzz(timing: str, attrs) -> None:
    try:
        w = parse_history("Download", timing, attrs)
    except ValueError:
        return
    assert 0 < w.start < w.end and 1 <= w.speed <= 32
