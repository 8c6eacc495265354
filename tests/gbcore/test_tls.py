"""gbcore.tls: the self-signed certificate (generated once, 0600, reused, fingerprint), a configured one
(checked: loads, key matches, not expired), the HTTPS rule, the server context (real handshakes)."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import socket
import ssl
import stat
import threading
import warnings
from pathlib import Path

import pytest
from cryptography import x509

from gbcore import tls
from gbcore.settings import Settings


def _settings(tmp_path: Path, **kw) -> Settings:
    return Settings(data_dir=tmp_path / "data", **kw)


def _der_fingerprint(pem_path: Path) -> str:
    der = ssl.PEM_cert_to_DER_cert(pem_path.read_text())
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, 64, 2))


# ------------------------------------------------------------------------------------------ self-signed
def test_generated_once_0600_fingerprint_printed_once(tmp_path: Path, capsys) -> None:
    s = _settings(tmp_path, http_host="192.0.2.10", sip_host="198.51.100.20")
    m = tls.load_certificate(s)
    out = capsys.readouterr().out
    assert m.source == "self_signed" and m.generated
    assert m.cert_file == s.data_dir / "tls" / "cert.pem" and m.key_file == s.data_dir / "tls" / "key.pem"
    assert stat.S_IMODE(m.key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(m.cert_file.parent.stat().st_mode) == 0o700
    # the fingerprint is SHA-256 over the DER, as a browser shows it, printed with the path
    assert m.fingerprint_sha256 == _der_fingerprint(m.cert_file)
    assert out.count(m.fingerprint_sha256) == 1 and str(m.cert_file) in out
    assert "BEGIN" not in out  # no key material on stdout

    cert = x509.load_pem_x509_certificate(m.cert_file.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    ips = set(san.get_values_for_type(x509.IPAddress))
    assert {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("192.0.2.10"),
            ipaddress.ip_address("198.51.100.20")} <= ips
    names = san.get_values_for_type(x509.DNSName)
    assert "localhost" in names and socket.gethostname().lower() in names
    assert cert.not_valid_after_utc - cert.not_valid_before_utc > dt.timedelta(days=365)

    # reused at the next start: same files, same fingerprint, nothing printed
    before = m.cert_file.read_bytes(), m.key_file.read_bytes()
    again = tls.load_certificate(s)
    assert not again.generated and again.fingerprint_sha256 == m.fingerprint_sha256
    assert (m.cert_file.read_bytes(), m.key_file.read_bytes()) == before
    assert capsys.readouterr().out == ""


def test_key_mode_repaired_and_expired_self_signed_renewed(tmp_path: Path, capsys) -> None:
    s = _settings(tmp_path)
    m = tls.load_certificate(s, announce=False)
    os.chmod(m.key_file, 0o644)
    assert stat.S_IMODE(tls.load_certificate(s, announce=False).key_file.stat().st_mode) == 0o600
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=tls.SELF_SIGNED_DAYS + 1)
    renewed = tls.load_certificate(s, now=later)
    assert renewed.generated and renewed.fingerprint_sha256 != m.fingerprint_sha256
    assert renewed.not_after > later


# ------------------------------------------------------------------------------------------ configured
def _pair(tmp_path: Path, name: str) -> tuple[Path, Path]:
    cert, key = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    tls.generate_self_signed(_settings(tmp_path), cert, key)
    return cert, key


def test_configured_certificate_used_and_checked(tmp_path: Path, capsys) -> None:
    cert_a, key_a = _pair(tmp_path, "a")
    cert_b, key_b = _pair(tmp_path, "b")
    m = tls.load_certificate(_settings(tmp_path, tls_cert_file=cert_a, tls_key_file=key_a))
    assert m.source == "configured" and m.cert_file == cert_a and m.fingerprint_sha256 == _der_fingerprint(cert_a)
    assert not (tmp_path / "data" / "tls").exists()  # nothing generated next to a configured certificate
    assert capsys.readouterr().out == ""

    with pytest.raises(tls.TlsError, match="不匹配 / the private key .* does not match"):
        tls.load_certificate(_settings(tmp_path, tls_cert_file=cert_a, tls_key_file=key_b))
    with pytest.raises(tls.TlsError, match="set together"):
        tls.load_certificate(_settings(tmp_path, tls_cert_file=cert_a))
    with pytest.raises(tls.TlsError, match="cannot read"):
        tls.load_certificate(_settings(tmp_path, tls_cert_file=tmp_path / "none.crt", tls_key_file=key_a))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(tls.TlsError, match="is not a PEM certificate"):
        tls.load_certificate(_settings(tmp_path, tls_cert_file=garbage, tls_key_file=key_a))
    with pytest.raises(tls.TlsError, match="is not a PEM private key"):
        tls.load_certificate(_settings(tmp_path, tls_cert_file=cert_a, tls_key_file=garbage))
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=tls.SELF_SIGNED_DAYS + 1)
    with pytest.raises(tls.TlsError, match="expired"):
        tls.load_certificate(_settings(tmp_path, tls_cert_file=cert_b, tls_key_file=key_b), now=later)
    # a start failure the CLI reports as such ("无法启动 / cannot start")
    assert issubclass(tls.TlsError, OSError)


# ------------------------------------------------------------------------------------------ the rule
@pytest.mark.parametrize(("kw", "https", "reason"), [
    ({"http_host": "0.0.0.0"}, True, None),
    ({"http_host": "192.0.2.10"}, True, None),
    ({"http_host": "127.0.0.1"}, False, "loopback"),
    ({"http_host": "::1"}, False, "loopback"),
    ({"http_host": "localhost"}, False, "loopback"),
    ({"http_host": "0.0.0.0", "http_plain": True}, False, "reverse_proxy"),
])
def test_portal_mode(tmp_path: Path, kw: dict, https: bool, reason: str | None) -> None:
    assert tls.portal_mode(_settings(tmp_path, **kw)) == (https, reason)


def test_configured_certificate_means_https_even_on_loopback(tmp_path: Path) -> None:
    cert, key = _pair(tmp_path, "a")
    s = _settings(tmp_path, http_host="127.0.0.1", tls_cert_file=cert, tls_key_file=key)
    assert tls.portal_mode(s) == (True, None)


def test_tls_status_reads_without_generating(tmp_path: Path) -> None:
    s = _settings(tmp_path, http_host="127.0.0.1", sip_tls_port=0)
    st = tls.tls_status(s)
    assert st["https"] is False and st["plain_reason"] == "loopback" and st["sip_tls"] is False
    assert st["fingerprint_sha256"] is None and not (s.data_dir / "tls").exists()
    s = _settings(tmp_path, http_host="0.0.0.0")
    setup = tls.resolve(s)  # what gbops run does: HTTPS, certificate generated
    st = tls.tls_status(s)
    assert setup.https and st["https"] is True and st["plain_reason"] is None and st["sip_tls"] is True
    assert st["fingerprint_sha256"] == setup.material.fingerprint_sha256 and st["certificate"] == "self_signed"
    cert_a, _ = _pair(tmp_path, "a")
    _, key_b = _pair(tmp_path, "b")
    st = tls.tls_status(_settings(tmp_path, tls_cert_file=cert_a, tls_key_file=key_b))
    assert st["fingerprint_sha256"] is None and "does not match" in st["error"]


def test_plain_loopback_without_sip_tls_needs_no_certificate(tmp_path: Path) -> None:
    s = _settings(tmp_path, http_host="127.0.0.1", sip_tls_port=0)
    setup = tls.resolve(s)
    assert not setup.https and setup.material is None and setup.context() is None
    assert not (s.data_dir / "tls").exists()


# ------------------------------------------------------------------------------------------ handshakes
def _serve_once(ctx: ssl.SSLContext) -> int:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def run() -> None:
        conn, _ = listener.accept()
        listener.close()
        try:
            with ctx.wrap_socket(conn, server_side=True) as s:
                s.sendall(b"ok")
        except (ssl.SSLError, OSError):
            conn.close()

    threading.Thread(target=run, daemon=True).start()
    return listener.getsockname()[1]


def _client(port: int, version: ssl.TLSVersion | None = None, cafile: Path | None = None) -> str | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.1 is deprecated: that is the point
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if cafile is None:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        else:
            ctx.load_verify_locations(cafile=str(cafile))
        if version is not None:
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
            ctx.minimum_version = ctx.maximum_version = version
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
        assert s.recv(2) == b"ok"
        return s.version()


def test_server_context_refuses_tls_1_1_and_verifies_against_its_certificate(tmp_path: Path) -> None:
    m = tls.load_certificate(_settings(tmp_path), announce=False)
    # control: the same TLS 1.1 client gets through to a server that allows it, so a refusal below is ours
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        weak = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        weak.set_ciphers("DEFAULT:@SECLEVEL=0")
        weak.minimum_version = ssl.TLSVersion.TLSv1_1
    weak.load_cert_chain(m.cert_file, m.key_file)
    assert _client(_serve_once(weak), ssl.TLSVersion.TLSv1_1) == "TLSv1.1"

    ctx = tls.server_context(m)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        _client(_serve_once(ctx), ssl.TLSVersion.TLSv1_1)
    assert _client(_serve_once(ctx), ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    # a client that trusts exactly this certificate verifies it, host name (SAN 127.0.0.1) included
    assert _client(_serve_once(ctx), cafile=m.cert_file) == "TLSv1.3"
    # ... and one that trusts another certificate refuses it
    other = tls.load_certificate(_settings(tmp_path / "other"), announce=False)
    with pytest.raises(ssl.SSLCertVerificationError):
        _client(_serve_once(ctx), cafile=other.cert_file)
    # only forward-secret AEAD suites for TLS 1.2
    names = {c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert names and all(n.startswith("ECDHE-") and ("GCM" in n or "CHACHA20" in n) for n in names)


def test_upper_client_context_verifies_against_the_configured_bundle_or_the_system_store(tmp_path: Path) -> None:
    cert, key = tmp_path / "upper.crt", tmp_path / "upper.key"
    tls.generate_self_signed(Settings(data_dir=tmp_path / "gen"), cert, key)
    configured = tls.upper_client_context(Settings(data_dir=tmp_path, cascade_tls_ca_file=cert))
    assert configured.verify_mode == ssl.CERT_REQUIRED and configured.check_hostname
    assert configured.minimum_version == ssl.TLSVersion.TLSv1_2
    assert [c["subject"] for c in configured.get_ca_certs()] == [
        c["subject"] for c in tls.client_context(cert).get_ca_certs()]
    system = tls.upper_client_context(Settings(data_dir=tmp_path))
    assert system.verify_mode == ssl.CERT_REQUIRED and system.check_hostname
    for bad in (tmp_path / "missing.pem", key):  # absent, or not a certificate
        with pytest.raises(tls.TlsError, match="GBOPS_CASCADE_TLS_CA_FILE"):
            tls.upper_client_context(Settings(data_dir=tmp_path, cascade_tls_ca_file=bad))
