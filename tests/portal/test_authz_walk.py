"""Walks every route of the portal (``create_app`` mounts them all, live routes included):

* every route declares a permission (``require_permission``), unless listed below as public or
  self-service: a new route without one fails here;
* (a) a user holding every permission but the route's gets 403 ``forbidden`` and no data;
* (b) a user holding every permission, whose scope excludes the channel / device / organisation node
  named in the path, gets 403 (or 404) and no data;
* (c) the same user's every list answer (every ``GET`` of the OpenAPI document without path parameters
  that answers a list of objects) names no out-of-scope channel or device, with out-of-scope objects of
  every kind present (tests/portal/test_scope_lists.py builds them).
"""

from __future__ import annotations

import re
from typing import Any

import fastapi.routing
import pytest
from fastapi.routing import APIRoute

from ops_portal.deps import PERMISSIONS

from .conftest import Portal, bearer
from .org_data import CA1, IPC, Tree, build_tree

#: No permission to declare: the login, health, the console's files, and the viewer outputs (bound to the
#: session's user by its bearer token or the URL's signed token: tests/portal/test_output_binding.py).
PUBLIC = {("POST", "/api/auth/login"), ("GET", "/api/health"), ("GET", "/flv/{session_id}.flv"),
          ("POST", "/whep/{session_id}"), ("DELETE", "/whep/{session_id}"), ("GET", "/live/{channel_id}"),
          ("GET", "/live/{device_id}/{channel_id}"),  # the player page: no data in it
          # the web console's static files (no data: everything comes from the API with a token)
          ("GET", "/"), ("GET", "/console"), ("GET", "/console/"), ("GET", "/console/assets/{name}")}
#: A logged-in user acting on itself only: no permission to declare.
SELF_SERVICE = {("POST", "/api/auth/logout"), ("POST", "/api/auth/password"), ("GET", "/api/auth/me"),
                ("GET", "/api/access/me")}
# issue 18: reference data that every logged-in user may read (the GB/T 2260 table)
SELF_SERVICE |= {("GET", "/api/regions")}
# issue 16: the caller's own second factor
SELF_SERVICE |= {("GET", "/api/auth/totp"), ("POST", "/api/auth/totp/setup"), ("POST", "/api/auth/totp/enable"),
                 ("POST", "/api/auth/totp/disable")}
#: Path parameters that name an object of the data scope.
SCOPED_PARAMS = ("channel_id", "device_id", "node_id")


def _permissions_of(dependant: Any) -> set[str]:
    found: set[str] = set()
    for dep in dependant.dependencies:
        perm = getattr(dep.call, "permission", None)
        if perm is not None:
            found.add(perm)
        found |= _permissions_of(dep)
    return found


def _routes(portal: Portal) -> list[tuple[str, str, APIRoute]]:
    """Every (method, path, route) the app serves.  FastAPI >= 0.165 keeps included routers as
    ``_IncludedRouter`` entries; they are flattened here.  Checked against the OpenAPI document so that
    the walk can never become vacuous."""
    flatten = getattr(fastapi.routing, "_iter_included_route_candidates", None)
    routes = list(flatten(portal.app.routes)) if flatten is not None else list(portal.app.routes)
    out = []
    for route in routes:
        if isinstance(route, APIRoute):
            for method in sorted(route.methods - {"HEAD", "OPTIONS"}):
                out.append((method, route.path, route))
    documented = {(m.upper(), p) for p, ops in portal.app.openapi()["paths"].items() for m in ops}
    assert documented <= {(m, p) for m, p, _ in out}, documented - {(m, p) for m, p, _ in out}
    return out


def _example(schema: dict[str, Any], components: dict[str, Any], depth: int = 0) -> Any:
    """A small instance of a JSON schema (enough to pass validation in most routes)."""
    if "$ref" in schema:
        return _example(components[schema["$ref"].rsplit("/", 1)[-1]], components, depth + 1)
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            options = [s for s in schema[key] if s.get("type") != "null"] or schema[key]
            return _example(options[0], components, depth + 1)
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    if "default" in schema:
        return schema["default"]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        return {k: _example(props[k], components, depth + 1) for k in schema.get("required", []) if k in props}
    if kind == "array":
        return [] if depth > 3 or not schema.get("minItems") else [_example(schema["items"], components, depth + 1)]
    if kind == "integer":
        return max(1, schema.get("minimum", 1))
    if kind == "number":
        return 1.0
    if kind == "boolean":
        return False
    if schema.get("format") == "date-time":
        return "2024-05-01T00:00:00Z"
    return "x" * max(1, schema.get("minLength", 1))


