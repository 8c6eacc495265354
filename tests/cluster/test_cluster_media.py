"""Live view across nodes with the in-memory cluster (gbops.cluster_media): placement, stream ownership, the
typed errors that cross the bus, and the SIP node's handlers over a SIP service double."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from cluster.bus import LocalCommandBus, LocalNetwork, RemoteError
from cluster.lease import LeaseTable, LocalLeases
from cluster.nodes import LocalNodeDirectory, NodeInfo, NodeLoad
from gbcore.ids import ChannelRef
from gbops.cluster_media import (
    ClusterMedia,
    LocalDeviceHomes,
    RemoteSignalling,
    from_remote_media,
    rank_media_nodes,
    serve_media,
    serve_signalling,
    stream_lease,
    to_remote_media,
)
from media_relay.signalling import (
    DeviceOffline,
    DeviceRefused,
    DeviceWentOffline,
    SessionEnded,
    SignallingTimeout,
)
from media_relay.stream import MediaError
from media_relay.viewers import TransformCapacityExceeded, Viewer
from tests.cluster.conftest import eventually

CAM = ChannelRef("34020000001320000001", "34020000001310000001")
CAM2 = ChannelRef("34020000001320000001", "34020000001310000002")
VIEWER = Viewer(user_id=7, username="alice", display_name="Alice", client_ip="10.0.0.9", roles=("operator",))


def node(node_id: str, roles: tuple[str, ...] = ("media",), *, streams: int = 0, encoders: int = 0,
         cpu: float = 0.0, draining: bool = False) -> NodeInfo:
    return NodeInfo(node_id=node_id, roles=roles, address="127.0.0.1", http_url=f"http://{node_id}.test:8080",
                    load=NodeLoad(streams=streams, encoders=encoders, cpu=cpu), draining=draining)


# ------------------------------------------------------------------------------------- placement
def test_rank_orders_by_streams_then_encoders_then_cpu_and_skips_the_unfit() -> None:
    nodes = [node("m1", streams=2), node("m2", streams=1, encoders=3), node("m3", streams=1, encoders=1, cpu=0.9),
             node("m4", streams=1, encoders=1, cpu=0.1), node("m5", draining=True), node("p1", ("sip", "portal")),
             node("m6", streams=4)]
    assert [n.node_id for n in rank_media_nodes(nodes)] == ["m4", "m3", "m2", "m1", "m6"]
    assert [n.node_id for n in rank_media_nodes(nodes, max_streams=2)] == ["m4", "m3", "m2"]
    assert [n.node_id for n in rank_media_nodes(nodes, max_streams=2, exclude={"m4"})] == ["m3", "m2"]


def test_rank_breaks_ties_by_node_id_so_portals_agree() -> None:
    assert [n.node_id for n in rank_media_nodes([node("mb"), node("ma")])] == ["ma", "mb"]


# ------------------------------------------------------------------------------------- typed errors
def test_media_errors_cross_the_bus_as_the_same_types() -> None:
    back = from_remote_media(to_remote_media(MediaError("device_refused", "busy", 486)))
    assert isinstance(back, MediaError) and back.code == "device_refused" and back.status == 486
    assert str(back) == "busy"
    back = from_remote_media(to_remote_media(MediaError("no_media", "nothing came")))
    assert isinstance(back, MediaError) and back.code == "no_media" and back.status is None
    back = from_remote_media(to_remote_media(TransformCapacityExceeded(4, "all four busy")))
    assert isinstance(back, TransformCapacityExceeded) and back.limit == 4
    assert to_remote_media(RuntimeError("boom")) is None  # untyped: the bus reports it as "internal"
    back = from_remote_media(RemoteError("internal", "RuntimeError: boom"))
    assert isinstance(back, MediaError) and back.code == "media_node_failed"


# ------------------------------------------------------------------------------------- SIP node double
@dataclass
class Answered:
    call_id: str
    ssrc: str
    remote_media: tuple[str, int] | None
    transport: str
    filesize: int | None = None


@dataclass
class FakeSip:
    """The SipService surface SipSignalling uses; ``outcome`` decides the next INVITE's fate."""

    online: set[str] = field(default_factory=set)
    outcome: str = "ok"
    invites: list[dict] = field(default_factory=list)
    byes: list[str] = field(default_factory=list)
    listeners: list = field(default_factory=list)

    def is_online(self, device_id: str) -> bool:
        return device_id in self.online

    def route_address(self, device_id: str) -> tuple[str, int] | None:
        return ("192.0.2.10", 5060) if device_id in self.online else None

    async def invite(self, device_id: str, channel_id: str, **kw: Any) -> Answered:
        from sip_server.service import DeviceNotReachable, InviteRefused, InviteTimeout

        self.invites.append({"device_id": device_id, "channel_id": channel_id, **kw})
        if self.outcome == "offline":
            raise DeviceNotReachable(device_id)
        if self.outcome == "busy":
            raise InviteRefused("Busy Here", 486)
        if self.outcome == "timeout":
            raise InviteTimeout("no answer in 10 s")
        return Answered(f"call-{len(self.invites)}", kw["ssrc"], None, kw["transport"])

    def end_session(self, call_id: str, reason: str = "") -> None:
        self.byes.append(call_id)

    def session_info(self, call_id: str, body: bytes, content_type: str) -> bool:
        return True

    def add_listener(self, fn) -> None:
        self.listeners.append(fn)

    def emit(self, event: object) -> None:
        for fn in self.listeners:
            fn(event)


