"""The portal's FastAPI application.

``create_app`` wires settings, the database, the device registry and (optionally) the live SIP
service into one app.  Every error, including FastAPI's own validation errors and unknown routes,
is answered as ``{"error": "<code>", "message": "<中文 / English>"}``.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gbcore.log import get_logger
from gbcore.settings import Settings
from ops_portal.api import api_router
from ops_portal.auth import LoginThrottle
from ops_portal.schemas import ApiError

__all__ = ["UPLOAD_ROUTES", "BodyTooLarge", "DenialAudit", "create_app", "install_http_basics"]

log = get_logger("gbops.portal")

_HTTP_ERRORS: dict[int, tuple[str, str]] = {
    400: ("bad_request", "请求无效 / bad request"),
    401: ("not_authenticated", "需要登录 / authentication required"),
    403: ("forbidden", "无权访问 / forbidden"),
    404: ("not_found", "请求的资源不存在 / the requested resource does not exist"),
    405: ("method_not_allowed", "不支持此请求方法 / method not allowed"),
    406: ("not_acceptable", "无法提供请求的格式 / not acceptable"),
    413: ("payload_too_large", "请求体过大 / request body too large"),
    415: ("unsupported_media_type", "不支持的内容类型 / unsupported media type"),
    429: ("too_many_requests", "请求过于频繁 / too many requests"),
}


def _version() -> str:
    try:
        return metadata.version("gbops")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def _error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers)


async def _on_api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    if exc.status_code == 403 and is_refusal(exc.error):
        _security_event(request, "access_denied", error=exc.error)  # every one (the audit entry is rate-limited)
        denials: DenialAudit | None = getattr(request.app.state, "denial_audit", None)
        if denials is not None:
            await denials.refused(request, exc)  # access.denied on the audit log (rate-limited per user)
    return _error_response(exc)


async def _on_body_too_large(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BodyTooLarge)
    return _error_response(exc.api_error())


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code in (404, 405):  # no such route (or method): what a scanner hits
        _security_event(request, "route_unknown", error=str(exc.status_code))
    code, message = _HTTP_ERRORS.get(exc.status_code, ("http_error", "请求失败 / request failed"))
    return _error_response(ApiError(exc.status_code, code, message, headers=exc.headers))


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # Only where and what: FastAPI's "input" would echo request values (passwords) back.
    details = [
        {"loc": list(err.get("loc", ())), "type": err.get("type"), "msg": err.get("msg")}
        for err in exc.errors()
    ]
    where = ", ".join(".".join(str(p) for p in d["loc"]) for d in details) or "?"
    return _error_response(
        ApiError(
            422,
            "validation_error",
            f"请求参数无效：{where} / invalid request: {where}",
            details=details,
        )
    )


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("http.unhandled", method=request.method, path=request.url.path, error=type(exc).__name__)
    return _error_response(
        ApiError(500, "internal_error", "服务器内部错误 / internal server error")
    )


# ------------------------------------------------------------------------------------------ body limit
#: (method, path pattern) of the routes whose body may be up to ``GBOPS_HTTP_UPLOAD_LIMIT``; every other
#: request body is limited to ``GBOPS_HTTP_BODY_LIMIT``.
UPLOAD_ROUTES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("POST", re.compile(r"/api/devices/import")),
    ("PUT", re.compile(r"/api/tickets/[^/]+/snapshot")),
)


class BodyTooLarge(StarletteHTTPException):
    """A request body over its limit.  An HTTPException so that FastAPI's body reading lets it through
    (anything else there becomes a 400); answered 413 ``body_too_large``."""

    def __init__(self, limit: int) -> None:
        super().__init__(413)
        self.limit = limit

    def api_error(self) -> ApiError:
        return ApiError(
            413,
            "body_too_large",
            f"请求体过大 / request body too large (limit {self.limit} bytes)",
        )


class _BodyLimit:
    """Request body limit, without buffering: a declared ``Content-Length`` over the limit is answered
    413 before a byte of the body is read; otherwise the bytes that reach the app are counted as they
    stream (chunked bodies included) and the read that passes the limit raises :class:`BodyTooLarge`,
    so no route ever holds more than the limit.  The server discards whatever of the body is still
    coming (for at most the header timeout, see :mod:`ops_portal.http_limits`)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    def limit_for(self, method: str, path: str) -> int:
        for upload_method, pattern in UPLOAD_ROUTES:
            if method == upload_method and pattern.fullmatch(path):
                return self.settings.http_upload_limit
        return self.settings.http_body_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["method"], scope["path"])
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0  # the server refuses a malformed length before we get it
                if declared > limit:
                    log.info("http.body_too_large", path=scope["path"], declared=declared, limit=limit)
                    await _error_response(BodyTooLarge(limit).api_error())(scope, receive, send)
                    return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            if received > limit:
                raise BodyTooLarge(limit)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    log.info("http.body_too_large", path=scope["path"], received=received, limit=limit)
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge as exc:  # not answered by the app's handler (it never reached a route)
            if started:
                raise
            await _error_response(exc.api_error())(scope, receive, send)