def _body(portal: Portal, method: str, path: str) -> Any:
    spec = portal.app.openapi()
    op = spec["paths"].get(path, {}).get(method.lower(), {})
    content = op.get("requestBody", {}).get("content", {})
    if "application/json" not in content:
        return None
    return _example(content["application/json"]["schema"], spec.get("components", {}).get("schemas", {}))


def _no_data(r: Any) -> None:
    assert r.headers.get("content-type", "").startswith("application/json"), r.text[:200]
    assert set(r.json()) <= {"error", "message", "details"}, r.text[:300]


@pytest.fixture
async def walk(portal: Portal) -> dict[str, Any]:
    tree = await build_tree(portal.registry)
    other = await portal.add_user("other-user")
    async with portal.sessionmaker() as session:
        from sqlalchemy import select

        from ops_portal.models import Role

        role_id = (await session.execute(select(Role.id).order_by(Role.id))).scalars().first()
    values = {"channel_id": CA1, "device_id": IPC, "node_id": str(tree.va), "user_id": str(other.id),
              "role_id": str(role_id)}
    return {"tree": tree, "values": values}


def _concrete(path: str, values: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), "1"), path)


async def test_every_route_declares_a_permission(portal: Portal) -> None:
    missing = []
    for method, path, route in _routes(portal):
        if (method, path) in PUBLIC or (method, path) in SELF_SERVICE:
            continue
        perms = _permissions_of(route.dependant)
        if not perms:
            missing.append(f"{method} {path}")
        assert perms <= PERMISSIONS
    assert not missing, f"routes without require_permission(...): {missing}"


async def test_without_the_permission_nothing(portal: Portal, walk: dict[str, Any]) -> None:
    tokens: dict[str, dict[str, str]] = {}
    checked = 0
    for method, path, route in _routes(portal):
        perms = _permissions_of(route.dependant)
        if not perms:
            continue
        for perm in sorted(perms):
            if perm not in tokens:
                name = f"no-{perm.replace('.', '-')}"
                await portal.add_user(name, permissions=PERMISSIONS - {perm})
                tokens[perm] = bearer(await portal.login(name))
            r = await portal.client.request(method, _concrete(path, walk["values"]), headers=tokens[perm],
                                            json=_body(portal, method, path))
            assert r.status_code == 403, (method, path, perm, r.status_code, r.text[:300])
            assert r.json()["error"] == "forbidden", (method, path, r.text[:300])
            _no_data(r)
            checked += 1
    assert checked >= 40


async def test_outside_the_scope_nothing(portal: Portal, walk: dict[str, Any]) -> None:
    tree: Tree = walk["tree"]
    await portal.add_user("outsider", org_nodes=[tree.vb])  # every permission, only the west node
    headers = bearer(await portal.login("outsider"))
    checked = []
    for method, path, _route in _routes(portal):
        if (method, path) in PUBLIC:
            continue
        named = [p for p in SCOPED_PARAMS if "{" + p + "}" in path]
        if not named:
            continue
        r = await portal.client.request(method, _concrete(path, walk["values"]), headers=headers,
                                        json=_body(portal, method, path))
        assert r.status_code in (403, 404), (method, path, r.status_code, r.text[:300])
        _no_data(r)
        checked.append(path)
    # devices (7 routes), live, org nodes (3)
    assert len(checked) >= 11, checked
    # the same user reaches what is in its scope (the walk is not vacuous)
    r = await portal.client.get(f"/api/org/tree?node_id={tree.vb}", headers=headers)
    assert r.status_code == 200 and [n["id"] for n in r.json()["nodes"]] == [tree.vb]


@pytest.mark.parametrize("with_booleans", [False, True], ids=["defaults", "booleans-true"])
async def test_list_answers_stay_in_scope(audited: Portal, with_booleans: bool) -> None:
    from .test_scope_lists import walk_lists

    await walk_lists(audited, with_booleans)
