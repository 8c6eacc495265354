"""The sans-IO simulated device against a scripted platform, under a fake clock."""

from __future__ import annotations

import random
from datetime import datetime

import pytest

from gbsim import SimConfig, SimDevice
from gbsim.device import REGISTERED, STOPPED, WAITING, channel_name
from sip_server.gb import manscdp
from sip_server.sip import DigestAuthenticator, SipRequest, make_response, parse_auth_params
from tests.sim.fakes import PASSWORD, REALM, StubPlatform

LOCAL = ("127.0.0.1", 5071)
WALL = 1_790_000_000.0  # a fixed wall clock


def cfg(**kw) -> SimConfig:
    base = dict(server=("127.0.0.1", 5060), devices=1, channels=4, password=PASSWORD, keepalive=5.0,
                expires=100, seed=1)
    base.update(kw)
    return SimConfig(**base)


def device(index: int = 0, **kw) -> SimDevice:
    return SimDevice(cfg(**kw), index, rng=random.Random(7), wall=lambda: WALL)


def take(dev: SimDevice) -> list[tuple[str, SipRequest]]:
    out, dev.out = dev.out, []
    return out


def take_one(dev: SimDevice, purpose: str | None = None) -> SipRequest:
    out = take(dev)
    assert len(out) == 1, out
    if purpose is not None:
        assert out[0][0] == purpose
    return out[0][1]


def register(dev: SimDevice, platform: StubPlatform, now: float = 0.0, *, attach: bool = True) -> None:
    """Drive a full REGISTER / 401 / REGISTER / 200 exchange."""
    if attach:
        dev.attach(LOCAL, now)
    dev.handle_timer(now)
    first = take_one(dev)
    dev.on_response("register", platform.on_request(first, LOCAL, now, "udp"), now)
    second = take_one(dev, "register")
    dev.on_response("register", platform.on_request(second, LOCAL, now, "udp"), now)
    assert dev.registered


# ------------------------------------------------------------------------------------------ identities
def test_device_and_channel_ids() -> None:
    nvr = cfg(devices=3, channels=4, first_id="34020000001180000001")
    assert nvr.device_ids() == ["34020000001180000001", "34020000001180000002", "34020000001180000003"]
    assert nvr.channel_ids(0) == [f"3402000000131{n:07d}" for n in range(1, 5)]
    assert nvr.channel_ids(2) == [f"3402000000131{n:07d}" for n in range(9, 13)]
    ipc = cfg(devices=2, channels=1, first_id="34020000001180000100")
    assert ipc.device_ids() == ["34020000001320000100", "34020000001320000101"]
    assert ipc.channel_ids(1) == ["34020000001310000101"]
    forced = cfg(devices=1, channels=1, device_type="118")
    assert forced.device_ids()[0][10:13] == "118"
    all_channels = [c for i in range(3) for c in nvr.channel_ids(i)]
    assert len(set(all_channels)) == len(all_channels)


@pytest.mark.parametrize("bad", [
    dict(transport="sctp"), dict(charset="latin-1"), dict(first_id="123"), dict(devices=0),
    dict(keepalive=0), dict(server=("127.0.0.1", 0)), dict(first_id="34020000001189999999", devices=2),
])
def test_config_rejects_nonsense(bad: dict) -> None:
    with pytest.raises(ValueError):
        cfg(**bad)


def test_channel_names_are_chinese_and_gb2312_safe() -> None:
    names = {channel_name(i, k, 8) for i in range(20) for k in range(8)}
    assert "东门入口 1号" in names
    assert any(n.startswith("大华1.") and "通道3" in n for n in names)
    for n in names:
        n.encode("gb2312")


