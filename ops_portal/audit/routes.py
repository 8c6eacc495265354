"""``/api/audit``: the tamper-evident audit log - entries, download history, checkpoints, proofs, export.

Every route needs the ``audit.read`` permission (export: ``audit.export`` and the full data scope).  The
lists (entries, downloads) are cut to the caller's data scope (:func:`visible_entries`).  Entries are served from
the stored RFC 8785 bytes; hashes in proofs and checkpoints are standard base64, as in the C2SP
checkpoint format.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, PlainTextResponse
from pydantic import BaseModel, Field
from sqlalchemy import and_, or_
from starlette.background import BackgroundTask

from audit_log.store import ENTRIES
from ops_portal.deps import AccessDep, AuditDep, client_ip, require_permission
from ops_portal.models import User
from ops_portal.schemas import ApiError, error_responses

__all__ = ["router"]

router = APIRouter(prefix="/api/audit", tags=["audit"], responses=error_responses(401, 403, 422, 503))

AuditReader = Annotated[User, Depends(require_permission("audit.read"))]
AuditExporter = Annotated[User, Depends(require_permission("audit.export"))]

MAX_SEQ = 2**62


# ---------------------------------------------------------------------------------------------- schemas
class AuditActorOut(BaseModel):
    type: str = Field(description="user | device | system | platform | anonymous")
    id: str | None = None
    name: str | None = None


class AuditTargetOut(BaseModel):
    type: str
    id: str | None = None


class AuditEntryOut(BaseModel):
    """One entry as stored (``leaf_hash`` added: lower-case hex SHA-256(0x00 || entry bytes))."""

    seq: int
    time: str = Field(description="RFC 3339 UTC, milliseconds")
    actor: AuditActorOut
    action: str
    target: AuditTargetOut
    client_ip: str | None = None
    detail: dict[str, Any]
    prev: str
    leaf_hash: str


class AuditEntryList(BaseModel):
    total: int
    offset: int
    limit: int
    items: list[AuditEntryOut]


class DownloadOut(BaseModel):
    """One ``download.*`` entry of the download history."""

    seq: int
    time: str
    action: str = Field(description="download.request | download.complete | download.failed")
    user: AuditActorOut
    client_ip: str | None = None
    device_id: str | None = None
    channel_id: str | None = None
    start: str | None = Field(None, description="start of the downloaded recording (RFC 3339)")
    end: str | None = Field(None, description="end of the downloaded recording (RFC 3339)")
    sha256: str | None = Field(None, description="SHA-256 of the delivered file (download.complete)")
    bytes: int | None = None
    session_id: str | None = None
    watermark_id: str | None = None
    source: str | None = Field(None, description="a recorded range: device | platform (null: a live clip)")
    window_start: str | None = Field(None, description="a recorded range: the requested window's start (RFC 3339, "
                                     "Beijing time +08:00)")
    window_end: str | None = Field(None, description="a recorded range: the requested window's end")


class DownloadList(BaseModel):
    total: int
    offset: int
    limit: int
    items: list[DownloadOut]


class InclusionProofOut(BaseModel):
    seq: int
    tree_size: int
    leaf_hash: str = Field(description="base64")
    root_hash: str = Field(description="base64: the root of the tree of tree_size entries")
    proof: list[str] = Field(description="RFC 9162 inclusion proof, base64 hashes")
    checkpoint: str | None = Field(None, description="the signed checkpoint of tree_size, when one was stored")


class ConsistencyProofOut(BaseModel):
    old_size: int
    new_size: int
    old_root: str
    new_root: str
    proof: list[str] = Field(description="RFC 9162 consistency proof, base64 hashes")
    checkpoint: str | None = Field(None, description="the signed checkpoint of new_size, when one was stored")


# ---------------------------------------------------------------------------------------------- helpers
def _require(audit: Any | None) -> Any:
    if audit is None:
        raise ApiError(503, "audit_unavailable", "审计日志未启用 / the audit log is not available")
    return audit


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        return value.replace(tzinfo=UTC)
    return value


def _b64(h: bytes) -> str:
    return base64.b64encode(h).decode()


def _entry_out(entry: Any) -> AuditEntryOut:
    return AuditEntryOut(**json.loads(entry.data), leaf_hash=entry.leaf_hash.hex())


async def _size(audit: Any) -> int:
    return int(await audit.store.size())


async def _stored_note(audit: Any, size: int) -> str | None:
    found = await audit.store.checkpoints(size, size)
    return found[0].note if found else None


def _one(name: str, a: int | None, b: int | None, b_name: str) -> int | None:
    if a is not None and b is not None and a != b:
        raise ApiError(422, "validation_error", f"{name} 与 {b_name} 不一致 / {name} and {b_name} disagree")
    return a if a is not None else b


def visible_entries(access: Any) -> Any:
    """None (everything) for full-scope holders, else the SQL condition on the audit entries a scoped auditor
    may read: their own actions and entries about themselves, and entries whose target (or device actor) is
    an object of their data scope:

    * ``channel``: that device's channel is in scope (target ``device_id/channel_id``); an older entry naming
      a bare channel id only when that id is in scope *and* unique on the platform (ambiguous old entries
      stay with full-scope holders);
    * ``device``: the device is visible (its own node is granted, or one of its channels is in scope);
      also entries whose actor is such a device;
    * ``org_node``: the node (descendants included) is granted;
    * ``ticket``: the ticket's channel (or, for a device ticket, its device) is in scope;
    * ``user``: only the auditor's own account; ``role``, ``contract``, ``report``, ``audit_log``,
      ``setting``, ``file``: none (platform administration, not objects of a data scope), unless the
      auditor did it.
    """
    scope = access.scope
    if scope.all:
        return None
    from sqlalchemy import String, and_, cast, or_, select

    from audit_log.store import ENTRIES
    from device_registry.scope import (
        channel_ids_in_scope,
        channel_keys_in_scope,
        channel_pairs_in_scope,
        devices_in_scope,
        shared_channel_ids,
    )
    from ops_portal.tickets.models import Ticket

    uid = str(access.user.id)
    e = ENTRIES.c
    # the registry builds the selectables over its own tables; the audit entries and tickets are composed here
    keys = channel_keys_in_scope(scope)
    bare = channel_ids_in_scope(scope)
    shared_ids = shared_channel_ids()
    devices = devices_in_scope(scope)
    in_scope = channel_pairs_in_scope(scope).subquery("scope_pairs")
    channel_tickets = (select(cast(Ticket.id, String))
                       .join(in_scope, and_(in_scope.c.device_id == Ticket.device_id,
                                            in_scope.c.channel_id == Ticket.channel_id)))
    device_tickets = (select(cast(Ticket.id, String))
                      .where(Ticket.channel_id.is_(None), Ticket.device_id.in_(devices_in_scope(scope))))
    conds = [
        and_(e.actor_type == "user", e.actor_id == uid),
        and_(e.target_type == "user", e.target_id == uid),
        and_(e.target_type == "channel",
             or_(e.target_id.in_(keys), and_(e.target_id.in_(bare), e.target_id.not_in(shared_ids)))),
        and_(e.target_type == "device", e.target_id.in_(devices)),
        and_(e.actor_type == "device", e.actor_id.in_(devices)),
        and_(e.target_type == "ticket", or_(e.target_id.in_(channel_tickets), e.target_id.in_(device_tickets))),
    ]
    if scope.org_node_ids:
        conds.append(and_(e.target_type == "org_node", e.target_id.in_(sorted(str(n) for n in scope.org_node_ids))))
    return or_(*conds)


Since = Annotated[datetime | None, Query(description="不早于此时刻 (RFC 3339) / at or after this time")]
Until = Annotated[datetime | None, Query(description="早于此时刻 (RFC 3339) / before this time")]
Offset = Annotated[int, Query(ge=0, le=2**62)]
Limit = Annotated[int, Query(ge=1, le=500)]


# ---------------------------------------------------------------------------------------------- routes
class ActionOut(BaseModel):
    action: str = Field(description="动作编码 / the action's code, as in the entries")
    zh: str = Field(description="中文名称 / what it means, in Chinese")
    en: str = Field(description="what it means, in English")


class ActionList(BaseModel):
    items: list[ActionOut]


@router.get("/actions", operation_id="audit_actions", summary="审计动作目录 / the audit actions and their names",
            response_model=ActionList)
async def list_actions(user: AuditReader) -> ActionList:
    """Every action the audit log records, with the words the console shows instead of the code."""
    from audit_log.actions import ACTIONS, action_label

    return ActionList(items=[ActionOut(action=a, zh=zh, en=en) for a in sorted(ACTIONS)
                             for zh, en in (action_label(a),)])


@router.get("/entries", operation_id="audit_entries", summary="审计日志条目 / audit log entries",
            response_model=AuditEntryList)
async def list_entries(
    user: AuditReader,
    access: AccessDep,
    audit: AuditDep,
    action: Annotated[
        str | None,
        Query(max_length=64, description="动作，如 auth.login；以 .* 结尾表示前缀 / action, or a prefix ending in .*"),
    ] = None,
    actor: Annotated[str | None, Query(max_length=128, description="操作者 id 或名称 / actor id or name")] = None,
    target: Annotated[str | None, Query(max_length=128, description="对象 id / target id")] = None,
    target_type: Annotated[str | None, Query(max_length=32, description="对象类型 / target type")] = None,
    since: Since = None,
    until: Until = None,
    order: Annotated[Literal["newest", "oldest"], Query()] = "newest",
    offset: Offset = 0,
    limit: Limit = 50,
) -> AuditEntryList:
    log = _require(audit)
    actions: list[str] = []
    prefix = None
    if action:
        if action.endswith(".*"):
            prefix = action[:-1]
        else:
            actions = [action]
    total, entries = await log.store.query(
        actions=actions, action_prefix=prefix, actor=actor, target_id=target, target_type=target_type,
        since=_aware(since), until=_aware(until), offset=offset, limit=limit, newest_first=order == "newest",
        where=visible_entries(access),
    )
    return AuditEntryList(total=total, offset=offset, limit=limit, items=[_entry_out(e) for e in entries])


def _like_escape(text: str) -> str:
    """``text`` as a literal inside a LIKE pattern (escape character ``\\``)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _download_window(detail: dict[str, Any]) -> dict[str, Any]:
    """``source``, ``window_start``, ``window_end`` of a ``download.*`` entry of a recorded range: the detail's
    ``window`` (``{"start", "end"}``) or ``window_start`` / ``window_end``, else - an entry naming a ``source``
    - its ``start`` / ``end``; in Beijing time."""
    from ops_portal.timewindow import beijing

    source = detail.get("source") if detail.get("source") in ("device", "platform") else None
    window = detail.get("window") if isinstance(detail.get("window"), dict) else {}
    start = window.get("start") or detail.get("window_start")
    end = window.get("end") or detail.get("window_end")
    if start is None and end is None and source is not None:
        start, end = detail.get("start"), detail.get("end")

    def local(value: Any) -> str | None:
        if not isinstance(value, str):
            return None
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
        return beijing(parsed) if parsed.tzinfo is not None else value

    return {"source": source, "window_start": local(start), "window_end": local(end)}


