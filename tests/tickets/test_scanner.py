"""Automatic tickets driven by presence (registry events), overdue notices and the webhook."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer

from sqlalchemy import select

from device_registry.events import CatalogReported, ChannelStatusChanged, DeviceWentOffline
from ops_portal.contracts import Contract
from ops_portal.tickets.models import Notification, Ticket, TicketEvent
from ops_portal.tickets.notify import WebhookNotifier
from ops_portal.tickets.scanner import scan
from tests.registry._support import DEV, cam, item, reg, t

OFFLINE_AFTER = 600


async def _scan(registry, at: float, notifier=None, audit=None):
    return await scan(registry.sessionmaker, now=t(at), offline_after=OFFLINE_AFTER, default_limit_hours=48,
                      notifier=notifier, audit=audit)


async def _tickets(registry) -> list[Ticket]:
    async with registry.sessionmaker() as session:
        return list((await session.scalars(select(Ticket).order_by(Ticket.id))).all())


async def test_device_offline_opens_one_ticket_and_recovery_repairs_it(registry) -> None:
    await registry.apply([reg(at=0), CatalogReported(DEV, t(1), (item(cam(1)), item(cam(2))), True, "complete 2/2")])
    await registry.apply([DeviceWentOffline(DEV, t(1000), "keepalive_timeout")])
    assert (await _scan(registry, 1000 + OFFLINE_AFTER - 1)).opened == []  # not long enough yet
    result = await _scan(registry, 1000 + OFFLINE_AFTER)
    assert len(result.opened) == 1
    assert (await _scan(registry, 2000)).opened == []  # no duplicate while it is open
    [ticket] = await _tickets(registry)
    assert (ticket.source, ticket.kind, ticket.device_id, ticket.channel_id) == ("auto_offline", "fault", DEV, None)
    assert ticket.reported_at == t(1600) and ticket.deadline == t(1600) + timedelta(hours=48)
    assert ticket.detail["offline_since"] == t(1000).isoformat()  # one ticket for the device, none per channel

    await registry.apply([reg(at=5000)])  # back: registers again
    result = await _scan(registry, 5100)
    assert result.recovered == [ticket.id]
    [ticket] = await _tickets(registry)
    assert ticket.state == "repaired"  # still awaiting confirmation by a person
    assert ticket.feedback_at == t(5000)  # feedback time = recovery time
    assert ticket.repair_seconds == 5000 - 1600
    assert ticket.open_key is None
    async with registry.sessionmaker() as session:
        events = (await session.scalars(select(TicketEvent).order_by(TicketEvent.id))).all()
        assert [(e.action, e.to_state, e.actor_type) for e in events] == [
            ("report", "reported", "system"), ("recover", "repaired", "system")]
        notes = (await session.scalars(select(Notification))).all()
        assert [n.kind for n in notes] == ["ticket.opened"]

    # a new outage is a new ticket
    await registry.apply([DeviceWentOffline(DEV, t(9000), "keepalive_timeout")])
    assert len((await _scan(registry, 9000 + OFFLINE_AFTER + 1)).opened) == 1
    assert len(await _tickets(registry)) == 2


async def test_channel_offline_while_device_online(registry) -> None:
    await registry.apply([reg(at=0), CatalogReported(DEV, t(1), (item(cam(1)), item(cam(2))), True, "complete 2/2")])
    await registry.apply([ChannelStatusChanged(DEV, cam(2), t(100), "OFF")])
    result = await _scan(registry, 100 + OFFLINE_AFTER)
    [ticket] = await _tickets(registry)
    assert result.opened == [ticket.id]
    assert (ticket.channel_id, ticket.device_id) == (cam(2), DEV)
    await registry.apply([ChannelStatusChanged(DEV, cam(2), t(800), "ON")])
    assert (await _scan(registry, 900)).recovered == [ticket.id]
    [ticket] = await _tickets(registry)
    assert ticket.state == "repaired" and ticket.feedback_at == t(800) and ticket.repair_seconds == 100


async def test_contract_limit_and_overdue_notice_through_the_webhook(registry) -> None:
    received: list[dict] = []
    failures = [1]  # the first delivery fails: the notifier retries

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if failures:
                failures.pop()
                self.send_response(503)
            else:
                received.append(json.loads(body))
                self.send_response(204)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    notifier = WebhookNotifier(f"http://127.0.0.1:{server.server_port}/hook", attempts=3, first_delay=0.05)
    try:
        await registry.apply([reg(at=0), CatalogReported(DEV, t(1), (item(cam(1)),), True, "complete 1/1")])
        async with registry.sessionmaker() as session:
            session.add(Contract(name="district", customer="公安分局", org_node_ids=[], channel_ids=[cam(1)],
                                 storage_days=30, repair_limit_hours=4, quality_terms={},
                                 rate_rule="time_weighted", valid_from=t(-86400)))
            await session.commit()
        await registry.apply([ChannelStatusChanged(DEV, cam(1), t(100), "OFF")])
        await _scan(registry, 800, notifier)
        [ticket] = await _tickets(registry)
        assert ticket.repair_limit_hours == 4 and ticket.contract_id is not None  # the contract's limit
        assert ticket.deadline == t(800) + timedelta(hours=4)
        result = await _scan(registry, 800 + 4 * 3600 + 1, notifier)
        assert result.overdue == [ticket.id]
        assert (await _scan(registry, 800 + 5 * 3600, notifier)).overdue == []  # notified once
        await notifier.drain()
        assert [p["kind"] for p in received] == ["ticket.opened", "ticket.overdue"]
        assert received[1]["ticket_id"] == ticket.id and "/" in received[1]["message"]
        assert notifier.delivered == 2 and notifier.failed == 0
    finally:
        await notifier.close()
        server.shutdown()
        server.server_close()


async def test_webhook_failure_is_logged_and_never_blocks() -> None:
    notifier = WebhookNotifier("http://127.0.0.1:9/unreachable", attempts=2, first_delay=0.01, timeout=0.5)
    notifier.post({"kind": "ticket.overdue", "ticket_id": 1})  # returns at once
    await notifier.drain()
    assert notifier.failed == 1 and notifier.delivered == 0
    await notifier.close()
    assert WebhookNotifier("file:///etc/passwd").url is None
