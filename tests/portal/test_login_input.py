"""A login whose account name holds a control character is refused as bad input (422), never a 500: a NUL
reached PostgreSQL before (found by the schemathesis run, on PostgreSQL only)."""

from __future__ import annotations

from .conftest import Portal


async def test_control_characters_in_the_account_name_are_bad_input(portal: Portal) -> None:
    await portal.add_user("alice")
    for name in ("\x00", "ali\x00ce", "\x1b[31m", "a\x7f"):
        r = await portal.client.post("/api/auth/login", json={"username": name, "password": "whatever-Pass-1"})
        assert r.status_code == 422, (name, r.text)
    r = await portal.client.post("/api/auth/login", json={"username": "nobody-here", "password": "whatever-Pass-1"})
    assert r.status_code == 401, r.text  # an ordinary unknown name: refused as before