@router.get("/downloads", operation_id="audit_downloads", summary="录像下载记录 / download history",
            response_model=DownloadList)
async def list_downloads(
    user: AuditReader,
    access: AccessDep,
    audit: AuditDep,
    actor: Annotated[str | None, Query(max_length=128, description="下载用户 id 或名称 / user id or name")] = None,
    channel_id: Annotated[str | None, Query(max_length=32, description="通道编码 / channel id")] = None,
    device_id: Annotated[str | None, Query(max_length=32, description="设备编码（与通道编码一起指明摄像机）/ "
                                           "device id (with channel_id: exactly that camera)")] = None,
    since: Since = None,
    until: Until = None,
    offset: Offset = 0,
    limit: Limit = 50,
) -> DownloadList:
    """Who downloaded which channel's recording, for which time range: the ``download.*`` entries
    (``download.request`` / ``download.complete`` / ``download.failed`` / ``download.fetch``), newest
    first.  A scoped auditor sees the downloads of channels in their scope, and their own."""
    log = _require(audit)
    # download entries name the camera as ``device_id/channel_id`` (older ones: the bare channel id)
    conds = [c for c in (visible_entries(access),) if c is not None]
    if channel_id and device_id:
        conds.append(ENTRIES.c.target_id == f"{device_id}/{channel_id}")
    elif channel_id:
        conds.append(or_(ENTRIES.c.target_id == channel_id,
                         ENTRIES.c.target_id.like("%/" + _like_escape(channel_id), escape="\\")))
    elif device_id:
        conds.append(ENTRIES.c.target_id.like(_like_escape(device_id) + "/%", escape="\\"))
    total, entries = await log.store.query(
        action_prefix="download.", actor=actor, since=_aware(since), until=_aware(until),
        offset=offset, limit=limit, where=and_(*conds) if conds else None,
    )
    items = []
    for entry in entries:
        value = json.loads(entry.data)
        detail = value.get("detail") or {}
        items.append(
            DownloadOut(
                seq=value["seq"], time=value["time"], action=value["action"], user=value["actor"],
                client_ip=value.get("client_ip"), device_id=detail.get("device_id"),
                channel_id=detail.get("channel_id") or value["target"].get("id"),
                start=detail.get("start"), end=detail.get("end"), sha256=detail.get("sha256"),
                bytes=detail.get("bytes"), session_id=detail.get("session_id"),
                watermark_id=detail.get("watermark_id"), **_download_window(detail),
            )
        )
    return DownloadList(total=total, offset=offset, limit=limit, items=items)


