"""The one weak-password rule shared by device SIP passwords and user passwords.

A password is weak when it is shorter than 8 characters, uses a single character class (only digits,
only lower-case letters, only upper-case letters, only symbols), is in a short list of passwords that
attackers try first (cameras are scanned for these every day), or contains the identity it protects
(device id, user name). The reason is returned in Chinese first, English after, so the same string can
be shown to a console user and written to a log.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

MIN_LENGTH = 8


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    text = resources.files("gbcore.data").joinpath("common_passwords.txt").read_text("utf-8")
    return frozenset(
        line.strip().lower() for line in text.splitlines() if line.strip() and not line.startswith("#")
    )


def _classes(password: str) -> int:
    kinds = set()
    for ch in password:
        if ch.isdigit():
            kinds.add("digit")
        elif ch.isalpha() and ch.islower():
            kinds.add("lower")
        elif ch.isalpha() and ch.isupper():
            kinds.add("upper")
        elif ch.isalpha():  # letters without case (e.g. CJK) count as their own class
            kinds.add("other-letter")
        else:
            kinds.add("symbol")
    return len(kinds)


def weak_password_reason(password: str | None, *identities: str | None) -> str | None:
    """Return why ``password`` is weak, or ``None`` when it is acceptable."""
    if not password:
        return "密码为空 / password is empty"
    if len(password) < MIN_LENGTH:
        return f"密码少于 {MIN_LENGTH} 个字符 / password is shorter than {MIN_LENGTH} characters"
    if _classes(password) < 2:
        return (
            "密码只含一类字符（全数字、全小写、全大写或全符号） / "
            "password uses a single character class (only digits, lower-case, upper-case or symbols)"
        )
    if password.lower() in common_passwords():
        return "密码属于常见弱口令 / password is in the list of common passwords"
    lowered = password.lower()
    for ident in identities:
        if ident and len(ident) >= 3 and ident.lower() in lowered:
            return "密码包含设备编号或用户名 / password contains the device id or user name"
    return None


def is_weak(password: str | None, *identities: str | None) -> bool:
    return weak_password_reason(password, *identities) is not None
