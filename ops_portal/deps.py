"""FastAPI dependencies of the portal, as ``Annotated`` aliases.

* :data:`SessionDep` - one database session per request (shared by every dependency of it).
* :data:`AnyAuth` - the caller's token and user, **including** a user who still has to change
  their password.  Only the password-change and logout routes use it.
* :data:`Auth` / :data:`CurrentUser` - an authenticated user who is allowed to use the portal:
  a user with ``must_change_password`` gets 403 ``password_change_required`` here, and a user whose role
  requires the TOTP second factor (``GBOPS_TOTP_REQUIRED_ROLES``) and who has not set it up 403
  ``totp_setup_required``.  :data:`EnrolAuth` lets the latter through (the enrolment routes only).
* Every token is checked for idleness (``GBOPS_SESSION_IDLE_MINUTES``, 401 ``session_idle``); a permission
  of the administration level asked from outside ``GBOPS_ADMIN_ALLOW_CIDRS`` (when set) answers 403
  ``admin_network_refused``.  Refusals are security events on ``app.state.security``.
* :data:`AccessDep` - the caller's :class:`~ops_portal.access.Access` (permissions, roles, data scope),
  resolved once per request.
* :func:`require_permission` - a route's declared permission: 403 ``forbidden`` without it.
* :data:`ScopedChannel` / :data:`ScopedDevice` - the channel of the path as a checked
  :class:`~gbcore.ids.ChannelRef` (``/api/devices/{device_id}/channels/{channel_id}`` or the shorthand
  ``/api/channels/{channel_id}``, 409 ``ambiguous_channel`` when not unique) / a ``{device_id}`` path
  parameter, checked against the caller's scope before the request body is even validated.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import timedelta
from typing import Annotated, Any

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gbcore.db import utcnow
from gbcore.ids import ChannelRef
from gbcore.settings import Settings
from ops_portal.access import Access, ensure_channel, ensure_device, load_access, resolve_channel
from ops_portal.accounts.second_factor import requires_totp
from ops_portal.auth import (
    AuthContext,
    UnknownUserThrottle,
    admin_network_refused,
    emit,
    not_authenticated,
    password_age_reason,
    resolve_token,
)
from ops_portal.http_limits import in_networks, parse_networks
from ops_portal.models import User
from ops_portal.schemas import ApiError

__all__ = [
    "PERMISSIONS",
    "AccessDep",
    "DEVICE_PATH",
    "ScopedChannel",
    "ScopedDevice",
    "PERMISSION_CATALOGUE",
    "AnyAuth",
    "AuditDep",
    "Auth",
    "CurrentUser",
    "EnrolAuth",
    "RegistryDep",
    "SessionDep",
    "SettingsDep",
    "SipDep",
    "ThrottleDep",
    "client_ip",
    "device_channel_path",
    "require_permission",
    "security_sink",
]


# ------------------------------------------------------------------------------------------ plumbing
def _settings(request: Request) -> Settings:
    return request.app.state.settings


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    maker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    async with maker() as session:
        yield session


def _registry(request: Request) -> Any:
    return request.app.state.registry


def _sip(request: Request) -> Any | None:
    return request.app.state.sip


async def device_online(sip: Any, device_id: str) -> bool:
    """Whether ``device_id`` is online at the SIP service: asked of its home node in a cluster of several SIP
    nodes (``gbops.cluster_sip.ClusterSip.online``), of this node's service otherwise."""
    online = getattr(type(sip), "online", None)
    return await sip.online(device_id) if online is not None else bool(sip.is_online(device_id))


async def settle(value: Any) -> Any:
    """A SIP service answer that may cross nodes: awaited when it is awaitable (``ClusterSip``)."""
    return await value if inspect.isawaitable(value) else value


def _throttle(request: Request) -> UnknownUserThrottle:
    return request.app.state.login_throttle


def _audit(request: Request) -> Any | None:
    return getattr(request.app.state, "audit", None)


def security_sink(request: Request) -> Any | None:
    """The platform's :class:`security.events.SecuritySink` (None when the portal runs without one)."""
    return getattr(request.app.state, "security", None)


SettingsDep = Annotated[Settings, Depends(_settings)]
SessionDep = Annotated[AsyncSession, Depends(_session)]
RegistryDep = Annotated[Any, Depends(_registry)]
SipDep = Annotated[Any | None, Depends(_sip)]
ThrottleDep = Annotated[UnknownUserThrottle, Depends(_throttle)]
#: The platform's :class:`audit_log.log.AuditLog`, or None when the portal runs without one.
AuditDep = Annotated[Any | None, Depends(_audit)]


def idle_limit(request: Request) -> timedelta | None:
    """``GBOPS_SESSION_IDLE_MINUTES`` as the ``idle`` of :func:`resolve_token` (None: no idle limit)."""
    minutes = request.app.state.settings.session_idle_minutes
    return timedelta(minutes=minutes) if minutes > 0 else None


