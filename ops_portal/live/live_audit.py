"""``live.start`` / ``live.stop`` and ``playback.start`` / ``playback.stop`` on the audit log, in one place.

``live.start`` is recorded by ``POST /api/channels/{id}/live`` (``playback.start`` by ``POST
/api/channels/{id}/playback``) before the output URLs are handed out (no evidence, no video); ``live.stop``
(``playback.stop`` for a playback session) for every viewer session that ends, whatever ended it (the media
service's ``on_session_closed``, wired at assembly with :func:`stop_recorder`).  Playback entries carry the
window in Beijing time (RFC 3339 with ``+08:00``), the source and the watermark id.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from gbcore.log import get_logger

log = get_logger("gbops.portal.live")

__all__ = ["move_recorder", "playback_window", "record_playback_start", "record_start", "stop_recorder"]


async def record_start(audit: Any, *, user: Any, session: Any, transport: str, client_ip: str | None,
                       codec: str | None, stream: str = "main") -> None:
    """``live.start`` for ``session`` (raises when the audit log cannot record it)."""
    from audit_log.log import Actor, Target

    plan = session.plan
    ref = session.channel
    await audit.record(actor=Actor.user(user), action="live.start", target=Target("channel", ref.key),
                       client_ip=client_ip, session_id=session.session_id,
                       watermark_id=plan.code if plan is not None else None,
                       detail={"device_id": ref.device_id, "channel_id": ref.channel_id, "transport": transport,
                               "codec": codec, "stream": stream,
                               "watermark": None if plan is None else ("on" if plan.on else "off")})


def playback_window(session: Any) -> dict[str, Any]:
    """``start`` / ``end`` (Beijing time, RFC 3339) and ``source`` of a playback session, for its entries."""
    from ops_portal.live.history_routes import source_name
    from ops_portal.timewindow import beijing

    window = getattr(session, "window", None) or (None, None)
    return {"start": beijing(window[0]), "end": beijing(window[1]), "source": source_name(session)}


async def record_playback_start(audit: Any, *, user: Any, session: Any, transport: str, client_ip: str | None,
                                codec: str | None) -> None:
    """``playback.start`` for ``session`` (raises when the audit log cannot record it)."""
    from audit_log.log import Actor, Target

    plan = session.plan
    ref = session.channel
    await audit.record(actor=Actor.user(user), action="playback.start", target=Target("channel", ref.key),
                       client_ip=client_ip, session_id=session.session_id,
                       watermark_id=plan.code if plan is not None else None,
                       detail={"device_id": ref.device_id, "channel_id": ref.channel_id, **playback_window(session),
                               "transport": transport, "codec": codec,
                               "watermark": None if plan is None else ("on" if plan.on else "off")})


def stop_recorder(audit: Any, tasks: set[asyncio.Task] | None = None) -> Callable[[Any, str], None]:
    """A ``MediaService.on_session_closed`` callback recording ``live.stop`` (``playback.stop`` for a playback
    session) for every viewer session that ends; the recording tasks are kept in ``tasks`` (awaited at
    shutdown)."""
    pending: set[asyncio.Task] = tasks if tasks is not None else set()

    def on_session_closed(session: Any, reason: str) -> None:
        if audit is None:
            return
        from audit_log.log import Actor, Target

        playback = getattr(session, "kind", "live") == "playback"
        detail: dict[str, Any] = {"reason": reason, "duration_s": round(time.time() - session.created, 3)}
        watermark_id = None
        if playback:
            plan = getattr(session, "plan", None)
            watermark_id = plan.code if plan is not None else None
            detail = {"device_id": session.channel.device_id, "channel_id": session.channel.channel_id,
                      **playback_window(session), **detail}

        async def record() -> None:
            try:
                await audit.record(
                    actor=Actor("user", str(session.user_id), session.username),
                    action="playback.stop" if playback else "live.stop",
                    target=Target("channel", session.channel.key), client_ip=session.client_ip,
                    session_id=session.session_id, watermark_id=watermark_id, detail=detail)
            except Exception:
                log.exception("live.audit_stop_failed", channel_id=session.channel_id)

        task = asyncio.ensure_future(record())
        pending.add(task)
        task.add_done_callback(pending.discard)

    return on_session_closed


def move_recorder(audit: Any, tasks: set[asyncio.Task] | None = None) -> Callable[[Any, str], None]:
    """A draining media node's ``on_session_moved`` callback (issue 17): ``live.move`` (``from``, ``to`` node)
    for a viewer session handed to another media node. The viewing goes on under the same session id: its
    ``live.start`` stands and its ``live.stop`` comes once, when it really ends."""
    pending: set[asyncio.Task] = tasks if tasks is not None else set()

    def on_session_moved(session: Any, to_node: str, from_node: str | None = None) -> None:
        if audit is None:
            return
        from audit_log.log import Actor, Target

        async def record() -> None:
            try:
                await audit.record(
                    actor=Actor("user", str(session.user_id), session.username), action="live.move",
                    target=Target("channel", session.channel.key), client_ip=session.client_ip,
                    session_id=session.session_id,
                    detail={"from": from_node, "to": to_node, "reason": "media node draining"})
            except Exception:
                log.exception("live.audit_move_failed", channel_id=session.channel_id)

        task = asyncio.ensure_future(record())
        pending.add(task)
        task.add_done_callback(pending.discard)

    return on_session_moved
