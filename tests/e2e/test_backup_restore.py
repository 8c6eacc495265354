"""Backup and restore of a whole platform (issue 16): a running ``gbops run`` with a simulated camera and
audited actions is backed up online with ``gbops backup``, stopped, restored with ``gbops restore`` into a
new data dir, its audit log verifies against what an auditor pinned before, and the restored platform
starts and takes its device back: the camera registers with its own password, which only the restored
database knows (the restored platform runs with another default SIP password)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from gbsim import SimConfig, Simulator
from tests.e2e.platform import ADMIN_NEW_PASSWORD, PlatformProcess

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DEVICE = "34020000001180000001"  # an NVR: the simulator gives two-channel devices type 118
DEVICE_PASSWORD = "Cam-Restore#2026"
OTHER_DEFAULT = "Other-default#2026"
PASSPHRASE = "Backup-e2e#2026-x"


ROOT = Path(__file__).resolve().parents[2]


def gbops(env: dict, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gbops.cli", *args], env={**env, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=180, cwd=cwd, stdin=subprocess.DEVNULL)


def sim_for(platform: PlatformProcess) -> Simulator:
    return Simulator(SimConfig(server=("127.0.0.1", platform.sip_port), devices=1, channels=2,
                               password=DEVICE_PASSWORD, first_id=DEVICE, keepalive=1.0, register_rate=50))


def set_device_password(platform: PlatformProcess) -> httpx.Response:
    return httpx.put(platform.base + f"/api/devices/{DEVICE}/password", json={"password": DEVICE_PASSWORD},
                     headers={"Authorization": f"Bearer {platform.login()}"}, timeout=30)


def login(platform: PlatformProcess) -> httpx.Response:
    """The administrator's password as it was changed on the first platform (no initial password file)."""
    return httpx.post(platform.base + "/api/auth/login", json={"username": "admin", "password": ADMIN_NEW_PASSWORD},
                      timeout=30)


def online(platform: PlatformProcess) -> bool:
    r = platform.get(f"/api/devices/{DEVICE}")
    return r.status_code == 200 and r.json()["online"]


async def test_backup_stop_restore_verify_and_the_device_comes_back(tmp_path: Path) -> None:
    (tmp_path / "pass").write_text(PASSPHRASE + "\n")
    (tmp_path / "pass").chmod(0o600)
    # scheduled daily backups on (the next one is hours away: this test makes its backup by hand)
    first = PlatformProcess(tmp_path / "d1", GBOPS_AUDIT_CHECKPOINT_INTERVAL="1",
                            GBOPS_BACKUP_PASSPHRASE_FILE=str(tmp_path / "pass")).start()
    sim = sim_for(first)
    try:
        first.login()  # audited: login, password change, login
        r = await asyncio.to_thread(set_device_password, first)
        assert r.status_code == 204, r.text  # audited: device.password_set
        await sim.start()
        assert await sim.wait_until(lambda s: s.registered == 1, 30), sim.progress_line()
        await asyncio.to_thread(first.wait_for, lambda: online(first), 30, "the camera online")
        await asyncio.to_thread(first.wait_for, lambda: len(first.get(f"/api/devices/{DEVICE}/channels")
                                                            .json()["items"]) == 2, 30, "its catalog")
        # what an auditor pins before: the verifier key and a checkpoint
        r = await asyncio.to_thread(gbops, first.env, "audit", "verifier-key", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        (tmp_path / "verifier.key").write_text(r.stdout)
        await asyncio.sleep(1.5)  # the platform signs a checkpoint every second while entries arrive
        r = await asyncio.to_thread(first.wait_for, lambda: (c := gbops(first.env, "audit", "checkpoint",
                                                                         cwd=tmp_path)).returncode == 0 and c,
                                    30, "a signed checkpoint")
        (tmp_path / "pinned").write_text(r.stdout)

        # online backup of the running platform (its camera keeps sending keepalives meanwhile)
        r = await asyncio.to_thread(gbops, first.env, "backup", "--out", str(tmp_path / "site.gbbak"), "--passphrase-file",
                  str(tmp_path / "pass"), cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert "recordings, download files and logs are NOT in the backup" in r.stdout
        assert "backup.scheduled" in first.log() and "passphrase_file_readable" not in first.log()
    finally:
        await sim.stop()
        first.stop()

    # restore into a new data dir (the platform's log file there is not carried over)
    second = PlatformProcess(tmp_path / "d2", GBOPS_SIP_PASSWORD=OTHER_DEFAULT)
    r = gbops(second.env, "restore", str(tmp_path / "site.gbbak"), "--passphrase-file", str(tmp_path / "pass"),
              cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not (tmp_path / "d2" / "platform.log").exists()
    assert (tmp_path / "d2" / "keys" / "record.key").read_bytes() == (tmp_path / "d1" / "keys" / "record.key").read_bytes()
    r = gbops(second.env, "audit", "export", "--out", str(tmp_path / "bundle"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = gbops(second.env, "audit", "verify", str(tmp_path / "bundle"), "--key", str(tmp_path / "verifier.key"),
              "--pin", str(tmp_path / "pinned"), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "VALID" in r.stdout
    entries = (tmp_path / "bundle" / "entries.jsonl").read_text("utf-8")
    for action in ("auth.login", "user.password_change", "device.password_set", "backup.restore"):
        assert f'"action":"{action}"' in entries, action
    # the backup itself was recorded on the first platform's log, after its snapshot (so not in it)
    digest = hashlib.sha256((tmp_path / "site.gbbak").read_bytes()).hexdigest()
    assert '"action":"backup.create"' not in entries and digest in entries  # backup.restore names the file's hash
    r = gbops(first.env, "audit", "export", "--out", str(tmp_path / "bundle1"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    made = [json.loads(line) for line in (tmp_path / "bundle1" / "entries.jsonl").read_text("utf-8").splitlines()
            if '"action":"backup.create"' in line]
    assert len(made) == 1 and made[0]["detail"]["sha256"] == digest and made[0]["detail"]["trigger"] == "cli"

    # the restored platform starts; the old administrator password works; the camera comes back
    second.start()
    sim = sim_for(second)
    try:
        r = await asyncio.to_thread(login, second)
        assert r.status_code == 200, r.text
        second.token = r.json()["access_token"]
        r = second.get(f"/api/devices/{DEVICE}")
        assert r.status_code == 200  # known from the backup before it said a word
        await asyncio.to_thread(second.wait_for, lambda: not online(second), 30,
                                "the camera offline (its keepalive window ran out while no platform ran)")
        await sim.start()
        assert await sim.wait_until(lambda s: s.registered == 1, 30), sim.progress_line()
        await asyncio.to_thread(second.wait_for, lambda: online(second), 30, "the camera online again")
        channels = second.get(f"/api/devices/{DEVICE}/channels").json()["items"]
        assert len(channels) == 2
    finally:
        await sim.stop()
        second.stop()