# ------------------------------------------------------------------------------------------ security events
def _security_event(request: Request, kind: str, *, error: str) -> None:
    """One event on ``app.state.security``: ``access_denied`` (a 403 for permission or scope) or
    ``route_unknown``; ``detail.path`` (the concrete path) is what the scanning rule counts per address."""
    sink = getattr(request.app.state, "security", None)
    if sink is None:
        return
    try:
        from ops_portal.deps import client_ip

        user = getattr(request.state, "user", None)
        route = request.scope.get("route")
        template = getattr(route, "path", None)
        detail: dict[str, Any] = {"method": request.method, "path": request.url.path[:200], "error": error}
        if template:
            detail["route"] = template
        sink.emit(kind, source_ip=client_ip(request), user=getattr(user, "username", None), detail=detail)
    except Exception:
        log.exception("security.emit_failed", kind=kind)


class _BlockedAddresses:
    """Every HTTP (and WebSocket) request from an address the security monitor blocked is answered 403
    ``address_blocked``, before anything else runs; one ``blocked_request`` event per address and minute."""

    EVENT_EVERY = 60.0

    def __init__(self, app: ASGIApp, fastapi_app: FastAPI, clock: Any = time.monotonic) -> None:
        self.app = app
        self.fastapi_app = fastapi_app
        self.clock = clock
        self._last: dict[str, float] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sink = getattr(self.fastapi_app.state, "security", None)
        if scope["type"] not in ("http", "websocket") or sink is None:
            await self.app(scope, receive, send)
            return
        from ops_portal.http_limits import forwarded_client_ip

        client = scope.get("client")
        peer = client[0] if client else None
        forwarded = [v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"x-forwarded-for"]
        settings = getattr(self.fastapi_app.state, "settings", None)
        ip = forwarded_client_ip(peer, forwarded, settings.trusted_proxies if settings is not None else "")
        if ip is None or not sink.is_blocked(ip):
            await self.app(scope, receive, send)
            return
        now = self.clock()
        last = self._last.get(ip)
        if last is None or now - last >= self.EVENT_EVERY:
            if len(self._last) > 10_000:
                self._last.clear()
            self._last[ip] = now
            try:
                sink.emit("blocked_request", source_ip=ip,
                          detail={"method": scope.get("method", "WS"), "path": str(scope.get("path", ""))[:200]})
            except Exception:
                log.exception("security.emit_failed", kind="blocked_request")
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await _error_response(ApiError(403, "address_blocked", "来源地址已被封禁 / source address blocked"))(
            scope, receive, send)


# ------------------------------------------------------------------------------------------ refusals
#: Error codes of a 403 that is a refusal for permission or scope (``access.denied`` on the audit log);
#: any other ``*_forbidden`` code counts too.
REFUSAL_CODES = frozenset({"forbidden", "channel_forbidden", "device_forbidden", "org_node_forbidden",
                           "grant_exceeds_own", "scope_forbidden", "ticket_forbidden", "org_root_forbidden"})