async def _sip_and_media(network: LocalNetwork, directory: LocalNodeDirectory, sip: FakeSip):
    sip_bus = LocalCommandBus("sip1", network)
    homes = LocalDeviceHomes()
    serving = serve_signalling(sip_bus, sip, homes=homes)
    await sip_bus.start()
    await directory.publish(node("sip1", ("sip", "portal", "worker")), 60)
    media_bus = LocalCommandBus("m1", network)
    await media_bus.start()
    return serving, RemoteSignalling(media_bus, directory, homes, timeout=2, invite_timeout=2)


async def test_remote_signalling_invites_through_the_sip_node_and_maps_its_refusals() -> None:
    network, directory, sip = LocalNetwork(), LocalNodeDirectory(), FakeSip(online={CAM.device_id})
    serving, signalling = await _sip_and_media(network, directory, sip)
    events: list = []
    signalling.subscribe(events.append)

    assert not signalling.is_online(CAM.device_id)  # nothing asked yet
    assert await signalling.refresh(CAM.device_id)
    assert signalling.is_online(CAM.device_id)
    assert signalling.route_address(CAM.device_id) == ("192.0.2.10", 5060)

    answer = await signalling.invite(CAM, media_ip="127.0.0.2", media_port=30000, ssrc="0100000001",
                                     transport="udp")
    assert answer.call_id == "call-1" and answer.ssrc == "0100000001" and answer.transport == "udp"
    assert sip.invites[0]["media_ip"] == "127.0.0.2" and sip.invites[0]["media_port"] == 30000

    signalling.bye(answer.call_id, "viewer left")
    await signalling.close()
    assert sip.byes == ["call-1"]

    sip.outcome = "busy"
    with pytest.raises(DeviceRefused) as refused:
        await signalling.invite(CAM, media_ip="127.0.0.2", media_port=30002, ssrc="0100000002", transport="udp")
    assert refused.value.status == 486 and not isinstance(refused.value, SignallingTimeout)
    sip.outcome = "timeout"
    with pytest.raises(SignallingTimeout):
        await signalling.invite(CAM, media_ip="127.0.0.2", media_port=30004, ssrc="0100000003", transport="udp")
    sip.outcome = "offline"
    with pytest.raises(DeviceOffline):
        await signalling.invite(CAM, media_ip="127.0.0.2", media_port=30006, ssrc="0100000004", transport="udp")

    # the SIP node's events reach the media node as the relay's own types
    from sip_server.gb import events as sip_events
    from sip_server.gb.invite import SessionEnded as SipSessionEnded

    sip.emit(SipSessionEnded("call-9", CAM.device_id, CAM.channel_id, "device", "BYE from device"))
    sip.emit(sip_events.DeviceOffline(CAM.device_id, "keepalive timeout"))
    await serving.close()
    assert events == [SessionEnded("call-9", CAM, "device", "BYE from device"),
                      DeviceWentOffline(CAM.device_id, "keepalive timeout")]
    assert not signalling.is_online(CAM.device_id)  # the cache follows the event


async def test_a_registration_records_the_device_home_and_invites_go_there() -> None:
    from sip_server.gb import events as sip_events

    network, directory = LocalNetwork(), LocalNodeDirectory()
    sip_a, sip_b = FakeSip(online={CAM.device_id}), FakeSip(online={CAM.device_id})
    homes = LocalDeviceHomes()
    for name, sip in (("sipa", sip_a), ("sipb", sip_b)):
        bus = LocalCommandBus(name, network)
        serving = serve_signalling(bus, sip, homes=homes)
        await bus.start()
        await directory.publish(node(name, ("sip",)), 60)
    media_bus = LocalCommandBus("m1", network)
    await media_bus.start()
    signalling = RemoteSignalling(media_bus, directory, homes, timeout=2, invite_timeout=2)

    assert not await signalling.refresh(CAM.device_id)  # two SIP nodes, no home: not found, not guessed
    sip_b.emit(sip_events.DeviceOnline(CAM.device_id, ("192.0.2.10", 5060), "udp", None, 3600, None, True))
    await asyncio.sleep(0)
    await serving.close()
    assert await homes.get(CAM.device_id) == "sipb"
    assert await signalling.refresh(CAM.device_id)
    await signalling.invite(CAM, media_ip="127.0.0.2", media_port=30000, ssrc="0100000001", transport="udp")
    assert len(sip_b.invites) == 1 and not sip_a.invites