# ------------------------------------------------------------------------------------------ register
@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_register_challenge_then_ok(algorithm: str) -> None:
    platform = StubPlatform(algorithm=algorithm)
    dev = device()
    dev.attach(LOCAL, 0.0, delay=0.5)
    dev.handle_timer(0.4)
    assert take(dev) == []
    assert dev.wakeup == 0.5
    dev.handle_timer(0.5)
    first = take_one(dev, "register")
    assert first.method == "REGISTER"
    assert "Authorization" not in first.headers
    assert first.headers.get("Expires") == "100"
    assert first.headers.get("Contact") == f"<sip:{dev.device_id}@127.0.0.1:5071>"
    assert first.headers.get("Via").startswith("SIP/2.0/UDP 127.0.0.1:5071;rport;branch=z9hG4bK")
    assert first.uri == "sip:34020000002000000001@3402000000"

    challenge = platform.on_request(first, LOCAL, 0.5, "udp")
    assert challenge.status == 401
    dev.on_response("register", challenge, 0.5)
    second = take_one(dev, "register")
    assert second.call_id == first.call_id
    assert second.from_tag == first.from_tag
    assert second.cseq[0] == first.cseq[0] + 1
    scheme, params = parse_auth_params(second.headers.get("Authorization"))
    assert scheme == "Digest"
    assert params["username"] == dev.device_id
    assert params["algorithm"] == algorithm
    assert params["qop"] == "auth" and params["nc"] == "00000001" and params["cnonce"]
    assert params["uri"] == second.uri

    ok = platform.on_request(second, LOCAL, 0.6, "udp")
    assert ok.status == 200
    dev.on_response("register", ok, 0.6)
    assert dev.registered and dev.state == REGISTERED and not dev.failed
    assert dev.server_date == "2026-11-21T13:50:00.123"
    assert dev.granted_expires == 100
    assert dev.refresh_at == pytest.approx(0.6 + 80)
    assert dev.keepalive_at is not None and 0.6 <= dev.keepalive_at <= 0.6 + 2.0
    assert platform.registered.keys() == {dev.device_id}


def test_challenge_without_qop_and_407() -> None:
    dev = device()
    dev.attach(LOCAL, 0.0)
    dev.handle_timer(0.0)
    req = take_one(dev)
    resp = make_response(req, 407, headers=[("Proxy-Authenticate", 'Digest realm="3402000000", nonce="abc"')])
    dev.on_response("register", resp, 0.1)
    again = take_one(dev)
    _, params = parse_auth_params(again.headers.get("Proxy-Authorization"))
    assert "qop" not in params and params["algorithm"] == "MD5" and params["nonce"] == "abc"


def test_date_header_sets_device_time() -> None:
    platform = StubPlatform()
    dev = device()
    register(dev, platform)
    # The stub's Date is 2026-11-21T13:50:00.123 (local time): DeviceTime follows it, not our wall clock.
    assert dev.device_time().replace(microsecond=0) == datetime(2026, 11, 21, 13, 50, 0)


def test_reregisters_at_80_percent_of_expires() -> None:
    platform = StubPlatform()
    dev = device(keepalive=1000.0)
    register(dev, platform, now=10.0)
    take(dev)
    for t in (20.0, 50.0, 89.9):
        dev.handle_timer(t)
        assert [p for p, _ in take(dev) if p != "keepalive"] == []
    dev.handle_timer(90.0)
    refresh = take_one(dev, "refresh")
    assert refresh.headers.get("Expires") == "100"
    assert "Authorization" not in refresh.headers
    dev.on_response("refresh", platform.on_request(refresh, LOCAL, 90.0, "udp"), 90.0)
    authed = take_one(dev, "refresh")
    assert authed.call_id == refresh.call_id and authed.cseq[0] == refresh.cseq[0] + 1
    assert dev.registered  # still registered while the refresh runs
    dev.on_response("refresh", platform.on_request(authed, LOCAL, 90.1, "udp"), 90.1)
    assert dev.registered and dev.refresh_at == pytest.approx(170.1)


def test_granted_expires_wins_and_423() -> None:
    platform = StubPlatform(expires_cap=50)
    dev = device(expires=3600, keepalive=1000.0)
    register(dev, platform)
    assert dev.granted_expires == 50 and dev.refresh_at == pytest.approx(40.0)

    dev = device(expires=30)
    dev.attach(LOCAL, 0.0)
    dev.handle_timer(0.0)
    req = take_one(dev)
    dev.on_response("register", make_response(req, 423, headers=[("Min-Expires", "60")]), 0.1)
    again = take_one(dev, "register")
    assert again.headers.get("Expires") == "60"


# ------------------------------------------------------------------------------------------ keepalive
def test_keepalive_every_interval() -> None:
    platform = StubPlatform()
    dev = device(keepalive=5.0, expires=3600)
    register(dev, platform)
    first_at = dev.keepalive_at
    assert first_at is not None and 0.0 <= first_at <= 2.0
    sent = []
    t = 0.0
    while t < first_at + 30.05:
        dev.handle_timer(t)
        for purpose, req in take(dev):
            assert purpose == "keepalive"
            body = manscdp.parse(req.body)
            assert (body.root, body.cmd_type, body.get("Status")) == ("Notify", "Keepalive", "OK")
            assert body.device_id == dev.device_id
            assert req.headers.get("Content-Type") == "Application/MANSCDP+xml"
            sent.append(t)
            dev.on_response("keepalive", platform.on_request(req, LOCAL, t, "udp"), t)
        t = round(t + 0.1, 1)
    assert len(sent) == 7  # first_at, then every 5 s for 30 s
    assert all(b - a == pytest.approx(5.0) for a, b in zip(sent, sent[1:], strict=False))
    assert dev.online and platform.keepalives[dev.device_id] == 7


