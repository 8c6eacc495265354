"""Fixtures of the availability tests: a hand-made presence history (see ``seed_day``), and the portal
fixtures (app on SQLite and PostgreSQL, users with scopes, audit log)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import insert

from device_registry.models import Channel, Device, OrgNode, PlatformRun, PresenceEvent
from tests.portal.conftest import audited, cheap_argon2, fake_sip, portal, settings  # noqa: F401 - fixtures

H = 3600.0


def z(day: int, hour: float, minute: float = 0) -> datetime:
    """2026-10-<day> at hour:minute UTC."""
    return datetime(2026, 10, day, tzinfo=UTC) + timedelta(hours=hour, minutes=minute)


D1, D2, D3 = "34020000001320000001", "34020000001180000002", "34020000001320000003"
C1 = "34020000001310000001"
C2A, C2B = "34020000001310000021", "34020000001310000022"
C3 = "34020000001310000003"

#: Expected figures of the local (Asia/Shanghai) day 2026-10-21 = [10-20 16:00Z, 10-21 16:00Z), by hand:
#: platform down 10-21 02:00Z-03:00Z (1 h unknown for every channel existing then);
#: C1: device off 10-20 20:00Z-20:30Z; then off at 10-21 10:00Z and back "at 09:59Z" (clock set back: clamped,
#:     no outage) -> offline 0.5 h, unknown 1 h, online 22.5 h, 1 outage;
#: C2A: channel off 00:00Z, its NVR off 01:00Z-01:30Z (overlap), channel on 04:00Z -> offline 00:00-02:00 and
#:     03:00-04:00 (the platform downtime between is unknown) = 3 h in 2 outages, longest 2 h; online 20 h;
#: C2B: only the NVR's outage 01:00-01:30Z -> offline 0.5 h, online 22.5 h;
#: C3: its device registers for the first time at 06:00Z -> absent 14 h, online 10 h.
EXPECTED = {
    C1: dict(online_s=22.5 * H, offline_s=0.5 * H, unknown_s=H, absent_s=0.0, outages=1, longest_outage_s=0.5 * H),
    C2A: dict(online_s=20 * H, offline_s=3 * H, unknown_s=H, absent_s=0.0, outages=2, longest_outage_s=2 * H),
    C2B: dict(online_s=22.5 * H, offline_s=0.5 * H, unknown_s=H, absent_s=0.0, outages=1, longest_outage_s=0.5 * H),
    C3: dict(online_s=10 * H, offline_s=0.0, unknown_s=0.0, absent_s=14 * H, outages=0, longest_outage_s=0.0),
}
EXPECTED_RATE = 75 / 79


async def seed_day(sessionmaker) -> dict[str, int]:
    """Write the history above; returns the org node ids ({"a": ..., "b": ...}): D2 is in node a."""
    t0 = z(19, 0)
    async with sessionmaker() as s:
        a = (await s.execute(insert(OrgNode).values(name="东区 East", kind="manual", created_at=t0, updated_at=t0)
                             .returning(OrgNode.id))).scalar_one()
        b = (await s.execute(insert(OrgNode).values(name="西区 West", kind="manual", created_at=t0, updated_at=t0)
                             .returning(OrgNode.id))).scalar_one()
        for dev, online, org in ((D1, True, b), (D2, True, a), (D3, True, b)):
            await s.execute(insert(Device).values(device_id=dev, online=online, keepalive_interval=60, org_node_id=org,
                                                  created_at=t0, updated_at=t0))
        for dev, chan, first, name in ((D1, C1, t0, "大门 Gate"), (D2, C2A, t0, "一号 One"), (D2, C2B, t0, "二号 Two"),
                                       (D3, C3, z(21, 6), "新点 New")):
            await s.execute(insert(Channel).values(device_id=dev, channel_id=chan, name=name, online=True, status="ON",
                                                   first_seen=first, updated_at=first))
        await s.execute(insert(PlatformRun), [
            {"started_at": z(18, 23), "stopped_at": z(21, 2), "clean": False},
            {"started_at": z(21, 3), "stopped_at": None, "clean": False},
        ])
        rows = []

        def ev(dev: str, chan: str | None, online: bool, at: datetime, reason: str) -> None:
            rows.append({"subject": "device" if chan is None else "channel", "device_id": dev, "channel_id": chan,
                         "online": online, "at": at, "reason": reason})

        for dev, chans in ((D1, [C1]), (D2, [C2A, C2B])):  # everything comes up on the 19th
            ev(dev, None, True, t0, "registered")
            for c in chans:
                ev(dev, c, True, t0, "device_online")
        ev(D1, None, False, z(20, 20), "keepalive_timeout")
        ev(D1, C1, False, z(20, 20), "device_offline")
        ev(D1, None, True, z(20, 20, 30), "registered")
        ev(D1, C1, True, z(20, 20, 30), "device_online")
        ev(D2, C2A, False, z(21, 0), "catalog_status")
        ev(D2, None, False, z(21, 1), "keepalive_timeout")
        ev(D2, C2B, False, z(21, 1), "device_offline")
        ev(D2, None, True, z(21, 1, 30), "registered")
        ev(D2, C2B, True, z(21, 1, 30), "device_online")
        ev(D2, C2A, True, z(21, 4), "catalog_status")
        ev(D3, None, True, z(21, 6), "registered")
        ev(D3, C3, True, z(21, 6), "device_online")
        ev(D1, None, False, z(21, 10), "keepalive_timeout")
        ev(D1, C1, False, z(21, 10), "device_offline")
        ev(D1, None, True, z(21, 9, 59), "registered")  # the clock went back 1 min
        ev(D1, C1, True, z(21, 9, 59), "device_online")
        ev(D1, None, True, z(22, 1), "registered")  # after the day: ignored
        await s.execute(insert(PresenceEvent), rows)
        await s.commit()
    return {"a": a, "b": b}
