"""API-wide guarantees: authentication everywhere, one error shape, stable operation ids."""

from __future__ import annotations

import httpx
import pytest

from .conftest import Portal, bearer

PUBLIC = {("post", "/api/auth/login"), ("get", "/api/health"),
          # viewer-session outputs: the owner's bearer token or the single-use ?t= token (checked in the route)
          ("get", "/flv/{session_id}.flv"), ("post", "/whep/{session_id}"), ("delete", "/whep/{session_id}")}
CORE_OPERATIONS = {
    "health", "auth_login", "auth_logout", "auth_password_change", "auth_me", "devices_list", "devices_get",
    "devices_channels", "devices_presence", "devices_catalog_sync_start", "devices_catalog_sync_status",
    "devices_status_query", "devices_password_set", "devices_create", "devices_update",
    "devices_delete", "devices_channel_update", "devices_batch", "devices_export", "devices_import_template",
    "devices_import", "sip_metrics", "audit_entries", "audit_actions", "audit_downloads",
    "audit_checkpoint", "audit_verifier_key", "audit_proof_inclusion", "audit_proof_consistency", "audit_export",
}  # fmt: skip
# One set per area, so that each area's routes are listed where its owner keeps them.
LIVE_OPERATIONS = {"live_start", "live_session_delete", "streams_list", "live_flv", "live_whep_offer",
                   "live_whep_delete"}  # issue 3/4: live view, streams, watermark capacity
DOWNLOAD_OPERATIONS = {"downloads_create", "downloads_list", "downloads_get",
                       "downloads_file"}  # issue 4: watermarked downloads
# issue 11: every channel route also as /api/devices/{device_id}/channels/{channel_id}/...
CHANNEL_IDENTITY_OPERATIONS = {"live_start_device_channel", "downloads_create_device_channel"}
ACCESS_OPERATIONS = {  # issue 6: users, roles, org tree, dashboard, map
    "users_list", "users_create", "users_get", "users_update", "users_delete", "users_password_reset",
    "users_sessions_revoke", "access_me", "roles_list", "roles_create", "roles_get", "roles_update", "roles_delete",
    "permissions_list", "org_tree", "org_node_create", "org_node_update", "org_node_delete", "org_node_assign",
    "channels_list", "dashboard", "dashboard_trend",
}  # fmt: skip
AVAILABILITY_OPERATIONS = {"availability_online_rate", "availability_channels", "reports_create", "reports_list",
                           "reports_get", "reports_file"}  # issue 7: online rate, reports
TICKET_OPERATIONS = {"tickets_list", "tickets_create", "tickets_get", "tickets_transition",
                     "tickets_snapshot_upload", "tickets_snapshot_get", "notifications_list", "contracts_list",
                     "contracts_create", "contracts_get", "contracts_update", "contracts_delete", "contracts_sla",
                     "contracts_sla_csv"}  # issue 7: tickets, contracts, quality
# issue 13: history video (records, platform recording, playback sessions and their control)
HISTORY_OPERATIONS = {"records", "recording_get", "recording_put", "playback_start", "session_get", "session_control"}
# issue 14: PTZ with priority, presets, tours, home, device commands, alarms
CONTROL_OPERATIONS = {"ptz_command", "ptz_lock_state", "ptz_presets", "ptz_preset", "ptz_tours", "ptz_tour_create",
                      "ptz_tour_start", "ptz_tour_stop", "ptz_tour_delete", "ptz_home", "ptz_home_set",
                      "device_control", "alarms_list", "alarm_ack", "alarms_stream"}
# issue 15: upper platforms (cascade upward)
CASCADE_OPERATIONS = {"cascade_platform_create", "cascade_platforms_list", "cascade_platform_get",
                      "cascade_platform_update", "cascade_platform_delete", "cascade_platform_status",
                      "cascade_share_get", "cascade_share_put", "cascade_catalog_preview", "cascade_requests"}
CHANNEL_IDENTITY_OPERATIONS |= {f"{op}_device_channel" for op in (
    "records", "recording_get", "recording_put", "playback_start", "ptz_command", "ptz_lock_state", "ptz_presets",
    "ptz_preset", "ptz_tours", "ptz_tour_create", "ptz_tour_start", "ptz_tour_stop", "ptz_tour_delete", "ptz_home",
    "ptz_home_set")}
EXPECTED_OPERATIONS = (CORE_OPERATIONS | LIVE_OPERATIONS | DOWNLOAD_OPERATIONS | ACCESS_OPERATIONS
                       | AVAILABILITY_OPERATIONS | TICKET_OPERATIONS | CHANNEL_IDENTITY_OPERATIONS
                       | HISTORY_OPERATIONS | CONTROL_OPERATIONS | CASCADE_OPERATIONS)
# issue 16 (accounts): the TOTP second factor and its reset by an administrator
EXPECTED_OPERATIONS |= {"auth_totp_state", "auth_totp_setup", "auth_totp_enable", "auth_totp_disable",
                        "users_totp_reset"}
