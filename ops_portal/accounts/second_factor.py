"""The TOTP second factor of portal users, stored: sealing the secret, checking a code once, role rules.

The base32 secret is sealed with :class:`gbcore.secretbox.SecretBox` under ``<data_dir>/keys/totp.key``
(``Settings.totp_key_path``: a cluster's nodes share ``GBOPS_SECRETS_DIR/totp.key``; created 0600 at first
use), bound to the user's id, so a sealed secret copied to another user does not open.  A code is accepted
once: the step of the last accepted code is kept in ``users.totp_last_step`` and advanced with a
conditional UPDATE, so two requests racing with the same code cannot both pass.
"""

from __future__ import annotations

import threading
from datetime import datetime
from pathlib import Path

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from gbcore.log import get_logger
from gbcore.secretbox import SecretBox, SecretBoxError
from gbcore.settings import Settings
from ops_portal import totp
from ops_portal.models import Role, User, UserRole

__all__ = [
    "KEY_FILE",
    "claim_step",
    "code_step",
    "open_secret",
    "required_roles",
    "requires_totp",
    "seal_secret",
    "totp_box",
]

KEY_FILE = "totp.key"

log = get_logger("gbops.portal.totp")

_boxes: dict[Path, SecretBox] = {}
_lock = threading.Lock()


def totp_box(settings: Settings) -> SecretBox:
    """The box of ``settings.totp_key_path`` (``<data_dir>/keys/totp.key``, or ``GBOPS_SECRETS_DIR/totp.key``
    on a cluster's nodes), one per key file per process."""
    path = Path(settings.totp_key_path)
    with _lock:
        box = _boxes.get(path)
        if box is None:
            box = _boxes[path] = SecretBox.from_file(path)
        return box


def _aad(user_id: int) -> bytes:
    return f"totp:user:{user_id}".encode()


def seal_secret(box: SecretBox, user_id: int, secret: str) -> bytes:
    return box.seal(secret, _aad(user_id))


def open_secret(box: SecretBox, user: User) -> bytes | None:
    """The key bytes of ``user``'s secret (None when there is none or it does not open)."""
    if user.totp_secret is None:
        return None
    try:
        return totp.decode_secret(box.open_text(user.totp_secret, _aad(user.id)))
    except (SecretBoxError, totp.TotpError) as exc:
        # A data dir restored without keys/totp.key, or a row tampered with: no code can match until an
        # administrator resets the user's second factor.
        log.error("totp.secret_unreadable", user_id=user.id, reason=getattr(exc, "code", "bad_secret"))
        return None


def code_step(box: SecretBox, user: User, code: str | None, now: datetime) -> int | None:
    """The step of ``code`` when it is valid now for ``user`` and newer than the last one accepted."""
    key = open_secret(box, user)
    if key is None:
        return None
    return totp.verify(key, code, now.timestamp(), last_step=user.totp_last_step)


async def claim_step(session: AsyncSession, user: User, step: int) -> bool:
    """Record ``step`` as the last accepted one, in the open write transaction; False when another request
    already used this step or a later one (a replay)."""
    result = await session.execute(
        update(User)
        .where(User.id == user.id, or_(User.totp_last_step.is_(None), User.totp_last_step < step))
        .values(totp_last_step=step)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return False
    set_committed_value(user, "totp_last_step", step)
    return True


def required_roles(settings: Settings) -> frozenset[str]:
    return frozenset(n.strip() for n in (settings.totp_required_roles or "").split(",") if n.strip())


async def requires_totp(session: AsyncSession, user: User, settings: Settings) -> bool:
    """Whether one of ``user``'s roles is listed in ``GBOPS_TOTP_REQUIRED_ROLES`` (a read; the caller ends the
    transaction)."""
    names = required_roles(settings)
    if not names:
        return False
    hit = (
        await session.execute(
            select(Role.id).join(UserRole, UserRole.role_id == Role.id)
            .where(UserRole.user_id == user.id, Role.name.in_(sorted(names))).limit(1)
        )
    ).first()
    return hit is not None