@router.get(
    "/checkpoint",
    operation_id="audit_checkpoint",
    summary="最新的已签名检查点 / the newest signed checkpoint",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {}}, "description": "C2SP signed note (tlog-checkpoint)"},
               **error_responses(404)},
)
async def latest_checkpoint(user: AuditReader, audit: AuditDep) -> PlainTextResponse:
    """Save it: a later export must be consistent with it (``gbops audit verify --pin``)."""
    log = _require(audit)
    cp = await log.latest_checkpoint()
    if cp is None:
        cp = await log.checkpoint()
    if cp is None:
        raise ApiError(404, "audit_log_empty", "审计日志为空，尚无检查点 / the audit log is empty: no checkpoint yet")
    return PlainTextResponse(cp.note, media_type="text/plain; charset=utf-8")


@router.get(
    "/verifier-key",
    operation_id="audit_verifier_key",
    summary="验证公钥 / the log's verifier key (vkey)",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {}}, "description": "C2SP note verifier key"}},
)
async def verifier_key(user: AuditReader, audit: AuditDep) -> PlainTextResponse:
    return PlainTextResponse(_require(audit).verifier_key + "\n", media_type="text/plain; charset=utf-8")


@router.get(
    "/proof/inclusion",
    operation_id="audit_proof_inclusion",
    summary="包含证明 / inclusion proof (RFC 9162)",
    response_model=InclusionProofOut,
    responses=error_responses(404),
)
async def inclusion_proof(
    user: AuditReader,
    audit: AuditDep,
    seq: Annotated[int, Query(ge=0, lt=MAX_SEQ, description="条目序号 / entry seq")],
    size: Annotated[int | None, Query(ge=1, lt=MAX_SEQ, description="树大小 / tree size")] = None,
    tree_size: Annotated[int | None, Query(ge=1, lt=MAX_SEQ, description="= size")] = None,
) -> InclusionProofOut:
    """Proves entry ``seq`` is in the tree of ``size`` entries (default: the newest checkpoint's)."""
    log = _require(audit)
    n = _one("size", size, tree_size, "tree_size")
    head = await _size(log)
    if n is None:
        latest = await log.latest_checkpoint()
        n = latest.tree_size if latest is not None and latest.tree_size > seq else head
    if not seq < n <= head:
        raise ApiError(404, "audit_proof_out_of_range",
                       f"需要 seq < size <= {head} / need seq < size <= {head} (the log holds {head} entries)")
    proof = await log.inclusion_proof(seq, n)
    entry = await log.store.get_entry(seq)
    root = await log.root_at(n)
    return InclusionProofOut(seq=seq, tree_size=n, leaf_hash=_b64(entry.leaf_hash), root_hash=_b64(root),
                             proof=[_b64(h) for h in proof], checkpoint=await _stored_note(log, n))


