"""Shared keys of a cluster: where each key lives, the cluster-mode refusal, ``gbops keys init``, and two nodes
with the same secrets folder signing and sealing with the same keys."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gbcore.settings import Settings, SettingsError
from gbops.secrets import KEY_FILES, check_shared_keys, init_keys, key_paths, key_sources

FILE_NAMES = {k.file_name for k in KEY_FILES}
REDIS = "redis://127.0.0.1:6379/0"  # only makes the settings clustered: nothing connects here


@pytest.fixture(autouse=True)
def _no_gbops_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("GBOPS_") and name != "GBOPS_CONFIG":
            monkeypatch.delenv(name)


def _settings(data: Path, **kw) -> Settings:
    return Settings(data_dir=data, **kw)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ------------------------------------------------------------------------------------------ resolution
def test_key_paths_default_to_the_data_dir(tmp_path: Path) -> None:
    s = _settings(tmp_path / "d")
    d = tmp_path / "d"
    assert key_paths(s) == {
        "audit_signing": d / "audit" / "signing.key",
        "watermark_tag": d / "watermark-tag.key",
        "cascade": d / "keys" / "cascade.key",
        "record": d / "keys" / "record.key",
        "totp": d / "keys" / "totp.key",
    }
    assert set(key_sources(s).values()) == {"data_dir"}


def test_key_paths_with_the_secrets_dir(tmp_path: Path) -> None:
    sec = tmp_path / "secrets"
    s = _settings(tmp_path / "d", secrets_dir=sec)
    assert key_paths(s) == {
        "audit_signing": sec / "audit-signing.key",
        "watermark_tag": sec / "watermark-tag.key",
        "cascade": sec / "cascade.key",
        "record": sec / "record.key",
        "totp": sec / "totp.key",
    }
    # the properties the domains read are the same single source
    assert s.audit_signing_key_path == sec / "audit-signing.key"
    assert s.cascade_key_path == sec / "cascade.key"
    assert s.record_key_path == sec / "record.key"
    assert s.watermark_tag_key_path == sec / "watermark-tag.key"
    assert s.totp_key_path == sec / "totp.key"


def test_explicit_key_settings_win_over_the_secrets_dir(tmp_path: Path) -> None:
    s = _settings(tmp_path / "d", secrets_dir=tmp_path / "secrets", audit_key_path=tmp_path / "a.key",
                  record_key_file=str(tmp_path / "r.key"))
    paths = key_paths(s)
    assert paths["audit_signing"] == tmp_path / "a.key"
    assert paths["record"] == tmp_path / "r.key"
    assert paths["cascade"] == tmp_path / "secrets" / "cascade.key"
    assert key_sources(s) == {"audit_signing": "setting", "watermark_tag": "secrets_dir", "cascade": "secrets_dir",
                              "record": "setting", "totp": "secrets_dir"}


def test_environment_variables_reach_the_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GBOPS_SECRETS_DIR", str(tmp_path / "s"))
    monkeypatch.setenv("GBOPS_RECORD_KEY_FILE", str(tmp_path / "rec.key"))
    s = Settings(data_dir=tmp_path / "d")
    assert s.totp_key_path == tmp_path / "s" / "totp.key"
    assert s.record_key_path == tmp_path / "rec.key"


# ------------------------------------------------------------------------------------------ the check
def test_single_process_is_not_checked_and_still_generates(tmp_path: Path) -> None:
    from gbcore.secretbox import SecretBox

    s = _settings(tmp_path / "d")
    check_shared_keys(s)  # no Redis: nothing required
    SecretBox.from_file(s.cascade_key_path)  # generated at first use, as before
    assert _mode(tmp_path / "d" / "keys" / "cascade.key") == 0o600


def test_cluster_refuses_without_a_secrets_dir(tmp_path: Path) -> None:
    s = _settings(tmp_path / "d", redis_url=REDIS)
    with pytest.raises(SettingsError) as err:
        check_shared_keys(s)
    text = str(err.value)
    assert "GBOPS_SECRETS_DIR" in text and "gbops keys init --dir" in text
    for k in KEY_FILES:
        assert k.label in text
    assert not (tmp_path / "d").exists()  # nothing generated


def test_cluster_refuses_when_only_some_keys_have_explicit_paths(tmp_path: Path) -> None:
    s = _settings(tmp_path / "d", redis_url=REDIS, audit_key_path=tmp_path / "a.key",
                  record_key_file=str(tmp_path / "r.key"))
    with pytest.raises(SettingsError) as err:
        check_shared_keys(s)
    text = str(err.value)
    assert "水印标签密钥" in text and "cascade sealing key" in text and "TOTP sealing key" in text
    assert "audit signing key" not in text and "recording key" not in text


def test_cluster_names_every_missing_key_and_generates_none(tmp_path: Path) -> None:
    sec = tmp_path / "secrets"
    init_keys(sec, origin="gbops/34020000002000000001/audit")
    (sec / "cascade.key").unlink()
    (sec / "totp.key").unlink()
    s = _settings(tmp_path / "d", redis_url=REDIS, secrets_dir=sec)
    with pytest.raises(SettingsError) as err:
        check_shared_keys(s)
    text = str(err.value)
    assert f"{sec / 'cascade.key'}: 不存在 / missing" in text
    assert f"{sec / 'totp.key'}: 不存在 / missing" in text
    assert "record.key" not in text and "audit-signing.key" not in text
    assert f"gbops keys init --dir {sec}" in text
    assert not (sec / "cascade.key").exists() and not (tmp_path / "d").exists()


def test_cluster_refuses_group_readable_keys(tmp_path: Path) -> None:
    sec = tmp_path / "secrets"
    init_keys(sec, origin="gbops/34020000002000000001/audit")
    (sec / "record.key").chmod(0o640)
    (sec / "watermark-tag.key").chmod(0o604)
    s = _settings(tmp_path / "d", redis_url=REDIS, secrets_dir=sec)
    with pytest.raises(SettingsError) as err:
        check_shared_keys(s)
    text = str(err.value)
    assert f"{sec / 'record.key'}: 权限过宽 (640)" in text
    assert f"{sec / 'watermark-tag.key'}: 权限过宽 (604)" in text
    assert "chmod 600" in text and "totp.key" not in text


def test_cluster_refuses_malformed_keys_and_an_audit_key_of_another_origin(tmp_path: Path) -> None:
    sec = tmp_path / "secrets"
    init_keys(sec, origin="gbops/other/audit")
    fd = os.open(sec / "totp.key", os.O_WRONLY | os.O_TRUNC)
    os.write(fd, b"not a key\n")
    os.close(fd)
    s = _settings(tmp_path / "d", redis_url=REDIS, secrets_dir=sec)
    with pytest.raises(SettingsError) as err:
        check_shared_keys(s)
    text = str(err.value)
    assert f"{sec / 'totp.key'}: 格式错误 / malformed" in text
    assert "'gbops/other/audit'" in text and "gbops/34020000002000000001/audit" in text


def test_cluster_accepts_a_complete_secrets_dir(tmp_path: Path) -> None:
    sec = tmp_path / "secrets"
    init_keys(sec, origin="gbops/34020000002000000001/audit")
    check_shared_keys(_settings(tmp_path / "d", redis_url=REDIS, secrets_dir=sec))


def test_cluster_follows_links_of_a_kubernetes_secret_volume(tmp_path: Path) -> None:
    """A Secret volume holds links (name -> ..data/name); the mode that counts is the target's."""
    made = tmp_path / "made"
    init_keys(made, origin="gbops/34020000002000000001/audit")
    vol = tmp_path / "vol"
    vol.mkdir()
    (vol / "..data").symlink_to(made)
    for name in FILE_NAMES:
        (vol / name).symlink_to(Path("..data") / name)
    s = _settings(tmp_path / "d", redis_url=REDIS, secrets_dir=vol)
    check_shared_keys(s)
    (made / "cascade.key").chmod(0o644)
    with pytest.raises(SettingsError, match="cascade.key: 权限过宽"):
        check_shared_keys(s)