# issue 16 (security monitoring, helper A): events, alerts, acknowledgement, blocks, the live feed
EXPECTED_OPERATIONS |= {"security_vocabulary", "security_events", "security_alerts", "security_alert_ack",
                        "security_blocks", "security_unblock", "security_stream"}
# issue 16 (security check, helper D): the findings and their PDF/XLSX report
EXPECTED_OPERATIONS |= {"security_check", "security_check_report"}
# device clocks and platform time (issue 16)
EXPECTED_OPERATIONS |= {"device_clock", "device_clock_check", "time_status", "time_devices", "time_compliance"}
# the cluster's nodes (issue 17)
EXPECTED_OPERATIONS |= {"cluster_nodes"}
# the downloads centre's history export and the GB/T 2260 table (issue 18)
EXPECTED_OPERATIONS |= {"downloads_csv", "regions"}


def operations(portal: Portal) -> list[tuple[str, str, dict]]:
    return [(m, p, op) for p, ops in portal.app.openapi()["paths"].items() for m, op in ops.items()]


def concrete(path: str) -> str:
    return path.replace("{device_id}", "34020000001320000001")


async def test_health(portal: Portal) -> None:
    r = await portal.client.get("/api/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


async def test_readiness(portal: Portal) -> None:
    """?ready=1 (issue 17): 200 once started; 503 while starting, draining or without the database; liveness
    stays 200 throughout (no dependency checks)."""
    state = portal.app.state
    assert (await portal.client.get("/api/health", params={"ready": 1})).json() == {"status": "ok"}
    state.ready = False
    r = await portal.client.get("/api/health", params={"ready": 1})
    assert r.status_code == 503 and r.json() == {"status": "starting"}
    state.ready, state.draining = True, True
    r = await portal.client.get("/api/health", params={"ready": 1})
    assert r.status_code == 503 and r.json() == {"status": "draining"}
    state.draining = False
    real = state.sessionmaker

    def broken():
        raise ConnectionError("database down")

    state.sessionmaker = broken
    try:
        r = await portal.client.get("/api/health", params={"ready": 1})
        assert r.status_code == 503 and r.json() == {"status": "database"}
        assert (await portal.client.get("/api/health")).status_code == 200  # liveness has no dependency checks
    finally:
        state.sessionmaker = real


async def test_operation_ids(portal: Portal) -> None:
    ids = [op.get("operationId") for _, _, op in operations(portal)]
    assert None not in ids
    assert len(ids) == len(set(ids))
    assert set(ids) == EXPECTED_OPERATIONS


@pytest.mark.parametrize("token", [None, "garbage-token"])
async def test_no_route_answers_without_a_valid_token(portal: Portal, token: str | None) -> None:
    await portal.add_user("alice")  # a real user exists: still nothing without a token
    headers = bearer(token) if token else {}
    checked = 0
    for method, path, op in operations(portal):
        if (method, path) in PUBLIC:
            assert not op.get("security")
            continue
        assert op.get("security"), (method, path)  # documented as protected
        r = await portal.client.request(method.upper(), concrete(path), headers=headers)
        assert r.status_code == 401, (method, path, r.status_code, r.text)
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert set(r.json()) == {"error", "message"}
        assert r.json()["error"] == ("invalid_token" if token else "not_authenticated")
        checked += 1
    assert checked == len(EXPECTED_OPERATIONS) - len(PUBLIC)


async def test_unknown_route_and_method(portal: Portal) -> None:
    r = await portal.client.get("/api/no-such-thing")
    assert r.status_code == 404
    assert r.json() == {"error": "not_found", "message": "请求的资源不存在 / the requested resource does not exist"}
    r = await portal.client.delete("/api/health")
    assert r.status_code == 405
    assert r.json()["error"] == "method_not_allowed"
    assert "GET" in r.headers.get("allow", "")


async def test_validation_errors_do_not_echo_input(portal: Portal) -> None:
    secret = "My-Secret-Value-42"
    r = await portal.client.post("/api/auth/login", json={"username": "alice", "password": secret, "x": secret})
    assert r.status_code == 422
    body = r.json()
    assert body["error"] == "validation_error"
    assert body["message"].startswith("请求参数无效")
    assert body["details"] and body["details"][0]["loc"] == ["body", "x"]
    assert secret not in r.text

    r = await portal.client.post("/api/auth/login", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"] == "validation_error"
    r = await portal.client.post("/api/auth/login", json={"username": "alice"})
    assert r.status_code == 422 and r.json()["details"][0]["loc"] == ["body", "password"]


async def test_openapi_is_served(portal: Portal) -> None:
    r = await portal.client.get("/api/openapi.json")
    assert r.status_code == 200
    assert r.json()["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


async def test_unexpected_error_is_json_and_says_nothing_inside(portal: Portal) -> None:
    @portal.app.get("/api/test-boom", include_in_schema=False)
    async def boom() -> None:
        raise RuntimeError("internal detail: /etc/secret")

    transport = httpx.ASGITransport(app=portal.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://portal.test") as client:
        r = await client.get("/api/test-boom")
    assert r.status_code == 500
    assert r.json() == {"error": "internal_error", "message": "服务器内部错误 / internal server error"}
    assert "/etc/secret" not in r.text