@router.get(
    "/proof/consistency",
    operation_id="audit_proof_consistency",
    summary="一致性证明 / consistency proof (RFC 9162)",
    response_model=ConsistencyProofOut,
    responses=error_responses(404),
)
async def consistency_proof(
    user: AuditReader,
    audit: AuditDep,
    from_: Annotated[int | None, Query(alias="from", ge=1, lt=MAX_SEQ, description="旧树大小 / old size")] = None,
    to: Annotated[int | None, Query(ge=1, lt=MAX_SEQ, description="新树大小 / new size (default: newest)")] = None,
    old: Annotated[int | None, Query(ge=1, lt=MAX_SEQ, description="= from")] = None,
    new: Annotated[int | None, Query(ge=1, lt=MAX_SEQ, description="= to")] = None,
) -> ConsistencyProofOut:
    """Proves the tree of ``from`` entries is a prefix of the tree of ``to`` entries."""
    log = _require(audit)
    m = _one("from", from_, old, "old")
    n = _one("to", to, new, "new")
    head = await _size(log)
    if m is None:
        raise ApiError(422, "validation_error", "请求参数无效：query.from / invalid request: query.from is required")
    if n is None:
        latest = await log.latest_checkpoint()
        n = latest.tree_size if latest is not None and latest.tree_size >= m else head
    if not m <= n <= head:
        raise ApiError(404, "audit_proof_out_of_range",
                       f"需要 from <= to <= {head} / need from <= to <= {head} (the log holds {head} entries)")
    proof = await log.consistency_proof(m, n)
    return ConsistencyProofOut(
        old_size=m, new_size=n, old_root=_b64(await log.root_at(m)), new_root=_b64(await log.root_at(n)),
        proof=[_b64(h) for h in proof], checkpoint=await _stored_note(log, n),
    )