# ------------------------------------------------------------------------------------- media nodes double
class FakeStream:
    closed = False


class FakeManager:
    """Keyed like media_relay's StreamManager: (channel, "main" | "sub")."""

    def __init__(self) -> None:
        self.streams: dict[tuple[ChannelRef, str], FakeStream] = {}
        self._starting: dict[tuple[ChannelRef, str], Any] = {}
        self.history: set = set()
        self.invites = 0

    def _teardown(self, stream: Any, reason: str) -> None:
        for ref, s in list(self.streams.items()):
            if s is stream:
                del self.streams[ref]


@dataclass
class FakeSession:
    session_id: str
    user_id: int
    channel: ChannelRef
    attach_deadline: float
    created: float = 0.0
    codec: str | None = "h264"
    params: Any = None
    plan: Any = None
    kind: str = "live"
    history_source: str | None = None
    username: str = "alice"
    client_ip: str | None = None
    output: str | None = None
    closed: bool = False
    stream: str = "main"


class FakeMedia:
    """A media service whose upstream starts after a short delay (so two requests overlap)."""

    def __init__(self) -> None:
        self.manager = FakeManager()
        self.sessions: dict[str, FakeSession] = {}
        self.on_session_closed: Any = None
        self.viewers: list[Viewer] = []

    async def open_viewer(self, channel, viewer, *, kind="live", transport="udp", window=None, source="device",
                          session_id=None, stream="main"):
        ref = ChannelRef(*channel)
        key = (ref, stream)
        if key not in self.manager.streams:
            task = self.manager._starting.get(key)
            if task is None:
                self.manager.invites += 1
                task = self.manager._starting[key] = asyncio.ensure_future(asyncio.sleep(0.05))
                await task
                self.manager._starting.pop(key, None)
                self.manager.streams[key] = FakeStream()
            else:
                await task
        self.viewers.append(viewer)
        session = FakeSession(session_id or f"s{len(self.viewers)}{id(self) % 1000}", viewer.user_id, ref, 4e9,
                              created=time.time(), stream=stream)
        self.sessions[session.session_id] = session
        return session

    async def open_reader(self, channel, transport="udp", stream="main"):
        key = (ChannelRef(*channel), stream)
        if key not in self.manager.streams:
            self.manager.invites += 1
            self.manager.streams[key] = FakeStream()
        return object()

    def session_state(self, session_id):
        return {"kind": "live", "state": "waiting", "position": None, "scale": 1.0, "paused": False,
                "window": None, "source": "device"} if session_id in self.sessions else None

    def close_session(self, session_id, reason="closed"):
        session = self.sessions.pop(session_id, None)
        if session is None:
            return False
        if self.on_session_closed is not None:
            self.on_session_closed(session, reason)
        return True

    async def end_session(self, session_id, reason, *, whep_only=False):
        return self.close_session(session_id, reason)

    def describe_streams(self):
        return [{"device_id": r.device_id, "channel_id": r.channel_id, "stream": k} for r, k in self.manager.streams]


async def _cluster(max_streams: int = 0):
    network, directory, table = LocalNetwork(), LocalNodeDirectory(), LeaseTable()
    medias, nodes = {}, {}
    for name in ("m1", "m2"):
        bus = LocalCommandBus(name, network)
        medias[name] = FakeMedia()
        nodes[name] = serve_media(bus, medias[name], LocalLeases(name, table), public_url=f"http://{name}.test:8080/",
                                  max_streams=max_streams, lease_ttl=30)
        await bus.start()
        await directory.publish(node(name), 60)
    portal_bus = LocalCommandBus("p1", network)
    await portal_bus.start()
    portal = ClusterMedia(portal_bus, directory, LocalLeases("p1", table), max_streams=max_streams, timeout=2)
    return portal, medias, nodes, directory, table


async def test_two_concurrent_viewers_of_one_channel_cost_one_invite_on_one_node() -> None:
    portal, medias, nodes, _, table = await _cluster()
    a, b = await asyncio.gather(portal.open_viewer(CAM, VIEWER), portal.open_viewer(CAM, VIEWER))
    assert a.node_id == b.node_id == "m1"  # ties go to the lowest node id; the second joins the owner
    assert medias["m1"].manager.invites + medias["m2"].manager.invites == 1
    assert table.current(stream_lease(CAM)) == "m1"
    assert a.output_base == "http://m1.test:8080" and a.url_token and a.url_token != b.url_token
    assert medias["m1"].viewers[0] == VIEWER  # the viewer (watermark identity) travelled in full
    for n in nodes.values():
        await n.stop()