#: Path parameters that name the target of a refused request, in order of preference.
_TARGET_PARAMS = (("channel_id", "channel"), ("device_id", "device"), ("node_id", "org_node"),
                  ("user_id", "user"), ("role_id", "role"), ("ticket_id", "ticket"), ("contract_id", "contract"),
                  ("job_id", "download"), ("session_id", "session"), ("alarm_id", "alarm"),
                  ("platform_id", "cascade_platform"))


def is_refusal(code: str) -> bool:
    return code in REFUSAL_CODES or code.endswith("_forbidden")


#: (audit log, actor, client_ip, suppressed refusals, seconds of the window so far)
_Summary = tuple[Any, Any, str | None, int, float]


@dataclass(slots=True)
class _DenialWindow:
    start: float
    recorded: int = 0
    suppressed: int = 0
    actor: Any = None
    client_ip: str | None = None
    flush: asyncio.TimerHandle | None = None
    audit: Any = None


class DenialAudit:
    """``access.denied`` entries for refused requests, at most ``per_minute`` per user and minute.

    Refusals beyond that are counted; the count goes on the log as one summary entry (detail
    ``suppressed``) when the user's minute is over (a timer) or, at the latest, with that user's next
    recorded refusal.  Keys are user ids (the client address when the caller is unknown)."""

    WINDOW = 60.0

    def __init__(self, settings: Settings, *, clock: Any = time.monotonic, max_users: int = 10_000) -> None:
        self.settings = settings
        self.clock = clock
        self.max_users = max_users
        self._windows: dict[str, _DenialWindow] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def refused(self, request: Request, exc: ApiError) -> None:
        from audit_log.log import Actor, Target
        from ops_portal.deps import client_ip

        audit = getattr(request.app.state, "audit", None)
        if audit is None:
            return
        try:
            user = getattr(request.state, "user", None)
            ip = client_ip(request)
            actor = Actor.user(user) if user is not None else Actor.anonymous()
            key = f"user:{user.id}" if user is not None else f"ip:{ip}"
            route = request.scope.get("route")
            template = getattr(route, "path", None) or request.url.path
            params = {k: str(v) for k, v in request.path_params.items()}
            target = Target("route", f"{request.method} {template}")
            for name, kind in _TARGET_PARAMS:
                if name in params:
                    ident = params[name]
                    if name == "channel_id" and "device_id" in params:
                        ident = f"{params['device_id']}/{ident}"  # gbcore.ids.ChannelRef.key
                    target = Target(kind, ident)
                    break
            detail = {"route": f"{request.method} {template}", "error": exc.error, "params": params}
            admitted, summary = self._admit(key, actor, ip, audit)
            if summary is not None:
                await self._record_summary(*summary)
            if admitted:
                await audit.record(actor=actor, action="access.denied", target=target, client_ip=ip,
                                   detail=detail)
            log.info("access.denied", user=actor.name, route=detail["route"], error=exc.error, recorded=admitted)
        except Exception:
            log.exception("access.denied_audit_failed", error=exc.error)

    def _admit(self, key: str, actor: Any, ip: str | None, audit: Any) -> tuple[bool, _Summary | None]:
        """Count one refusal of ``key``: whether it gets its own entry, and the summary of an elapsed
        minute with suppressed refusals (actor, client_ip, count, seconds) to record first, if any."""
        now = self.clock()
        limit = self.settings.access_denied_audit_per_minute
        window = self._windows.get(key)
        summary = None
        if window is None or now - window.start >= self.WINDOW:
            if window is not None:
                summary = self._close(window, now)
            window = self._windows[key] = _DenialWindow(start=now)
            if len(self._windows) > self.max_users:
                self._windows.pop(next(iter(self._windows)))
        window.actor, window.client_ip, window.audit = actor, ip, audit
        if window.recorded < limit:
            window.recorded += 1
            return True, summary
        window.suppressed += 1
        if window.flush is None:
            delay = max(0.0, self.WINDOW - (now - window.start))
            window.flush = asyncio.get_running_loop().call_later(delay, self._flush_later, window)
        return False, summary

    def _close(self, window: _DenialWindow, now: float) -> _Summary | None:
        if window.flush is not None:
            window.flush.cancel()
            window.flush = None
        if not window.suppressed:
            return None
        count, window.suppressed = window.suppressed, 0
        return window.audit, window.actor, window.client_ip, count, round(min(now - window.start, self.WINDOW), 3)

    def _flush_later(self, window: _DenialWindow) -> None:
        window.flush = None
        summary = self._close(window, self.clock())
        if summary is None:
            return
        task = asyncio.ensure_future(self._record_summary(*summary))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _record_summary(self, audit: Any, actor: Any, ip: str | None, count: int, seconds: float) -> None:
        from audit_log.log import Target

        try:
            await audit.record(actor=actor, action="access.denied", target=Target("user", actor.id),
                               client_ip=ip, detail={"summary": True, "suppressed": count,
                                                     "window_s": self.WINDOW, "elapsed_s": seconds})
        except Exception:
            log.exception("access.denied_summary_failed", count=count)

    async def flush(self) -> None:
        """Record every pending summary now (shutdown, tests)."""
        now = self.clock()
        for window in list(self._windows.values()):
            summary = self._close(window, now)
            if summary is not None:
                await self._record_summary(*summary)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


