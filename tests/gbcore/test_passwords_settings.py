import pytest
from pydantic import ValidationError

from gbcore.passwords import is_weak, weak_password_reason
from gbcore.settings import Settings, SettingsError


@pytest.mark.parametrize(
    "password",
    ["", "Ab1!", "abcdefgh", "12345678", "ABCDEFGH", "!@#$%^&*", "admin123", "Admin123", "abcd1234",
     "xx34020000001320000001yy"],
)
def test_weak_passwords_refused(password):
    assert is_weak(password, "34020000001320000001"), password


@pytest.mark.parametrize("password", ["Xk9#long-pass", "camera-Gate-7", "东门Camera2026"])
def test_strong_passwords_accepted(password):
    assert weak_password_reason(password, "34020000001320000001") is None


def test_reason_names_the_rule_in_chinese_and_english():
    reason = weak_password_reason("short1", "dev")
    assert "8" in reason and "/" in reason
    assert "设备编号" in weak_password_reason("ab34020000001320000001", "34020000001320000001")


def test_user_name_inside_password_is_weak():
    assert is_weak("operator-2026", "operator")


def test_settings_defaults(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for k in list(__import__("os").environ):
        if k.startswith("GBOPS_"):
            monkeypatch.delenv(k)
    s = Settings()
    assert s.sip_id == "34020000002000000001"
    assert s.sip_domain == "3402000000"
    assert s.sip_port == 5060 and s.http_port == 8080
    assert s.rtp_port_range == (30000, 30999)
    assert s.db_url.startswith("sqlite+aiosqlite:///") and s.db_url.endswith("gbops-data/gbops.db")
    assert s.sip_password is None and s.admin_password is None


def test_missing_or_weak_sip_password_refuses_to_start(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GBOPS_SIP_PASSWORD", raising=False)
    with pytest.raises(SettingsError, match="GBOPS_SIP_PASSWORD"):
        Settings().check_for_run()
    monkeypatch.setenv("GBOPS_SIP_PASSWORD", "12345678")
    with pytest.raises(SettingsError, match="weak"):
        Settings().check_for_run()
    monkeypatch.setenv("GBOPS_SIP_PASSWORD", "Xk9#long-pass")
    Settings().check_for_run()


def test_secrets_do_not_appear_in_repr(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GBOPS_SIP_PASSWORD", "Xk9#long-pass")
    monkeypatch.setenv("GBOPS_DATABASE_URL", "postgresql+asyncpg://u:dbsecret@h/db")
    s = Settings()
    assert "Xk9#long-pass" not in repr(s) and "dbsecret" not in repr(s)
    assert s.db_url == "postgresql+asyncpg://u:dbsecret@h/db"


def test_toml_file_and_env_precedence(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gbops.toml").write_text('sip_port = 15060\nhttp_port = 18080\nsip_domain = "4401000000"\n')
    monkeypatch.setenv("GBOPS_HTTP_PORT", "28080")
    s = Settings()
    assert s.sip_port == 15060 and s.http_port == 28080 and s.sip_domain == "4401000000"


@pytest.mark.parametrize("name,value", [("GBOPS_SIP_ID", "123"), ("GBOPS_SIP_DOMAIN", "34020"),
                                        ("GBOPS_RTP_PORTS", "5000"), ("GBOPS_RTP_PORTS", "40000-30000")])
def test_bad_settings_are_refused_clearly(monkeypatch, tmp_path, name, value):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()