async def test_the_channel_owner_takes_new_viewers_whatever_the_load() -> None:
    portal, medias, nodes, directory, table = await _cluster()
    await directory.publish(node("m2", streams=5), 60)
    await LocalLeases("m2", table).acquire(stream_lease(CAM), 30)  # m2 has the upstream already
    session = await portal.open_viewer(CAM, VIEWER)
    assert session.node_id == "m2" and medias["m1"].manager.invites == 0


async def test_a_loaded_node_sends_the_next_channel_to_the_other_node() -> None:
    portal, medias, nodes, directory, _ = await _cluster(max_streams=1)
    first = await portal.open_viewer(CAM, VIEWER)
    assert first.node_id == "m1"
    # the directory has not heard of m1's stream yet (heartbeat): m1 itself refuses and m2 takes it
    second = await portal.open_viewer(CAM2, VIEWER)
    assert second.node_id == "m2"
    # a third channel: no room anywhere
    with pytest.raises(MediaError) as full:
        await portal.open_viewer(ChannelRef(CAM.device_id, "34020000001310000003"), VIEWER)
    assert full.value.code == "no_media_node"
    # more viewers of a channel that has its upstream are still welcome on its node
    again = await portal.open_viewer(CAM, VIEWER)
    assert again.node_id == "m1"


async def test_sessions_ending_on_the_media_node_leave_the_portal_and_free_the_lease() -> None:
    portal, medias, nodes, _, table = await _cluster()
    session = await portal.open_viewer(CAM, VIEWER)
    assert portal.session_state(session.session_id)["state"] == "waiting"
    medias["m1"].close_session(session.session_id, "player disconnected")
    await asyncio.sleep(0.01)
    assert session.session_id not in portal.sessions and portal.session_state(session.session_id) is None
    del medias["m1"].manager.streams[(CAM, "main")]  # the upstream went idle
    await nodes["m1"].renew()
    assert table.current(stream_lease(CAM)) is None
    await portal.refresh_streams()
    assert portal.describe_streams() == []


async def test_closing_from_the_portal_reaches_the_media_node() -> None:
    portal, medias, nodes, _, _ = await _cluster()
    session = await portal.open_viewer(CAM, VIEWER)
    await portal.refresh_streams()
    assert portal.describe_streams() == [{"device_id": CAM.device_id, "channel_id": CAM.channel_id,
                                          "stream": "main", "node_id": "m1"}]
    assert await portal.end_session(session.session_id, "deleted by the viewer")
    assert medias["m1"].sessions == {} and portal.sessions == {}
    other = await portal.open_viewer(CAM, VIEWER)
    assert portal.close_session(other.session_id, "access revoked")
    await portal.close()  # waits for the fire-and-forget close
    assert medias["m1"].sessions == {}


async def test_a_failed_open_releases_the_lease() -> None:
    portal, medias, nodes, _, table = await _cluster()

    async def refuse(*a, **kw):
        raise MediaError("device_refused", "busy", 486)

    medias["m1"].open_viewer = refuse
    with pytest.raises(MediaError) as refused:
        await portal.open_viewer(CAM, VIEWER)
    assert refused.value.code == "device_refused" and refused.value.status == 486
    assert table.current(stream_lease(CAM)) is None


async def test_hostile_payloads_are_refused() -> None:
    portal, medias, nodes, _, _ = await _cluster()
    bus = portal.bus
    with pytest.raises(RemoteError) as bad:
        await bus.call("m1", "media.open_viewer", {"device_id": "../x", "channel_id": "1", "viewer": {}}, timeout=2)
    assert bad.value.code == "bad_request"
    with pytest.raises(RemoteError) as bad:
        await bus.call("m1", "media.open_viewer", {"device_id": CAM.device_id, "channel_id": CAM.channel_id,
                                                   "viewer": {"user_id": "7", "username": "x"}}, timeout=2)
    assert bad.value.code == "bad_request"
    assert medias["m1"].manager.invites == 0


async def test_a_node_that_lost_the_race_for_a_channel_sends_the_portal_to_the_owner() -> None:
    portal, medias, nodes, directory, table = await _cluster()
    await directory.publish(node("m1", streams=3), 60)  # m2 looks better ...
    await LocalLeases("m1", table).acquire(stream_lease(CAM), 30)  # ... but m1 took the channel meanwhile

    async def not_yet(name: str) -> None:  # the portal's look at the lease came before m1 took it
        return None

    portal.leases.holder = not_yet
    session = await portal.open_viewer(CAM, VIEWER)
    assert session.node_id == "m1"
    assert medias["m2"].manager.invites == 0 and medias["m1"].manager.invites == 1


