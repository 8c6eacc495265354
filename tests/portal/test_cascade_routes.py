"""``/api/cascade`` (upper platforms, issue 15) through the portal, with an in-memory fake of
``cascade.service.CascadeService`` (the methods of docs/issue15-seams.md section 3) on ``app.state.cascade``:
``cascade.manage`` on every route (403 and ``access.denied``), the ranges of the issue (422 naming the field,
``expires`` below 3600 accepted with a warning), the password write-only (in no answer, not even a 422), the
service's errors answered with their status and Chinese message, the configuration audited once (by the service),
and a platform's recent requests read from the audit log."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest

from audit_log.log import Actor, Target
from ops_portal.access import expand_org_nodes

from .conftest import Portal, bearer
from .org_data import CA1, CA2, CB1, NVR, build_tree

SYSTEM_ID = "34020000002000000001"
SECRET = "Upper-Digest-Secret-77"
BASE = "/api/cascade/platforms"


class FakeCascadeError(Exception):
    """Shaped like ``cascade.service.CascadeError``: the routes know it by its attributes."""

    def __init__(self, code: str, message: str, status: int, detail: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.status, self.detail = code, message, status, detail or {}


@dataclass
class FakeCascade:
    """The cascade service in memory: platforms, their shares resolved through the registry, a status each."""

    registry: Any
    audit: Any = None
    platforms: dict[int, dict[str, Any]] = field(default_factory=dict)
    passwords: dict[int, str | None] = field(default_factory=dict)
    shares: dict[int, dict[str, Any]] = field(default_factory=dict)
    states: dict[int, dict[str, Any]] = field(default_factory=dict)
    actors: list[dict[str, Any]] = field(default_factory=list)
    next_id: int = 1
    fail_next: FakeCascadeError | None = None

    def _check(self) -> None:
        if self.fail_next is not None:
            err, self.fail_next = self.fail_next, None
            raise err

    def _get(self, platform_id: int) -> dict[str, Any]:
        if platform_id not in self.platforms:
            raise FakeCascadeError("platform_not_found", "上级平台不存在 / upper platform not found", 404,
                                   {"platform_id": platform_id})
        return self.platforms[platform_id]

    def _view(self, platform_id: int) -> dict[str, Any]:
        return {**self._get(platform_id), "has_password": bool(self.passwords.get(platform_id))}

    async def _audit(self, action: str, platform_id: int, detail: dict[str, Any], actor: dict[str, Any]) -> None:
        self.actors.append(actor)
        if self.audit is not None:
            await self.audit.record(actor=Actor("user", str(actor["user_id"]), actor["username"]), action=action,
                                    target=Target("cascade", str(platform_id)), client_ip=actor["client_ip"],
                                    detail={"platform_id": platform_id, **detail})

    async def list_platforms(self) -> list[dict[str, Any]]:
        return [self._view(i) for i in sorted(self.platforms)]

    async def get_platform(self, platform_id: int) -> dict[str, Any]:
        return self._view(platform_id)

    async def create_platform(self, data: dict[str, Any], *, actor: dict[str, Any]) -> dict[str, Any]:
        self._check()
        if any(p["server_id"] == data["server_id"] for p in self.platforms.values()):
            raise FakeCascadeError("platform_exists", f"已有编码为 {data['server_id']} 的上级平台 / an upper platform "
                                   f"with id {data['server_id']} exists", 409)
        pid, self.next_id = self.next_id, self.next_id + 1
        data = dict(data)
        data.setdefault("local_id", SYSTEM_ID)  # as the service does
        data.setdefault("username", data["local_id"])
        self.passwords[pid] = data.pop("password", None)
        self.platforms[pid] = {"id": pid, **data, "created_at": 1_714_550_400.0, "updated_at": 1_714_550_400.0}
        self.shares[pid] = {"org_nodes": [], "channels": []}
        self.states[pid] = {"state": "registering" if data["enabled"] else "disabled", "last_error": None,
                            "last_keepalive": None, "registered_until": None, "streams": 0}
        await self._audit("cascade.platform_add", pid, {"name": data["name"], "server_id": data["server_id"]}, actor)
        return self._view(pid)

    async def update_platform(self, platform_id: int, changes: dict[str, Any], *,
                              actor: dict[str, Any]) -> dict[str, Any]:
        self._check()
        platform = self._get(platform_id)
        changes = dict(changes)
        fields = sorted(changes)
        if "password" in changes:
            self.passwords[platform_id] = changes.pop("password")
        platform.update(changes)
        if "enabled" in changes:
            self.states[platform_id]["state"] = "registering" if changes["enabled"] else "disabled"
        await self._audit("cascade.platform_edit", platform_id, {"fields": fields}, actor)
        return self._view(platform_id)

    async def delete_platform(self, platform_id: int, *, actor: dict[str, Any]) -> None:
        platform = self._get(platform_id)
        del self.platforms[platform_id]
        await self._audit("cascade.platform_delete", platform_id, {"name": platform["name"]}, actor)

    async def status(self, platform_id: int) -> dict[str, Any]:
        self._get(platform_id)
        return dict(self.states[platform_id])

    async def _channels(self, platform_id: int) -> list[tuple[Any, dict[str, Any]]]:
        """(registry channel, override) of everything shared, in the order of the registry."""
        share = self.shares[platform_id]
        async with self.registry.sessionmaker() as session:
            nodes = await expand_org_nodes(session, share["org_nodes"]) if share["org_nodes"] else frozenset()
        _, rows = await self.registry.search_channels(limit=5000)
        picked = {(c["device_id"], c["channel_id"]): c for c in share["channels"]}
        out = []
        for channel, node in rows:
            override = picked.get((channel.device_id, channel.channel_id))
            if override is not None or node in nodes:
                out.append((channel, override or {}))
        return out

    async def get_share(self, platform_id: int) -> dict[str, Any]:
        self._get(platform_id)
        share = self.shares[platform_id]
        return {"org_nodes": list(share["org_nodes"]), "channels": [dict(c) for c in share["channels"]],
                "resolved": len(await self._channels(platform_id))}

    async def put_share(self, platform_id: int, org_nodes: list[int], channels: list[dict[str, Any]], *,
                        actor: dict[str, Any]) -> dict[str, Any]:
        self._get(platform_id)
        resolved = []
        for c in channels:
            if c["device_id"] is None:
                _, rows = await self.registry.search_channels(q=c["channel_id"], limit=50)
                devices = sorted({ch.device_id for ch, _ in rows if ch.channel_id == c["channel_id"]})
                if len(devices) != 1:
                    raise FakeCascadeError("channel_not_found", f"通道不存在：{c['channel_id']} / channel not found", 404)
                c = {**c, "device_id": devices[0]}
            resolved.append(c)
        self.shares[platform_id] = {"org_nodes": list(org_nodes), "channels": resolved}
        await self._audit("cascade.share", platform_id, {"org_nodes": list(org_nodes), "channels": len(resolved)},
                          actor)
        return await self.get_share(platform_id)

    async def catalog_preview(self, platform_id: int) -> list[dict[str, Any]]:
        self._get(platform_id)
        items: list[dict[str, Any]] = [{"device_id": SYSTEM_ID, "name": "gbops", "kind": "system"}]
        for channel, override in await self._channels(platform_id):
            items.append({"device_id": override.get("upward_id") or channel.channel_id,
                          "name": override.get("name") or channel.name or channel.channel_id, "kind": "channel",
                          "parent_id": SYSTEM_ID, "civil_code": override.get("civil_code"),
                          "status": "ON" if channel.online else "OFF", "longitude": channel.longitude,
                          "latitude": channel.latitude, "source_device_id": channel.device_id,
                          "source_channel_id": channel.channel_id})
        return items


def platform_body(**changes: Any) -> dict[str, Any]:
    body = {"name": "省公安厅视频共享平台", "server_id": "44000000002000000001", "host": "198.51.100.7", "port": 5060,
            "transport": "udp", "password": SECRET}
    body.update(changes)
    return body


@pytest.fixture
async def cas(audited: Portal) -> dict[str, Any]:
    tree = await build_tree(audited.registry)
    service = FakeCascade(audited.registry, audited.audit)
    audited.app.state.cascade = service
    await audited.add_user("admin", permissions={"cascade.manage", "device.read"})
    await audited.add_user("viewer", permissions={"device.read", "live.view", "audit.read"})
    return {"tree": tree, "service": service, "admin": bearer(await audited.login("admin")),
            "viewer": bearer(await audited.login("viewer"))}


async def _entries(portal: Portal, prefix: str) -> list[dict[str, Any]]:
    rows = [json.loads(e.data) async for e in portal.audit.store.iter_entries(0, 10**9)]
    return [e for e in rows if e["action"].startswith(prefix)]


async def _create(portal: Portal, headers: dict[str, str], **changes: Any) -> dict[str, Any]:
    r = await portal.client.post(BASE, headers=headers, json=platform_body(**changes))
    assert r.status_code == 201, r.text
    return r.json()


# ---------------------------------------------------------------------------------------------- permissions
async def test_every_route_needs_cascade_manage(audited: Portal, cas: dict[str, Any]) -> None:
    pid = (await _create(audited, cas["admin"]))["id"]
    calls = [("POST", BASE, platform_body(server_id="44000000002000000002")), ("GET", BASE, None),
             ("GET", f"{BASE}/{pid}", None), ("PATCH", f"{BASE}/{pid}", {"enabled": False}),
             ("DELETE", f"{BASE}/{pid}", None), ("GET", f"{BASE}/{pid}/status", None),
             ("GET", f"{BASE}/{pid}/share", None), ("PUT", f"{BASE}/{pid}/share", {"org_nodes": [1]}),
             ("GET", f"{BASE}/{pid}/catalog", None), ("GET", f"{BASE}/{pid}/requests", None)]
    for method, path, body in calls:
        r = await audited.client.request(method, path, headers=cas["viewer"], json=body)
        assert r.status_code == 403, (method, path, r.text)
        assert r.json()["error"] == "forbidden" and "级联平台" in r.json()["message"]
    service: FakeCascade = cas["service"]
    assert list(service.platforms) == [pid] and service.platforms[pid]["enabled"] is True
    denied = [e for e in await _entries(audited, "access.denied") if e["actor"]["name"] == "viewer"]
    assert len(denied) == len(calls)
    assert {e["detail"]["route"] for e in denied} >= {"GET /api/cascade/platforms",
                                                      "PUT /api/cascade/platforms/{platform_id}/share"}


async def test_without_the_service_the_list_is_empty_and_the_rest_503(portal: Portal) -> None:
    await portal.add_user("admin", permissions={"cascade.manage"})
    headers = bearer(await portal.login("admin"))
    r = await portal.client.get(BASE, headers=headers)
    assert r.status_code == 200 and r.json() == {"items": []}
    for method, path, body in (("POST", BASE, platform_body()), ("GET", f"{BASE}/1", None),
                               ("GET", f"{BASE}/1/share", None)):
        r = await portal.client.request(method, path, headers=headers, json=body)
        assert r.status_code == 503 and r.json()["error"] == "cascade_unavailable", (method, path, r.text)
        assert r.json()["message"].startswith("级联服务未运行 / ")


async def test_a_scoped_manager_sees_the_list_only(audited: Portal, cas: dict[str, Any]) -> None:
    """What is shared upward leaves every data scope: managing it needs the full scope; the list names no channel."""
    service: FakeCascade = cas["service"]
    pid = (await _create(audited, cas["admin"]))["id"]
    service.states[pid]["streams"] = [{"device_id": NVR, "channel_id": CA1, "kind": "live"}]
    await audited.add_user("west-admin", permissions={"cascade.manage", "device.read"}, org_nodes=[cas["tree"].vb])
    west = bearer(await audited.login("west-admin"))
    r = await audited.client.get(BASE, headers=west)
    assert r.status_code == 200 and [p["id"] for p in r.json()["items"]] == [pid]
    assert r.json()["items"][0]["status"]["streams"] == 1 and CA1 not in r.text
    for method, path, body in (("POST", BASE, platform_body(server_id="44000000002000000002")),
                               ("GET", f"{BASE}/{pid}", None), ("PATCH", f"{BASE}/{pid}", {"enabled": False}),
                               ("GET", f"{BASE}/{pid}/status", None), ("GET", f"{BASE}/{pid}/share", None),
                               ("PUT", f"{BASE}/{pid}/share", {"org_nodes": [cas["tree"].vb]}),
                               ("GET", f"{BASE}/{pid}/catalog", None), ("GET", f"{BASE}/{pid}/requests", None),
                               ("DELETE", f"{BASE}/{pid}", None)):
        r = await audited.client.request(method, path, headers=west, json=body)
        assert r.status_code == 403 and r.json()["error"] == "cascade_scope_forbidden", (method, path, r.text)
    assert r.json()["message"].startswith("上级平台可见整个平台的资源，管理它需要全部数据范围 / ")
    assert list(service.platforms) == [pid] and service.shares[pid]["org_nodes"] == []
    denied = [e for e in await _entries(audited, "access.denied") if e["actor"]["name"] == "west-admin"]
    assert len(denied) == 9 and {e["detail"]["error"] for e in denied} == {"cascade_scope_forbidden"}
    # the full-scope manager sees the streams
    r = await audited.client.get(f"{BASE}/{pid}/status", headers=cas["admin"])
    assert r.json()["stream_list"][0]["channel_id"] == CA1


# ---------------------------------------------------------------------------------------------- configuration
async def test_create_list_get_and_the_password_is_write_only(audited: Portal, cas: dict[str, Any]) -> None:
    service: FakeCascade = cas["service"]
    r = await audited.client.post(BASE, headers=cas["admin"], json=platform_body())
    assert r.status_code == 201, r.text
    out = r.json()
    assert SECRET not in r.text and "password" not in out
    assert out["local_id"] == SYSTEM_ID
    assert out["has_password"] is True and out["warnings"] == []
    # the defaults: the domain from the server id, the digest user name from our id
    assert out["server_domain"] == "4400000000" and out["username"] == "34020000002000000001"
    assert (out["expires"], out["keepalive_s"], out["charset"], out["gb_version"], out["ptz_level"],
            out["watermark"], out["enabled"], out["transport"]) == (3600, 60, "GB2312", "2016", 5, "tag", True, "udp")
    assert out["created_at"] == "2024-05-01T16:00:00+08:00"  # Beijing time
    assert service.passwords[out["id"]] == SECRET  # handed to the service, kept there
    actor = service.actors[-1]
    assert set(actor) == {"user_id", "username", "client_ip"}
    assert actor["username"] == "admin" and actor["client_ip"] == "127.0.0.1"

    for path in (BASE, f"{BASE}/{out['id']}", f"{BASE}/{out['id']}/status"):
        r = await audited.client.get(path, headers=cas["admin"])
        assert r.status_code == 200, r.text
        assert SECRET not in r.text and '"password"' not in r.text
    listed = (await audited.client.get(BASE, headers=cas["admin"])).json()["items"]
    assert [p["id"] for p in listed] == [out["id"]]
    assert listed[0]["status"]["state"] == "registering" and listed[0]["status"]["streams"] == 0

    # audited once, by the service (the route adds nothing), without the password
    entries = await _entries(audited, "cascade.")
    assert [e["action"] for e in entries] == ["cascade.platform_add"]
    assert SECRET not in json.dumps(entries)

    # a second one with the same server id: the service's 409, its message as it is
    r = await audited.client.post(BASE, headers=cas["admin"], json=platform_body(password="Another-One-12"))
    assert r.status_code == 409 and r.json()["error"] == "platform_exists"
    assert r.json()["message"].startswith("已有编码为 44000000002000000001 的上级平台 / ")


async def test_tls_transport_and_its_certificate_failure_in_the_list(audited: Portal, cas: dict[str, Any]) -> None:
    service: FakeCascade = cas["service"]
    out = await _create(audited, cas["admin"], transport="tls", port=5061)
    assert (out["transport"], out["port"]) == ("tls", 5061)
    reason = "证书校验失败 / certificate verification failed: unable to get local issuer certificate"
    service.states[out["id"]] = {"state": "offline", "last_error": reason, "streams": 0}
    [listed] = (await audited.client.get(BASE, headers=cas["admin"])).json()["items"]
    assert listed["transport"] == "tls"
    assert (listed["status"]["state"], listed["status"]["last_error"]) == ("offline", reason)
    r = await audited.client.patch(f"{BASE}/{out['id']}", headers=cas["admin"], json={"transport": "sips"})
    assert r.status_code == 422 and r.json()["error"] == "validation_error"


async def test_short_expires_is_accepted_with_a_warning(audited: Portal, cas: dict[str, Any]) -> None:
    out = await _create(audited, cas["admin"], expires=600)
    assert out["expires"] == 600
    assert out["warnings"] == ["注册有效期 600 秒低于标准下限 3600 秒 / expires 600 s is below the standard's floor "
                               "of 3600 s"]
    r = await audited.client.get(f"{BASE}/{out['id']}", headers=cas["admin"])
    assert r.json()["warnings"] == out["warnings"]
    r = await audited.client.patch(f"{BASE}/{out['id']}", headers=cas["admin"], json={"expires": 3600})
    assert r.status_code == 200 and r.json()["warnings"] == []


@pytest.mark.parametrize(("changes", "where"), [
    ({"expires": 29}, "expires"), ({"expires": 86401}, "expires"), ({"keepalive_s": 4}, "keepalive_s"),
    ({"keepalive_s": 3601}, "keepalive_s"), ({"ptz_level": 0}, "ptz_level"), ({"ptz_level": 10}, "ptz_level"),
    ({"transport": "sctp"}, "transport"), ({"charset": "BIG5"}, "charset"), ({"gb_version": "2011"}, "gb_version"),
    ({"watermark": "none"}, "watermark"), ({"server_id": "4400000000200000000"}, "server_id"),
    ({"local_id": "3402000000200000000X"}, "local_id"), ({"host": "bad host!"}, "host"), ({"port": 0}, "port"),
    ({"name": "   "}, "name"), ({"name": "a\nb"}, "name"), ({"username": 'a"b'}, "username"),
    ({"username": "a,b"}, "username"), ({"server_domain": "44000"}, "server_domain"), ({"password": None}, "password"),
    ({"password": ""}, "password"), ({"password": SECRET + "\r\nX: y"}, "password"), ({"extra": SECRET}, "extra"),
])
async def test_create_refuses_out_of_range(audited: Portal, cas: dict[str, Any], changes: dict[str, Any],
                                           where: str) -> None:
    r = await audited.client.post(BASE, headers=cas["admin"], json=platform_body(**changes))
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error"] == "validation_error"
    assert body["message"] == f"请求参数无效：body.{where} / invalid request: body.{where}"
    assert body["details"][0]["loc"] == ["body", where]
    assert SECRET not in r.text
    assert cas["service"].platforms == {}


async def test_patch_enable_disable_and_password(audited: Portal, cas: dict[str, Any]) -> None:
    service: FakeCascade = cas["service"]
    pid = (await _create(audited, cas["admin"]))["id"]
    r = await audited.client.patch(f"{BASE}/{pid}", headers=cas["admin"], json={"enabled": False})
    assert r.status_code == 200 and r.json()["enabled"] is False
    status = (await audited.client.get(f"{BASE}/{pid}/status", headers=cas["admin"])).json()
    assert status["state"] == "disabled" and status["platform_id"] == pid

    new = "Rotated-Digest-Secret-88"
    r = await audited.client.patch(f"{BASE}/{pid}", headers=cas["admin"],
                                   json={"password": new, "transport": "tcp", "host": "Upper.Example.CN"})
    assert r.status_code == 200, r.text
    assert new not in r.text and r.json()["has_password"] is True
    assert (r.json()["transport"], r.json()["host"]) == ("tcp", "upper.example.cn")
    assert service.passwords[pid] == new
    edit = await _entries(audited, "cascade.platform_edit")
    assert edit[-1]["detail"]["fields"] == ["host", "password", "transport"] and new not in json.dumps(edit)

    for body, code in (({}, "nothing_to_change"), ({"name": None}, "validation_error"),
                       ({"password": None}, "validation_error"), ({"enabled": "maybe"}, "validation_error")):
        r = await audited.client.patch(f"{BASE}/{pid}", headers=cas["admin"], json=body)
        assert r.status_code == 422 and r.json()["error"] == code, (body, r.text)
    r = await audited.client.patch(f"{BASE}/999", headers=cas["admin"], json={"enabled": True})
    assert r.status_code == 404 and r.json() == {"error": "platform_not_found", "message": "上级平台不存在 / upper "
                                                 "platform not found", "detail": {"platform_id": 999}}


async def test_status_times_in_beijing_and_streams(audited: Portal, cas: dict[str, Any]) -> None:
    service: FakeCascade = cas["service"]
    pid = (await _create(audited, cas["admin"]))["id"]
    service.states[pid] = {"state": "registered", "last_error": None, "last_keepalive": 1_714_550_400,
                           "registered_until": 1_714_554_000.5,
                           "streams": [{"device_id": NVR, "channel_id": CA1, "kind": "live", "bytes": 1024,
                                        "started_at": 1_714_550_000}]}
    r = await audited.client.get(f"{BASE}/{pid}/status", headers=cas["admin"])
    assert r.status_code == 200, r.text
    s = r.json()
    assert s["state"] == "registered" and s["last_keepalive"] == "2024-05-01T16:00:00+08:00"
    assert s["registered_until"] == "2024-05-01T17:00:00.500+08:00"
    assert s["streams"] == 1 and s["stream_list"][0]["channel_id"] == CA1
    assert s["stream_list"][0]["started_at"] == "2024-05-01T15:53:20+08:00"
    service.states[pid] = {"state": "offline", "last_error": "401 鉴权失败 / 401 unauthorized", "streams": 0}
    s = (await audited.client.get(f"{BASE}/{pid}/status", headers=cas["admin"])).json()
    assert (s["state"], s["last_error"], s["last_keepalive"], s["streams"]) == (
        "offline", "401 鉴权失败 / 401 unauthorized", None, 0)


async def test_delete(audited: Portal, cas: dict[str, Any]) -> None:
    pid = (await _create(audited, cas["admin"]))["id"]
    r = await audited.client.delete(f"{BASE}/{pid}", headers=cas["admin"])
    assert r.status_code == 204 and r.content == b""
    r = await audited.client.get(f"{BASE}/{pid}", headers=cas["admin"])
    assert r.status_code == 404 and r.json()["message"].startswith("上级平台不存在")
    assert [e["action"] for e in await _entries(audited, "cascade.")] == ["cascade.platform_add",
                                                                         "cascade.platform_delete"]


async def test_service_errors_keep_their_status_and_message(audited: Portal, cas: dict[str, Any]) -> None:
    service: FakeCascade = cas["service"]
    pid = (await _create(audited, cas["admin"]))["id"]
    service.fail_next = FakeCascadeError("local_id_conflict", "本级编码与其他上级平台冲突 / local id in use", 409,
                                         {"password": "never-shown", "other": 2})
    r = await audited.client.patch(f"{BASE}/{pid}", headers=cas["admin"], json={"local_id": "34020000002000000002"})
    assert r.status_code == 409
    assert r.json() == {"error": "local_id_conflict", "message": "本级编码与其他上级平台冲突 / local id in use",
                        "detail": {"other": 2}}
    service.fail_next = FakeCascadeError("odd", "奇怪 / odd", 200)  # not an error status: a bad gateway
    r = await audited.client.patch(f"{BASE}/{pid}", headers=cas["admin"], json={"enabled": True})
    assert r.status_code == 502 and r.json()["error"] == "odd"


# ---------------------------------------------------------------------------------------------- share and preview
async def test_share_and_catalog_preview(audited: Portal, cas: dict[str, Any]) -> None:
    tree = cas["tree"]
    pid = (await _create(audited, cas["admin"]))["id"]
    r = await audited.client.get(f"{BASE}/{pid}/share", headers=cas["admin"])
    assert r.status_code == 200 and r.json() == {"org_nodes": [], "channels": [], "resolved": 0, "conflicts": []}
    preview = (await audited.client.get(f"{BASE}/{pid}/catalog", headers=cas["admin"])).json()
    assert preview["total"] == 1 and preview["channels"] == 0 and preview["items"][0]["kind"] == "system"

    body = {"org_nodes": [tree.va],
            "channels": [CB1, {"device_id": NVR, "channel_id": CA1, "upward_id": "44010000001310000001",
                               "name": "东门（对上）", "civil_code": "440100"}]}
    r = await audited.client.put(f"{BASE}/{pid}/share", headers=cas["admin"], json=body)
    assert r.status_code == 200, r.text
    share = r.json()
    assert share["org_nodes"] == [tree.va] and share["resolved"] == 3
    assert [(c["device_id"], c["channel_id"], c["upward_id"]) for c in share["channels"]] == [
        (NVR, CB1, None), (NVR, CA1, "44010000001310000001")]

    preview = (await audited.client.get(f"{BASE}/{pid}/catalog", headers=cas["admin"])).json()
    assert preview["total"] == 4 and preview["channels"] == 3
    by_source = {e["source_channel_id"]: e for e in preview["items"] if e["kind"] == "channel"}
    assert set(by_source) == {CA1, CA2, CB1}
    assert by_source[CA1]["device_id"] == "44010000001310000001" and by_source[CA1]["name"] == "东门（对上）"
    assert by_source[CA2]["status"] == "OFF" and by_source[CB1]["name"] == "西门"

    for bad in ({"channels": [CA1, CA1]}, {"channels": [{"channel_id": CA1, "upward_id": "1" * 20},
                                                        {"channel_id": CB1, "upward_id": "1" * 20}]},
                {"channels": [{"channel_id": CA1, "upward_id": "123"}]}, {"org_nodes": [0]},
                {"channels": [{"channel_id": CA1, "civil_code": "4401x"}]}, {"org_nodes": [1], "x": 1}):
        r = await audited.client.put(f"{BASE}/{pid}/share", headers=cas["admin"], json=bad)
        assert r.status_code == 422, (bad, r.text)
    r = await audited.client.put(f"{BASE}/{pid}/share", headers=cas["admin"], json={"channels": ["9999"]})
    assert r.status_code == 404 and r.json()["error"] == "channel_not_found"
    shares = await _entries(audited, "cascade.share")
    assert len(shares) == 1 and shares[0]["detail"]["platform_id"] == pid


# ---------------------------------------------------------------------------------------------- requests
async def test_requests_of_one_platform_newest_first(audited: Portal, cas: dict[str, Any]) -> None:
    one = (await _create(audited, cas["admin"]))["id"]
    two = (await _create(audited, cas["admin"], server_id="44000000002000000002"))["id"]
    upper = Actor.platform("44000000002000000001", "省公安厅视频共享平台")
    started = time.time()
    for i, (pid, kind) in enumerate([(one, "live"), (two, "live"), (one, "playback"), (one, "download"),
                                     (two, "playback")]):
        await audited.audit.record(actor=upper, action="cascade.invite", target=Target("channel", f"{NVR}/{CA1}"),
                                   detail={"platform_id": pid, "server_id": "44000000002000000001",
                                           "device_id": NVR, "channel_id": CA1, "kind": kind, "result": "ok",
                                           "status": 200, "n": i})
    await audited.audit.record(actor=upper, action="live.start", target=Target("channel", f"{NVR}/{CA1}"),
                               detail={"platform_id": one})  # not a cascade entry: not listed
    r = await audited.client.get(f"{BASE}/{one}/requests", headers=cas["admin"])
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert [(e["action"], e["detail"].get("kind")) for e in items] == [
        ("cascade.invite", "download"), ("cascade.invite", "playback"), ("cascade.invite", "live"),
        ("cascade.platform_add", None)]
    first = items[0]
    assert first["label_zh"] == "上级平台请求视频" and first["label_en"].startswith("an upper platform's INVITE")
    assert first["actor"]["type"] == "platform" and first["detail"]["channel_id"] == CA1
    assert first["time"].endswith("+08:00")  # Beijing time
    assert abs(datetime.fromisoformat(first["time"]).timestamp() - started) < 60

    r = await audited.client.get(f"{BASE}/{one}/requests", headers=cas["admin"], params={"limit": 2})
    page = r.json()["items"]
    assert [e["detail"]["kind"] for e in page] == ["download", "playback"]
    r = await audited.client.get(f"{BASE}/{one}/requests", headers=cas["admin"],
                                 params={"limit": 2, "before": page[-1]["seq"]})
    assert [e["action"] for e in r.json()["items"]] == ["cascade.invite", "cascade.platform_add"]
    two_items = (await audited.client.get(f"{BASE}/{two}/requests", headers=cas["admin"])).json()["items"]
    assert [e["detail"].get("kind") for e in two_items] == ["playback", "live", None]
    r = await audited.client.get(f"{BASE}/77/requests", headers=cas["admin"])
    assert r.status_code == 404
    r = await audited.client.get(f"{BASE}/{one}/requests", headers=cas["admin"], params={"limit": 0})
    assert r.status_code == 422


# ---------------------------------------------------------------------------------------------- the real service
@dataclass
class StubLinks:
    """The SIP side the real service talks to (``cascade.ports.UpperLinks``), recording what it is given."""

    configs: list[Any] = field(default_factory=list)
    states: dict[int, dict[str, Any]] = field(default_factory=dict)
    notified: list[tuple[int, list[Any]]] = field(default_factory=list)

    def set_upper_platforms(self, configs: list[Any]) -> None:
        self.configs = list(configs)

    def upper_status(self, platform_id: int) -> dict[str, Any] | None:
        return self.states.get(platform_id)

    def notify_catalog(self, platform_id: int, entries: Any) -> None:
        self.notified.append((platform_id, list(entries)))


async def real_service(sessionmaker: Any, audit_log: Any, settings: Any, key_path: Any) -> tuple[Any, StubLinks]:
    """``cascade.service.CascadeService`` on the test database, its audit entries on ``audit_log``, started."""
    from cascade.service import CascadeService

    links = StubLinks()

    async def audit(action: str, target: str, detail: dict[str, Any], actor: dict[str, Any] | None) -> None:
        kind, _, ident = target.partition(":")
        who = Actor("user", str(actor["user_id"]), actor["username"]) if actor else Actor.system()
        await audit_log.record(actor=who, action=action, target=Target(kind, ident or None),
                               client_ip=actor["client_ip"] if actor else None, detail=detail)

    service = CascadeService(sessionmaker, links, None, audit=audit, settings=settings,  # type: ignore[arg-type]
                             system_id=SYSTEM_ID, system_name="本级测试平台", key_path=key_path)
    await service.start()
    return service, links


async def test_routes_over_the_real_service(audited: Portal, tmp_path: Any) -> None:
    """The same API over ``cascade.service.CascadeService`` (its database tables, sealed passwords and audit)."""
    tree = await build_tree(audited.registry)
    service, links = await real_service(audited.sessionmaker, audited.audit, audited.settings,
                                        tmp_path / "keys" / "cascade.key")
    audited.app.state.cascade = service
    await audited.add_user("admin", permissions={"cascade.manage"})
    admin = bearer(await audited.login("admin"))
    try:
        r = await audited.client.post(BASE, headers=admin, json=platform_body(password="12345678"))
        assert r.status_code == 422 and r.json()["error"] == "weak_password", r.text
        assert r.json()["message"].startswith("弱密码 / weak password") and "12345678" not in r.text

        r = await audited.client.post(BASE, headers=admin, json=platform_body(expires=1800, transport="tcp"))
        assert r.status_code == 201, r.text
        out = r.json()
        pid = out["id"]
        assert SECRET not in r.text and out["has_password"] is True and out["local_id"] == SYSTEM_ID
        assert out["server_domain"] == "4400000000" and out["username"] == SYSTEM_ID
        assert out["warnings"] and out["warnings"][0].startswith("注册有效期 1800 秒低于标准下限")
        assert out["created_at"].endswith("+08:00")
        assert [c.server_id for c in links.configs] == ["44000000002000000001"]
        assert links.configs[0].password == SECRET  # handed to signalling in memory only

        r = await audited.client.post(BASE, headers=admin, json=platform_body())
        assert r.status_code == 409 and r.json()["error"] == "duplicate_server_id"
        assert r.json()["message"].startswith("已有上级平台使用编码 44000000002000000001 / ")

        links.states[pid] = {"state": "registered", "last_error": None, "last_keepalive": 1_714_550_400.0,
                             "registered_until": 1_714_552_200.0, "calls": 0}
        r = await audited.client.get(BASE, headers=admin)
        assert r.status_code == 200, r.text
        status = r.json()["items"][0]["status"]
        assert status["state"] == "registered" and status["streams"] == 0
        assert status["last_keepalive"].startswith("2024-05-01T16:00:00") and status["last_keepalive"].endswith("+08:00")
        assert SECRET not in r.text

        r = await audited.client.patch(f"{BASE}/{pid}", headers=admin, json={"enabled": False})
        assert r.status_code == 200 and r.json()["enabled"] is False and links.configs == []
        r = await audited.client.get(f"{BASE}/{pid}/status", headers=admin)
        assert r.json()["state"] == "disabled"
        r = await audited.client.patch(f"{BASE}/{pid}", headers=admin, json={"enabled": True, "expires": 3600})
        assert r.status_code == 200 and r.json()["warnings"] == []

        r = await audited.client.put(f"{BASE}/{pid}/share", headers=admin,
                                     json={"org_nodes": [tree.va], "channels": [{"device_id": NVR, "channel_id": CB1,
                                                                                 "name": "西门（对上）"}]})
        assert r.status_code == 200, r.text
        assert r.json()["org_nodes"] == [tree.va] and r.json()["resolved"] == 3
        r = await audited.client.put(f"{BASE}/{pid}/share", headers=admin, json={"org_nodes": [999_999]})
        assert r.status_code == 404 and r.json()["error"] == "org_node_not_found"
        r = await audited.client.get(f"{BASE}/{pid}/catalog", headers=admin)
        assert r.status_code == 200, r.text
        preview = r.json()
        assert preview["items"][0]["kind"] == "system" and preview["items"][0]["device_id"] == SYSTEM_ID
        channels = {e["device_id"]: e for e in preview["items"] if e["kind"] == "channel"}
        assert preview["channels"] == 3 and set(channels) == {CA1, CA2, CB1}
        assert channels[CB1]["name"] == "西门（对上）"

        r = await audited.client.get(f"{BASE}/{pid}/requests", headers=admin)
        assert r.status_code == 200, r.text
        actions = [e["action"] for e in r.json()["items"]]
        assert actions == ["cascade.share", "cascade.platform_edit", "cascade.platform_edit", "cascade.platform_add"]
        entries = await _entries(audited, "cascade.")
        assert len(entries) == 4 and SECRET not in json.dumps(entries)

        r = await audited.client.delete(f"{BASE}/{pid}", headers=admin)
        assert r.status_code == 204
        r = await audited.client.get(f"{BASE}/{pid}", headers=admin)
        assert r.status_code == 404 and r.json()["error"] == "not_found"
    finally:
        await service.close()