# ------------------------------------------------------------------------------------------ keys init
def _cli(args: list[str]):
    from gbops.keys_cli import keys_app

    return CliRunner().invoke(keys_app, args)


def test_keys_init_creates_every_key_0600_and_prints_the_vkey(tmp_path: Path) -> None:
    from audit_log.note import load_or_create_signer

    sec = tmp_path / "new" / "secrets"
    r = _cli(["init", "--dir", str(sec)])
    assert r.exit_code == 0, r.output
    assert {p.name for p in sec.iterdir()} == FILE_NAMES
    assert _mode(sec) == 0o700
    for name in FILE_NAMES:
        assert _mode(sec / name) == 0o600
        assert f"已生成 / created:  {name}" in r.output
    signer = load_or_create_signer(sec / "audit-signing.key", "gbops/34020000002000000001/audit", create=False)
    assert signer.vkey in r.output
    assert "BEGIN PUBLIC KEY" in r.output


def test_keys_init_uses_the_configured_origin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from audit_log.note import load_or_create_signer

    monkeypatch.setenv("GBOPS_AUDIT_ORIGIN", "example.com/audit")
    monkeypatch.setenv("GBOPS_SECRETS_DIR", str(tmp_path / "s"))
    r = _cli(["init"])  # the folder from GBOPS_SECRETS_DIR
    assert r.exit_code == 0, r.output
    assert load_or_create_signer(tmp_path / "s" / "audit-signing.key", "example.com/audit", create=False)