async def test_the_console_may_fetch_from_the_media_nodes_and_nowhere_else() -> None:
    from ops_portal.console import _csp

    portal, medias, nodes, directory, _ = await _cluster()
    hostile = NodeInfo(node_id="m3", roles=("media",), address="127.0.0.1",
                       http_url="http://m3.test; script-src *", load=NodeLoad())
    await directory.publish(hostile, 60)
    await portal.refresh_streams()
    assert portal.origins() == ["http://m1.test:8080", "http://m2.test:8080"]
    csp = _csp(None, portal.origins())
    assert "connect-src 'self' http://m1.test:8080 http://m2.test:8080;" in csp
    assert "media-src 'self' blob: http://m1.test:8080 http://m2.test:8080;" in csp
    assert "connect-src 'self';" in _csp(None)  # the single process: its own outputs only


async def test_sessions_of_a_vanished_media_node_end_with_a_reason_at_the_portal() -> None:
    portal, medias, nodes, directory, _ = await _cluster()
    stops: list[tuple[str, str]] = []
    portal.on_session_closed = lambda s, reason: stops.append((s.session_id, reason))
    session = await portal.open_viewer(CAM, VIEWER)
    await portal.refresh_streams()
    assert session.session_id in portal.sessions and stops == []  # m1 is alive: nothing happens
    await directory.remove("m1")  # its heartbeat stopped (kill -9) and the entry expired
    await portal.refresh_streams()
    assert session.session_id not in portal.sessions and session.closed
    assert stops == [(session.session_id, "media node lost")]


async def test_a_channel_owned_by_a_vanished_node_starts_elsewhere_once_the_lease_runs_out() -> None:
    clock = [0.0]
    portal, medias, nodes, directory, table = await _cluster()
    table.clock = lambda: clock[0]
    await LocalLeases("m0", table).acquire(stream_lease(CAM), 10)  # m0 was killed holding the channel
    portal.lease_wait = 5

    async def expire_soon() -> None:
        await asyncio.sleep(0.3)
        clock[0] += 11  # the lease ttl passes

    expiry = asyncio.ensure_future(expire_soon())
    session = await portal.open_viewer(CAM, VIEWER)
    await expiry
    assert session.node_id == "m1" and table.current(stream_lease(CAM)) == "m1"
    assert medias["m1"].manager.invites == 1


async def test_the_sip_node_refuses_what_would_reach_the_device_malformed() -> None:
    network, directory, sip = LocalNetwork(), LocalNodeDirectory(), FakeSip(online={CAM.device_id})
    serving, signalling = await _sip_and_media(network, directory, sip)
    bus = signalling.bus
    good = {"device_id": CAM.device_id, "channel_id": CAM.channel_id, "media_ip": "127.0.0.2", "media_port": 30000,
            "ssrc": "0100000001", "transport": "udp"}
    for bad in ({"media_ip": "127.0.0.2\r\nm=video 1 RTP/AVP 96"}, {"ssrc": "1; x"}, {"transport": "sctp"},
                {"media_port": 0}, {"channel_id": "1\r\nVia: x"}):
        with pytest.raises(RemoteError) as refused:
            await bus.call("sip1", "sip.invite", {**good, **bad}, timeout=2)
        assert refused.value.code == "bad_request", bad
    assert sip.invites == []
    with pytest.raises(RemoteError):
        await bus.call("sip1", "sip.info", {"call_id": "c1", "content_type": "a/b\r\nX: y", "body": "PLAY"}, timeout=2)
    await bus.call("sip1", "sip.bye", {"call_id": "c1\r\nX: y", "reason": "bye\r\nX: y"}, timeout=2)
    assert sip.byes == ["c1  X: y"]  # one line: no header can be smuggled
    await serving.close()


async def test_the_recorder_of_a_node_that_does_not_own_the_channel_waits() -> None:
    portal, medias, nodes, directory, table = await _cluster()
    session = await portal.open_viewer(CAM, VIEWER)  # m1 relays the channel to a viewer
    with pytest.raises(MediaError) as owned:
        await nodes["m2"].open_reader(CAM)  # m2's recorder: not INVITEd twice
    assert owned.value.code == "stream_owned" and "m1" in str(owned.value)
    assert medias["m2"].manager.invites == 0
    await nodes["m1"].open_reader(CAM)  # m1's recorder shares m1's upstream
    assert medias["m1"].manager.invites == 1 and session.node_id == "m1"
    await nodes["m2"].open_reader(CAM2)  # a channel nobody relays: m2 takes it
    assert table.current(stream_lease(CAM2)) == "m2"


