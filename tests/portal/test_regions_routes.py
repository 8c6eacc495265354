"""``GET /api/regions`` (issue 18): the GB/T 2260 table for any logged-in user, with an ETag."""

from __future__ import annotations

from gbcore.regions import TABLE_VERSION, region_table

from .conftest import Portal, bearer


async def test_any_logged_in_user_gets_the_whole_table(portal: Portal) -> None:
    p = portal
    await p.add_user("nobody-special", permissions=set())  # no permission at all
    headers = bearer(await p.login("nobody-special"))
    r = await p.client.get("/api/regions", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["version"] == TABLE_VERSION
    items = body["items"]
    assert len(items) == len(region_table().names) > 3000
    assert items["610113"] == "陕西省西安市雁塔区"
    assert items["110105"] == "北京市朝阳区"
    assert items["340200"] == "安徽省芜湖市"
    assert items["610000"] == "陕西省"
    assert r.headers["cache-control"] == "private, no-cache"
    etag = r.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"') and len(etag) > 10

    # the browser's revalidation: 304 without a body while the table is the same
    again = await p.client.get("/api/regions", headers={**headers, "If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag
    weak = await p.client.get("/api/regions", headers={**headers, "If-None-Match": f'"other", W/{etag}'})
    assert weak.status_code == 304
    stale = await p.client.get("/api/regions", headers={**headers, "If-None-Match": '"0123456789"'})
    assert stale.status_code == 200 and stale.json()["items"] == items


async def test_not_without_login(portal: Portal) -> None:
    p = portal
    r = await p.client.get("/api/regions")
    assert r.status_code == 401
    assert r.json()["error"] == "not_authenticated"
    assert "etag" not in r.headers and r.headers["cache-control"] == "no-store"
    r = await p.client.get("/api/regions", headers=bearer("not-a-token"))
    assert r.status_code == 401


async def test_not_before_the_first_password_change(portal: Portal) -> None:
    p = portal
    await p.add_user("newcomer", must_change_password=True)
    r = await p.client.get("/api/regions", headers=bearer(await p.login("newcomer")))
    assert r.status_code == 403 and r.json()["error"] == "password_change_required"


async def test_documented(portal: Portal) -> None:
    p = portal
    op = p.app.openapi()["paths"]["/api/regions"]["get"]
    assert op["operationId"] == "regions"
    schema = op["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema["$ref"].endswith("/RegionsOut")