def client_ip(request: Request) -> str | None:
    """The client's address: the peer, or - only when the peer is one of ``GBOPS_TRUSTED_PROXIES`` -
    the right-most address of ``X-Forwarded-For`` that is not a trusted proxy (what the audit log,
    the watermark and login throttling use)."""
    from ops_portal.http_limits import forwarded_client_ip

    peer = request.client.host if request.client is not None else None
    settings = getattr(request.app.state, "settings", None)
    trusted = settings.trusted_proxies if settings is not None else ""
    return forwarded_client_ip(peer, request.headers.getlist("x-forwarded-for"), trusted)


# ------------------------------------------------------------------------------------------ auth
_bearer = HTTPBearer(
    auto_error=False,
    bearerFormat="opaque",
    description="POST /api/auth/login 返回的令牌 / the token returned by POST /api/auth/login",
)


async def _authenticate(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> AuthContext:
    if credentials is None or not credentials.credentials:
        raise not_authenticated()
    ctx = await resolve_token(session, credentials.credentials, idle=idle_limit(request), sink=security_sink(request),
                              client_ip=client_ip(request))
    # Who is calling, for what happens outside the route (the access.denied audit of a 403).
    request.state.user = ctx.user
    return ctx


AnyAuth = Annotated[AuthContext, Depends(_authenticate)]


def _password_changed(ctx: AuthContext, request: Request) -> None:
    if ctx.user.must_change_password:
        reason = password_age_reason(ctx.user, request.app.state.settings, utcnow())
        raise ApiError(
            403,
            "password_change_required",
            f"{reason} (POST /api/auth/password)" if reason else
            "请先修改密码（POST /api/auth/password）后再使用平台 / "
            "change your password first (POST /api/auth/password)",
        )


async def _require_enrol(ctx: AnyAuth, request: Request) -> AuthContext:
    _password_changed(ctx, request)
    return ctx


#: A user who changed their password but may still have to set up the second factor (enrolment routes).
EnrolAuth = Annotated[AuthContext, Depends(_require_enrol)]


async def _require_active(ctx: AnyAuth, request: Request, session: SessionDep) -> AuthContext:
    _password_changed(ctx, request)
    settings: Settings = request.app.state.settings
    if ctx.user.totp_enabled_at is None and settings.totp_required_roles.strip():
        required = await requires_totp(session, ctx.user, settings)
        await session.commit()
        if required:
            raise ApiError(
                403,
                "totp_setup_required",
                "您的角色要求两步验证：请先在“我的账户”中绑定验证器应用（POST /api/auth/totp/setup）/ your role "
                "requires two-step verification: set up an authenticator app first (POST /api/auth/totp/setup)",
            )
    return ctx


Auth = Annotated[AuthContext, Depends(_require_active)]


async def _current_user(ctx: Auth) -> User:
    return ctx.user


CurrentUser = Annotated[User, Depends(_current_user)]


# ------------------------------------------------------------------------------------------ permissions
#: Permission names that routes may ask for, by level (system administration / system function), with
#: their Chinese and English labels.  Data access (the third level) is a role's scope: organisation
#: nodes and channels, not a permission name.  A typo in a route is caught at import time.
PERMISSION_CATALOGUE: dict[str, tuple[str, str, str]] = {
    # system administration
    "user.manage": ("admin", "用户管理", "manage users"),
    "role.manage": ("admin", "角色管理", "manage roles and grants"),
    "org.manage": ("admin", "组织管理", "manage the organisation tree"),
    "device.write": ("admin", "设备管理", "manage devices"),
    "settings.manage": ("admin", "系统设置", "system settings"),
    "contract.manage": ("admin", "合同管理", "manage service contracts"),
    "system.metrics": ("admin", "运行指标", "service metrics"),
    "cascade.manage": ("admin", "级联平台", "upper platforms (cascade)"),
    "security.read": ("admin", "安全监控", "security events, alerts and checks"),
    "security.manage": ("admin", "安全处置", "acknowledge alerts, unblock addresses, backups"),
    # system functions
    "device.read": ("function", "设备查看", "view devices"),
    "device.catalog_sync": ("function", "目录同步", "catalog sync"),
    "live.view": ("function", "实时视频", "live video"),
    "playback.view": ("function", "录像回放", "playback"),
    "download.create": ("function", "录像下载", "download video"),
    "record.manage": ("function", "录像计划", "recording plans"),
    "ptz.control": ("function", "云台控制", "PTZ control"),
    "device.control": ("function", "设备控制", "device control commands"),
    "alarm.read": ("function", "报警查看", "view alarms"),
    "alarm.ack": ("function", "报警处理", "acknowledge alarms"),
    "ticket.read": ("function", "工单查看", "view tickets"),
    "ticket.write": ("function", "工单处理", "report and handle tickets"),
    "report.read": ("function", "统计报表", "online rate and reports"),
    "audit.read": ("function", "审计查看", "view the audit log"),
    "audit.export": ("function", "审计导出", "export the audit log"),
}
PERMISSIONS = frozenset(PERMISSION_CATALOGUE)


async def _access(ctx: Auth, session: SessionDep) -> Access:
    access = await load_access(session, ctx.user)
    await session.commit()  # end the read transaction; the objects stay usable
    return access


#: The caller's permissions and scope (one resolution per request: FastAPI caches the dependency).
AccessDep = Annotated[Access, Depends(_access)]


def require_permission(permission: str) -> Callable[..., Coroutine[Any, Any, User]]:
    """A dependency that lets the call through only if the user holds ``permission`` (403 ``forbidden``
    otherwise) and returns the :class:`User`.  The returned callable carries ``.permission`` so that
    tests can check that every route declares one."""
    if permission not in PERMISSIONS:
        raise ValueError(f"unknown permission {permission!r}")

    admin_level = PERMISSION_CATALOGUE[permission][0] == "admin"

    async def _check(access: AccessDep, request: Request) -> User:
        if not access.can(permission):
            zh, en = PERMISSION_CATALOGUE[permission][1:]
            raise ApiError(403, "forbidden", f"无权执行此操作（需要“{zh}”权限）/ permission denied (needs {en}: {permission})")
        if admin_level:
            _check_admin_network(request, access.user, permission)
        return access.user

    _check.__name__ = f"require_{permission.replace('.', '_')}"
    _check.permission = permission  # type: ignore[attr-defined]
    return _check


def _check_admin_network(request: Request, user: User, permission: str) -> None:
    """403 ``admin_network_refused`` (and a security event ``admin_network``) for management from outside
    ``GBOPS_ADMIN_ALLOW_CIDRS``; nothing when the setting is empty."""
    networks = parse_networks(request.app.state.settings.admin_allow_cidrs)
    if not networks:
        return
    ip = client_ip(request)
    if in_networks(ip, networks):
        return
    route = request.scope.get("route")
    emit(security_sink(request), "admin_network", client_ip=ip, user=user.username, permission=permission,
         route=f"{request.method} {getattr(route, 'path', None) or request.url.path}")
    raise admin_network_refused()


# ------------------------------------------------------------------------------------------ scope
ChannelIdPath = Annotated[str, Path(min_length=1, max_length=32, description="通道编码 / channel id")]
DeviceIdPath = Annotated[str, Path(min_length=1, max_length=32, description="GB/T 28181 设备编码 / device id")]


async def _scoped_channel(
    access: AccessDep,
    registry: RegistryDep,
    request: Request,
    channel_id: ChannelIdPath,
) -> ChannelRef:
    """Both path forms of a channel route.  ``/api/devices/{device_id}/channels/{channel_id}/...`` names
    exactly that device's channel; the shorthand ``/api/channels/{channel_id}/...`` resolves the id among
    the caller's visible channels: one -> that channel, several -> 409 ``ambiguous_channel`` listing only
    the caller's devices, none -> 403 (404 with the full scope)."""
    device_id = request.path_params.get("device_id")
    if device_id is None:
        return await resolve_channel(access, registry, channel_id)
    ref = ChannelRef(str(device_id), channel_id)
    await ensure_channel(access, registry, ref)
    return ref


def _device_path(device_id: DeviceIdPath) -> str:
    """Declares (and validates) ``{device_id}`` on the ``/api/devices/{device_id}/channels/{channel_id}``
    form of a channel route; :func:`_scoped_channel` reads it."""
    return device_id


async def _scoped_device(
    access: AccessDep,
    registry: RegistryDep,
    device_id: DeviceIdPath,
) -> str:
    await ensure_device(access, registry, device_id)
    return device_id


#: The channel of the path (:class:`gbcore.ids.ChannelRef`), checked against the caller's scope (403
#: ``channel_forbidden``), from ``/api/devices/{device_id}/channels/{channel_id}/...`` or from the shorthand
#: ``/api/channels/{channel_id}/...`` (409 ``ambiguous_channel`` when several visible devices have the id).
#: A route takes both forms by stacking two decorators, the device form with ``dependencies=[DEVICE_PATH]``.
ScopedChannel = Annotated[ChannelRef, Depends(_scoped_channel)]
#: Put in ``dependencies=`` of the ``/api/devices/{device_id}/channels/{channel_id}/...`` form of a route.
DEVICE_PATH = Depends(_device_path)
#: The ``{device_id}`` of the path, once checked against the caller's scope (403 ``device_forbidden``).
ScopedDevice = Annotated[str, Depends(_scoped_device)]


def device_channel_path(path: str) -> str:
    """``/api/channels/{channel_id}/live`` -> ``/api/devices/{device_id}/channels/{channel_id}/live``."""
    prefix = "/api/channels/{channel_id}"
    if not path.startswith(prefix):
        raise ValueError(f"not a channel route: {path}")
    return "/api/devices/{device_id}/channels/{channel_id}" + path[len(prefix):]