async def test_a_restarted_portal_learns_the_sessions_of_the_media_nodes() -> None:
    portal, medias, nodes, directory, table = await _cluster()
    session = await portal.open_viewer(CAM, VIEWER)
    # another portal (or this one after a restart) knows nothing of it ...
    other = ClusterMedia(portal.bus, directory, LocalLeases("p2", table), timeout=2)
    assert other.sessions == {}
    await other.refresh_streams()
    learned = other.sessions[session.session_id]  # ... until the media nodes list their sessions
    assert (learned.node_id, learned.user_id, learned.username, learned.channel) == ("m1", 7, "alice", CAM)
    assert learned.url_token is None and other.session_state(session.session_id)["state"] == "waiting"
    assert await other.end_session(session.session_id, "access revoked")  # revocation reaches it
    assert medias["m1"].sessions == {}
    await asyncio.sleep(0.01)
    assert session.session_id not in portal.sessions  # the first portal heard the node's event
    # a session the node no longer has, its closing event missed, leaves the portal at the next listing
    again = await portal.open_viewer(CAM, VIEWER)
    await portal.refresh_streams()
    assert again.session_id in portal.sessions
    del medias["m1"].sessions[again.session_id]  # gone without an event
    await portal.refresh_streams()
    assert again.session_id not in portal.sessions


async def test_a_killed_owner_still_listed_is_neither_asked_nor_given_new_streams() -> None:
    from dataclasses import replace
    from datetime import UTC, datetime, timedelta

    clock = [0.0]
    portal, medias, nodes, directory, table = await _cluster()
    table.clock = lambda: clock[0]
    m1_bus = portal.bus.network.buses["m1"]
    await LocalLeases("m1", table).acquire(stream_lease(CAM), 10)  # m1 relays CAM ...
    silent = replace(node("m1"), last_seen=datetime.now(UTC) - timedelta(seconds=30))
    await directory.publish(silent, 60)  # ... and was killed: its entry lingers, its heartbeat stopped
    handled = m1_bus.handled

    async def expire_soon() -> None:
        await asyncio.sleep(0.3)
        clock[0] += 11

    expiry = asyncio.ensure_future(expire_soon())
    session = await portal.open_viewer(CAM, VIEWER)
    await expiry
    assert session.node_id == "m2" and m1_bus.handled == handled  # m1 was never asked (no 40 s timeout)
    other = await portal.open_viewer(CAM2, VIEWER)
    assert other.node_id == "m2"  # nor given a new channel, though it looks less loaded


async def test_the_sip_node_ends_the_calls_of_a_media_node_that_left() -> None:
    network, directory, sip = LocalNetwork(), LocalNodeDirectory(), FakeSip(online={CAM.device_id})
    sip_bus = LocalCommandBus("sip1", network)
    serving = serve_signalling(sip_bus, sip, homes=LocalDeviceHomes(), directory=directory, sweep=60)
    await sip_bus.start()
    await directory.publish(node("sip1", ("sip",)), 60)
    await directory.publish(node("m1"), 60)
    media_bus = LocalCommandBus("m1", network)
    await media_bus.start()
    signalling = RemoteSignalling(media_bus, directory, None, timeout=2, invite_timeout=2)
    answer = await signalling.invite(CAM, media_ip="127.0.0.2", media_port=30000, ssrc="0100000001",
                                     transport="udp")
    await serving.sweep()
    assert sip.byes == []  # m1 is alive: its call goes on
    await directory.remove("m1")  # killed: its heartbeat stopped and its entry expired
    await serving.sweep()
    assert sip.byes == [answer.call_id]
    await serving.close()


# ------------------------------------------------------------------------------------- drain (rolling restart)
async def _draining_cluster(refuse_on_m2: bool = False):
    """Two media nodes whose sessions' ends are recorded (what live.stop would say), m1 to be drained."""
    network, directory, table = LocalNetwork(), LocalNodeDirectory(), LeaseTable()
    medias, nodes, stops = {}, {}, []
    for name in ("m1", "m2"):
        bus = LocalCommandBus(name, network)
        media = medias[name] = FakeMedia()
        media.on_session_closed = lambda session, reason, name=name: stops.append((name, session.session_id, reason))
        nodes[name] = serve_media(bus, media, LocalLeases(name, table), public_url=f"http://{name}.test:8080/",
                                  lease_ttl=30)
        nodes[name].directory = directory
        await bus.start()
        await directory.publish(node(name), 60)
    if refuse_on_m2:
        async def refuse(*a, **kw):
            raise MediaError("device_refused", "busy", 486)

        medias["m2"].open_viewer = refuse
    portal_bus = LocalCommandBus("p1", network)
    await portal_bus.start()
    portal = ClusterMedia(portal_bus, directory, LocalLeases("p1", table), timeout=2)
    return portal, medias, nodes, directory, table, stops


