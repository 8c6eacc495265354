"""Live view: ``POST /api/channels/{id}/live`` -> a viewer session; its outputs (HTTP-FLV, WHEP); streams.

Every request for a channel checks the user's permission for it (``live.view``; per-channel grants come
with the roles issue) and says in words why it cannot be served: device offline, device refused (with its
SIP status), no media arrived, no ports left.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from gbcore.log import get_logger
from ops_portal.deps import (
    DEVICE_PATH,
    AccessDep,
    RegistryDep,
    ScopedChannel,
    SipDep,
    client_ip,
    device_channel_path,
    device_online,
    idle_limit,
    require_permission,
)
from ops_portal.live import live_audit, output_tokens
from ops_portal.live.media_errors import media_error
from ops_portal.models import User
from ops_portal.schemas import ApiError, error_responses

log = get_logger("gbops.portal.live")

router = APIRouter(tags=["live"], responses=error_responses(401, 403, 422))
outputs_router = APIRouter(tags=["live"])  # bound to the session's user: its bearer token or the URL's ?t=

LiveViewer = Annotated[User, Depends(require_permission("live.view"))]
StreamReaderUser = Annotated[User, Depends(require_permission("device.read"))]
ChannelIdPath = Annotated[str, Path(min_length=1, max_length=32, description="通道编码 / channel id")]



class LiveRequest(BaseModel):
    transport: Literal["udp", "tcp-passive", "tcp-active"] | None = Field(
        default=None, description="媒体传输方式 / media transport (default udp)")
    stream: Literal["main", "sub"] | None = Field(
        default=None, description="主码流或子码流 / the main stream or the sub-stream (default: GBOPS_LIVE_STREAM, "
        "main unless configured; a device with no sub-stream identification set is watched on its main stream "
        "by default and refused 409 no_sub_stream when the sub-stream is asked by name)")


class LiveOut(BaseModel):
    session_id: str
    whep_url: str
    flv_url: str
    expires_at: str = Field(description="a player must attach before this time (RFC 3339 UTC)")
    channel_id: str
    device_id: str
    codec: str | None
    width: int | None
    height: int | None
    watermark: bool | None = Field(default=None, description="the picture carries the viewer's visible "
                                   "watermark (every output carries the signed session tag)")
    watermark_id: str | None = Field(default=None, description="the short session code drawn in the picture")
    stream: Literal["main", "sub"] = Field(default="main", description="the stream watched (主码流 / 子码流)")
    sub_stream: bool = Field(default=False, description="the device can be asked for its sub-stream (its stream "
                             "identification form is set)")


class StreamOut(BaseModel):
    """One upstream stream (one per channel, however many viewers) and the node serving it."""

    model_config = ConfigDict(extra="allow")

    device_id: str
    channel_id: str
    stream: str = Field(default="main", description="main | sub: a channel's sub-stream is an upstream of its own")
    node_id: str | None = Field(default=None, description="承载该流的媒体节点（集群中）/ the media node serving the "
                                "stream (issue 17); null where the platform runs no node directory")
    transport: str | None = None
    ssrc: str | None = None
    port: int | None = None
    codec: str | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    bitrate: float | None = Field(default=None, description="bit/s over the last ~2 s")
    packets: int | None = None
    lost: int | None = None
    loss_fraction: float | None = None
    jitter_ms: float | None = Field(default=None, description="RFC 3550 interarrival jitter (ms)")
    viewers: int | None = None
    video_frames: int | None = None
    since: str = Field(description="RFC 3339 UTC")


class StreamList(BaseModel):
    items: list[StreamOut]


def _node_id(request: Request) -> str | None:
    """This node's id in the cluster (``app.state.cluster``), None where none is wired (a portal on its own)."""
    cluster = getattr(request.app.state, "cluster", None)
    node_id = getattr(cluster, "node_id", None)
    return node_id if isinstance(node_id, str) and node_id else None


def _media(request: Request) -> Any:
    media = getattr(request.app.state, "media", None)
    if media is None:
        raise ApiError(503, "media_unavailable", "媒体服务未运行 / the media service is not running")
    return media


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@router.post(device_channel_path("/api/channels/{channel_id}/live"), operation_id="live_start_device_channel",
             status_code=201, summary="开始实时观看（设备 + 通道）/ start watching a device's channel live",
             response_model=LiveOut, dependencies=[DEVICE_PATH],
             responses=error_responses(404, 409, 502, 503, 504))
