"""Upper platforms: create, change, delete, the password sealed at rest, status, the set handed to signalling."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from cascade.errors import CascadeError
from cascade.service import CascadeService
from gbcore.db import make_sessionmaker

from .conftest import ACTOR, PASSWORD, SERVER_ID, SYSTEM_ID, FakeMedia, FakeSip, platform_data


async def test_create_seals_the_password_and_pushes_the_set(env, db_engine) -> None:
    p = await env.service.create_platform(platform_data(expires=1800), actor=ACTOR)
    assert p["id"] and p["has_password"] is True and "password" not in p and "password_sealed" not in p
    assert len(p["warnings"]) == 1 and p["created_at"].endswith("+08:00")
    async with db_engine.connect() as conn:
        stored = await conn.scalar(text("SELECT password_sealed FROM cascade_platforms"))
        dump = " ".join(str(v) for v in (await conn.execute(text("SELECT * FROM cascade_platforms"))).one())
    assert PASSWORD.encode() not in bytes(stored) and PASSWORD not in dump
    config = env.sip.platforms[-1][0]
    assert config.platform_id == p["id"] and config.password == PASSWORD and PASSWORD not in repr(config)
    assert config.server_id == SERVER_ID and config.expires == 1800 and config.name == "省厅平台"
    (action, target, detail, actor), = env.audit.of("cascade.platform_add")
    assert target == f"cascade:{p['id']}" and actor == ACTOR and detail["server_id"] == SERVER_ID
    assert PASSWORD not in repr(env.audit.entries)
    assert await env.service.get_platform(p["id"]) == {k: v for k, v in p.items() if k != "warnings"}
    assert [x["id"] for x in await env.service.list_platforms()] == [p["id"]]


async def test_tls_platform_goes_to_signalling_as_tls_and_its_certificate_failure_is_its_status(env) -> None:
    p = await env.service.create_platform(platform_data(transport="tls", port=5061), actor=ACTOR)
    assert p["transport"] == "tls"
    config = env.sip.platforms[-1][0]
    assert (config.transport, config.port) == ("tls", 5061)
    reason = "证书校验失败 / certificate verification failed: self-signed certificate"
    env.sip.status[p["id"]] = {"state": "offline", "last_error": reason, "last_keepalive": None,
                               "registered_until": None, "calls": 0}
    status = await env.service.status(p["id"])
    assert (status["state"], status["last_error"]) == ("offline", reason)
    out = await env.service.update_platform(p["id"], {"transport": "tcp"}, actor=ACTOR)
    assert out["transport"] == "tcp" and env.sip.platforms[-1][0].transport == "tcp"


async def test_duplicate_server_id_and_not_found(env) -> None:
    await env.service.create_platform(platform_data(), actor=ACTOR)
    with pytest.raises(CascadeError) as err:
        await env.service.create_platform(platform_data(name="另一个"), actor=ACTOR)
    assert (err.value.code, err.value.status) == ("duplicate_server_id", 409)
    for call in (env.service.get_platform(999), env.service.status(999), env.service.get_share(999),
                 env.service.update_platform(999, {"port": 1}, actor=ACTOR),
                 env.service.delete_platform(999, actor=ACTOR)):
        with pytest.raises(CascadeError) as err:
            await call
        assert err.value.status == 404


async def test_update_password_and_fields(env) -> None:
    p = await env.service.create_platform(platform_data(), actor=ACTOR)
    new_password = "Another#Pass77"
    out = await env.service.update_platform(p["id"], {"port": 5070, "password": new_password}, actor=ACTOR)
    assert out["port"] == 5070 and out["warnings"] == []
    assert env.sip.platforms[-1][0].password == new_password and env.sip.platforms[-1][0].port == 5070
    (_, _, detail, _), = env.audit.of("cascade.platform_edit")
    assert detail["fields"] == {"port": [5060, 5070]} and detail["password_changed"] is True
    assert new_password not in repr(env.audit.entries) and PASSWORD not in repr(env.audit.entries)
    with pytest.raises(CascadeError) as err:
        await env.service.update_platform(p["id"], {"password": "weak"}, actor=ACTOR)
    assert err.value.code == "weak_password"
    # disabled: left out of the set, state "disabled"
    await env.service.update_platform(p["id"], {"enabled": False}, actor=ACTOR)
    assert env.sip.platforms[-1] == []
    assert (await env.service.status(p["id"]))["state"] == "disabled"


async def test_restart_opens_the_password_and_a_wrong_key_fails(env, db_engine, tmp_path) -> None:
    p = await env.service.create_platform(platform_data(), actor=ACTOR)
    sip = FakeSip()
    again = CascadeService(make_sessionmaker(db_engine), sip, FakeMedia(), audit=env.audit, settings=env.settings,
                           system_id=SYSTEM_ID, system_name="测试平台", key_path=env.key_path)
    await again.start()
    assert sip.platforms[-1][0].password == PASSWORD
    sip = FakeSip()
    wrong = CascadeService(make_sessionmaker(db_engine), sip, FakeMedia(), audit=env.audit, settings=env.settings,
                           system_id=SYSTEM_ID, system_name="测试平台", key_path=tmp_path / "other.key")
    await wrong.start()
    assert sip.platforms[-1] == []  # not pushed with a garbage password
    status = await wrong.status(p["id"])
    assert status["state"] == "offline" and "key" in status["last_error"]


async def test_status_from_signalling(env) -> None:
    p = await env.service.create_platform(platform_data(), actor=ACTOR)
    assert (await env.service.status(p["id"]))["state"] == "registering"
    env.sip.status[p["id"]] = {"state": "registered", "last_error": None, "last_keepalive": 1772344800.0,
                               "registered_until": 1772348400.0, "calls": 0}
    st = await env.service.status(p["id"])
    assert st["state"] == "registered" and st["last_keepalive"] == "2026-03-01T14:00:00+08:00"
    assert st["registered_until"] == "2026-03-01T15:00:00+08:00" and st["streams"] == []


async def test_delete_removes_the_share_and_the_platform(env, db_engine, tree) -> None:
    p = await env.service.create_platform(platform_data(), actor=ACTOR)
    await env.service.put_share(p["id"], [tree.ids["3402"]], [], actor=ACTOR)
    await env.service.delete_platform(p["id"], actor=ACTOR)
    assert env.sip.platforms[-1] == [] and await env.service.list_platforms() == []
    async with db_engine.connect() as conn:
        assert await conn.scalar(text("SELECT count(*) FROM cascade_share_nodes")) == 0
    (_, _, detail, _), = env.audit.of("cascade.platform_delete")
    assert detail == {"platform_id": p["id"], "name": "省厅平台", "server_id": SERVER_ID}