def test_first_keepalives_are_spread() -> None:
    platform = StubPlatform()
    firsts = []
    for i in range(50):
        dev = SimDevice(cfg(devices=50, keepalive=60.0), i, rng=random.Random(i), wall=lambda: WALL)
        register(dev, platform)
        firsts.append(dev.keepalive_at)
    assert max(firsts) - min(firsts) > 1.0
    assert all(0 <= f <= 2.0 for f in firsts)


@pytest.mark.parametrize("failure", ["403", "404", "timeout"])
def test_keepalive_failures_lead_to_new_registration(failure: str) -> None:
    platform = StubPlatform()
    dev = device(keepalive=5.0, expires=3600, retry_min=5.0)
    register(dev, platform)
    t, failures = 0.0, 0
    while dev.registered:
        t = round(t + 0.5, 1)
        dev.handle_timer(t)
        for purpose, req in take(dev):
            assert purpose == "keepalive"
            failures += 1
            if failure == "timeout":
                dev.on_timeout("keepalive", t, req)
            else:
                dev.on_response("keepalive", make_response(req, int(failure)), t)
        assert t < 60
    assert failures == 3
    assert dev.state == WAITING and not dev.online
    lost_at = t
    assert dev.retry_at is not None and lost_at + 5.0 * 0.75 <= dev.retry_at <= lost_at + 5.0 * 1.25
    dev.handle_timer(dev.retry_at - 0.01)
    assert take(dev) == []
    register(dev, platform, now=dev.retry_at, attach=False)
    assert dev.stats.registrations_lost == 1


def test_keepalive_success_resets_failure_count() -> None:
    platform = StubPlatform()
    dev = device(keepalive=5.0, expires=3600)
    register(dev, platform)
    t = 0.0
    outcomes = iter([403, 403, 200, 403, 403, 200, 403, 403, 200])
    for _ in range(200):
        t = round(t + 0.5, 1)
        dev.handle_timer(t)
        for _, req in take(dev):
            status = next(outcomes, None)
            if status is None:
                break
            dev.on_response("keepalive", make_response(req, status), t)
        assert dev.registered
    assert dev.online


# ------------------------------------------------------------------------------------------ failures
def test_403_backs_off_and_doubles() -> None:
    dev = device(retry_min=10.0, retry_max=25.0)
    dev.attach(LOCAL, 0.0)
    delays = []
    now = 0.0
    for _ in range(4):
        dev.handle_timer(now)
        req = take_one(dev, "register")
        dev.on_response("register", make_response(req, 403, "Forbidden (locked out)"), now)
        assert dev.failed and not dev.registered and dev.state == WAITING
        assert dev.last_error == "403 Forbidden (locked out)"
        assert dev.retry_at is not None
        delays.append(dev.retry_at - now)
        dev.handle_timer(dev.retry_at - 0.001)
        assert take(dev) == []
        now = dev.retry_at
    assert 7.5 <= delays[0] <= 12.5
    assert 15.0 <= delays[1] <= 25.0
    assert all(d <= 25.0 * 1.25 for d in delays[2:])
    assert dev.stats.register_failures == 4


def test_wrong_password_fails_after_second_challenge() -> None:
    platform = StubPlatform(password="another-password")
    dev = device()
    dev.attach(LOCAL, 0.0)
    dev.handle_timer(0.0)
    dev.on_response("register", platform.on_request(take_one(dev), LOCAL, 0.0, "udp"), 0.0)
    authed = take_one(dev)
    resp = platform.on_request(authed, LOCAL, 0.0, "udp")
    assert resp.status == 403
    dev.on_response("register", resp, 0.0)
    assert dev.failed and dev.retry_at is not None and take(dev) == []

    # A platform that keeps challenging instead of refusing must not cause a REGISTER storm.
    dev = device()
    dev.attach(LOCAL, 0.0)
    dev.handle_timer(0.0)
    auth = DigestAuthenticator(REALM, b"x" * 32)
    for _ in range(3):
        out = take(dev)
        if not out:
            break
        dev.on_response("register", make_response(out[0][1], 401, headers=[
            ("WWW-Authenticate", auth.challenge(0.0, dev.device_id))]), 0.0)
    assert dev.failed and dev.stats.registers_sent == 2