def test_keys_init_needs_a_folder(tmp_path: Path) -> None:
    r = _cli(["init"])
    assert r.exit_code == 2
    assert "--dir" in r.output


def test_keys_init_never_overwrites_without_force(tmp_path: Path) -> None:
    sec = tmp_path / "s"
    assert _cli(["init", "--dir", str(sec)]).exit_code == 0
    before = {name: (sec / name).read_bytes() for name in FILE_NAMES}
    (sec / "record.key").unlink()
    r = _cli(["init", "--dir", str(sec)])
    assert r.exit_code == 0, r.output
    for name in FILE_NAMES - {"record.key"}:
        assert (sec / name).read_bytes() == before[name]
        assert f"已存在，未覆盖 / exists, kept:  {name}" in r.output
    assert "已生成 / created:  record.key" in r.output
    assert (sec / "record.key").read_bytes() != before["record.key"]
    assert _mode(sec / "record.key") == 0o600


def test_keys_init_force_replaces_and_warns(tmp_path: Path) -> None:
    sec = tmp_path / "s"
    assert _cli(["init", "--dir", str(sec)]).exit_code == 0
    before = {name: (sec / name).read_bytes() for name in FILE_NAMES}
    (sec / "totp.key").chmod(0o644)
    r = _cli(["init", "--dir", str(sec), "--force"])
    assert r.exit_code == 0, r.output
    for name in FILE_NAMES:
        assert (sec / name).read_bytes() != before[name]
        assert _mode(sec / name) == 0o600
        assert f"已替换 / REPLACED:  {name}" in r.output
    assert "recordings encrypted so far can no longer be read" in r.output
    assert [p.name for p in sec.iterdir() if p.name.endswith(".tmp")] == []