@router.post("/api/channels/{channel_id}/live", operation_id="live_start", status_code=201,
             summary="开始实时观看（通道编码唯一时）/ start watching a channel live (its id unique)",
             response_model=LiveOut, responses=error_responses(404, 409, 502, 503, 504))
async def start_live(user: LiveViewer, access: AccessDep, registry: RegistryDep, sip: SipDep, request: Request,
                     ref: ScopedChannel, body: LiveRequest | None = None) -> LiveOut:
    """Starts (or joins) the channel's upstream stream and returns a viewer session. Open `whep_url`
    (WHEP, `POST` an SDP offer) or `flv_url` (HTTP-FLV) within `expires_at`. Ten viewers of one channel
    cost the camera one stream. `/api/devices/{device_id}/channels/{channel_id}/live` names the camera
    exactly; `/api/channels/{channel_id}/live` answers 409 `ambiguous_channel` (with `devices`) when
    several of your devices report that channel id.

    `stream`: `main` or `sub` (the device's sub-stream, an upstream of its own, asked in the device's stream
    identification form: `a=streamnumber:1`, `a=stream:1` or `a=streamprofile:1`). When the node's watermark
    encoders are all busy the answer is 503 `watermark_capacity` with `actions`: `[{"action": "use_sub_stream",
    "stream": "sub"}]` when the device has a sub-stream, which costs a fraction of an encoder."""
    media = _media(request)
    channel_id = ref.channel_id
    if sip is None or not await device_online(sip, ref.device_id):
        raise ApiError(409, "device_offline", f"设备不在线 / the device is offline: {ref.device_id}")
    settings = request.app.state.settings
    transport = (body.transport if body else None) or settings.live_transport
    device = await registry.get_device(ref.device_id)
    form = getattr(device, "stream_form", None) or "none"
    has_sub = form != "none"
    asked = body.stream if body else None
    stream = asked or settings.live_stream
    if stream == "sub" and not has_sub:
        if asked == "sub":
            raise ApiError(409, "no_sub_stream", "该设备未设置子码流标识方式，请在设备管理中设置 / the device has no "
                           "sub-stream identification set: set it in device management")
        stream = "main"  # the platform's default is the sub-stream, this device has none: its main stream
    from media_relay.stream import MediaError
    from media_relay.viewers import TransformCapacityExceeded, TransformUnavailable, Viewer

    viewer = Viewer(user_id=user.id, username=user.username, display_name=user.display_name, phone=user.phone,
                    client_ip=client_ip(request), roles=tuple(getattr(access, "roles", ())))
    try:
        if stream == "main":
            session = await media.open_viewer(ref, viewer, kind="live", transport=transport)
        else:
            session = await media.open_viewer(ref, viewer, kind="live", transport=transport, stream=stream)
    except TransformUnavailable as exc:
        raise ApiError(503, "watermark_font_missing", str(exc)) from None
    except TransformCapacityExceeded as exc:
        retry = str(settings.watermark_retry_after)
        log.warning("live.watermark_capacity", channel=ref.key, user=user.username, limit=exc.limit, stream=stream)
        offer_sub = has_sub and stream == "main"
        raise ApiError(503, "watermark_capacity",
                       f"本节点的水印编码器已全部占用（{exc.limit} 路），请 {retry} 秒后重试"
                       + ("，或改看子码流" if offer_sub else "") + f" / all {exc.limit} watermark encoders of this "
                       f"node are busy: retry in {retry} s" + (", or watch the sub-stream" if offer_sub else ""),
                       headers={"Retry-After": retry},
                       extra={"actions": [{"action": "use_sub_stream", "stream": "sub"}] if offer_sub else [],
                              "retry_after": int(retry)}) from None
    except MediaError as exc:
        log.warning("live.failed", channel=ref.key, user=user.username, code=exc.code, reason=str(exc))
        raise media_error(exc) from None
    plan = session.plan
    audit = getattr(request.app.state, "audit", None)
    if audit is not None:
        try:
            await live_audit.record_start(audit, user=user, session=session, transport=transport,
                                          client_ip=client_ip(request), codec=session.codec, stream=stream)
        except Exception:
            # no evidence, no video: a viewing that cannot be recorded is not handed out
            media.close_session(session.session_id, "audit log unavailable")
            log.exception("live.audit_failed", channel=ref.key, user=user.username)
            raise ApiError(503, "audit_unavailable", "审计日志不可用，无法开始观看 / the audit log is "
                           "unavailable, the live view cannot start") from None
    params = session.params
    # the output URLs carry a short-lived single-use token bound to this session and user (never the bearer);
    # a session on another media node (issue 17) comes with that node's URL and the token it minted
    url_token, base = output_url_parts(session, user.id)
    return LiveOut(session_id=session.session_id, whep_url=f"{base}/whep/{session.session_id}?t={url_token}",
                   flv_url=f"{base}/flv/{session.session_id}.flv?t={url_token}",
                   expires_at=_iso(session.attach_deadline),
                   channel_id=channel_id, device_id=ref.device_id, codec=session.codec,
                   width=params.width if params else None, height=params.height if params else None,
                   watermark=plan.on if plan is not None else None,
                   watermark_id=plan.code if plan is not None else None, stream=stream, sub_stream=has_sub)


