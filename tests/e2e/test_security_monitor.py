"""Intrusion monitoring on a real `gbops run` (issue 16): real actions from distinct loopback addresses produce
each event kind, rules raise one alert per window, every alert reaches a local webhook server and the audit log,
and automatic blocking refuses an address (HTTP 403 ``address_blocked``, SIP requests unanswered) and then lets
it back in when the block runs out.

Addresses: the test's administrator calls from 127.0.0.1; the attackers from 127.0.0.2 (wrong passwords),
127.0.0.3 (SIP: 50 unknown device ids), 127.0.0.4 (a scoped user probing another channel), 127.0.0.5 (forged
tokens): Linux routes all of 127/8 to the loopback interface, so a client can bind any of them."""

from __future__ import annotations

import json
import secrets
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx
import pytest

from sip_server.sip import parse_message
from tests.e2e.platform import PlatformProcess, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DOMAIN = "3402000000"
PASSWORD = "Probe-user#2026x"
NEW_PASSWORD = "Probe-user#2027y"
BLOCK_MINUTES = 0.3  # 18 s


class Webhook:
    """A local HTTP server that keeps every JSON body POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length", "0"))
                outer.bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", free_port("tcp")), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def __enter__(self) -> Webhook:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook():
    with Webhook() as hook:
        yield hook


@pytest.fixture
def platform(tmp_path, webhook):
    p = PlatformProcess(tmp_path / "data", GBOPS_SECURITY_AUTOBLOCK="true",
                        GBOPS_SECURITY_AUTOBLOCK_MINUTES=str(BLOCK_MINUTES),
                        GBOPS_SECURITY_WEBHOOK_URL=webhook.url, GBOPS_SIP_ALLOW_UNKNOWN="false").start()
    yield p
    p.stop()


def client_from(platform: PlatformProcess, address: str) -> httpx.Client:
    return httpx.Client(base_url=platform.base, timeout=30,
                        transport=httpx.HTTPTransport(local_address=address))


def register_packet(sock: socket.socket, device_id: str) -> tuple[bytes, str]:
    """A REGISTER without credentials from ``sock``, and its Call-ID."""
    local = sock.getsockname()
    tag = secrets.token_hex(4)
    head = [f"REGISTER sip:34020000002000000001@{DOMAIN} SIP/2.0",
            f"Via: SIP/2.0/UDP {local[0]}:{local[1]};rport;branch=z9hG4bK{tag}",
            f"From: <sip:{device_id}@{DOMAIN}>;tag={tag}", f"To: <sip:{device_id}@{DOMAIN}>",
            f"Call-ID: {tag}@{local[0]}", "CSeq: 1 REGISTER", f"Contact: <sip:{device_id}@{local[0]}:{local[1]}>",
            "Max-Forwards: 70", "Expires: 3600", "Content-Length: 0"]
    return ("\r\n".join(head) + "\r\n\r\n").encode(), f"{tag}@{local[0]}"


def final_statuses(sock: socket.socket, call_ids: set[str], timeout: float) -> dict[str, int]:
    """The final responses that come within ``timeout`` seconds, by Call-ID."""
    out: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    while len(out) < len(call_ids) and (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            msg = parse_message(sock.recv(65536))
        except TimeoutError:
            break
        call_id = msg.headers.get("Call-ID")
        if not msg.is_request and msg.status >= 200 and call_id in call_ids:
            out[call_id] = msg.status
    return out


def register(sock: socket.socket, server: tuple[str, int], device_id: str, timeout: float = 5.0) -> int | None:
    """One REGISTER without credentials; the final status, or None when nothing came back."""
    data, call_id = register_packet(sock, device_id)
    sock.sendto(data, server)
    return final_statuses(sock, {call_id}, timeout).get(call_id)


def alerts(platform: PlatformProcess, **params) -> list[dict]:
    return platform.get("/api/security/alerts", limit=500, **params).json()["items"]


def events(platform: PlatformProcess, **params) -> dict:
    return platform.get("/api/security/events", limit=500, **params).json()


def test_real_attacks_raise_alerts_webhook_and_blocks(platform: PlatformProcess, webhook: Webhook) -> None:
    platform.login()  # admin from 127.0.0.1

    # --- a scoped user (config_change events: a role and a user created)
    role = platform.post("/api/roles", {"name": "narrow", "permissions": ["device.read", "live.view"],
                                        "org_node_ids": []})
    assert role.status_code in (200, 201), role.text
    user = platform.post("/api/users", {"username": "prober", "password": PASSWORD,
                                        "role_ids": [role.json()["id"]]})
    assert user.status_code in (200, 201), user.text

    # --- wrong passwords from 127.0.0.2: ten names, one failure each (no per-account throttling in the way)
    with client_from(platform, "127.0.0.2") as c2:
        for i in range(10):
            r = c2.post("/api/auth/login", json={"username": f"ghost{i}", "password": "wrong-password-1"})
            assert r.status_code == 401, r.text
        platform.wait_for(lambda: c2.get("/api/health").status_code == 403, 30, "127.0.0.2 blocked")
        r = c2.get("/api/health")
        assert r.json() == {"error": "address_blocked", "message": "来源地址已被封禁 / source address blocked"}
        blocked_at = time.monotonic()
        assert c2.post("/api/auth/login", json={"username": "admin", "password": "x"}).status_code == 403
        # the block runs out by itself
        platform.wait_for(lambda: c2.get("/api/health").status_code == 200, 60, "127.0.0.2 released")
        assert time.monotonic() - blocked_at >= BLOCK_MINUTES * 60 - 5

    # --- a scoped user probing a device it may not see, from 127.0.0.4 (40 refusals, one alert)
    with client_from(platform, "127.0.0.4") as c4:
        r = c4.post("/api/auth/login", json={"username": "prober", "password": PASSWORD})
        assert r.status_code == 200, r.text
        tok = r.json()["access_token"]
        if r.json().get("must_change_password"):
            r = c4.post("/api/auth/password", headers={"Authorization": f"Bearer {tok}"},
                        json={"old_password": PASSWORD, "new_password": NEW_PASSWORD})
            assert r.status_code in (200, 204), r.text
            r = c4.post("/api/auth/login", json={"username": "prober", "password": NEW_PASSWORD})
            tok = r.json()["access_token"]
        for _ in range(40):
            r = c4.get("/api/devices/34020000001320000777/channels/34020000001310000777/records",
                       headers={"Authorization": f"Bearer {tok}"},
                       params={"start": "2026-01-01T00:00:00", "end": "2026-01-01T01:00:00"})
            assert r.status_code == 403, r.text

    # --- forged tokens from 127.0.0.5
    with client_from(platform, "127.0.0.5") as c5:
        for i in range(5):
            assert c5.get("/api/devices", headers={"Authorization": f"Bearer forged{i}{secrets.token_urlsafe(30)}"}
                          ).status_code == 401
        platform.wait_for(lambda: c5.get("/api/health").status_code == 403, 30, "127.0.0.5 blocked")

    # --- 50 unknown device ids REGISTERing from 127.0.0.3
    server = ("127.0.0.1", platform.sip_port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.3", 0))
        assert register(sock, server, "34020000001320000000") == 403  # unknown (GBOPS_SIP_ALLOW_UNKNOWN=false)
        sent = []
        for i in range(1, 50):  # the scan: 49 more ids at once
            data, call_id = register_packet(sock, f"3402000000132{i:07d}")
            sock.sendto(data, server)
            sent.append(call_id)
        answered = final_statuses(sock, set(sent), 5.0)
        assert len(answered) >= 19 and set(answered.values()) == {403}, answered
        # once the scan alert blocks the address, its REGISTERs are dropped unanswered
        platform.wait_for(lambda: register(sock, server, "34020000001329999999", timeout=1) is None, 30,
                          "127.0.0.3 blocked on SIP")
        platform.wait_for(lambda: register(sock, server, "34020000001329999998", timeout=1) == 403, 60,
                          "127.0.0.3 released on SIP")

    # --- every kind was seen, with its words
    def kinds() -> set[str]:
        return {e["kind"] for e in events(platform)["items"]}

    wanted = {"login_failed", "access_denied", "token_forged", "sip_unknown_device", "blocked_request",
              "config_change"}
    platform.wait_for(lambda: wanted <= kinds(), 30, "every event kind")
    probes = events(platform, kind="access_denied", user="prober")
    assert probes["total"] == 40 and probes["items"][0]["source_ip"] == "127.0.0.4"
    assert probes["items"][0]["kind_zh"] == "越权访问被拒绝" and probes["items"][0]["time"].endswith("+08:00")
    assert events(platform, kind="sip_unknown_device", source_ip="127.0.0.3")["total"] >= 20
    config = events(platform, kind="config_change")["items"]
    assert {e["detail"]["action"] for e in config} >= {"role.create", "user.create"}

    # --- one alert per rule window and key
    def by_rule() -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {}
        for a in alerts(platform):
            out.setdefault(a["rule"], []).append(a)
        return out

    rules = platform.wait_for(lambda: (r := by_rule()) and {"login_bruteforce", "access_probing", "token_forgery",
                                                           "sip_id_scan"} <= set(r) and r, 30, "the alerts")
    for name in ("login_bruteforce", "access_probing", "token_forgery", "sip_id_scan"):
        assert len(rules[name]) == 1, (name, rules[name])
    probing = rules["access_probing"][0]
    assert probing["key"] == "prober" and probing["blocked_until"] is None  # a user rule blocks nothing
    platform.wait_for(lambda: alerts(platform, rule="access_probing")[0]["count"] == 40, 30, "the probe count")
    assert rules["login_bruteforce"][0]["key"] == "127.0.0.2" and rules["login_bruteforce"][0]["blocked_until"]
    assert rules["sip_id_scan"][0]["key"] == "127.0.0.3"
    assert rules["login_bruteforce"][0]["rule_zh"] == "同一地址多次登录失败"

    # --- the webhook got each alert once
    platform.wait_for(lambda: {b["rule"] for b in webhook.bodies} >= {"login_bruteforce", "access_probing",
                                                                       "token_forgery", "sip_id_scan"},
                      30, "the webhook posts")
    posted = [b["rule"] for b in webhook.bodies]
    for name in ("login_bruteforce", "access_probing", "token_forgery", "sip_id_scan"):
        assert posted.count(name) == 1, posted
    body = next(b for b in webhook.bodies if b["rule"] == "sip_id_scan")
    assert body["kind"] == "security_alert" and body["source_ip"] == "127.0.0.3" and "安全告警" in body["title"]

    # --- the audit log has the alerts, the blocks and their end
    audit = platform.get("/api/audit/entries", limit=500, order="newest").json()["items"]
    actions = [e["action"] for e in audit]
    assert actions.count("security.alert") >= 4
    assert "security.block" in actions and "security.unblock" in actions

    # --- acknowledged with a note
    r = platform.post(f"/api/security/alerts/{probing['id']}/ack", {"note": "已停用该账号"})
    assert r.status_code == 200 and r.json()["state"] == "acknowledged"
    assert all(a["id"] != probing["id"] for a in alerts(platform, state="open"))
