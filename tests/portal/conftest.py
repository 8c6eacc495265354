"""Fixtures of the portal tests: an app on a fresh database (SQLite and PostgreSQL, through the
shared ``registry`` fixture), a fake SIP service, users and tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gbcore.settings import Settings
from ops_portal import auth
from ops_portal.app import create_app
from ops_portal.models import User
from ops_portal.users import create_user

GOOD_PASSWORD = "Correct-Horse-42"


@pytest.fixture(autouse=True)
def cheap_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    """argon2 with minimal cost: the tests check behaviour, not hash strength."""
    monkeypatch.setattr(auth, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    monkeypatch.setattr(auth, "_dummy_hash", None)


class DeviceNotReachable(Exception):
    """Same name as sip_server.service.DeviceNotReachable: the portal matches it by name."""


@dataclass
class FakeSip:
    online: set[str] = field(default_factory=set)
    progress: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Devices that look online but vanish when asked (the race between is_online and the query).
    vanishing: set[str] = field(default_factory=set)
    started: list[str] = field(default_factory=list)

    def is_online(self, device_id: str) -> bool:
        return device_id in self.online or device_id in self.vanishing

    def start_catalog_sync(self, device_id: str) -> dict[str, Any]:
        if device_id not in self.online:
            raise DeviceNotReachable(device_id)
        self.started.append(device_id)
        progress = {
            "device_id": device_id,
            "sn": 17,
            "state": "running",
            "received": 0,
            "expected": None,
            "pages": 0,
            "summary": "running 0/?",
        }
        self.progress[device_id] = progress
        return progress

    def catalog_progress(self, device_id: str) -> dict[str, Any] | None:
        return self.progress.get(device_id)

    #: device_id -> HA1 values handed to the SIP service (None: cleared)
    passwords: dict[str, Any] = field(default_factory=dict)

    def set_device_password_ha1(self, device_id: str, ha1: dict[str, str] | None) -> None:
        self.passwords[device_id] = ha1

    def metrics(self) -> dict[str, int]:
        return {"registrations": len(self.online)}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


@pytest.fixture
def fake_sip() -> FakeSip:
    return FakeSip()


@dataclass
class Portal:
    app: FastAPI
    client: httpx.AsyncClient
    sessionmaker: async_sessionmaker[AsyncSession]
    registry: Any
    settings: Settings
    sip: FakeSip | None
    audit: Any = None

    async def add_user(
        self,
        username: str,
        password: str = GOOD_PASSWORD,
        *,
        must_change_password: bool = False,
        permissions: set[str] | frozenset[str] | None = None,
        org_nodes: list[int] | None = None,
        channels: list[Any] | None = None,
        full_scope: bool | None = None,
        **attributes: Any,
    ) -> User:
        """A user with one role of its own (``role:<username>``): ``permissions`` (None: every one),
        scope ``org_nodes`` / ``channels``, or everything (``full_scope``, the default when both are
        None).  ``attributes`` are set on the user (``valid_until=...``, ``ptz_level=...``)."""
        from ops_portal.deps import PERMISSIONS
        from ops_portal.models import Role, RoleChannel, RoleOrgNode, RolePermission, UserRole

        if full_scope is None:
            full_scope = org_nodes is None and channels is None
        async with self.sessionmaker() as session:
            user = await create_user(
                session, username, password, must_change_password=must_change_password
            )
            for name, value in attributes.items():
                setattr(user, name, value)
            role = Role(name=f"role:{username}", full_scope=full_scope)
            session.add(role)
            await session.flush()
            for perm in sorted(PERMISSIONS if permissions is None else permissions):
                session.add(RolePermission(role_id=role.id, permission=perm))
            for node in org_nodes or []:
                session.add(RoleOrgNode(role_id=role.id, org_node_id=node))
            for channel in channels or []:
                ref = await _channel_ref(session, channel)
                session.add(RoleChannel(role_id=role.id, device_id=ref.device_id, channel_id=ref.channel_id))
            session.add(UserRole(user_id=user.id, role_id=role.id))
            await session.commit()
            return user

    async def login(self, username: str, password: str = GOOD_PASSWORD) -> str:
        r = await self.client.post("/api/auth/login", json={"username": username, "password": password})
        assert r.status_code == 200, r.text
        return r.json()["access_token"]

    async def user_token(self, username: str = "alice") -> dict[str, str]:
        """Create an ordinary user and return the Authorization header of a fresh token."""
        await self.add_user(username)
        return bearer(await self.login(username))


async def _channel_ref(session: Any, channel: Any) -> Any:
    """A test's channel grant: a ChannelRef / (device, channel) pair, ``"device/channel"``, or a bare channel id
    that exactly one device reports (the test data's ids are unique unless a test says otherwise); a bare id
    no device reports becomes an unresolved grant (device '', matching nothing), as migration 0007 keeps them."""
    from sqlalchemy import select

    from device_registry.models import Channel
    from gbcore.ids import ChannelRef

    if isinstance(channel, tuple):
        return ChannelRef(*channel)
    if "/" in channel:
        return ChannelRef.parse(channel)
    devices = sorted(set(await session.scalars(select(Channel.device_id).where(Channel.channel_id == channel))))
    assert len(devices) <= 1, f"channel id {channel} is on {devices}: name the device"
    return ChannelRef(devices[0] if devices else "", channel)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def make_portal(
    registry: Any, settings: Settings, sip: FakeSip | None, audit: Any = None
) -> AsyncIterator[Portal]:
    from cluster.runtime import open_cluster

    app = create_app(settings=settings, sessionmaker=registry.sessionmaker, registry=registry, sip=sip, audit=audit)
    # the single process's cluster, as gbops.app wires it (one node, in memory): GET /api/cluster/nodes
    app.state.cluster = cluster = await open_cluster(settings)
    app.state.cluster_clustered = False
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://portal.test") as client:
            yield Portal(app, client, registry.sessionmaker, registry, settings, sip, audit)
    finally:
        await cluster.close()


@pytest.fixture
async def portal(registry: Any, settings: Settings, fake_sip: FakeSip) -> AsyncIterator[Portal]:
    async for p in make_portal(registry, settings, fake_sip):
        yield p


@pytest.fixture
async def audited(registry: Any, settings: Settings, fake_sip: FakeSip) -> AsyncIterator[Portal]:
    """The portal with the platform's audit log (key generated in the data directory)."""
    from audit_log.log import AuditLog

    audit = AuditLog.from_settings(settings, registry.sessionmaker)
    async for p in make_portal(registry, settings, fake_sip, audit):
        yield p
    await audit.stop()


@pytest.fixture
async def portal_no_sip(registry: Any, settings: Settings) -> AsyncIterator[Portal]:
    async for p in make_portal(registry, settings, None):
        yield p
