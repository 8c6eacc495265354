"""Start ``gbops run`` as a real subprocess and talk to its HTTP API (used by the e2e tests)."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx

STRONG_SIP_PASSWORD = "Gate-7-camera#pw"
ADMIN_NEW_PASSWORD = "Ops-console#2026x"


def free_port(kind: str = "both") -> int:
    """A port free for UDP and TCP at once (SIP listens on both)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
            if kind == "tcp":
                return port
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                    u.bind(("127.0.0.1", port))
                    return port
            except OSError:
                continue
    raise RuntimeError("no free port")


class PlatformProcess:
    """``gbops run`` on loopback plain HTTP (the default), or HTTPS when the test passes a certificate
    (``GBOPS_TLS_CERT_FILE``/``GBOPS_TLS_KEY_FILE``): then :attr:`base` is ``https://`` on :attr:`https_port`,
    the API helpers verify the platform against that certificate, and ``http_port`` only redirects."""

    def __init__(self, data_dir: Path, **env: str) -> None:
        self.data_dir = data_dir
        self.sip_port = free_port()
        self.http_port = free_port("tcp")
        self.https_port = free_port("tcp")
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("GBOPS_")},
            "GBOPS_DATA_DIR": str(data_dir),
            "GBOPS_SIP_HOST": "127.0.0.1",
            "GBOPS_SIP_PORT": str(self.sip_port),
            "GBOPS_HTTP_HOST": "127.0.0.1",
            "GBOPS_HTTP_PORT": str(self.http_port),
            "GBOPS_HTTPS_PORT": str(self.https_port),
            "GBOPS_SIP_PASSWORD": STRONG_SIP_PASSWORD,
            "GBOPS_CONFIG": str(data_dir / "none.toml"),
            # optional listeners on fixed ports, off unless a test asks for them (tests run side by side)
            "GBOPS_NTP_PORT": "0",
            "GBOPS_SIP_TLS_PORT": "0",
            **env,
        }
        self.log_path = data_dir / "platform.log"
        self.proc: subprocess.Popen | None = None
        self.token: str | None = None
        cert = self.env.get("GBOPS_TLS_CERT_FILE")
        self.https = bool(cert) and self.env.get("GBOPS_HTTP_PLAIN", "").lower() not in ("1", "true", "yes")
        # httpx's verify: the platform's own certificate when HTTPS (host name 127.0.0.1 checked too)
        self.verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=cert) if self.https else True

    @property
    def base(self) -> str:
        if self.https:
            return f"https://127.0.0.1:{self.https_port}"
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 30.0) -> PlatformProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "gbops.cli", "run"], env=self.env,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gbops run exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.base + "/api/health", timeout=1, verify=self.verify).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"gbops run did not come up:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text("utf-8", "replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    # ------------------------------------------------------------------ API helpers
    def login(self) -> str:
        if self.token:
            return self.token
        initial = (self.data_dir / "initial-admin-password.txt").read_text().strip()
        r = httpx.post(self.base + "/api/auth/login", json={"username": "admin", "password": initial},
                       verify=self.verify)
        r.raise_for_status()
        token = r.json()["access_token"]
        if r.json().get("must_change_password"):
            r = httpx.post(self.base + "/api/auth/password", headers={"Authorization": f"Bearer {token}"},
                           json={"old_password": initial, "new_password": ADMIN_NEW_PASSWORD}, verify=self.verify)
            r.raise_for_status()
            r = httpx.post(self.base + "/api/auth/login",
                           json={"username": "admin", "password": ADMIN_NEW_PASSWORD}, verify=self.verify)
            r.raise_for_status()
            token = r.json()["access_token"]
        self.token = token
        return token

    # API calls wait up to 30 s: a loaded CI machine registering 600 devices into SQLite can hold an answer
    # for seconds (the tests that assert latency time it themselves)
    def get(self, path: str, **params) -> httpx.Response:
        return httpx.get(self.base + path, params=params, headers={"Authorization": f"Bearer {self.login()}"},
                         timeout=30, verify=self.verify)

    def post(self, path: str, json=None) -> httpx.Response:
        return httpx.post(self.base + path, json=json, headers={"Authorization": f"Bearer {self.login()}"},
                          timeout=30, verify=self.verify)

    def wait_for(self, predicate, timeout: float, what: str, interval: float = 0.25):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = predicate()
            if last:
                return last
            time.sleep(interval)
        raise AssertionError(f"timed out waiting for {what}; last={last!r}\n--- platform log ---\n{self.log()[-4000:]}")


def read_flv(platform: PlatformProcess, url: str, seconds: float, out) -> int:
    """Read an HTTP-FLV response as a player does for ``seconds``, writing it to ``out``; returns bytes."""
    n = 0
    deadline = time.monotonic() + seconds
    with httpx.stream("GET", platform.base + url, timeout=10, verify=platform.verify) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"] == "video/x-flv"
        for chunk in r.iter_bytes():
            out.write(chunk)
            n += len(chunk)
            if time.monotonic() > deadline:
                break
    return n
