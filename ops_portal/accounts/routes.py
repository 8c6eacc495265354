"""``/api/users``: user administration (``user.manage``), and ``/api/access/me`` (the caller's own access).

Every change is on the audit log in the same transaction as the change (``user.create``,
``user.update``, ``user.disable``, ``user.enable``, ``user.delete``, ``user.password_reset``,
``user.sessions_revoke``, ``user.totp_reset``, ``grant.add`` / ``grant.remove`` for roles given or taken).  A manager can
only manage users whose roles it could grant itself, and only grant such roles
(:func:`ops_portal.access.ensure_roles_grantable`); no change may leave the platform without an active
holder of ``user.manage`` and ``role.manage`` (409 ``last_manager``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from gbcore.db import begin_write, utcnow
from gbcore.log import get_logger
from gbcore.passwords import weak_password_reason
from ops_portal.access import audit_change, ensure_roles_grantable
from ops_portal.accounts.schemas import (
    AccessMeOut,
    PasswordResetOut,
    RevokeOut,
    TotpResetOut,
    UserCreatedOut,
    UserCreateRequest,
    UserDetailOut,
    UserListOut,
    UserUpdateRequest,
)
from ops_portal.auth import generate_password, hash_password
from ops_portal.deps import AccessDep, AuditDep, RegistryDep, SessionDep, client_ip, require_permission
from ops_portal.models import AuthToken, Role, User, UserRole
from ops_portal.revocation import trigger as revocation_check
from ops_portal.schemas import ApiError, error_responses
from ops_portal.users import check_managers_remain

log = get_logger("gbops.portal.users")

router = APIRouter(tags=["users"], responses=error_responses(401, 403, 422))

UserManager = Annotated[User, Depends(require_permission("user.manage"))]
UserIdPath = Annotated[int, Path(ge=1, le=2**31 - 1, description="用户 id / user id")]


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None or value.utcoffset() is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _not_found(user_id: int) -> ApiError:
    return ApiError(404, "user_not_found", f"用户不存在 / user not found: {user_id}")


async def _roles_of(session: AsyncSession, user_ids: list[int]) -> dict[int, list[Role]]:
    out: dict[int, list[Role]] = {uid: [] for uid in user_ids}
    if not user_ids:
        return out
    rows = await session.execute(
        select(UserRole.user_id, Role).join(Role, Role.id == UserRole.role_id)
        .where(UserRole.user_id.in_(user_ids)).order_by(Role.id)
    )
    for uid, role in rows:
        out[uid].append(role)
    return out


def _out(user: User, roles: list[Role]) -> UserDetailOut:
    out = UserDetailOut.model_validate(user)
    out.role_ids = [r.id for r in roles]
    out.roles = [r.name for r in roles]
    return out


async def _load_roles(session: AsyncSession, role_ids: list[int]) -> list[Role]:
    wanted = sorted(set(role_ids))
    if not wanted:
        return []
    roles = list(await session.scalars(select(Role).where(Role.id.in_(wanted)).order_by(Role.id)))
    missing = sorted(set(wanted) - {r.id for r in roles})
    if missing:
        raise ApiError(422, "role_not_found", f"角色不存在 / unknown role id(s): {missing}")
    return roles


def _check_window(valid_from: datetime | None, valid_until: datetime | None) -> None:
    if valid_from is not None and valid_until is not None and valid_until <= valid_from:
        raise ApiError(422, "invalid_validity", "有效期结束时间必须晚于开始时间 / valid_until must be after valid_from")


async def _revoke_all(session: AsyncSession, user_id: int) -> int:
    result = await session.execute(
        update(AuthToken)
        .where(AuthToken.user_id == user_id, AuthToken.revoked_at.is_(None), AuthToken.expires_at > utcnow())
        .values(revoked_at=utcnow())
    )
    return int(result.rowcount or 0)


async def _end_sessions_audited(session: AsyncSession, audit: Any, actor: User, action: str, user_id: int,
                                request: Request, detail: dict[str, Any] | None = None) -> int:
    """In the open write transaction: revoke every token of ``user_id``, record ``action`` (detail plus
    ``revoked_tokens``) and commit; then the user's running live sessions and downloads end too.  Returns how
    many tokens were revoked."""
    revoked = await _revoke_all(session, user_id)
    await audit_change(audit, session, actor, action, ("user", str(user_id)), client_ip(request),
                       {**(detail or {}), "revoked_tokens": revoked})
    await session.commit()
    revocation_check(request.app.state, [user_id])
    return revoked


async def _manageable_user(session: AsyncSession, access: Any, registry: Any, user_id: int) -> tuple[User, list[Role]]:
    """The user (in the open transaction), after checking that the caller may manage it."""
    user = await session.get(User, user_id)
    if user is None:
        raise _not_found(user_id)
    roles = (await _roles_of(session, [user_id]))[user_id]
    if user.id != access.user.id:
        await ensure_roles_grantable(access, registry, session, roles)
    return user, roles


# ------------------------------------------------------------------------------------------ routes
@router.get("/api/users", operation_id="users_list", summary="用户列表 / list users", response_model=UserListOut)
async def list_users(
    user: UserManager,
    session: SessionDep,
    q: Annotated[str | None, Query(max_length=64, description="按用户名或姓名搜索 / search")] = None,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> UserListOut:
    conds = []
    if q and q.strip():
        needle = q.strip()
        conds.append(or_(User.username.icontains(needle, autoescape=True),
                         User.display_name.icontains(needle, autoescape=True)))
    total = await session.scalar(select(func.count()).select_from(User).where(*conds))
    users = list(await session.scalars(select(User).where(*conds).order_by(User.id).offset(offset).limit(limit)))
    roles = await _roles_of(session, [u.id for u in users])
    await session.commit()
    return UserListOut(total=int(total or 0), offset=offset, limit=limit,
                      items=[_out(u, roles[u.id]) for u in users])


@router.post("/api/users", operation_id="users_create", summary="创建用户 / create a user", status_code=201,
             response_model=UserCreatedOut, responses=error_responses(409))
async def create_user(
    body: UserCreateRequest,
    user: UserManager,
    access: AccessDep,
    registry: RegistryDep,
    session: SessionDep,
    audit: AuditDep,
    request: Request,
) -> UserCreatedOut:
    """Creates the user; it must change its password at the first login.  Without ``password`` a random
    one-time password is generated and returned (once)."""
    valid_from, valid_until = _utc(body.valid_from), _utc(body.valid_until)
    _check_window(valid_from, valid_until)
    one_time = None
    if body.password is None:
        password = one_time = generate_password()
    else:
        password = body.password
        reason = weak_password_reason(password, body.username)
        if reason:
            raise ApiError(422, "weak_password", reason)
    roles = await _load_roles(session, body.role_ids)
    await ensure_roles_grantable(access, registry, session, roles)
    password_hash = await hash_password(password)
    await begin_write(session)
    new = User(username=body.username, display_name=body.display_name, phone=body.phone, ptz_level=body.ptz_level,
               valid_from=valid_from, valid_until=valid_until, disabled=body.disabled, password_hash=password_hash,
               must_change_password=True, password_changed_at=utcnow(), password_weak=False)
    session.add(new)
    try:
        await session.flush()
    except IntegrityError:
        await session.rollback()
        raise ApiError(409, "username_taken", f"用户名已存在 / the user name is taken: {body.username}") from None
    for role in roles:
        session.add(UserRole(user_id=new.id, role_id=role.id))
    ip = client_ip(request)
    await audit_change(audit, session, user, "user.create", ("user", str(new.id)), ip,
                       {"username": new.username, "role_ids": [r.id for r in roles], "ptz_level": new.ptz_level,
                        "valid_from": valid_from, "valid_until": valid_until, "disabled": new.disabled})
    for role in roles:
        await audit_change(audit, session, user, "grant.add", ("user", str(new.id)), ip,
                           {"role_id": role.id, "role": role.name})
    await session.flush()
    await session.refresh(new)
    await session.commit()
    log.info("user.created", username=new.username, by=user.username)
    return UserCreatedOut(user=_out(new, roles), one_time_password=one_time)


@router.get("/api/users/{user_id}", operation_id="users_get", summary="用户详情 / one user",
            response_model=UserDetailOut, responses=error_responses(404))
async def get_user(user: UserManager, session: SessionDep, user_id: UserIdPath) -> UserDetailOut:
    target = await session.get(User, user_id)
    if target is None:
        raise _not_found(user_id)
    roles = (await _roles_of(session, [user_id]))[user_id]
    await session.commit()
    return _out(target, roles)


@router.patch("/api/users/{user_id}", operation_id="users_update", summary="修改用户 / change a user",
              response_model=UserDetailOut, responses=error_responses(404, 409))
async def update_user(
    body: UserUpdateRequest,
    user: UserManager,
    access: AccessDep,
    registry: RegistryDep,
    session: SessionDep,
    audit: AuditDep,
    request: Request,
    user_id: UserIdPath,
) -> UserDetailOut:
    """Changes only the fields sent.  ``role_ids`` replaces the user's roles.  Disabling a user (or ending
    its validity) makes its tokens stop working at once."""
    sent = body.model_fields_set
    await begin_write(session)
    target, roles = await _manageable_user(session, access, registry, user_id)
    ip = client_ip(request)
    changes: dict[str, Any] = {}
    for name in ("display_name", "phone", "ptz_level", "valid_from", "valid_until"):
        if name not in sent:
            continue
        value = getattr(body, name)
        if name in ("valid_from", "valid_until"):
            value = _utc(value)
        elif value is None and name in ("display_name", "ptz_level"):
            continue
        if getattr(target, name) != value:
            changes[name] = [getattr(target, name), value]
            setattr(target, name, value)
    _check_window(target.valid_from, target.valid_until)
    if changes:
        await audit_change(audit, session, user, "user.update", ("user", str(user_id)), ip,
                           {"fields": sorted(changes), "changes": changes})
    if body.disabled is not None and body.disabled != target.disabled:
        target.disabled = body.disabled
        changes["disabled"] = body.disabled
        revoked = await _revoke_all(session, user_id) if body.disabled else 0  # no session comes back on enable
        await audit_change(audit, session, user, "user.disable" if body.disabled else "user.enable",
                           ("user", str(user_id)), ip, {"revoked_tokens": revoked} if body.disabled else None)
    if body.role_ids is not None:
        new_roles = await _load_roles(session, body.role_ids)
        before = {r.id: r for r in roles}
        after = {r.id: r for r in new_roles}
        added = [after[i] for i in sorted(after.keys() - before.keys())]
        removed = [before[i] for i in sorted(before.keys() - after.keys())]
        await ensure_roles_grantable(access, registry, session, added + removed)
        for role in added:
            session.add(UserRole(user_id=user_id, role_id=role.id))
            await audit_change(audit, session, user, "grant.add", ("user", str(user_id)), ip,
                               {"role_id": role.id, "role": role.name})
        if removed:
            await session.execute(
                delete(UserRole).where(UserRole.user_id == user_id, UserRole.role_id.in_([r.id for r in removed]))
            )
        for role in removed:
            await audit_change(audit, session, user, "grant.remove", ("user", str(user_id)), ip,
                               {"role_id": role.id, "role": role.name})
        if added or removed:
            changes["role_ids"] = sorted(after)
        roles = new_roles
    if changes:
        target.updated_at = utcnow()
        await check_managers_remain(session)
    await session.commit()
    if changes:
        log.info("user.updated", user_id=user_id, by=user.username, fields=sorted(changes))
        revocation_check(request.app.state, [user_id])  # disabled, window, roles: running sessions end now
    return _out(target, roles)


@router.delete("/api/users/{user_id}", operation_id="users_delete", summary="删除用户 / delete a user",
               status_code=204, responses=error_responses(404, 409))
async def delete_user(
    user: UserManager,
    access: AccessDep,
    registry: RegistryDep,
    session: SessionDep,
    audit: AuditDep,
    request: Request,
    user_id: UserIdPath,
) -> Response:
    """Deletes the user, its tokens and role assignments (its audit entries stay)."""
    if user_id == user.id:
        raise ApiError(409, "cannot_delete_self", "不能删除自己的账户 / you cannot delete your own account")
    await begin_write(session)
    target, roles = await _manageable_user(session, access, registry, user_id)
    await audit_change(audit, session, user, "user.delete", ("user", str(user_id)), client_ip(request),
                       {"username": target.username, "roles": [r.name for r in roles]})
    await session.execute(delete(User).where(User.id == user_id))
    await check_managers_remain(session)
    await session.commit()
    log.info("user.deleted", user_id=user_id, username=target.username, by=user.username)
    revocation_check(request.app.state, [user_id])
    return Response(status_code=204)


@router.post("/api/users/{user_id}/password", operation_id="users_password_reset",
             summary="重置密码 / reset a user's password", response_model=PasswordResetOut,
             responses=error_responses(404))
async def reset_password(
    user: UserManager,
    access: AccessDep,
    registry: RegistryDep,
    session: SessionDep,
    audit: AuditDep,
    request: Request,
    user_id: UserIdPath,
) -> PasswordResetOut:
    """Sets a random one-time password (returned once), which the user must change at the next login;
    unlocks the account and ends every session of the user."""
    password = generate_password()
    password_hash = await hash_password(password)
    await begin_write(session)
    target, _ = await _manageable_user(session, access, registry, user_id)
    target.password_hash = password_hash
    target.must_change_password = True
    target.password_changed_at = utcnow()
    target.password_weak = False  # a generated password
    target.failed_logins = 0
    target.locked_until = None
    throttle = getattr(request.app.state, "login_throttle", None)
    if throttle is not None and hasattr(throttle, "forget"):
        throttle.forget(target.username)  # the per-address locks too (kept in memory)
    target.updated_at = utcnow()
    revoked = await _end_sessions_audited(session, audit, user, "user.password_reset", user_id, request)
    log.info("user.password_reset", user_id=user_id, by=user.username)
    return PasswordResetOut(one_time_password=password, revoked_tokens=revoked)


@router.post("/api/users/{user_id}/revoke", operation_id="users_sessions_revoke",
             summary="注销用户的全部会话 / end every session of a user", response_model=RevokeOut,
             responses=error_responses(404))
async def revoke_sessions(
    user: UserManager,
    access: AccessDep,
    registry: RegistryDep,
    session: SessionDep,
    audit: AuditDep,
    request: Request,
    user_id: UserIdPath,
) -> RevokeOut:
    await begin_write(session)
    await _manageable_user(session, access, registry, user_id)
    revoked = await _end_sessions_audited(session, audit, user, "user.sessions_revoke", user_id, request)
    return RevokeOut(revoked_tokens=revoked)


@router.post("/api/users/{user_id}/totp/reset", operation_id="users_totp_reset",
             summary="重置用户的两步验证 / reset a user's second factor", response_model=TotpResetOut,
             responses=error_responses(404))
async def reset_totp(
    user: UserManager,
    access: AccessDep,
    registry: RegistryDep,
    session: SessionDep,
    audit: AuditDep,
    request: Request,
    user_id: UserIdPath,
) -> TotpResetOut:
    """Removes the user's TOTP secret (a lost or replaced phone) and ends every session of the user: the
    next login needs no code, or, when a role of the user requires the second factor, sets it up anew."""
    await begin_write(session)
    target, _ = await _manageable_user(session, access, registry, user_id)
    was_enabled = target.totp_enabled_at is not None
    target.totp_secret = None
    target.totp_enabled_at = None
    target.totp_last_step = None
    target.updated_at = utcnow()
    revoked = await _end_sessions_audited(session, audit, user, "user.totp_reset", user_id, request,
                                          {"was_enabled": was_enabled})
    log.info("user.totp_reset", user_id=user_id, by=user.username, was_enabled=was_enabled)
    return TotpResetOut(revoked_tokens=revoked)


@router.get("/api/access/me", operation_id="access_me", summary="我的权限与数据范围 / my permissions and scope",
            response_model=AccessMeOut)
async def access_me(access: AccessDep) -> AccessMeOut:
    """Self-service: needs no permission.  What the console should offer the caller."""
    u = access.user
    return AccessMeOut(user_id=u.id, username=u.username, display_name=u.display_name,
                       permissions=sorted(access.permissions), roles=list(access.roles), full_scope=access.scope.all,
                       org_node_ids=sorted(access.scope.org_node_ids),
                       channels=[r.as_dict() for r in sorted(access.scope.channel_refs)],
                       channel_ids=sorted({r.channel_id for r in access.scope.channel_refs}),
                       ptz_level=access.ptz_level, valid_until=u.valid_until)