@router.delete("/api/sessions/{session_id}", operation_id="live_session_delete", status_code=204,
               summary="结束观看会话 / end a viewer session", responses=error_responses(404))
async def delete_session(user: LiveViewer, access: AccessDep, request: Request, session_id: str) -> Response:
    media = _media(request)
    s = media.sessions.get(session_id)
    if s is None or (s.user_id != user.id and not access.can("user.manage")):  # others' sessions: admins
        raise ApiError(404, "session_not_found", "会话不存在 / no such session")
    await media.end_session(session_id, "deleted by the viewer")
    return Response(status_code=204)


@router.get("/api/streams", operation_id="streams_list", summary="上行流列表 / upstream streams",
            response_model=StreamList)
async def list_streams(user: StreamReaderUser, access: AccessDep, registry: RegistryDep,
                       request: Request) -> dict[str, Any]:
    """One item per upstream stream (one per channel, however many viewers): `bitrate` in bit/s over the
    last ~2 s, `loss_fraction` of expected RTP packets, `jitter_ms` per RFC 3550, `since` as RFC 3339,
    `node_id` the cluster node serving it. Only streams of channels in your data scope."""
    from gbcore.ids import ChannelRef
    from ops_portal.scope_lists import channels_in_scope

    media = _media(request)
    items = media.describe_streams()
    if not access.scope.all:
        refs = {ChannelRef(i["device_id"], i["channel_id"]) for i in items}
        allowed = await channels_in_scope(registry, access.scope, refs)
        items = [i for i in items if ChannelRef(i["device_id"], i["channel_id"]) in allowed]
    local = _node_id(request)
    for item in items:
        item["since"] = _iso(item["since"])
        item.setdefault("node_id", local)  # a remote node's stream names its own node
    return {"items": items}


def output_url_parts(session: Any, user_id: int) -> tuple[str, str]:
    """The output URL's single-use token and base for a session: the media node's own (its public URL and
    the token it minted, where the output is served and the token checked) for a session on another node,
    else a token of this process and a relative URL."""
    remote_token = getattr(session, "url_token", None)
    if remote_token:
        return remote_token, getattr(session, "output_base", None) or ""
    return output_tokens.issue(session.session_id, user_id, expires=min(session.attach_deadline,
                                                                       time.time() + output_tokens.TOKEN_TTL)), ""


def _output_media(request: Request) -> Any:
    """The media service whose sessions this node's outputs serve: its own (``app.state.output_media`` on a
    node whose portal places sessions elsewhere), else the portal's."""
    return getattr(request.app.state, "output_media", None) or _media(request)


# ---------------------------------------------------------------------------- outputs
OutputToken = Annotated[str | None, Query(max_length=80, description="POST /api/channels/{id}/live 返回的 URL 中的"
                                          "一次性令牌 / the single-use token of the URL the live answer returned")]
_NO_SESSION = ("session_not_found", "会话不存在、已被使用或不属于你 / no such session, already in use, or not yours")


async def _output_session(request: Request, media: Any, session_id: str, t: str | None, *,
                          teardown: bool = False) -> Any:
    """The viewer session named in an output URL, if the caller is the user who opened it: the same user's
    bearer token, or the URL's signed token (:mod:`ops_portal.live.output_tokens`; consumed unless
    ``teardown``).  No credential: 401; a credential that does not match the session: 404 (the session
    id alone grants nothing and does not reveal whether the session exists)."""
    from fastapi.security.utils import get_authorization_scheme_param

    from ops_portal.auth import not_authenticated, resolve_token

    scheme, bearer = get_authorization_scheme_param(request.headers.get("authorization"))
    session = media.sessions.get(session_id)
    if scheme.lower() == "bearer" and bearer:
        async with request.app.state.sessionmaker() as db:  # an idle console session opens no output
            ctx = await resolve_token(db, bearer, idle=idle_limit(request), touch=False)
        ok = session is not None and ctx.user.id == session.user_id and not ctx.user.must_change_password
    elif t:
        if session is None:
            ok = False
        elif teardown:
            ok = output_tokens.verify(t, session_id, session.user_id, allow_expired=True)
        else:
            ok = output_tokens.consume(t, session_id, session.user_id)
    else:
        raise not_authenticated()
    if not ok:
        raise ApiError(404, *_NO_SESSION)
    return session


