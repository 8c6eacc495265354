"""The revocation re-check (ops_portal/revocation.py) on SQLite and PostgreSQL: a validity window that ran out
or a channel that left the user's scope ends that user's sessions (``access_revoked``) and nobody else's;
a running download job of such a user is cancelled with the same reason.  (Disable, revoke and role removal
against a running platform with a real FLV client: tests/e2e/test_revocation.py.)"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update

from gbcore.ids import ChannelRef
from ops_portal.models import Role, RoleOrgNode, RolePermission, User
from ops_portal.revocation import REASON, RevocationWatcher

from .conftest import Portal
from .org_data import CA1, CB1, NVR
from .test_output_binding import live  # noqa: F401 - fixture


async def _open(portal: Portal, media: Any, user: User, channel: str) -> str:
    s = await media.open_session(user_id=user.id, username=user.username, channel=ChannelRef(NVR, channel),
                                 transport="udp", client_ip="127.0.0.1")
    return s.session_id


async def test_window_end_and_scope_change_end_sessions(audited: Portal, live: dict[str, Any]) -> None:  # noqa: F811
    media = live["media"]
    tree = live["tree"]
    async with audited.sessionmaker() as s:
        users = {u.username: u for u in (await s.scalars(select(User))).all()}
    owner, curious = users["owner"], users["curious"]  # east node / west node, each logged in
    a = await _open(audited, media, owner, CA1)
    b = await _open(audited, media, curious, CB1)
    watcher = RevocationWatcher(audited.sessionmaker, audited.registry, media=media)
    assert await watcher.check_now() == 0 and {a, b} <= set(media.sessions)

    # the owner's validity window ends: its session ends, the other user's stays
    async with audited.sessionmaker() as s:
        await s.execute(update(User).where(User.id == owner.id)
                        .values(valid_until=datetime.now(UTC) - timedelta(seconds=1)))
        await s.commit()
    assert await watcher.check_now() == 1
    assert a not in media.sessions and b in media.sessions
    assert (a, REASON) in live["stops"]

    # the west node leaves the curious user's role: the periodic task ends its session within its interval
    watcher.interval = 0.2
    watcher.start()
    try:
        async with audited.sessionmaker() as s:
            role_id = (await s.scalars(select(Role.id).where(Role.name == "role:curious"))).one()
            await s.execute(delete(RoleOrgNode).where(RoleOrgNode.role_id == role_id, RoleOrgNode.org_node_id == tree.vb))
            await s.commit()
        for _ in range(50):
            if b not in media.sessions:
                break
            await asyncio.sleep(0.1)
        assert b not in media.sessions and (b, REASON) in live["stops"]
    finally:
        await watcher.stop()


class FakeDownloads:
    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.cancelled: list[tuple[str, str]] = []

    def running_ids(self) -> list[str]:
        return [] if self.cancelled else [self.job_id]

    async def cancel(self, job_id: str, reason: str) -> bool:
        self.cancelled.append((job_id, reason))
        return True


async def test_a_disabled_users_running_download_is_cancelled(audited: Portal, live: dict[str, Any]) -> None:  # noqa: F811
    from watermark.models import DownloadJob

    async with audited.sessionmaker() as s:
        owner = (await s.scalars(select(User).where(User.username == "owner"))).one()
        s.add(DownloadJob(id="ab" * 8, user_id=owner.id, username="owner", channel_id=CA1, device_id=NVR, seconds=10,
                          state="queued", session_id="dl-x", watermark_id="ABCD1234", created_at=datetime.now(UTC)))
        await s.commit()
    async with audited.sessionmaker() as s:  # the owner may download (its role held live.view only)
        role_id = (await s.scalars(select(Role.id).where(Role.name == "role:owner"))).one()
        s.add(RolePermission(role_id=role_id, permission="download.create"))
        await s.commit()
    downloads = FakeDownloads("ab" * 8)
    watcher = RevocationWatcher(audited.sessionmaker, audited.registry, media=live["media"], downloads=downloads)
    assert await watcher.check_now() == 0 and downloads.cancelled == []
    async with audited.sessionmaker() as s:
        await s.execute(update(User).where(User.id == owner.id).values(disabled=True))
        await s.commit()
    assert await watcher.check_now() == 1
    assert downloads.cancelled == [("ab" * 8, "访问权限已被收回 / access_revoked")]
