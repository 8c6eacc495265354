"""Backup and restore (issue 16): round trips on SQLite and PostgreSQL, the restored audit log verifies with
``gbops audit verify`` against what was pinned before, and every damaged, foreign or misdirected restore is
refused before anything is written."""

from __future__ import annotations

import asyncio
import io
import os
import secrets
import stat
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import make_url, select, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from audit_log.log import Actor, AuditLog, Target
from device_registry.models import OrgNode
from device_registry.service import Registry
from gbcore.db import begin_write, make_engine, make_sessionmaker
from gbcore.secretbox import load_key
from gbcore.settings import Settings
from gbops import backup as bk
from gbops.migrate import migrate
from ops_portal.users import ensure_admin
from tests.conftest import need, pg_test_url

ROOT = Path(__file__).resolve().parents[2]
PASS = "Backup-pass#2026x"
FAST_N = 1 << 14  # scrypt cost of the test files (the default is 2**17); the header carries it


# ----------------------------------------------------------------------------------------- helpers
def _read(path: Path) -> bytes:
    return path.read_bytes()


def _create(path: Path):
    return open(path, "wb")  # noqa: SIM115 - the caller's with-block closes it


def gbops(*args: str, data_dir: Path, db_url: str | None = None, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("GBOPS_")}
    base.update(GBOPS_DATA_DIR=str(data_dir), GBOPS_CONFIG=str(data_dir.parent / "none.toml"), PYTHONPATH=str(ROOT),
                **env)
    if db_url is not None:
        base["GBOPS_DATABASE_URL"] = db_url
    return subprocess.run([sys.executable, "-m", "gbops.cli", *args], env=base, capture_output=True, text=True,
                          timeout=180, cwd=data_dir.parent, stdin=subprocess.DEVNULL)


async def _fresh_pg_database() -> str:
    base = make_url(pg_test_url())
    name = f"{base.database or 'test'}_restore_{os.getpid()}_{secrets.token_hex(3)}"
    engine = create_async_engine(base, poolclass=NullPool, isolation_level="AUTOCOMMIT", connect_args={"timeout": 5})
    try:
        async with engine.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await engine.dispose()
    return base.set(database=name).render_as_string(hide_password=False)


