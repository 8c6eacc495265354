"""``/api/auth``: log in, log out, change password, who am I."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request, Response

from ops_portal import auth
from ops_portal.accounts.schemas import LoginRequest, PasswordChangeRequest, TokenOut, UserOut
from ops_portal.deps import AnyAuth, AuditDep, CurrentUser, SessionDep, SettingsDep, ThrottleDep, client_ip
from ops_portal.schemas import error_responses
from ops_portal.users import ADMIN_USERNAME, forget_initial_admin_password

router = APIRouter(prefix="/api/auth", tags=["auth"])


@router.post(
    "/login",
    operation_id="auth_login",
    summary="登录 / log in",
    response_model=TokenOut,
    responses=error_responses(401, 403, 422, 423, 429),
)
async def login(
    body: LoginRequest,
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    throttle: ThrottleDep,
    audit: AuditDep,
) -> TokenOut:
    """Exchange a user name and password for a bearer token.

    Unknown user names and wrong passwords get the same 401 answer.  Wrong passwords are counted per
    account and source address: after ``GBOPS_LOGIN_DELAY_FAILURES`` (3) each further attempt from that
    address waits a growing delay (429 with ``Retry-After``), after ``GBOPS_LOGIN_LOCK_FAILURES`` (5) that
    address is locked out of the account for ``GBOPS_LOGIN_LOCK_MINUTES`` (15, 423); other addresses are not
    affected.  The account itself is locked (423 from everywhere) only after
    ``GBOPS_LOGIN_ACCOUNT_LOCK_FAILURES`` (50) failures from all addresses within that window, and an
    administrator still logs in from ``GBOPS_ADMIN_NETWORKS`` (default: loopback).
    """
    result = await auth.login(
        session,
        body.username,
        body.password,
        ttl=timedelta(hours=settings.token_ttl_hours),
        client_ip=client_ip(request),
        throttle=throttle,
        audit=audit,
    )
    response.headers["Cache-Control"] = "no-store"
    return TokenOut(
        access_token=result.token,
        expires_at=result.expires_at,
        must_change_password=result.user.must_change_password,
    )


@router.post(
    "/logout",
    operation_id="auth_logout",
    summary="注销当前令牌 / revoke the current token",
    status_code=204,
    responses=error_responses(401, 403),
)
async def logout(ctx: AnyAuth, session: SessionDep, audit: AuditDep, request: Request) -> Response:
    await auth.revoke_token(session, ctx.token, audit=audit, user=ctx.user, client_ip=client_ip(request))
    auth.log.info("logout", username=ctx.user.username, user_id=ctx.user.id)
    return Response(status_code=204)


@router.post(
    "/password",
    operation_id="auth_password_change",
    summary="修改密码 / change password",
    response_model=UserOut,
    responses=error_responses(401, 403, 422, 423, 429),
)
async def change_password(
    body: PasswordChangeRequest,
    ctx: AnyAuth,
    session: SessionDep,
    settings: SettingsDep,
    audit: AuditDep,
    throttle: ThrottleDep,
    request: Request,
) -> UserOut:
    """Change the caller's password.  Every other token of the user is revoked; the token used
    for this call stays valid.  A wrong old password counts like a failed login from this address."""
    user = await auth.change_password(
        session, ctx, body.old_password, body.new_password, audit=audit, client_ip=client_ip(request),
        throttle=throttle,
    )
    if user.username == ADMIN_USERNAME:
        forget_initial_admin_password(settings)
    return UserOut.model_validate(user)


@router.get(
    "/me",
    operation_id="auth_me",
    summary="当前用户 / the current user",
    response_model=UserOut,
    responses=error_responses(401, 403),
)
async def me(user: CurrentUser) -> UserOut:
    return UserOut.model_validate(user)