@outputs_router.get("/flv/{session_id}.flv", operation_id="live_flv", summary="HTTP-FLV 输出 / HTTP-FLV",
                    include_in_schema=True, responses=error_responses(401, 404))
async def flv_output(request: Request, session_id: str, t: OutputToken = None) -> StreamingResponse:
    """Only for the user who opened the session: its `flv_url` as returned (`?t=`, single use), or the
    same user's bearer token."""
    from media_relay.outputs.flv import flv_stream

    media = _output_media(request)
    await _output_session(request, media, session_id, t)
    session = media.open_output(session_id, "flv")
    if session is None:
        raise ApiError(404, *_NO_SESSION)
    source = session.source

    async def body():
        try:
            async for chunk in flv_stream(source):
                yield chunk
        finally:
            if hasattr(source, "close") and source is not session.reader:
                result = source.close()
                if hasattr(result, "__await__"):
                    await result
            media.close_session(session_id, "player disconnected")

    return StreamingResponse(body(), media_type="video/x-flv",
                             headers={"Cache-Control": "no-store", "Access-Control-Allow-Origin": "*"})


@outputs_router.post("/whep/{session_id}", operation_id="live_whep_offer", status_code=201,
                     summary="WHEP: 提交 SDP offer / WHEP offer", responses=error_responses(401, 404))
async def whep_offer(request: Request, session_id: str, t: OutputToken = None) -> Response:
    """Only for the user who opened the session: its `whep_url` as returned, or the same user's bearer."""
    media = _output_media(request)
    if "application/sdp" not in request.headers.get("content-type", ""):
        raise ApiError(415, "unsupported_media_type", "需要 application/sdp / expected application/sdp")
    offer = (await request.body()).decode("utf-8", "replace")
    await _output_session(request, media, session_id, t)
    session = media.open_output(session_id, "whep")
    if session is None:
        raise ApiError(404, *_NO_SESSION)
    from media_relay.service import WhepNegotiationFailed

    try:
        answer = await media.answer_whep(session, offer)
    except WhepNegotiationFailed as exc:
        raise ApiError(400, "bad_offer", f"无法协商 WebRTC / cannot negotiate WebRTC: {exc}") from None
    location = f"/whep/{session_id}" + (f"?t={t}" if t else "")
    return Response(answer, status_code=201, media_type="application/sdp", headers={"Location": location})


@outputs_router.delete("/whep/{session_id}", operation_id="live_whep_delete", summary="WHEP: 结束 / end",
                       responses=error_responses(401, 404))
async def whep_delete(request: Request, session_id: str, t: OutputToken = None) -> Response:
    """Ends the session: the `whep_url` it was opened with (its token ends only this session), or the
    same user's bearer token."""
    media = _output_media(request)
    await _output_session(request, media, session_id, t, teardown=True)
    if not await media.end_session(session_id, "WHEP DELETE", whep_only=True):
        raise ApiError(404, *_NO_SESSION)
    return Response(status_code=200)


@outputs_router.get("/live/{device_id}/{channel_id}", operation_id="live_page_device_channel",
                    include_in_schema=False)
@outputs_router.get("/live/{channel_id}", operation_id="live_page", include_in_schema=False)
async def live_page(channel_id: ChannelIdPath, request: Request) -> Response:
    """The minimal player page: logs in (token kept in sessionStorage), asks for a session, plays it."""
    from importlib import resources

    from ops_portal.console import media_origins

    media = "".join(f" {o}" for o in media_origins(request.app))  # the cluster's media nodes (issue 17)
    html = resources.files("ops_portal").joinpath("web/live.html").read_text("utf-8")
    return Response(html, media_type="text/html; charset=utf-8",
                    headers={"Cache-Control": "no-store", "Content-Security-Policy": "default-src 'self'; "
                             f"script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; media-src 'self' blob:"
                             f"{media}; connect-src 'self'{media}"})