async def test_a_draining_node_moves_its_viewers_make_before_break() -> None:
    portal, medias, nodes, directory, table, stops = await _draining_cluster()
    moves = []
    nodes["m1"].on_session_moved = lambda session, to, source: moves.append((session.session_id, source, to))
    a, b = await asyncio.gather(portal.open_viewer(CAM, VIEWER), portal.open_viewer(CAM, VIEWER))
    assert a.node_id == b.node_id == "m1" and medias["m1"].manager.invites == 1
    drain = asyncio.ensure_future(nodes["m1"].drain(timeout=10))

    # the portal learns the new home of both sessions, with output URLs of m2 (its own single-use token)
    moved = await eventually(lambda: portal.moved_urls(a.session_id) and portal.moved_urls(b.session_id))
    assert moved["node_id"] == "m2"
    assert moved["flv_url"].startswith(f"http://m2.test:8080/flv/{b.session_id}.flv?t=")
    assert portal.moved_urls(a.session_id)["whep_url"].startswith(f"http://m2.test:8080/whep/{a.session_id}?t=")
    assert portal.sessions[a.session_id].node_id == "m2"
    # m2 opened the upstream once and the same sessions (same ids: same watermark tag and audit session), for
    # the same viewer in full; m2 holds the channel's lease; m1's upstream still plays (make before break)
    assert medias["m2"].manager.invites == 1
    assert set(medias["m2"].sessions) == {a.session_id, b.session_id}
    assert medias["m2"].viewers == [VIEWER, VIEWER]
    assert table.current(stream_lease(CAM)) == "m2"
    assert (CAM, "main") in medias["m1"].manager.streams and set(medias["m1"].sessions) == {a.session_id, b.session_id}
    await nodes["m1"].renew()  # m1's renewal leaves the lease it gave away alone, and its upstream too
    assert table.current(stream_lease(CAM)) == "m2" and (CAM, "main") in medias["m1"].manager.streams
    assert sorted(moves) == sorted([(a.session_id, "m1", "m2"), (b.session_id, "m1", "m2")])

    # while m1 drains, a new channel goes elsewhere and a new viewer of the moved one joins m2
    other = await portal.open_viewer(CAM2, VIEWER)
    assert other.node_id == "m2" and medias["m1"].manager.invites == 1
    assert (await portal.open_viewer(CAM, VIEWER)).node_id == "m2"

    # the players switch: their old outputs close on m1; the drain ends; nothing recorded as an end
    assert not drain.done()
    medias["m1"].close_session(a.session_id, "player disconnected")
    medias["m1"].close_session(b.session_id, "player disconnected")
    assert await asyncio.wait_for(drain, 5) == {"moved": 2, "failed": 0, "left": 0}
    await asyncio.sleep(0.01)
    assert stops == [] and a.session_id in portal.sessions and portal.sessions[a.session_id].node_id == "m2"
    # a moved session's end is recorded once, where it really ends
    medias["m2"].close_session(a.session_id, "player disconnected")
    await asyncio.sleep(0.01)
    assert stops == [("m2", a.session_id, "player disconnected")] and a.session_id not in portal.sessions


async def test_a_move_the_other_node_refuses_keeps_the_stream_until_the_drain_ends() -> None:
    portal, medias, nodes, directory, table, stops = await _draining_cluster(refuse_on_m2=True)
    session = await portal.open_viewer(CAM, VIEWER)
    assert session.node_id == "m1"
    result = await nodes["m1"].drain(timeout=1.0)
    # the lease came back to m1 (the adoption failed), the viewer watched on until the drain's end, then the
    # session ended with a reason (its live.stop); m2 kept nothing
    assert result == {"moved": 0, "failed": 1, "left": 1}
    assert stops == [("m1", session.session_id, "media node drained")]
    assert not medias["m2"].sessions and portal.moved_urls(session.session_id) is None
    assert table.current(stream_lease(CAM)) == "m1"


