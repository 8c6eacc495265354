"""A restarted SIP node rebuilds registrations and keepalive timers from the store (issue 17).

The downtime must not count as the devices' missed keepalives (no false offline); a registration that ran
out during the downtime is a real offline; a device that really stopped still goes offline, one keepalive
window after the restart.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from device_registry import events as reg
from device_registry.service import DeviceSnapshot
from sip_server.gb.presence import KEEPALIVE_TIMEOUT, REGISTRATION_EXPIRED, PresenceTracker
from sip_server.gb.server import GbConfig
from sip_server.service import SipService

DEV = "34020000001320000001"


# ---------------------------------------------------------------------------------------- the tracker
def test_keepalive_window_starts_again_at_the_restart():
    t = PresenceTracker(default_interval=5.0, misses=3)
    # stored: last keepalive 100 s before the restart (the node was down), registration good for an hour
    t.restore(DEV, online=True, expires_at=1000.0 + 3600, last_seen=900.0, interval=5.0, restarted_at=1000.0)
    assert t.is_online(DEV)
    assert t.handle_timer(1000.0) == []  # not blamed for the keepalives nobody could hear
    assert t.get_timer() == 1015.0  # misses * interval from the restart
    assert t.handle_timer(1014.9) == []
    assert t.keepalive(DEV, 1012.0)  # it keeps alive: accepted, the window moves on
    assert t.handle_timer(1015.0) == [] and t.is_online(DEV)
    # then it really stops: offline for its missed keepalives, one window after its last one
    assert t.handle_timer(1026.9) == []
    assert t.handle_timer(1027.0) == [(DEV, KEEPALIVE_TIMEOUT)]
    assert not t.is_online(DEV)


def test_a_restored_device_judged_late_gets_its_window_from_when_the_node_could_hear_it():
    # The rest of the platform starting keeps the loop busy after restore: the timer due at 1015 runs at 1020,
    # before the messages waiting in the sockets (a TCP device's REGISTER on its new connection) are read.
    t = PresenceTracker(default_interval=5.0, misses=3)
    t.restore(DEV, online=True, expires_at=5000.0, last_seen=900.0, interval=5.0, restarted_at=1000.0)
    assert t.handle_timer(1020.0) == [] and t.is_online(DEV)
    assert t.get_timer() == 1035.0
    assert t.register(DEV, 1020.1, 3600) is False  # the waiting REGISTER: no transition
    # once only: a device that then falls silent is judged as any other, even when the judgement is late
    assert t.handle_timer(1040.0) == [(DEV, KEEPALIVE_TIMEOUT)]


def test_a_late_judgement_grace_is_given_once_and_only_to_restored_devices_not_heard_since():
    t = PresenceTracker(default_interval=5.0, misses=3)
    t.restore(DEV, online=True, expires_at=5000.0, last_seen=900.0, interval=5.0, restarted_at=1000.0)
    assert t.handle_timer(1020.0) == []
    assert t.handle_timer(1050.0) == [(DEV, KEEPALIVE_TIMEOUT)]  # never heard: the second late judgement ends it
    heard = "34020000001320000002"
    t.restore(heard, online=True, expires_at=5000.0, last_seen=900.0, interval=5.0, restarted_at=1000.0)
    assert t.keepalive(heard, 1001.0)
    assert t.handle_timer(1030.0) == [(heard, KEEPALIVE_TIMEOUT)]  # heard since the restart: judged as usual
    fresh = "34020000001320000003"
    t.register(fresh, 1000.0, 3600)  # not restored: a late timer is no excuse (a normal run)
    assert t.handle_timer(1040.0) == [(fresh, KEEPALIVE_TIMEOUT)]


def test_a_late_judgement_does_not_extend_an_ended_registration():
    t = PresenceTracker(default_interval=5.0, misses=3)
    t.restore(DEV, online=True, expires_at=1010.0, last_seen=900.0, interval=5.0, restarted_at=1000.0)
    assert t.handle_timer(1020.0) == [(DEV, REGISTRATION_EXPIRED)]


def test_a_recent_last_keepalive_is_kept_when_newer_than_the_restart():
    t = PresenceTracker(default_interval=5.0, misses=3)
    t.restore(DEV, online=True, expires_at=5000.0, last_seen=1002.0, interval=5.0, restarted_at=1000.0)
    assert t.get_timer() == 1017.0


def test_registration_ending_inside_the_fresh_window_still_ends_it():
    t = PresenceTracker(default_interval=5.0, misses=3)
    t.restore(DEV, online=True, expires_at=1004.0, last_seen=900.0, interval=5.0, restarted_at=1000.0)
    assert t.is_online(DEV)
    assert t.keepalive(DEV, 1003.0)
    assert t.handle_timer(1004.0) == [(DEV, REGISTRATION_EXPIRED)]


def test_restore_without_a_restart_time_counts_from_the_stored_keepalive():
    t = PresenceTracker(default_interval=5.0, misses=3)
    t.restore(DEV, online=True, expires_at=5000.0, last_seen=900.0, interval=5.0)
    assert t.handle_timer(1000.0) == [(DEV, KEEPALIVE_TIMEOUT)]


# ---------------------------------------------------------------------------------------- the service
class _Capture:
    def __init__(self) -> None:
        self.events: list = []

    def submit(self, event) -> None:
        self.events.append(event)


def _snap(device_id: str, *, online: bool, expires_in: float, seen_ago: float, interval: int = 5) -> DeviceSnapshot:
    now = datetime.now(UTC)
    return DeviceSnapshot(device_id=device_id, online=online, register_expires_at=now + timedelta(seconds=expires_in),
                          keepalive_interval=interval, last_seen=now - timedelta(seconds=seen_ago),
                          remote_addr="127.0.0.1:5070", transport="udp", password_ha1_md5=None,
                          password_ha1_sha256=None, password_realm=None)


async def test_service_restore_keeps_registrations_and_ends_expired_ones():
    writer = _Capture()
    svc = SipService(GbConfig(default_password="Gate-7-camera#pw", keepalive_interval=5.0, keepalive_misses=3),
                     host="127.0.0.1", port=0, writer=writer)
    long_down = "34020000001320000001"  # keepalive window ran out during a long downtime, registration valid
    quick = "34020000001320000002"  # a quick restart
    expired = "34020000001320000003"  # its registration ran out while the platform was down
    offline = "34020000001320000004"  # was offline already
    svc.restore([
        _snap(long_down, online=True, expires_in=3000, seen_ago=120),
        _snap(quick, online=True, expires_in=3000, seen_ago=2),
        _snap(expired, online=True, expires_in=-10, seen_ago=120),
        _snap(offline, online=False, expires_in=-10, seen_ago=600),
    ])
    assert svc.is_online(long_down) and svc.is_online(quick)
    assert not svc.is_online(expired) and not svc.is_online(offline)
    went = [(e.device_id, e.reason) for e in writer.events if isinstance(e, reg.DeviceWentOffline)]
    assert went == [(expired, "platform_restart")]
    # the registration is kept as stored (same advertised address: the route the device's pinhole knows)
    assert svc.gb.routes[long_down].addr == ("127.0.0.1", 5070)
    # and the long-down device has a whole keepalive window from the restart
    st = svc.gb.presence.get(long_down)
    assert st is not None and svc.gb.presence.deadline(st) >= svc._now() + 15.0 - 1.0


async def test_restored_timers_run_before_any_sip_message_arrives():
    """A restart with every device gone: nobody sends a thing, yet each restored device goes offline once its
    window passes (the timers are armed at restore, not at the first message)."""
    import asyncio

    writer = _Capture()
    svc = SipService(GbConfig(default_password="Gate-7-camera#pw", keepalive_interval=0.1, keepalive_misses=2),
                     host="127.0.0.1", port=0, writer=writer)
    svc.restore([_snap(DEV, online=True, expires_in=3000, seen_ago=60, interval=0)])
    assert svc.is_online(DEV)
    try:
        for _ in range(200):  # up to 10 s on a loaded machine; the window is 0.2 s
            if not svc.is_online(DEV):
                break
            await asyncio.sleep(0.05)
        went = [(e.device_id, e.reason) for e in writer.events if isinstance(e, reg.DeviceWentOffline)]
        assert went == [(DEV, "keepalive_timeout")]
    finally:
        await svc.close()