# ------------------------------------------------------------------------------------------ two nodes
async def test_two_nodes_with_one_secrets_dir_use_the_same_keys(tmp_path: Path) -> None:
    from audit_log.log import AuditLog
    from gbcore.secretbox import SecretBox
    from ops_portal.accounts.second_factor import totp_box
    from watermark.tag import load_or_create_key, public_key_text

    sec = tmp_path / "secrets"
    made = init_keys(sec, origin="gbops/34020000002000000001/audit")
    a = _settings(tmp_path / "node-a", redis_url=REDIS, secrets_dir=sec)
    b = _settings(tmp_path / "node-b", redis_url=REDIS, secrets_dir=sec)
    check_shared_keys(a)
    check_shared_keys(b)

    # the audit log of each node (as the platform builds it) signs with the one key auditors pinned
    log_a = AuditLog.from_settings(a, None, create_key=False)  # type: ignore[arg-type]
    log_b = AuditLog.from_settings(b, None, create_key=False)  # type: ignore[arg-type]
    assert log_a.verifier_key == log_b.verifier_key == made.audit_vkey

    tag_a = load_or_create_key(a.data_dir, path=a.watermark_tag_key_path)
    tag_b = load_or_create_key(b.data_dir, path=b.watermark_tag_key_path)
    assert public_key_text(tag_a) == public_key_text(tag_b) == made.watermark_public_key

    # what one node seals the other opens
    for prop in ("cascade_key_path", "record_key_path"):
        sealed = SecretBox.from_file(getattr(a, prop), create=False).seal("secret", b"aad")
        assert SecretBox.from_file(getattr(b, prop), create=False).open_text(sealed, b"aad") == "secret"
    assert totp_box(b).open_text(totp_box(a).seal("JBSWY3DPEHPK3PXP", b"x"), b"x") == "JBSWY3DPEHPK3PXP"

    # and neither generated a key of its own
    assert not (tmp_path / "node-a").exists() and not (tmp_path / "node-b").exists()
    assert {p.name for p in sec.iterdir()} == FILE_NAMES


# ------------------------------------------------------------------------------------------ backups
PASS = "Backup-pass#2026x"
FAST_N = 1 << 14


async def _installation(settings: Settings, *, create_keys: bool) -> None:
    """A migrated database with a signed audit checkpoint; every key present where ``settings`` put it."""
    from audit_log.log import Actor, AuditLog, Target
    from gbcore.db import make_engine, make_sessionmaker
    from gbcore.secretbox import load_key
    from gbops.migrate import migrate
    from watermark.tag import load_or_create_key

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.db_url)
    try:
        await migrate(engine)
        audit = AuditLog.from_settings(settings, make_sessionmaker(engine), create_key=create_keys)
        await audit.record(actor=Actor.system(), action="device.catalog_sync", target=Target("device", "d1"))
        await audit.checkpoint()
        load_or_create_key(settings.data_dir, path=settings.watermark_tag_key_path)
        for path in (settings.cascade_key_path, settings.record_key_path, settings.totp_key_path):
            load_key(path, create=create_keys)
    finally:
        await engine.dispose()


async def test_a_cluster_backup_restores_its_keys_into_the_secrets_dir(tmp_path: Path) -> None:
    import gbops.backup as bk

    sec = tmp_path / "secrets"
    init_keys(sec, origin="gbops/34020000002000000001/audit")
    src = _settings(tmp_path / "src", secrets_dir=sec, database_url=f"sqlite+aiosqlite:///{tmp_path / 'src.db'}")
    await _installation(src, create_keys=False)
    out = tmp_path / "b.gbbak"
    result = await bk.create_backup(src, out, PASS, scrypt_n=FAST_N)
    assert {str(sec / name) for name in FILE_NAMES} <= set(result.files)

    new_sec = tmp_path / "new-secrets"
    dst = _settings(tmp_path / "dst", secrets_dir=new_sec,
                    database_url=f"sqlite+aiosqlite:///{tmp_path / 'dst.db'}")
    await bk.restore_backup(dst, out, PASS)
    for name in FILE_NAMES:
        assert (new_sec / name).read_bytes() == (sec / name).read_bytes()
        assert _mode(new_sec / name) == 0o600
    assert not (tmp_path / "dst" / "keys").exists() and not (tmp_path / "dst" / "watermark-tag.key").exists()
    check_shared_keys(dst.model_copy(update={"redis_url": REDIS}))