async def test_adopt_refuses_what_it_does_not_own_and_hostile_payloads() -> None:
    portal, medias, nodes, directory, table, stops = await _draining_cluster()
    bus = LocalCommandBus("x", portal.bus.network)
    viewer = {"user_id": 7, "username": "alice", "roles": []}
    good = {"device_id": CAM.device_id, "channel_id": CAM.channel_id, "from_node": "m1",
            "sessions": [{"session_id": "abc", "viewer": viewer}]}
    with pytest.raises(RemoteError) as owned:  # the lease is not m2's: no INVITE
        await bus.call("m2", "media.adopt", good, timeout=2)
    assert owned.value.code == "stream_owned" and not medias["m2"].sessions
    for bad in ({**good, "sessions": []}, {**good, "sessions": [{"session_id": "a b", "viewer": viewer}]},
                {**good, "from_node": "../x"}, {**good, "sessions": [{"session_id": "abc", "viewer": "x"}]}):
        with pytest.raises(RemoteError) as refused:
            await bus.call("m2", "media.adopt", bad, timeout=2)
        assert refused.value.code == "bad_request"


async def test_a_portal_that_missed_the_moved_event_learns_the_new_home_from_the_listing() -> None:
    portal, medias, nodes, directory, table, stops = await _draining_cluster()
    session = await portal.open_viewer(CAM, VIEWER)
    portal._on_moved = lambda payload: None  # the pub/sub message is lost on the way to this portal
    drain = asyncio.ensure_future(nodes["m1"].drain(timeout=10))
    await eventually(lambda: session.session_id in medias["m2"].sessions)
    await asyncio.sleep(0.05)
    assert portal.moved_urls(session.session_id) is None and portal.sessions[session.session_id].node_id == "m1"
    del portal._on_moved
    await portal.refresh_streams()  # m1 lists the session as moved to m2: the portal asks m2 for its URL
    moved = await eventually(lambda: portal.moved_urls(session.session_id))
    assert moved["node_id"] == "m2" and moved["flv_url"].startswith(f"http://m2.test:8080/flv/{session.session_id}")
    medias["m1"].close_session(session.session_id, "player disconnected")
    assert (await asyncio.wait_for(drain, 5))["moved"] == 1 and stops == []


# ------------------------------------------------------------------------------------- sub-stream (issue 18)
async def test_a_sub_stream_invite_crosses_the_bus_in_the_devices_form() -> None:
    from media_relay.signalling import StreamNotOffered

    network, directory, sip = LocalNetwork(), LocalNodeDirectory(), FakeSip(online={CAM.device_id, CAM2.device_id})
    forms = {CAM.device_id: "streamprofile"}

    async def stream_form(device_id: str) -> str | None:
        return forms.get(device_id)

    sip_bus = LocalCommandBus("sip1", network)
    homes = LocalDeviceHomes()
    serving = serve_signalling(sip_bus, sip, homes=homes, stream_form=stream_form)
    await sip_bus.start()
    await directory.publish(node("sip1", ("sip", "portal", "worker")), 60)
    media_bus = LocalCommandBus("m1", network)
    await media_bus.start()
    signalling = RemoteSignalling(media_bus, directory, homes, timeout=2, invite_timeout=2)
    assert await signalling.refresh(CAM.device_id)
    await signalling.invite(CAM, media_ip="127.0.0.2", media_port=30000, ssrc="0100000001", transport="udp",
                            stream="sub")
    await signalling.invite(CAM, media_ip="127.0.0.2", media_port=30002, ssrc="0100000002", transport="udp")
    assert [i["stream"] for i in sip.invites] == [("streamprofile", 1), ("streamprofile", 0)]
    forms.clear()  # the form unset meanwhile: the refusal comes back typed, nothing reaches the device
    with pytest.raises(StreamNotOffered):
        await signalling.invite(CAM, media_ip="127.0.0.2", media_port=30004, ssrc="0100000003", transport="udp",
                                stream="sub")
    assert len(sip.invites) == 2
    await signalling.close()
    await serving.close()


async def test_main_and_sub_stream_are_owned_and_placed_apart() -> None:
    portal, medias, nodes, directory, table = await _cluster()
    main = await portal.open_viewer(CAM, VIEWER)
    await directory.publish(node("m1", streams=5), 60)  # m1 now the busier: the sub-stream starts on m2
    sub = await portal.open_viewer(CAM, VIEWER, stream="sub")
    assert (main.node_id, main.stream, sub.node_id, sub.stream) == ("m1", "main", "m2", "sub")
    assert table.current(stream_lease(CAM)) == "m1" and table.current(stream_lease(CAM, "sub")) == "m2"
    assert stream_lease(CAM, "sub") != stream_lease(CAM)
    again = await portal.open_viewer(CAM, VIEWER, stream="sub")  # joins the sub-stream's owner
    assert again.node_id == "m2" and medias["m2"].manager.invites == 1
    with pytest.raises(MediaError) as bad:
        await portal.open_viewer(CAM, VIEWER, stream="third")
    assert bad.value.code == "bad_stream"
    for n in nodes.values():
        await n.stop()
    assert table.current(stream_lease(CAM, "sub")) is None  # released with the node
