"""Revocation ends running sessions: a user who loses access stops watching and downloading within 5 s.

Disabling a user, revoking their sessions (``POST /api/users/{id}/revoke``), taking a role or a grant from
them (or changing a role they hold), and the end of their validity window all end that user's running live
sessions (``live.stop`` with reason :data:`REASON`) and their running download jobs (``download.failed``
with the same reason).

:class:`RevocationWatcher` does it two ways:

* a periodic re-check every :data:`CHECK_INTERVAL` seconds of the users who hold sessions or running jobs:
  their :class:`~ops_portal.access.Access` is loaded again (:func:`ops_portal.access.load_access`), and a
  session or job ends when its user is gone, disabled, outside the validity window, has no valid token any
  more, lacks ``live.view`` / ``download.create``, or the channel left the user's scope;
* an immediate trigger (:func:`trigger`, called by the user and role routes after their commit) that
  runs the same check at once.

A session's output ends with it: the HTTP-FLV response and the WebRTC track close
(:func:`ops_portal.live.routes._end_output_with_session`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, select

from gbcore.db import utcnow
from gbcore.ids import ChannelRef
from gbcore.log import get_logger
from gbcore.periodic import PeriodicTask
from ops_portal.scope_lists import channels_in_scope

__all__ = ["CHECK_INTERVAL", "REASON", "RevocationWatcher", "trigger"]

log = get_logger("gbops.portal.revocation")

#: The ``live.stop`` / ``download.failed`` reason.
REASON = "access_revoked"
#: Seconds between two re-checks (the issue's bound is 5 s from the change to the end of the session).
CHECK_INTERVAL = 2.0
#: What a download job's row says when it was cancelled this way.
DOWNLOAD_REASON = "访问权限已被收回 / access_revoked"


class RevocationWatcher:
    """The periodic re-check, plus :meth:`check_now` for the routes (through :func:`trigger`)."""

    def __init__(self, sessionmaker: Any, registry: Any, *, media: Any = None, downloads: Any = None,
                 interval: float = CHECK_INTERVAL) -> None:
        self.sessionmaker = sessionmaker
        self.registry = registry
        self.media = media
        self.downloads = downloads
        self.interval = interval
        self._lock = asyncio.Lock()
        # the first check one interval after start (or at the first poke), then every interval or at once
        # when poked; a failed check is logged and checked again at the next round (no back-off: the 5 s bound)
        self.periodic = PeriodicTask("revocation-watcher", self.check_now, interval=lambda: self.interval,
                                     logger=log, failure_event="revocation.check_failed")
        self.ended_sessions = 0
        self.cancelled_jobs = 0

    # ------------------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self.periodic.start()

    async def stop(self) -> None:
        await self.periodic.stop()

    def poke(self) -> None:
        """Run a check now (without waiting for it)."""
        self.periodic.trigger()

    # ------------------------------------------------------------------------------ the check
    def _live_sessions(self) -> list[Any]:
        sessions = getattr(self.media, "sessions", None) if self.media is not None else None
        return [s for s in list((sessions or {}).values()) if not getattr(s, "closed", False)]

    async def _running_jobs(self) -> dict[str, tuple[int, ChannelRef]]:
        """job id -> (user id, channel) of the download jobs running in this process."""
        running = getattr(self.downloads, "running_ids", None) if self.downloads is not None else None
        ids = running() if running is not None else []
        if not ids:
            return {}
        from watermark.models import DownloadJob

        async with self.sessionmaker() as session:
            rows = (await session.execute(
                select(DownloadJob.id, DownloadJob.user_id, DownloadJob.device_id, DownloadJob.channel_id)
                .where(DownloadJob.id.in_(ids)))).all()
            await session.commit()
        return {r.id: (int(r.user_id), ChannelRef(r.device_id, r.channel_id)) for r in rows}

    async def check_now(self, user_ids: Iterable[int] | None = None) -> int:
        """Re-check the users holding sessions or running jobs (only ``user_ids`` when given); end what they
        may no longer have.  Returns how many sessions and jobs were ended."""
        async with self._lock:
            sessions = self._live_sessions()
            jobs = await self._running_jobs()
            users = {int(s.user_id) for s in sessions} | {uid for uid, _ in jobs.values()}
            if user_ids is not None:
                users &= {int(u) for u in user_ids}
            ended = 0
            for uid in sorted(users):
                allowed = await self._allowed(uid, {ChannelRef(s.device_id, s.channel_id)
                                                    for s in sessions if int(s.user_id) == uid},
                                              {ref for u, ref in jobs.values() if u == uid})
                for s in sessions:
                    if int(s.user_id) == uid and not allowed("live.view", ChannelRef(s.device_id, s.channel_id)):
                        await self._end_session(s)
                        ended += 1
                for job_id, (u, ref) in jobs.items():
                    if u == uid and not allowed("download.create", ref):
                        if await self._cancel_job(job_id):
                            ended += 1
            return ended

    async def _allowed(self, user_id: int, live: set[ChannelRef], jobs: set[ChannelRef]) -> Any:
        """A predicate ``(permission, channel) -> bool`` for the user as it is now in the database."""
        from ops_portal.access import load_access
        from ops_portal.models import AuthToken, User

        async with self.sessionmaker() as session:
            user = await session.get(User, user_id)
            if user is None or user.disabled:
                await session.commit()
                return lambda _perm, _ref: False
            now = utcnow()
            tokens = await session.scalar(
                select(func.count()).select_from(AuthToken).where(
                    AuthToken.user_id == user_id, AuthToken.revoked_at.is_(None), AuthToken.expires_at > now))
            access = await load_access(session, user, now=now)
            await session.commit()
        if not tokens:  # every token revoked (POST /api/users/{id}/revoke, password reset) or expired
            return lambda _perm, _ref: False
        in_scope = await channels_in_scope(self.registry, access.scope, live | jobs)
        return lambda perm, ref: access.can(perm) and ref in in_scope

    async def _end_session(self, s: Any) -> None:
        media = self.media
        log.info("revocation.session_ended", session=s.session_id[:8], user_id=s.user_id, channel_id=s.channel_id)
        try:
            await media.end_session(s.session_id, REASON)  # its WebRTC peer too
        except Exception:
            log.exception("revocation.end_failed", session=s.session_id[:8])
            media.close_session(s.session_id, REASON)
        self.ended_sessions += 1

    async def _cancel_job(self, job_id: str) -> bool:
        cancel = getattr(self.downloads, "cancel", None)
        if cancel is None:
            return False
        done = await cancel(job_id, DOWNLOAD_REASON)
        if done:
            log.info("revocation.download_cancelled", job=job_id)
            self.cancelled_jobs += 1
        return bool(done)


def trigger(app_state: Any, user_ids: Iterable[int] | None = None) -> None:
    """Ask the platform's watcher (``app.state.revocation``) to re-check now; a no-op without one."""
    watcher = getattr(app_state, "revocation", None)
    if watcher is None:
        return
    if user_ids is None:
        watcher.poke()
        return
    task = asyncio.ensure_future(watcher.check_now(list(user_ids)))
    _pending.add(task)
    task.add_done_callback(_done)


_pending: set[asyncio.Task] = set()


def _done(task: asyncio.Task) -> None:
    _pending.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("revocation.trigger_failed", error=repr(task.exception()))