def test_register_timeout_and_stale_answers_ignored() -> None:
    dev = device()
    dev.attach(LOCAL, 0.0)
    dev.handle_timer(0.0)
    req = take_one(dev)
    dev.on_timeout("register", 32.0, req)
    assert dev.failed and dev.last_error == "no response (timeout)"
    # A late 200 to the abandoned attempt changes nothing.
    dev.on_response("register", make_response(req, 200, headers=[("Expires", "100")]), 33.0)
    assert not dev.registered


def test_refresh_failure_drops_registration() -> None:
    platform = StubPlatform()
    dev = device(keepalive=1000.0)
    register(dev, platform)
    dev.handle_timer(80.0)
    refresh = [r for p, r in take(dev) if p == "refresh"][0]
    dev.on_response("refresh", make_response(refresh, 403), 80.0)
    assert not dev.registered and dev.failed and dev.state == WAITING and dev.keepalive_at is None


# ------------------------------------------------------------------------------------------ queries
def answer_messages(dev: SimDevice, platform: StubPlatform, now: float) -> list[manscdp.ManscdpMessage]:
    """Answer every MESSAGE the device sends (one at a time, as the window allows); return the bodies."""
    bodies = []
    while True:
        out = take(dev)
        if not out:
            return bodies
        for purpose, req in out:
            assert purpose == "message"
            bodies.append(manscdp.parse(req.body))
            dev.on_response("message", platform.on_request(req, LOCAL, now, "udp"), now)


@pytest.mark.parametrize("charset", ["gb2312", "utf-8"])
def test_nvr_catalog_one_item_per_message(charset: str) -> None:
    platform = StubPlatform()
    dev = device(channels=4, charset=charset)
    register(dev, platform)
    query = platform.query(dev.device_id, "Catalog")
    resp = dev.on_request(query, 1.0)
    assert resp is not None and resp.status == 200
    # The 200 comes first; only one MESSAGE is in flight until it is answered.
    assert len(dev.out) == 1
    sn = manscdp.parse(query.body).sn
    pages = answer_messages(dev, platform, 1.0)
    assert len(pages) == 4
    seen = []
    for raw in pages:
        page = manscdp.as_catalog(raw)
        assert raw.root == "Response" and page.sn == sn and page.device_id == dev.device_id
        assert page.sum_num == 4 and page.num == 1 and len(page.items) == 1
        assert raw.charset.upper() == ("UTF-8" if charset == "utf-8" else "GB2312")
        item = page.items[0]
        seen.append(item)
        assert item.status == "ON" and item.parent_id == dev.device_id
        assert item.longitude and item.latitude and item.ptz_type in (1, 3)
        assert item.device_id[10:13] == "131"
    assert [i.device_id for i in seen] == dev.channel_ids
    assert seen[0].name == "东门入口 1号"
    assert seen[2].name.startswith("大华1.") and seen[2].name.endswith("通道3")
    assert dev.stats.queries_answered == 1


def test_catalog_bytes_declare_and_use_the_charset() -> None:
    gb = device(charset="gb2312").catalog_bodies(7)[0]
    assert gb.startswith(b'<?xml version="1.0" encoding="GB2312"?>')
    assert "东门入口".encode("gb2312") in gb
    utf = device(charset="utf-8").catalog_bodies(7)[0]
    assert utf.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    assert "东门入口".encode() in utf


def test_ipc_catalog_single_message() -> None:
    platform = StubPlatform()
    dev = device(channels=1)
    assert dev.device_id[10:13] == "132"
    register(dev, platform)
    dev.on_request(platform.query(dev.device_id, "Catalog"), 1.0)
    pages = answer_messages(dev, platform, 1.0)
    assert len(pages) == 1
    page = manscdp.as_catalog(pages[0])
    assert page.sum_num == 1 and [i.device_id for i in page.items] == dev.channel_ids


def test_device_info_status_and_basic_param() -> None:
    platform = StubPlatform()
    dev = device(channels=4, keepalive=5.0)
    register(dev, platform)
    dev.on_request(platform.query(dev.device_id, "DeviceInfo"), 1.0)
    dev.on_request(platform.query(dev.device_id, "DeviceStatus"), 1.0)
    dev.on_request(platform.query(dev.device_id, "ConfigDownload", extra={"ConfigType": "BasicParam"}), 1.0)
    bodies = {b.cmd_type: b for b in answer_messages(dev, platform, 1.0)}
    info = manscdp.as_device_info(bodies["DeviceInfo"])
    assert info.manufacturer == "gbops-sim" and info.channel == 4 and info.model and info.firmware
    assert info.device_name and info.device_name.startswith("模拟NVR")
    status = manscdp.as_device_status(bodies["DeviceStatus"])
    assert status.online is True and status.status == "OK" and status.device_datetime is not None
    basic = bodies["ConfigDownload"].find("BasicParam")
    assert basic is not None
    assert basic.findtext("HeartBeatInterval") == "5" and basic.findtext("HeartBeatCount") == "3"
    assert dev.stats.queries_answered == 3


