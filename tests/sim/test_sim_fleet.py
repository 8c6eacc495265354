"""The sans-IO fleet (devices + real SipEndpoints per link) against a byte-level scripted platform."""

from __future__ import annotations

import random

import pytest

from gbsim import Fleet, SimConfig
from gbsim.device import IDLE, STOPPED
from sip_server.gb import manscdp
from sip_server.sip import SipResponse, parse_message
from tests.sim.fakes import PASSWORD, StubPlatform

SERVER = ("127.0.0.1", 5060)


class Harness:
    """Moves bytes between a Fleet and a StubPlatform under a fake clock."""

    def __init__(self, fleet: Fleet, platform: StubPlatform | None = None) -> None:
        self.fleet = fleet
        self.platform = platform or StubPlatform()
        self.now = 0.0
        self.drop = 0  # drop this many of the next datagrams to the platform
        self.sent: list[tuple[int, bytes]] = []
        self.answers: list[SipResponse] = []  # device responses to platform requests

    def transport(self) -> str:
        return self.fleet.cfg.transport

    def pump(self) -> None:
        for _ in range(1000):
            out = self.fleet.outgoing()
            if not out:
                return
            for index, data, addr in out:
                assert addr == SERVER
                self.sent.append((index, data))
                if self.drop:
                    self.drop -= 1
                    continue
                msg = parse_message(data)
                if isinstance(msg, SipResponse):
                    self.answers.append(msg)
                    continue
                local = self.fleet.links[index].local_addr
                assert local is not None
                for reply in self.platform.handle(msg, local, self.now, self.transport()):
                    self.deliver(index, reply)
        raise AssertionError("pump did not settle")

    def deliver(self, index: int, data: bytes) -> None:
        if self.transport() == "tcp":
            # Feed a stream in awkward pieces: framing must cope.
            cut = len(data) // 3
            for piece in (data[:cut], data[cut : cut + 7], data[cut + 7 :]):
                assert self.fleet.receive(index, piece, SERVER, self.now)
        else:
            self.fleet.receive(index, data, SERVER, self.now)

    def run_until(self, until: float) -> None:
        self.pump()
        while (t := self.fleet.get_timer()) is not None and t <= until:
            self.now = max(self.now, t)
            self.fleet.handle_timer(self.now)
            self.pump()
        self.now = until

    def up(self, spread: float = 0.0) -> None:
        for link in self.fleet.links:
            self.fleet.link_up(link.index, ("127.0.0.1", 6000 + link.index), self.now, spread)
        self.pump()


def make_fleet(**kw) -> Fleet:
    base = dict(server=SERVER, devices=5, channels=4, password=PASSWORD, keepalive=5.0, expires=3600,
                devices_per_socket=2, seed=3)
    base.update(kw)
    return Fleet(SimConfig(**base), rng=random.Random(3), wall=lambda: 1_790_000_000.0)


def test_udp_devices_share_few_sockets_and_all_come_online() -> None:
    h = Harness(make_fleet(devices=5, devices_per_socket=2))
    assert [len(link.devices) for link in h.fleet.links] == [2, 2, 1]
    h.up(spread=1.0)
    h.run_until(1.5)
    assert h.fleet.registered == 5 and h.fleet.failed == 0
    assert set(h.platform.registered) == set(h.fleet.by_id)
    # Devices on one link share its source address, different links differ.
    addrs = {dev: addr for dev, (addr, _) in h.platform.registered.items()}
    d0, d1, d2 = (d.device_id for d in h.fleet.devices[:3])
    assert addrs[d0] == addrs[d1] != addrs[d2]
    h.run_until(8.0)
    assert h.fleet.online == 5
    assert sum(h.platform.keepalives.values()) >= 5


def test_lost_datagrams_are_retransmitted() -> None:
    h = Harness(make_fleet(devices=1))
    h.drop = 2  # the first REGISTER and its first retransmission
    h.up()
    h.run_until(0.4)
    assert not h.fleet.registered
    h.run_until(3.0)
    assert h.fleet.registered == 1
    registers = [d for _, d in h.sent if d.startswith(b"REGISTER")]
    assert len(registers) >= 4  # 2 lost + 1 delivered + the authenticated one


