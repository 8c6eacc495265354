"""Digest authentication: RFC 2617 / RFC 7616 worked examples, self-made nonces, device vectors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from sip_server.sip import (
    DigestAuthenticator,
    SipParseError,
    build_authorization,
    compute_ha1,
    digest_response,
    parse_auth_params,
    parse_message,
)
from sip_server.sip import digest as d

DEVICE = "34020000001320000001"
URI = "sip:34020000002000000001@3402000000"
PASSWORD = "12345678"


def md5(s: str) -> str:
    return hashlib.md5(s.encode()).hexdigest()


# ------------------------------------------------------------------ RFC worked examples
def test_rfc2617_section_3_5_example() -> None:
    challenge = (
        'Digest realm="testrealm@host.com", qop="auth,auth-int", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    auth = build_authorization(challenge, method="GET", uri="/dir/index.html", username="Mufasa",
                               password="Circle Of Life", cnonce="0a4f113b")
    _, p = parse_auth_params(auth)
    assert p["response"] == "6629fae49393a05397450978507c4ef1"
    assert p["qop"] == "auth" and p["nc"] == "00000001" and p["cnonce"] == "0a4f113b"
    assert p["opaque"] == "5ccc069c403ebaf9f0171e9517f40e41"


@pytest.mark.parametrize(
    "algorithm,expected",
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_section_3_9_1_example(algorithm: str, expected: str) -> None:
    challenge = (
        f'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={algorithm}, '
        'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
        'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
    )
    auth = build_authorization(challenge, method="GET", uri="/dir/index.html", username="Mufasa",
                               password="Circle of Life", cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ")
    _, p = parse_auth_params(auth)
    assert p["response"] == expected
    assert p["algorithm"] == algorithm


def test_rfc2069_style_response() -> None:
    ha1 = md5("u:r:p")
    ha2 = md5("REGISTER:sip:x@y")
    assert digest_response(algorithm="MD5", method="REGISTER", uri="sip:x@y", nonce="n", username="u",
                           realm="r", password="p") == md5(f"{ha1}:n:{ha2}")
    assert compute_ha1("u", "r", "p") == ha1


# ------------------------------------------------------------------ parse_auth_params
def test_parse_auth_params_forms() -> None:
    scheme, p = parse_auth_params('Digest  username = "a\\"b" ,realm=x,, nonce="1,2" , algorithm=MD5 ,')
    assert scheme == "Digest"
    assert p == {"username": 'a"b', "realm": "x", "nonce": "1,2", "algorithm": "MD5"}
    assert parse_auth_params("Digest") == ("Digest", {})
    assert parse_auth_params('DIGEST\tA="1"')[1] == {"a": "1"}
    assert parse_auth_params('Digest a="1", a="2"')[1] == {"a": "1"}


@pytest.mark.parametrize(
    "text", ["", "   ", 'Digest a', 'Digest a="x', 'Digest a=x y', 'Digest a="x"y', 'Digest =x', '"Digest" a=b',
             'Digest a b=c', 'Digest a=,b=c', 'Dig<est a=b']
)
def test_parse_auth_params_garbage(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_auth_params(text)


# ------------------------------------------------------------------ challenge / verify
@pytest.fixture()
def auth() -> DigestAuthenticator:
    return DigestAuthenticator("3402000000", b"s" * 32, nonce_ttl=300.0)


def answer(challenge: str, *, password: str = PASSWORD, username: str = DEVICE, method: str = "REGISTER",
           cnonce: str = "c0ffee") -> str:
    return build_authorization(challenge, method=method, uri=URI, username=username, password=password,
                               cnonce=cnonce)


def test_challenge_format(auth: DigestAuthenticator) -> None:
    ch = auth.challenge(1000.0, DEVICE)
    scheme, p = parse_auth_params(ch)
    assert scheme == "Digest"
    assert p["realm"] == "3402000000" and p["algorithm"] == "MD5" and p["qop"] == "auth"
    assert "algorithm=MD5" in ch and 'qop="auth"' in ch and "stale" not in ch
    assert len(p["nonce"]) == 48 and int(p["nonce"], 16) >= 0
    assert parse_auth_params(auth.challenge(1000.0, DEVICE))[1]["nonce"] != p["nonce"]
    stale = parse_auth_params(auth.challenge(1000.0, DEVICE, stale=True, algorithm="sha-256"))[1]
    assert stale["stale"] == "true" and stale["algorithm"] == "SHA-256"
    assert "qop" not in parse_auth_params(auth.challenge(1.0, DEVICE, qop=None))[1]
    with pytest.raises(ValueError):
        auth.challenge(1.0, DEVICE, algorithm="SHA-1")


def test_verify_ok_and_single_use(auth: DigestAuthenticator) -> None:
    creds = answer(auth.challenge(1000.0, DEVICE))
    ok = auth.verify(creds, method="REGISTER", bind=DEVICE, password=PASSWORD, now=1001.0)
    assert ok.ok and ok.reason == "ok" and ok.username == DEVICE and not ok.stale
    again = auth.verify(creds, method="REGISTER", bind=DEVICE, password=PASSWORD, now=1002.0)
    assert not again.ok and again.stale and again.reason == d.R_REPLAY


def test_a_wrong_answer_uses_the_nonce_up(auth: DigestAuthenticator) -> None:
    ch = auth.challenge(1000.0, DEVICE)
    bad = auth.verify(answer(ch, password="guess"), method="REGISTER", bind=DEVICE, password=PASSWORD, now=1000.0)
    assert not bad.ok and bad.reason == d.R_RESPONSE
    good = auth.verify(answer(ch), method="REGISTER", bind=DEVICE, password=PASSWORD, now=1000.0)
    assert not good.ok and good.stale and good.reason == d.R_REPLAY  # re-challenge, then it works


def test_verify_sha256_and_sess_and_ha1(auth: DigestAuthenticator) -> None:
    for alg in ("SHA-256", "MD5-sess", "SHA-256-sess"):
        creds = answer(auth.challenge(1000.0, DEVICE, algorithm=alg))
        assert auth.verify(creds, method="REGISTER", bind=DEVICE, password=PASSWORD, now=1000.0).ok, alg
    ha1 = {"MD5": compute_ha1(DEVICE, "3402000000", PASSWORD),
           "SHA-256": compute_ha1(DEVICE, "3402000000", PASSWORD, "SHA-256")}
    for alg in ("MD5", "SHA-256", "SHA-256-sess"):
        creds = answer(auth.challenge(1000.0, DEVICE, algorithm=alg))
        assert auth.verify(creds, method="REGISTER", bind=DEVICE, ha1=ha1, now=1000.0).ok, alg
    creds = answer(auth.challenge(1000.0, DEVICE))
    assert auth.verify(creds, method="REGISTER", bind=DEVICE, ha1=ha1["MD5"].upper(), now=1000.0).ok
    creds = answer(auth.challenge(1000.0, DEVICE, algorithm="SHA-256"))
    res = auth.verify(creds, method="REGISTER", bind=DEVICE, ha1={"MD5": ha1["MD5"]}, now=1000.0)
    assert not res.ok and res.reason == d.R_NO_CREDENTIALS


def test_verify_without_qop_rfc2069(auth: DigestAuthenticator) -> None:
    ch = auth.challenge(1000.0, DEVICE, qop=None)
    creds = answer(ch)
    assert "qop" not in parse_auth_params(creds)[1]
    assert auth.verify(creds, method="REGISTER", bind=DEVICE, password=PASSWORD, now=1000.0).ok


def test_verify_username_may_differ_from_device_id(auth: DigestAuthenticator) -> None:
    creds = answer(auth.challenge(1000.0, DEVICE), username="admin")
    res = auth.verify(creds, method="REGISTER", bind=DEVICE, password=PASSWORD, now=1000.0)
    assert res.ok and res.username == "admin"


def test_verify_uppercase_hex_response(auth: DigestAuthenticator) -> None:
    creds = answer(auth.challenge(1000.0, DEVICE))
    _, p = parse_auth_params(creds)
    creds = creds.replace(p["response"], p["response"].upper())
    assert auth.verify(creds, method="REGISTER", bind=DEVICE, password=PASSWORD, now=1000.0).ok


def test_wrong_password_and_method(auth: DigestAuthenticator) -> None:
    creds = answer(auth.challenge(1000.0, DEVICE), password="wrong-pass")
    res = auth.verify(creds, method="REGISTER", bind=DEVICE, password=PASSWORD, now=1000.0)
    assert not res.ok and not res.stale and res.reason == d.R_RESPONSE
    assert PASSWORD not in res.reason and "wrong-pass" not in res.reason
    creds = answer(auth.challenge(1000.0, DEVICE))
    assert auth.verify(creds, method="MESSAGE", bind=DEVICE, password=PASSWORD, now=1000.0).reason == d.R_RESPONSE


def test_expired_nonce_is_stale_only_with_a_right_digest(auth: DigestAuthenticator) -> None:
    ch = auth.challenge(1000.0, DEVICE)
    res = auth.verify(answer(ch), method="REGISTER", bind=DEVICE, password=PASSWORD, now=1301.5)
    assert not res.ok and res.stale and res.reason == d.R_EXPIRED
    res = auth.verify(answer(ch, password="bad"), method="REGISTER", bind=DEVICE, password=PASSWORD, now=1301.5)
    assert not res.ok and not res.stale
    ch = auth.challenge(1000.0, DEVICE)
    assert auth.verify(answer(ch), method="REGISTER", bind=DEVICE, password=PASSWORD, now=1299.0).ok


def test_foreign_and_forged_nonces(auth: DigestAuthenticator) -> None:
    other = DigestAuthenticator("3402000000", b"t" * 32)
    res = auth.verify(answer(other.challenge(1000.0, DEVICE)), method="REGISTER", bind=DEVICE,
                      password=PASSWORD, now=1000.0)
    assert not res.ok and res.reason == d.R_NONCE_MAC and not res.stale
    ch = auth.challenge(1000.0, DEVICE)
    nonce = parse_auth_params(ch)[1]["nonce"]
    forged = nonce[:-1] + ("0" if nonce[-1] != "0" else "1")
    res = auth.verify(answer(ch.replace(nonce, forged)), method="REGISTER", bind=DEVICE, password=PASSWORD,
                      now=1000.0)
    assert res.reason == d.R_NONCE_MAC
    # a nonce whose time was moved forward (to dodge expiry) no longer authenticates
    moved = format(int(nonce[:8], 16) + 1000, "08x") + nonce[8:]
    res = auth.verify(answer(ch.replace(nonce, moved)), method="REGISTER", bind=DEVICE, password=PASSWORD,
                      now=1000.0)
    assert not res.ok and res.reason == d.R_NONCE_MAC
    for bad in ("1715926053", "zz" * 24, ""):
        res = auth.verify(answer(ch.replace(nonce, bad)), method="REGISTER", bind=DEVICE, password=PASSWORD,
                          now=1000.0)
        assert not res.ok and res.reason in (d.R_NONCE_FORMAT, d.R_MISSING)


def test_nonce_bound_to_device(auth: DigestAuthenticator) -> None:
    other_device = "34020000001320000002"
    creds = answer(auth.challenge(1000.0, other_device))
    res = auth.verify(creds, method="REGISTER", bind=DEVICE, password=PASSWORD, now=1000.0)
    assert not res.ok and res.reason in (d.R_NONCE_BIND, d.R_NONCE_MAC)


@pytest.mark.parametrize(
    "mutate,reason",
    [
        (lambda s: s.replace("Digest", "Basic"), d.R_SCHEME),
        (lambda s: s.replace('realm="3402000000"', 'realm="3402000001"'), d.R_REALM),
        (lambda s: s.replace("algorithm=MD5", "algorithm=SHA-1"), d.R_ALGORITHM),
        (lambda s: s.replace("qop=auth", "qop=auth-conf"), d.R_QOP),
        (lambda s: s.replace("qop=auth", "qop=auth-int"), d.R_QOP),  # no body given
        (lambda s: s.replace("nc=00000001", "nc=1"), d.R_SYNTAX),
        (lambda s: s.replace(', nc=00000001', ''), d.R_MISSING),
        (lambda s: s.split(", response=")[0], d.R_MISSING),
        (lambda s: s + ', x="', d.R_SYNTAX),
    ],
)
def test_refusals(auth: DigestAuthenticator, mutate, reason: str) -> None:
    creds = mutate(answer(auth.challenge(1000.0, DEVICE)))
    res = auth.verify(creds, method="REGISTER", bind=DEVICE, password=PASSWORD, now=1000.0)
    assert not res.ok and res.reason == reason


def test_auth_int_with_body(auth: DigestAuthenticator) -> None:
    ch = auth.challenge(1000.0, DEVICE, qop="auth-int")
    creds = build_authorization(ch, method="MESSAGE", uri=URI, username=DEVICE, password=PASSWORD, cnonce="x",
                                body=b"<xml/>")
    assert "qop=auth-int" in creds
    assert auth.verify(creds, method="MESSAGE", bind=DEVICE, password=PASSWORD, now=1000.0, body=b"<xml/>").ok


def test_used_nonce_memory_is_pruned(auth: DigestAuthenticator) -> None:
    for t in range(0, 600):
        creds = answer(auth.challenge(float(t), DEVICE))
        assert auth.verify(creds, method="REGISTER", bind=DEVICE, password=PASSWORD, now=float(t)).ok
    assert auth.used_nonce_count() <= 305
    assert len(auth._used) <= 305


# ------------------------------------------------------------------ real device Authorization lines
@pytest.mark.parametrize(
    "name,username,realm",
    [
        ("dahua_sd6c3230_register_auth_realm8digit.sip", "34020000001320000002", "34020000"),
        ("hikvision_18digit_register_auth_opaque.sip", "admin", "hik"),
        ("hikvision_18digit_unregister_auth.sip", "admin", "hik"),
    ],
)
def test_device_authorization_lines(sip_vectors: Path, name: str, username: str, realm: str) -> None:
    msg = parse_message((sip_vectors / name).read_bytes())
    line = msg.headers.get("Authorization")
    scheme, p = parse_auth_params(line)
    assert scheme == "Digest"
    assert p["username"] == username and p["realm"] == realm and p["algorithm"] == "MD5"
    assert p["uri"] == msg.uri
    assert len(p["response"]) == 32 and int(p["response"], 16) >= 0
    # the password is unknown: a wrong one must not reproduce the device's response
    for guess in ("12345678", "admin", "wrong"):
        assert digest_response(algorithm="MD5", method="REGISTER", uri=p["uri"], nonce=p["nonce"],
                               username=username, realm=realm, password=guess) != p["response"]
    # and our authenticator refuses it (the nonce is not ours, and the password is wrong anyway)
    server = DigestAuthenticator(realm, b"k" * 32)
    res = server.verify(line, method="REGISTER", bind=username, password="wrong", now=1.7e9)
    assert not res.ok and res.username == username
