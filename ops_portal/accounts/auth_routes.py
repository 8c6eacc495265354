"""``/api/auth``: log in, log out, change password, who am I, the TOTP second factor (issue 16).

Second factor: ``POST /api/auth/totp/setup`` makes a new secret (returned once, with its ``otpauth://`` URI;
not active yet), ``POST /api/auth/totp/enable {code, password}`` turns it on once a code from it is confirmed
(the password again: a stolen session alone cannot change the account's second factor),
``POST /api/auth/totp/disable {password, code}`` turns it off (refused while a role requires it), and
``GET /api/auth/totp`` says where the caller stands.  Set-up and enable also work for a user whose role
requires the second factor and who has not set it up yet (every other route answers them 403
``totp_setup_required``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request, Response

from gbcore.db import begin_write, utcnow
from ops_portal import auth, totp
from ops_portal.accounts import second_factor
from ops_portal.accounts.schemas import (
    LoginRequest,
    PasswordChangeRequest,
    TokenOut,
    TotpCodeRequest,
    TotpSetupOut,
    TotpStateOut,
    UserOut,
)
from ops_portal.deps import (
    AnyAuth,
    AuditDep,
    Auth,
    CurrentUser,
    EnrolAuth,
    SessionDep,
    SettingsDep,
    ThrottleDep,
    client_ip,
    security_sink,
)
from ops_portal.schemas import ApiError, error_responses
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
    """Exchange a user name and password (and, when the account has two-step verification on, the current
    6-digit code as ``otp``) for a bearer token.

    Without the needed code: 401 ``totp_required`` (not counted as a failure); a wrong or already used code:
    401 ``totp_invalid``, counted like a wrong password.  A password older than
    ``GBOPS_PASSWORD_MAX_AGE_DAYS`` comes back with ``must_change_password`` and ``password_change_reason``;
    a role listed in ``GBOPS_TOTP_REQUIRED_ROLES`` without the second factor set up with
    ``totp_setup_required`` (the token then only serves to set it up).  A holder of an administration
    permission is refused (403 ``admin_network_refused``) outside ``GBOPS_ADMIN_ALLOW_CIDRS`` when set.

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
        otp=body.otp,
        sink=security_sink(request),
    )
    response.headers["Cache-Control"] = "no-store"
    return TokenOut(
        access_token=result.token,
        expires_at=result.expires_at,
        must_change_password=result.user.must_change_password,
        password_change_reason=result.password_change_reason,
        totp_setup_required=result.totp_setup_required,
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


# ------------------------------------------------------------------------------------------ second factor
def _totp_invalid() -> ApiError:
    return ApiError(422, "totp_invalid", "验证码错误或已使用过，请输入验证器应用中当前显示的 6 位验证码 / the code is "
                    "wrong or was already used: enter the 6-digit code your authenticator app shows now")


async def _audit_user(audit: Any, session: Any, user: Any, action: str, ip: str | None, detail: dict[str, Any]) -> None:
    if audit is None:
        return
    from audit_log.log import Actor, Target

    await audit.append(session, actor=Actor.user(user), action=action, target=Target("user", str(user.id)),
                       client_ip=ip, detail=detail)


@router.get("/totp", operation_id="auth_totp_state", summary="两步验证状态 / two-step verification state",
            response_model=TotpStateOut, responses=error_responses(401, 403))
async def totp_state(ctx: EnrolAuth, session: SessionDep, settings: SettingsDep) -> TotpStateOut:
    user = ctx.user
    required = await second_factor.requires_totp(session, user, settings)
    await session.commit()
    return TotpStateOut(enabled=user.totp_enabled_at is not None, enabled_at=user.totp_enabled_at,
                        required=required, pending=user.totp_enabled_at is None and user.totp_secret is not None)


@router.post("/totp/setup", operation_id="auth_totp_setup", summary="生成两步验证密钥 / set up two-step verification",
             response_model=TotpSetupOut, responses=error_responses(401, 403, 409))
async def totp_setup(ctx: EnrolAuth, session: SessionDep, settings: SettingsDep, response: Response) -> TotpSetupOut:
    """A new secret for the caller's authenticator app (shown this once).  It is not in force until a code
    from it is confirmed with ``POST /api/auth/totp/enable``; a second set-up replaces an unconfirmed one.
    Refused (409 ``totp_already_enabled``) while the second factor is on: turn it off first."""
    user = ctx.user
    if user.totp_enabled_at is not None:
        raise ApiError(409, "totp_already_enabled", "两步验证已启用；如需更换验证器，请先停用 / two-step verification is "
                       "already on: turn it off first to change the authenticator")
    secret = totp.new_secret()
    box = second_factor.totp_box(settings)
    await begin_write(session)
    user.totp_secret = second_factor.seal_secret(box, user.id, secret)
    user.totp_enabled_at = None
    user.totp_last_step = None
    await session.commit()
    auth.log.info("totp.setup", username=user.username, user_id=user.id)
    issuer = settings.platform_name
    response.headers["Cache-Control"] = "no-store"
    return TotpSetupOut(secret=secret, secret_grouped=totp.group_secret(secret),
                        otpauth_uri=totp.provisioning_uri(secret, user.username, issuer), issuer=issuer,
                        account=user.username, digits=totp.DIGITS, period=totp.PERIOD)


async def _password_and_code(request: Request, session: Any, settings: Any, throttle: Any, user: Any, password: str,
                             code: str, *, what: str) -> int:
    """Check the caller's password and a code of its current secret (counted like a login from this
    address: the same delays and locks), claim the code's step in a write transaction left open for the
    caller; 403 ``wrong_password`` / 422 ``totp_invalid`` otherwise (and a security event)."""
    ip = client_ip(request)
    if session.in_transaction():
        await session.commit()
    admitted = throttle.begin(user.username, ip, utcnow())
    if isinstance(admitted, auth.LoginRefusal):
        if admitted.kind == "locked":
            raise auth._locked(admitted.until, address=True)
        raise auth._throttled(admitted.retry_after)
    try:
        ok = await auth.verify_password(user.password_hash, password)
        step = second_factor.code_step(second_factor.totp_box(settings), user, code, utcnow()) if ok else None
        if step is not None:
            await begin_write(session)
            if not await second_factor.claim_step(session, user, step):
                await session.commit()
                step = None
        if step is None:
            admitted.failed(utcnow())
            auth.emit(security_sink(request), "login_failed" if not ok else "totp_failed", client_ip=ip,
                      user=user.username, reason="wrong_password" if not ok else "totp_failed", at=what)
            auth.log.info("totp.refused", username=user.username, client_ip=ip, at=what,
                          reason="wrong_password" if not ok else "totp_failed")
            if not ok:
                raise ApiError(403, "wrong_password", "密码错误 / the password is wrong")
            raise _totp_invalid()
        admitted.succeeded()
        return step
    finally:
        admitted.release()


@router.post("/totp/enable", operation_id="auth_totp_enable", summary="确认并启用两步验证 / turn two-step "
             "verification on", response_model=TotpStateOut, responses=error_responses(401, 403, 409, 422, 423, 429))
async def totp_enable(body: TotpCodeRequest, ctx: EnrolAuth, session: SessionDep, settings: SettingsDep,
                      audit: AuditDep, throttle: ThrottleDep, request: Request) -> TotpStateOut:
    """Confirms the secret of the last set-up with the password and a current code from the app; from then
    on logging in needs a code.  403 ``wrong_password``, 422 ``totp_invalid`` for a wrong code (both counted
    like a failed login from this address), 409 ``totp_not_set_up`` without a set-up."""
    user = ctx.user
    if user.totp_enabled_at is not None:
        raise ApiError(409, "totp_already_enabled", "两步验证已启用 / two-step verification is already on")
    if user.totp_secret is None:
        raise ApiError(409, "totp_not_set_up", "请先生成密钥（POST /api/auth/totp/setup）/ set it up first "
                       "(POST /api/auth/totp/setup)")
    await _password_and_code(request, session, settings, throttle, user, body.password, body.code, what="totp_enable")
    now = utcnow()
    user.totp_enabled_at = now
    await _audit_user(audit, session, user, "auth.totp_enable", client_ip(request), {"method": "totp"})
    await session.commit()
    auth.log.info("totp.enabled", username=user.username, user_id=user.id)
    required = await second_factor.requires_totp(session, user, settings)
    await session.commit()
    return TotpStateOut(enabled=True, enabled_at=now, required=required, pending=False)


@router.post("/totp/disable", operation_id="auth_totp_disable", summary="停用两步验证 / turn two-step "
             "verification off", response_model=TotpStateOut, responses=error_responses(401, 403, 409, 422, 423, 429))
async def totp_disable(body: TotpCodeRequest, ctx: Auth, session: SessionDep, settings: SettingsDep,
                       audit: AuditDep, throttle: ThrottleDep, request: Request) -> TotpStateOut:
    """Needs the password and a current code (a wrong one counts like a failed login from this address: the
    same delays and locks); refused (409 ``totp_required_by_role``) while a role of the user requires the
    second factor."""
    user = ctx.user
    if user.totp_enabled_at is None:
        raise ApiError(409, "totp_not_enabled", "两步验证未启用 / two-step verification is not on")
    if await second_factor.requires_totp(session, user, settings):
        await session.commit()
        raise ApiError(409, "totp_required_by_role", "您的角色要求两步验证，不能停用；如需更换验证器请联系管理员重置 / "
                       "your role requires two-step verification: it cannot be turned off (an administrator can "
                       "reset it to change the authenticator)")
    await _password_and_code(request, session, settings, throttle, user, body.password, body.code, what="totp_disable")
    user.totp_secret = None
    user.totp_enabled_at = None
    user.totp_last_step = None
    await _audit_user(audit, session, user, "auth.totp_disable", client_ip(request), {"by": "self"})
    await session.commit()
    auth.log.info("totp.disabled", username=user.username, user_id=user.id)
    return TotpStateOut(enabled=False, enabled_at=None, required=False, pending=False)
