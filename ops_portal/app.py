"""The portal's FastAPI application.

``create_app`` wires settings, the database, the device registry and (optionally) the live SIP
service into one app.  Every error, including FastAPI's own validation errors and unknown routes,
is answered as ``{"error": "<code>", "message": "<中文 / English>"}``.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gbops.log import get_logger
from gbops.settings import Settings
from ops_portal.auth import UnknownUserThrottle
from ops_portal.routes import api_router
from ops_portal.schemas import ApiError

__all__ = ["create_app"]

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
    return _error_response(exc)


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
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


def create_app(
    *,
    settings: Settings,
    sessionmaker: async_sessionmaker[AsyncSession],
    registry: Any,
    sip: Any | None = None,
    audit: Any | None = None,
    media: Any | None = None,
) -> FastAPI:
    """The portal app.

    ``registry`` is a :class:`device_registry.service.Registry`; ``sip`` the running SIP service
    (``None`` when there is none: catalog sync then answers 503); ``audit`` the platform's
    :class:`audit_log.log.AuditLog` (``None``: actions are not audited and ``/api/audit`` answers 503);
    ``media`` the :class:`media_relay.service.MediaService` (``None``: live requests answer 503).
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
    app.state.login_throttle = UnknownUserThrottle()

    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(Exception, _on_unexpected)
    app.add_middleware(_NoStoreHeaders)

    app.include_router(api_router)
    from ops_portal.routes.console import router as console_router
    from ops_portal.routes.live import outputs_router

    app.include_router(outputs_router)  # capability URLs (the session id is the credential), no token
    app.include_router(console_router)  # the web console's pages and assets (public: no data in them)
    return app