async def _drop_pg_database(url: str) -> None:
    name = make_url(url).database
    engine = create_async_engine(pg_test_url(), poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await engine.dispose()


@pytest.fixture
async def target_url(db_url: str, tmp_path: Path):
    """An empty database to restore into, on the same back end as ``db_url``."""
    if db_url.startswith("sqlite"):
        yield None  # the data dir's gbops.db
        return
    try:
        url = await _fresh_pg_database()
    except Exception as exc:
        need(False, f"cannot create a PostgreSQL database: {exc}")
    yield url
    await _drop_pg_database(url)


async def dump(url: str) -> dict[str, list[tuple]]:
    """Every table's rows (ordered by primary key), as the application reads them."""
    metadata = bk._metadata()
    engine = make_engine(url)
    out: dict[str, list[tuple]] = {}
    try:
        async with engine.connect() as conn:
            for table in metadata.sorted_tables:
                rows = (await conn.execute(select(table).order_by(*table.primary_key.columns))).all()
                out[table.name] = [tuple(r) for r in rows]
            out["alembic_version"] = [tuple(r) for r in await conn.execute(text("SELECT * FROM alembic_version"))]
    finally:
        await engine.dispose()
    return out


async def make_source(data_dir: Path, db_url: str) -> tuple[Settings, AuditLog, object]:
    """An installation with an admin, a device with its own SIP password, an org tree whose parent has the
    larger id, audited actions with Chinese text and a signed checkpoint, the keys, and files that must
    stay out of a backup (recordings, downloads, a log, an earlier backup)."""
    settings = Settings(data_dir=data_dir, database_url=db_url)
    os.makedirs(data_dir)
    engine = make_engine(db_url)
    await migrate(engine)
    sm = make_sessionmaker(engine)
    audit = AuditLog.from_settings(settings, sm)
    await ensure_admin(sm, settings)
    await Registry(sm).set_device_password("34020000001320000001", settings.realm, "Cam-Restore#2026")
    async with sm() as session:
        await begin_write(session)
        session.add(OrgNode(id=7, name="市局 / city bureau", kind="manual", parent_id=None))
        await session.flush()
        session.add(OrgNode(id=3, name="分局 / branch", kind="manual", parent_id=7))
        await audit.append(session, actor=Actor("user", "1", "管理员"), action="device.password_set",
                           target=Target("device", "34020000001320000001"), client_ip="192.0.2.1",
                           detail={"cleared": False, "备注": "中文"})
        await session.commit()
    for i in range(30):
        await audit.record(actor=Actor("user", "1", "admin"), action="device.catalog_sync",
                           target=Target("device", f"dev{i}"), detail={"sn": i})
    await audit.checkpoint()
    load_key(data_dir / "keys" / "record.key")
    load_key(data_dir / "keys" / "cascade.key")
    (data_dir / "watermark-tag.key").write_bytes(b"tag key bytes")
    for rel in ("recordings/a/seg.ps", "downloads/job.mp4", "platform.log", "backups/old.gbbak"):
        (data_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (data_dir / rel).write_bytes(b"not in a backup")
    return settings, audit, engine


def verify_audit(data_dir: Path, db_url: str | None, tmp_path: Path, key: Path, pin: Path) -> str:
    out = tmp_path / f"bundle-{secrets.token_hex(3)}"
    r = gbops("audit", "export", "--out", str(out), data_dir=data_dir, db_url=db_url)
    assert r.returncode == 0, r.stderr
    r = gbops("audit", "verify", str(out), "--key", str(key), "--pin", str(pin), data_dir=data_dir, db_url=db_url)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "VALID" in r.stdout
    return r.stdout


# ----------------------------------------------------------------------------------------- round trip
async def test_round_trip_of_a_running_platform(db_url: str, target_url: str | None, tmp_path: Path) -> None:
    src_dir = tmp_path / "src"
    settings, audit, engine = await make_source(src_dir, db_url)
    (tmp_path / "verifier.key").write_text(audit.verifier_key + "\n")
    (tmp_path / "pinned").write_text((await audit.latest_checkpoint()).note)

    # the platform keeps writing while the backup runs: audit entries and checkpoints (the pinned
    # checkpoint file moves ahead of the rows the backup reads unless the backup reads it first)
    stop = asyncio.Event()

    async def busy() -> int:
        n = 0
        while not stop.is_set():
            await audit.record(actor=Actor.system(), action="device.catalog_sync", target=Target("device", f"x{n}"))
            if n % 5 == 0:
                await audit.checkpoint()
            n += 1
            await asyncio.sleep(0)
        return n

    writer = asyncio.create_task(busy())
    await asyncio.sleep(0.2)
    out = tmp_path / "b.gbbak"
    seen: list[tuple[str, int, int]] = []
    result = await bk.create_backup(settings, out, PASS, scrypt_n=FAST_N, progress=lambda *a: seen.append(a))
    stop.set()
    written = await writer
    assert written > 0
    await audit.stop()
    await engine.dispose()

    assert result.bytes == out.stat().st_size and stat.S_IMODE(out.stat().st_mode) == 0o600
    assert sorted(result.files) == ["audit/checkpoint", "audit/signing.key", "initial-admin-password.txt",
                                    "keys/cascade.key", "keys/record.key", "watermark-tag.key"]
    assert b"Cam-Restore" not in out.read_bytes() and b"record" not in out.read_bytes()  # encrypted
    source = await dump(db_url)

    dst_dir = tmp_path / "dst"
    dst = Settings(data_dir=dst_dir, database_url=target_url)
    restored = await bk.restore_backup(dst, out, PASS)
    assert restored.sha256 == result.sha256 and restored.revision == result.revision

    after = await dump(dst.db_url)
    backed = {p["part"][6:]: p["rows"] for p in result.parts if p["part"].startswith("table:")}
    for name, rows in after.items():
        if name == "audit_entries":
            n = backed[name]
            assert rows[:n] == source[name][:n]  # the snapshot: a prefix of the source, which went on
            assert len(rows) == n + 1 and b'"action":"backup.restore"' in rows[-1][-1]
        elif name == "audit_checkpoints":  # the backup's, then the one signed after the restore entry
            n = backed[name]
            assert rows[:n] == source[name][:n] and len(rows) == n + 1
        elif name == "audit_tree_nodes":  # derived hashes: the same below the backed-up entries
            n, known = backed["audit_entries"], {r[:2]: r for r in source[name]}
            common = [r for r in rows if r[:2] in known and (r[1] + 1) << r[0] <= n]
            assert common and all(known[r[:2]] == r for r in common)
        else:
            assert rows == source[name], name
    assert after["org_nodes"] and {r[0] for r in after["org_nodes"]} == {3, 7}

    # keys: same bytes, private; what must stay out stayed out
    for rel in result.files:
        if rel != "audit/checkpoint":  # (re-signed after the restore entry, by the audit log, as always)
            assert (dst_dir / rel).read_bytes() == (src_dir / rel).read_bytes()
            assert stat.S_IMODE((dst_dir / rel).stat().st_mode) == 0o600
    for rel in ("recordings", "downloads", "platform.log", "backups"):
        assert not (dst_dir / rel).exists()

    # ids go on after the restored ones (PostgreSQL sequences reset)
    engine = make_engine(dst.db_url)
    try:
        async with make_sessionmaker(engine)() as session:
            await begin_write(session)
            node = OrgNode(name="new", kind="manual")
            session.add(node)
            await session.commit()
            assert node.id > 7
    finally:
        await engine.dispose()

    # gbops audit verify: the restored log is valid and extends the checkpoint pinned before the backup
    report = verify_audit(dst_dir, target_url, tmp_path, tmp_path / "verifier.key", tmp_path / "pinned")
    assert "pin" in report.lower() or "VALID" in report


# ----------------------------------------------------------------------------------------- refusals
@pytest.fixture
async def sqlite_backup(tmp_path: Path):
    db = f"sqlite+aiosqlite:///{tmp_path / 'src' / 'gbops.db'}"
    settings, audit, engine = await make_source(tmp_path / "src", db)
    await audit.stop()
    await engine.dispose()
    out = tmp_path / "b.gbbak"
    await bk.create_backup(settings, out, PASS, scrypt_n=FAST_N)
    return out


async def _refused(tmp_path: Path, path: Path, passphrase: str = PASS, **settings) -> str:
    dst_dir = tmp_path / f"dst-{secrets.token_hex(2)}"
    with pytest.raises(bk.BackupError) as err:
        await bk.restore_backup(Settings(data_dir=dst_dir, **settings), path, passphrase)
    assert not dst_dir.exists() or not any(dst_dir.iterdir()), "nothing may be written"
    return str(err.value)


async def test_wrong_passphrase_refused(sqlite_backup: Path, tmp_path: Path) -> None:
    assert "wrong backup passphrase" in await _refused(tmp_path, sqlite_backup, "Other-pass#2026x")


@pytest.mark.parametrize("where", ["header", "middle", "last"])
async def test_flipped_byte_refused(sqlite_backup: Path, tmp_path: Path, where: str) -> None:
    data = bytearray(_read(sqlite_backup))
    at = {"header": 30, "middle": len(data) // 2, "last": len(data) - 1}[where]
    data[at] ^= 0x01
    bad = tmp_path / "flipped.gbbak"
    bad.write_bytes(bytes(data))
    message = await _refused(tmp_path, bad)
    assert "damaged" in message or "wrong backup passphrase" in message or "not a gbops backup" in message


@pytest.mark.parametrize("cut", [1, 17, 400])
async def test_truncated_or_extended_file_refused(sqlite_backup: Path, tmp_path: Path, cut: int) -> None:
    data = _read(sqlite_backup)
    short = tmp_path / "short.gbbak"
    short.write_bytes(data[:-cut])
    assert "damaged" in await _refused(tmp_path, short)
    longer = tmp_path / "long.gbbak"
    longer.write_bytes(data + b"\x00" * cut)
    assert "data after the end" in await _refused(tmp_path, longer)


def _sealed(chunks: int) -> tuple[bytes, bytes]:
    plain = os.urandom(bk.CHUNK_SIZE * chunks + 1234)  # incompressible: one frame per MiB
    buf = io.BytesIO()
    w = bk._SealedWriter(buf, PASS, scrypt_n=FAST_N)
    w.write(plain)
    w.close()
    return buf.getvalue(), plain


def _frames(data: bytes) -> tuple[bytes, list[bytes]]:
    n = int.from_bytes(data[10:12], "big")
    pos = 12 + n
    header, frames = data[:pos], []
    while pos < len(data):
        length = int.from_bytes(data[pos + 1:pos + 5], "big")
        frames.append(data[pos:pos + 5 + length])
        pos += 5 + length
    return header, frames


def test_chunks_reordered_dropped_or_refinalised_are_refused() -> None:
    data, plain = _sealed(3)
    assert b"".join(bk._open_sealed(io.BytesIO(data), PASS)) == plain
    header, frames = _frames(data)
    assert len(frames) == 4 and frames[-1][0] == 1 and all(f[0] == 0 for f in frames[:-1])
    cases = {
        "swapped": header + frames[1] + frames[0] + frames[2] + frames[3],
        "dropped": header + frames[0] + frames[2] + frames[3],
        "no final chunk": header + b"".join(frames[:-1]),
        "early final": header + bytes([1]) + frames[0][1:],
        "duplicated": header + frames[0] + frames[0] + frames[1] + frames[2] + frames[3],
    }
    for what, bad in cases.items():
        with pytest.raises(bk.BackupError, match="damaged"):
            b"".join(bk._open_sealed(io.BytesIO(bad), PASS))
        assert what


async def test_restore_into_a_used_target_refused(db_url: str, target_url: str | None, tmp_path: Path) -> None:
    settings, audit, engine = await make_source(tmp_path / "src", db_url)
    await audit.stop()
    await engine.dispose()
    out = tmp_path / "b.gbbak"
    await bk.create_backup(settings, out, PASS, scrypt_n=FAST_N)
    before = await dump(db_url)

    # onto itself: data dir and database in use
    with pytest.raises(bk.BackupError, match="not empty"):
        await bk.restore_backup(settings, out, PASS)
    # an empty data dir but a database in use
    with pytest.raises(bk.BackupError, match="target database is not empty"):
        await bk.restore_backup(Settings(data_dir=tmp_path / "d1", database_url=db_url), out, PASS)
    assert await dump(db_url) == before
    # an empty database but a data dir with something in it
    (tmp_path / "d2").mkdir()
    (tmp_path / "d2" / "notes.txt").write_text("mine")
    with pytest.raises(bk.BackupError, match="data directory .* is not empty"):
        await bk.restore_backup(Settings(data_dir=tmp_path / "d2", database_url=target_url), out, PASS)
    assert sorted(p.name for p in (tmp_path / "d2").iterdir()) == ["notes.txt"]
    # a different audit origin (another platform's settings) would not verify: refused
    with pytest.raises(bk.BackupError, match="origin"):
        await bk.restore_backup(Settings(data_dir=tmp_path / "d3", database_url=target_url,
                                         sip_id="34020000002000000009"), out, PASS)
    # and the empty target still takes it
    await bk.restore_backup(Settings(data_dir=tmp_path / "d3", database_url=target_url), out, PASS)


async def test_backup_from_a_newer_schema_refused(tmp_path: Path) -> None:
    bad = tmp_path / "future.gbbak"
    with _create(bad) as fh:
        w = bk._SealedWriter(fh, PASS, scrypt_n=FAST_N)
        w.write(bk._line({"t": "begin", "format": 1, "created_at": datetime.now(UTC).isoformat(),
                          "revision": "0099_from_the_future", "dialect": "sqlite", "origin": None}))
        w.write(bk._line({"t": "manifest", "revision": "0099_from_the_future", "tables": 0, "rows": 0, "parts": []}))
        w.write(bk._line({"t": "end"}))
        w.close()
    assert "newer schema revision" in await _refused(tmp_path, bad)


async def test_manifest_must_match(tmp_path: Path) -> None:
    bad = tmp_path / "liar.gbbak"
    with _create(bad) as fh:
        w = bk._SealedWriter(fh, PASS, scrypt_n=FAST_N)
        w.write(bk._line({"t": "begin", "format": 1, "created_at": datetime.now(UTC).isoformat(),
                          "revision": "0001", "dialect": "sqlite", "origin": None}))
        w.write(bk._line({"t": "table", "name": "devices", "columns": ["id"]}))
        w.write(bk._line(["x"]))
        w.write(bk._line({"t": "table_end", "name": "devices", "rows": 1}))
        w.write(bk._line({"t": "manifest", "revision": "0001", "tables": 1, "rows": 2,
                          "parts": [{"part": "table:devices", "rows": 2, "sha256": "0" * 64}]}))
        w.write(bk._line({"t": "end"}))
        w.close()
    assert "manifest" in await _refused(tmp_path, bad)


def test_passphrase_rule() -> None:
    assert "12" in bk.check_passphrase("Ab1#short")
    assert "weak" in bk.check_passphrase("aaaaaaaaaaaaaaaa")  # one character class
    assert bk.check_passphrase(PASS) is None
    assert bk.check_passphrase("长城-监控平台-备份-2026") is None


def test_value_types_round_trip() -> None:
    from decimal import Decimal
    from uuid import uuid4

    values = [None, True, 3, 2**62, "文字", 1.5, float("inf"), datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
              datetime(2026, 1, 2).date(), b"\x00\xff", Decimal("1.10"), uuid4(), {"a": [1, {"$": "x"}]}, [1, 2]]
    import json

    back = [bk._dec(v) for v in json.loads(bk._line([bk._enc(v) for v in values]))]
    assert back == values


# ----------------------------------------------------------------------------------------- command line
def test_cli_backup_and_restore(tmp_path: Path) -> None:
    src = tmp_path / "src"
    db = f"sqlite+aiosqlite:///{src / 'gbops.db'}"

    async def setup() -> None:
        _, audit, engine = await make_source(src, db)
        await audit.stop()
        await engine.dispose()

    asyncio.run(setup())
    (src / "backups" / "old.gbbak").unlink()
    (tmp_path / "pass").write_text(PASS + "\n")
    (tmp_path / "weak").write_text("aaaaaaaaaaaaaaaa\n")
    r = gbops("backup", "--out", str(tmp_path / "x.gbbak"), "--passphrase-file", str(tmp_path / "weak"), data_dir=src)
    assert r.returncode == 2 and "weak" in r.stderr and not (tmp_path / "x.gbbak").exists()
    r = gbops("backup", "--out", str(tmp_path / "x.gbbak"), "--passphrase", PASS, data_dir=src)
    assert r.returncode == 2  # never on the command line
    r = gbops("backup", "--out", str(tmp_path / "x.gbbak"), data_dir=src)
    assert r.returncode == 2 and "passphrase" in r.stderr  # no terminal to ask on
    r = gbops("backup", "--out", str(tmp_path / "x.gbbak"), "--passphrase-file", str(tmp_path / "pass"), data_dir=src)
    assert r.returncode == 0, r.stderr
    assert "recordings, download files and logs are NOT in the backup" in r.stdout
    assert PASS not in r.stdout + r.stderr

    async def last_entry(url: str) -> tuple[str, str]:
        engine = make_engine(url)
        try:
            async with engine.connect() as conn:
                row = (await conn.execute(text("SELECT action, target_id FROM audit_entries ORDER BY seq DESC "
                                               "LIMIT 1"))).one()
                return row[0], row[1]
        finally:
            await engine.dispose()

    assert asyncio.run(last_entry(db)) == ("backup.create", "x.gbbak")

    # default name in the backup dir, passphrase from the environment
    r = gbops("backup", data_dir=src, GBOPS_BACKUP_PASSPHRASE=PASS)
    assert r.returncode == 0, r.stderr
    status = bk.backup_status(Settings(data_dir=src))
    assert status["count"] == 1 and status["last_file"].startswith("gbops-backup-") and not status["scheduled"]
    assert abs((status["last_at"] - datetime.now(UTC)).total_seconds()) < 120

    dst = tmp_path / "dst"
    r = gbops("restore", str(tmp_path / "x.gbbak"), data_dir=dst, GBOPS_BACKUP_PASSPHRASE="Wrong-pass#2026x")
    assert r.returncode == 2 and "wrong backup passphrase" in r.stderr
    r = gbops("restore", str(tmp_path / "x.gbbak"), "--passphrase-file", str(tmp_path / "pass"), data_dir=dst)
    assert r.returncode == 0, r.stderr
    assert "recordings, download files and logs were not in the backup" in r.stdout
    assert asyncio.run(last_entry(f"sqlite+aiosqlite:///{dst / 'gbops.db'}")) == ("backup.restore", "x.gbbak")
    r = gbops("restore", str(tmp_path / "x.gbbak"), "--passphrase-file", str(tmp_path / "pass"), data_dir=dst)
    assert r.returncode == 2 and "not empty" in r.stderr


# ----------------------------------------------------------------------------------------- schedule
async def test_scheduled_backups_are_named_in_beijing_time_kept_and_audited(tmp_path: Path) -> None:
    src = tmp_path / "src"
    db = f"sqlite+aiosqlite:///{src / 'gbops.db'}"
    _, audit, engine = await make_source(src, db)
    (src / "backups" / "old.gbbak").unlink()
    (tmp_path / "pass").write_text(PASS + "\n")
    now = [datetime(2026, 3, 1, 18, 30, tzinfo=UTC)]  # 02:30 on 2 March in Beijing
    settings = Settings(data_dir=src, database_url=db, backup_passphrase_file=tmp_path / "pass", backup_keep=2,
                        backup_schedule="02:30")
    sched = bk.BackupScheduler(settings, audit, clock=lambda: now[0], scrypt_n=FAST_N)
    assert bk._until(settings, datetime(2026, 3, 1, 18, 29, tzinfo=UTC)) == 60
    assert bk._until(settings, now[0]) == 24 * 3600
    for day in range(3):
        now[0] = datetime(2026, 3, 1 + day, 18, 30, tzinfo=UTC)
        await sched.run_once()
    names = sorted(p.name for p in (src / "backups").iterdir())
    assert names == ["gbops-backup-20260303-023000.gbbak", "gbops-backup-20260304-023000.gbbak"]
    status = bk.backup_status(settings)
    assert status["scheduled"] and status["count"] == 2
    assert status["last_file"] == "gbops-backup-20260304-023000.gbbak"
    assert status["last_at"] == datetime(2026, 3, 3, 18, 30, tzinfo=UTC)
    async with engine.connect() as conn:
        rows = (await conn.execute(text("SELECT action, target_id FROM audit_entries WHERE action LIKE 'backup.%' "
                                        "ORDER BY seq"))).all()
    assert [tuple(r) for r in rows] == [("backup.create", n) for n in (
        "gbops-backup-20260302-023000.gbbak", "gbops-backup-20260303-023000.gbbak",
        "gbops-backup-20260304-023000.gbbak")]

    # a failure is logged and audited, and the loop goes on
    (tmp_path / "pass").unlink()
    now[0] = datetime(2026, 3, 4, 18, 30, tzinfo=UTC)
    with pytest.raises(bk.BackupError):
        await sched.run_once()
    async with engine.connect() as conn:
        last = (await conn.execute(text("SELECT action, target_id FROM audit_entries ORDER BY seq DESC LIMIT 1"))).one()
    assert tuple(last) == ("backup.failed", "gbops-backup-20260305-023000.gbbak")
    assert not bk.BackupScheduler(Settings(data_dir=src, backup_passphrase_file=None), audit).enabled
    await audit.stop()
    await engine.dispose()


async def test_a_sqlite_backup_restores_into_postgresql(tmp_path: Path) -> None:
    db = f"sqlite+aiosqlite:///{tmp_path / 'src' / 'gbops.db'}"
    settings, audit, engine = await make_source(tmp_path / "src", db)
    await audit.stop()
    await engine.dispose()
    await bk.create_backup(settings, tmp_path / "b.gbbak", PASS, scrypt_n=FAST_N)
    try:
        pg = await _fresh_pg_database()
    except Exception as exc:
        need(False, f"cannot create a PostgreSQL database: {exc}")
    try:
        await bk.restore_backup(Settings(data_dir=tmp_path / "dst", database_url=pg), tmp_path / "b.gbbak", PASS)
        source, after = await dump(db), await dump(pg)
        for name in source:
            if not name.startswith("audit_"):
                assert after[name] == source[name], name
        assert after["audit_entries"][:-1] == source["audit_entries"]
    finally:
        await _drop_pg_database(pg)


async def test_the_scheduler_runs_at_its_time(tmp_path: Path) -> None:
    src = tmp_path / "src"
    db = f"sqlite+aiosqlite:///{src / 'gbops.db'}"
    _, audit, engine = await make_source(src, db)
    (tmp_path / "pass").write_text(PASS + "\n")
    os.chmod(tmp_path / "pass", 0o600)
    settings = Settings(data_dir=src, database_url=db, backup_passphrase_file=tmp_path / "pass",
                        backup_schedule="02:30", backup_dir=tmp_path / "elsewhere")
    clock = datetime(2026, 3, 1, 18, 29, 59, tzinfo=UTC)  # one second before 02:30 in Beijing
    sched = bk.BackupScheduler(settings, audit, clock=lambda: clock, scrypt_n=FAST_N)
    sched.start()
    try:
        for _ in range(200):
            if (tmp_path / "elsewhere" / "gbops-backup-20260302-022959.gbbak").exists():
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("no scheduled backup")
        assert sched.periodic.running
    finally:
        await sched.stop()
        await audit.stop()
        await engine.dispose()
    assert bk.backup_status(settings)["count"] == 1


def test_tree_rows_are_ordered_parents_first_however_deep() -> None:
    import random

    table = bk._metadata().tables["org_nodes"]
    cols = [c.name for c in table.columns]
    ids = list(range(1, 5001))
    random.Random(7).shuffle(ids)
    rows = []
    for i, ident in enumerate(ids):  # one chain 5000 deep, parents with larger and smaller ids
        row = [None] * len(cols)
        row[cols.index("id")], row[cols.index("parent_id")] = ident, ids[i - 1] if i else None
        rows.append(row)
    random.Random(8).shuffle(rows)
    out = bk._row_order(table, cols, rows)
    at = {r[cols.index("id")]: i for i, r in enumerate(out)}
    assert len(out) == len(rows)
    assert all(r[cols.index("parent_id")] is None or at[r[cols.index("parent_id")]] < at[r[cols.index("id")]]
               for r in out)


def _small_backup() -> bytes:
    buf = io.BytesIO()
    w = bk._SealedWriter(buf, PASS, scrypt_n=1 << 10)
    w.write(bk._line({"t": "begin", "format": 1, "created_at": "2026-01-01T00:00:00+00:00", "revision": "0001",
                      "dialect": "sqlite", "origin": None}))
    w.write(bk._line({"t": "manifest", "revision": "0001", "tables": 0, "rows": 0, "parts": []}))
    w.write(bk._line({"t": "end"}))
    w.close()
    return buf.getvalue()


_SMALL = _small_backup()


def _check_bytes(data: bytes) -> None:
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".gbbak") as f:
        f.write(data)
        f.flush()
        bk._verify_file(Path(f.name), PASS)


def test_small_backup_checks_out() -> None:
    _check_bytes(_SMALL)


@hsettings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(_SMALL) - 1), st.integers(1, 255)), min_size=1, max_size=4),
       st.integers(0, len(_SMALL)), st.binary(max_size=8))
def test_any_damage_is_a_clear_refusal(flips, cut, tail) -> None:
    """Flipped bytes, a cut, extra bytes: always BackupError (never another exception, never accepted)."""
    data = bytearray(_SMALL)
    for at, mask in flips:
        data[at] ^= mask
    damaged = bytes(data[:cut]) + tail
    if damaged == _SMALL:
        return
    with pytest.raises(bk.BackupError):
        _check_bytes(damaged)