def test_queries_are_routed_by_device_id() -> None:
    h = Harness(make_fleet(devices=3, devices_per_socket=3, channels=4))
    h.up()
    h.run_until(1.0)
    target = h.fleet.devices[1]
    query = h.platform.query(target.device_id, "Catalog", host=SERVER[0], port=SERVER[1])
    h.deliver(0, query.to_bytes())
    h.pump()
    assert [a.status for a in h.answers] == [200]
    pages = [(user, body) for user, body in h.platform.responses if body.cmd_type == "Catalog"]
    assert len(pages) == 4 and {user for user, _ in pages} == {target.device_id}
    assert {manscdp.as_catalog(b).items[0].device_id for _, b in pages} == set(target.channel_ids)
    assert h.fleet.queries_answered == 1

    # A query for an id that is not on this socket gets 404.
    stranger = h.platform.query("34020000001180009999", "Catalog", host=SERVER[0], port=SERVER[1])
    h.deliver(0, stranger.to_bytes())
    h.pump()
    assert h.answers[-1].status == 404
    assert h.fleet.counters.unknown_target == 1

    # A retransmitted query is absorbed by the transaction layer: answered once.
    h.deliver(0, query.to_bytes())
    h.pump()
    assert [a.status for a in h.answers].count(200) == 2  # the 200 is resent, no new pages
    assert len([1 for _, b in h.platform.responses if b.cmd_type == "Catalog"]) == 4


def test_tcp_one_link_per_device_with_stream_framing() -> None:
    h = Harness(make_fleet(devices=3, transport="tcp"))
    assert len(h.fleet.links) == 3 and all(len(link.devices) == 1 for link in h.fleet.links)
    h.up()
    h.run_until(8.0)
    assert h.fleet.online == 3
    target = h.fleet.devices[2]
    query = h.platform.query(target.device_id, "DeviceInfo", transport="TCP")
    h.deliver(2, query.to_bytes())
    h.pump()
    assert [b.cmd_type for u, b in h.platform.responses if u == target.device_id] == ["DeviceInfo"]
    assert h.fleet.receive(2, b"garbage without headers end" * 5000, SERVER, h.now) is False


def test_tcp_link_down_and_up_again() -> None:
    h = Harness(make_fleet(devices=2, transport="tcp"))
    h.up()
    h.run_until(6.0)
    assert h.fleet.online == 2
    h.fleet.link_down(0, h.now)
    dev = h.fleet.links[0].devices[0]
    assert dev.state == IDLE and not dev.registered and dev.wakeup is None
    h.run_until(20.0)
    assert h.fleet.registered == 1
    h.fleet.link_up(0, ("127.0.0.1", 6100), h.now)
    h.run_until(30.0)
    assert h.fleet.online == 2
    assert h.platform.registered[dev.device_id][0] == ("127.0.0.1", 6100)


def test_wrong_password_counts_failed_and_backs_off() -> None:
    h = Harness(make_fleet(devices=4, devices_per_socket=4, retry_min=10.0), StubPlatform(password="nope"))
    h.up()
    h.run_until(1.0)
    assert h.fleet.failed == 4 and h.fleet.registered == 0
    registers_before = sum(1 for _, d in h.sent if d.startswith(b"REGISTER"))
    assert registers_before == 8
    h.run_until(7.4)  # nothing before 0.75 * retry_min
    assert sum(1 for _, d in h.sent if d.startswith(b"REGISTER")) == registers_before
    h.run_until(13.0)
    assert sum(1 for _, d in h.sent if d.startswith(b"REGISTER")) == 2 * registers_before


def test_keepalive_refused_makes_devices_register_again() -> None:
    h = Harness(make_fleet(devices=2, devices_per_socket=2, keepalive=2.0, retry_min=3.0))
    h.up()
    h.run_until(3.0)
    assert h.fleet.online == 2
    h.platform.registered.clear()  # the platform forgot them: keepalives now get 403
    h.run_until(9.0)
    assert h.fleet.online == 0
    h.run_until(20.0)
    assert h.fleet.online == 2
    assert sum(d.stats.registrations_lost for d in h.fleet.devices) == 2


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_stop_unregisters_everyone(transport: str) -> None:
    h = Harness(make_fleet(devices=3, transport=transport))
    h.up()
    h.run_until(3.0)
    assert h.fleet.registered == 3
    h.fleet.stop(h.now, unregister=True)
    h.run_until(4.0)
    assert h.fleet.all_stopped
    assert h.platform.unregistered == set(h.fleet.by_id) and not h.platform.registered
    assert h.fleet.get_timer() is None or all(d.state == STOPPED for d in h.fleet.devices)


def test_clean_stop_is_spread_over_time() -> None:
    h = Harness(make_fleet(devices=6, devices_per_socket=6, keepalive=100.0))
    h.up()
    h.run_until(2.0)
    assert h.fleet.registered == 6
    h.fleet.stop(h.now, unregister=True, spread=4.0)
    h.run_until(2.01)
    assert len(h.platform.unregistered) < 6
    h.run_until(6.5)
    assert h.fleet.all_stopped and h.platform.unregistered == set(h.fleet.by_id)