async def test_a_single_process_backup_restored_into_a_cluster_puts_its_keys_in_the_secrets_dir(
        tmp_path: Path) -> None:
    import gbops.backup as bk

    src = _settings(tmp_path / "src", database_url=f"sqlite+aiosqlite:///{tmp_path / 'src.db'}")
    await _installation(src, create_keys=True)
    out = tmp_path / "b.gbbak"
    await bk.create_backup(src, out, PASS, scrypt_n=FAST_N)

    sec = tmp_path / "secrets"
    dst = _settings(tmp_path / "dst", secrets_dir=sec, database_url=f"sqlite+aiosqlite:///{tmp_path / 'dst.db'}")
    await bk.restore_backup(dst, out, PASS)
    old = key_paths(src)
    for name, path in key_paths(dst).items():
        assert path.parent == sec
        assert path.read_bytes() == old[name].read_bytes()
    assert not (tmp_path / "dst" / "keys").exists() and not (tmp_path / "dst" / "audit" / "signing.key").exists()
    assert (tmp_path / "dst" / "audit" / "checkpoint").exists()  # the rest of audit/ stays in the data dir
    check_shared_keys(dst.model_copy(update={"redis_url": REDIS}))


# ------------------------------------------------------------------------------------------ through the CLI
def _gbops(tmp_path: Path, *args: str, **env: str):
    import subprocess
    import sys

    base = {k: v for k, v in os.environ.items() if not k.startswith("GBOPS_")}
    base.update(GBOPS_CONFIG=str(tmp_path / "none.toml"), GBOPS_DATA_DIR=str(tmp_path / "data"), **env)
    return subprocess.run([sys.executable, "-m", "gbops.cli", *args], env=base, capture_output=True, text=True,
                          timeout=120)


def test_gbops_keys_init_is_a_command(tmp_path: Path) -> None:
    r = _gbops(tmp_path, "keys", "init", "--dir", str(tmp_path / "s"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert {p.name for p in (tmp_path / "s").iterdir()} == FILE_NAMES


def test_gbops_run_in_cluster_mode_refuses_without_shared_keys(tmp_path: Path) -> None:
    """A real node process with Redis configured and no secrets folder: exit 2 with the fix, no key made."""
    r = _gbops(tmp_path, "run", GBOPS_REDIS_URL=REDIS, GBOPS_SIP_PASSWORD="Xk9#long-pass", GBOPS_SIP_PORT="0",
               GBOPS_HTTP_PORT="0")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "GBOPS_SECRETS_DIR" in r.stderr and "gbops keys init --dir" in r.stderr
    assert "Traceback" not in r.stderr
    made = [p for p in (tmp_path / "data").rglob("*.key")] if (tmp_path / "data").exists() else []
    assert made == []


def test_the_watermark_services_of_two_nodes_sign_with_the_shared_tag_key(tmp_path: Path) -> None:
    """The live hub and the download jobs, built as `gbops run` builds them, use GBOPS_SECRETS_DIR's key."""
    from watermark.config import WatermarkConfig
    from watermark.downloads import DownloadManager
    from watermark.pipeline import WatermarkHub
    from watermark.tag import public_key_text

    sec = tmp_path / "secrets"
    made = init_keys(sec, origin="gbops/34020000002000000001/audit")
    for node in ("node-a", "node-b"):
        config = WatermarkConfig.from_settings(_settings(tmp_path / node, redis_url=REDIS, secrets_dir=sec))
        assert public_key_text(WatermarkHub.from_config(config).key) == made.watermark_public_key
        jobs = DownloadManager(config, None)  # type: ignore[arg-type]
        assert public_key_text(jobs._signing_key()) == made.watermark_public_key
    assert not (tmp_path / "node-a" / "watermark-tag.key").exists()
    assert not (tmp_path / "node-b" / "watermark-tag.key").exists()