def test_device_status_for_a_channel() -> None:
    platform = StubPlatform()
    dev = device(channels=4)
    register(dev, platform)
    dev.on_request(platform.query(dev.device_id, "DeviceStatus", target=dev.channel_ids[1]), 1.0)
    [body] = answer_messages(dev, platform, 1.0)
    assert body.device_id == dev.channel_ids[1]


def test_unknown_query_and_other_requests() -> None:
    platform = StubPlatform()
    dev = device()
    register(dev, platform)
    resp = dev.on_request(platform.query(dev.device_id, "PresetQuery"), 1.0)
    assert resp is not None and resp.status == 200 and take(dev) == []
    resp = dev.on_request(platform.query(dev.device_id, "ConfigDownload", extra={"ConfigType": "VideoParamOpt"}), 1)
    assert resp.status == 200 and take(dev) == []
    bad = platform.query(dev.device_id, "Catalog")
    bad.body = b"<not xml"
    assert dev.on_request(bad, 1.0).status == 400
    options = platform.query(dev.device_id, "Catalog")
    options.method = "OPTIONS"
    options.headers.set("CSeq", "1 OPTIONS")
    assert dev.on_request(options, 1.0).status == 200
    assert dev.stats.queries_answered == 0


# ------------------------------------------------------------------------------------------ stop
def test_stop_unregisters_with_credentials() -> None:
    platform = StubPlatform()
    dev = device()
    register(dev, platform)
    dev.stop(5.0, unregister=True)
    assert not dev.registered and not dev.done
    unreg = take_one(dev, "unregister")
    assert unreg.headers.get("Expires") == "0" and "Authorization" not in unreg.headers
    dev.on_response("unregister", platform.on_request(unreg, LOCAL, 5.0, "udp"), 5.0)
    authed = take_one(dev, "unregister")
    assert authed.headers.get("Expires") == "0" and "Authorization" in authed.headers
    dev.on_response("unregister", platform.on_request(authed, LOCAL, 5.0, "udp"), 5.0)
    assert dev.done and dev.state == STOPPED and dev.wakeup is None
    assert dev.device_id in platform.unregistered and dev.device_id not in platform.registered


def test_stop_without_unregister_goes_silent() -> None:
    platform = StubPlatform()
    dev = device()
    register(dev, platform)
    dev.stop(5.0, unregister=False)
    assert dev.done and take(dev) == [] and dev.wakeup is None
    dev.handle_timer(1000.0)
    assert take(dev) == []


def test_stop_during_registration_unregisters_afterwards() -> None:
    platform = StubPlatform()
    dev = device()
    dev.attach(LOCAL, 0.0)
    dev.handle_timer(0.0)
    dev.on_response("register", platform.on_request(take_one(dev), LOCAL, 0.0, "udp"), 0.0)
    authed = take_one(dev)
    dev.stop(0.1, unregister=True)
    dev.on_response("register", platform.on_request(authed, LOCAL, 0.1, "udp"), 0.1)
    unreg = take_one(dev, "unregister")
    assert unreg.headers.get("Expires") == "0"
    assert not dev.registered


def test_stop_while_waiting_is_immediate() -> None:
    dev = device()
    dev.attach(LOCAL, 0.0, delay=10.0)
    dev.stop(1.0, unregister=True)
    assert dev.done and take(dev) == []


def test_paced_stop_unregisters_at_its_time() -> None:
    platform = StubPlatform()
    dev = device(keepalive=1000.0)
    register(dev, platform)
    take(dev)
    dev.schedule_stop(1.0, 4.0)
    assert dev.registered and dev.stop_at == 4.0
    dev.handle_timer(3.9)
    assert [p for p, _ in take(dev) if p != "keepalive"] == []
    dev.handle_timer(4.0)
    assert take_one(dev, "unregister").headers.get("Expires") == "0"

    waiting = device()
    waiting.attach(LOCAL, 0.0, delay=10.0)
    waiting.schedule_stop(1.0, 4.0)
    assert waiting.done and take(waiting) == []
