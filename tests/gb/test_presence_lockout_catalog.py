from dataclasses import dataclass

from sip_server.gb.catalog import CatalogAssembler
from sip_server.gb.lockout import LockoutTracker
from sip_server.gb.presence import KEEPALIVE_TIMEOUT, REGISTRATION_EXPIRED, PresenceTracker


def test_register_is_a_transition_once():
    p = PresenceTracker(60, 3)
    assert p.register("d1", 0.0, 3600) is True
    assert p.register("d1", 10.0, 3600) is False
    assert p.is_online("d1")


def test_offline_after_three_missed_keepalives():
    p = PresenceTracker(60, 3)
    p.register("d1", 0.0, 3600)
    for t in (60.0, 120.0):
        assert p.keepalive("d1", t)
    assert p.handle_timer(299.0) == []
    assert p.get_timer() is not None
    assert p.handle_timer(300.0) == [("d1", KEEPALIVE_TIMEOUT)]
    assert not p.is_online("d1")
    assert p.keepalive("d1", 301.0) is False  # must register again


def test_registration_expiry_wins_when_earlier():
    p = PresenceTracker(60, 3)
    p.register("d1", 0.0, 100)
    for t in (30.0, 60.0, 90.0):
        p.keepalive("d1", t)
    assert p.handle_timer(99.0) == []
    assert p.handle_timer(100.0) == [("d1", REGISTRATION_EXPIRED)]


def test_device_interval_overrides_default():
    p = PresenceTracker(60, 3)
    p.register("d1", 0.0, 3600)
    p.set_interval("d1", 5, 0.0)
    assert p.handle_timer(15.0) == [("d1", KEEPALIVE_TIMEOUT)]


def test_unregister_and_many_devices():
    p = PresenceTracker(10, 3)
    for i in range(1000):
        p.register(f"d{i}", 0.0, 3600)
    assert p.unregister("d0") is True and p.unregister("d0") is False
    for i in range(1, 500):
        p.keepalive(f"d{i}", 20.0)
    gone = p.handle_timer(30.0)
    assert {d for d, _ in gone} == {f"d{i}" for i in range(500, 1000)}
    assert p.online_count() == 499


def test_lockout_after_more_than_five_failures_in_window():
    lk = LockoutTracker(5, 600, 600)
    for i in range(5):
        assert lk.record_failure("dev:1", float(i)) is False
    assert not lk.is_locked("dev:1", now=10.0)
    assert lk.record_failure("dev:1", 10.0) is True
    assert lk.is_locked("dev:1", now=11.0)
    assert not lk.is_locked("dev:1", now=611.0)


def test_failures_outside_window_do_not_count():
    lk = LockoutTracker(5, 600, 600)
    for i in range(5):
        lk.record_failure("a", i * 200.0)
    assert not lk.is_locked("a", now=1000.0)


@dataclass
class Item:
    device_id: str


def test_catalog_reassembles_one_item_per_message():
    c = CatalogAssembler(timeout=30)
    c.start("nvr", 7, 0.0)
    for i in range(3):
        assert c.add_page("nvr", 7, 4, [Item(f"ch{i}")], float(i)) is None
    assert c.get("nvr").progress()["received"] == 3
    c.add_page("nvr", 7, 4, [Item("ch1")], 3.0)  # retransmitted page adds nothing
    done = c.add_page("nvr", 7, 4, [Item("ch3")], 4.0)
    assert done is not None and done.complete and done.state() == "complete 4/4"


def test_catalog_timeout_keeps_what_arrived():
    c = CatalogAssembler(timeout=30)
    c.start("nvr", 1, 0.0)
    c.add_page("nvr", 1, 8, [Item("a"), Item("b")], 1.0)
    assert c.handle_timer(5.0) == []
    [sync] = c.handle_timer(100.0)
    assert not sync.complete and sync.received == 2 and "partial 2/8" in sync.state()
    assert c.get_timer() is None


def test_catalog_zero_channels_completes():
    c = CatalogAssembler()
    c.start("ipc", 2, 0.0)
    assert c.add_page("ipc", 2, 0, [], 1.0).complete