class _NoStoreHeaders:
    """API answers carry user data and tokens: no caching, no MIME sniffing."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                if b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                if b"x-content-type-options" not in names:
                    headers.append((b"x-content-type-options", b"nosniff"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install_http_basics(app: FastAPI, settings: Settings) -> None:
    """The one JSON error shape, the body limit, no-store headers and blocked addresses: every HTTP app of
    the platform has them (the portal; a media node's output server, :mod:`ops_portal.live.output_app`)."""
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(BodyTooLarge, _on_body_too_large)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(Exception, _on_unexpected)
    app.add_middleware(_BodyLimit, settings=settings)
    app.add_middleware(_NoStoreHeaders)
    app.add_middleware(_BlockedAddresses, fastapi_app=app)  # outermost: a blocked address reaches nothing


def create_app(
    *,
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    registry: Any,
    sip: Any | None = None,
    audit: Any | None = None,
    media: Any | None = None,
    control: Any | None = None,
    alarms: Any | None = None,
    security: Any | None = None,
) -> FastAPI:
    """The portal app.

    ``registry`` is a :class:`device_registry.service.Registry`; ``sip`` the running SIP service
    (``None`` when there is none: catalog sync then answers 503); ``audit`` the platform's
    :class:`audit_log.log.AuditLog` (``None``: actions are not audited and ``/api/audit`` answers 503);
    ``media`` the :class:`media_relay.service.MediaService` (``None``: live requests answer 503);
    ``control`` the :class:`device_control.service.ControlService` (``None``: PTZ and device control answer
    503); ``alarms`` the :class:`alarms.service.AlarmService` (``None``: the alarm list is empty, the live
    feed and acknowledging answer 503); ``security`` the :class:`security.events.SecuritySink` (``None``: a
    :class:`security.events.NullSink`; the platform sets its monitor on ``app.state.security``).
    """
    app = FastAPI(
        title="gbops",
        summary="GB/T 28181 视频监控运维平台 API / GB/T 28181 video-surveillance operation platform API",
        version=_version(),
        openapi_url="/api/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.sessionmaker = sessionmaker
    app.state.registry = registry
    app.state.sip = sip
    app.state.audit = audit
    app.state.media = media
    app.state.control = control
    app.state.alarms = alarms
    from security.events import NullSink

    app.state.security = security if security is not None else NullSink()
    app.state.login_throttle = LoginThrottle(settings)
    app.state.denial_audit = DenialAudit(settings)

    install_http_basics(app, settings)
    app.include_router(api_router)
    from ops_portal.console import router as console_router
    from ops_portal.live.routes import outputs_router

    app.include_router(outputs_router)  # bound to the session's user: their bearer token or the single-use ?t= token
    app.include_router(console_router)  # the web console's pages and assets (public: no data in them)
    return app