@router.post(
    "/export",
    operation_id="audit_export",
    summary="导出审计日志 (zip) / export the audit log as a zip bundle",
    response_class=FileResponse,
    responses={200: {"content": {"application/zip": {}}, "description": "bundle for verify.py"},
               **error_responses(404, 409)},
)
async def export(
    user: AuditExporter,
    access: AccessDep,
    audit: AuditDep,
    request: Request,
    from_: Annotated[int, Query(alias="from", ge=0, lt=MAX_SEQ, description="first seq")] = 0,
    to: Annotated[int | None, Query(ge=0, lt=MAX_SEQ, description="last seq (default: newest)")] = None,
) -> FileResponse:
    """The same bundle as ``gbops audit export``, zipped.  The export itself is recorded
    (``audit.export``, with the zip's SHA-256) before the file is sent.  409 when the stored log no
    longer matches what was signed before (tampering): nothing is sent, the alarm is logged."""
    from audit_log.export import ExportError, export_bundle
    from audit_log.log import Actor, Target

    log = _require(audit)
    if not access.scope.all:
        # the bundle is the whole signed log (it cannot be cut to a scope and still verify)
        raise ApiError(403, "audit_export_full_scope_only", "只有拥有全部数据范围的用户才能导出完整审计日志 / only "
                       "users with the full data scope may export the whole audit log")
    tmp = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="gbops-audit-export-"))
    cleanup = BackgroundTask(shutil.rmtree, tmp, ignore_errors=True)
    try:
        out = tmp / "audit-export.zip"
        try:
            result = await export_bundle(log, out, start=from_, end=to)
        except ExportError as exc:
            raise ApiError(404, "audit_export_range", str(exc)) from None
        if result.problems:
            raise ApiError(409, "audit_log_tampered",
                           "审计日志与已签名的检查点不符，已拒绝导出 / the audit log does not match its signed "
                           f"checkpoints: {result.problems[0]}")
        detail = {"from": result.first_seq, "to": result.last_seq, "tree_size": result.tree_size,
                  "sha256": result.bundle_sha256, "entries_sha256": result.entries_sha256}
        async with log.sessionmaker() as session:
            await log.append(session, actor=Actor.user(user), action="audit.export",
                             target=Target("audit_log", log.origin), client_ip=client_ip(request), detail=detail)
            await session.commit()
    except BaseException:
        await cleanup()
        raise
    name = f"gbops-audit-{result.first_seq}-{result.last_seq}.zip"
    return FileResponse(out, media_type="application/zip", filename=name, background=cleanup,
                        headers={"X-Audit-Tree-Size": str(result.tree_size)})
