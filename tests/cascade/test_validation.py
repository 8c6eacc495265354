"""A platform's configuration checked (no database)."""

from __future__ import annotations

import pytest

from cascade.errors import CascadeError
from cascade.share import parse_channel_specs
from cascade.validation import check_platform

from .conftest import LOCAL_ID, PASSWORD, SERVER_ID, SYSTEM_ID, platform_data


def _code(data: dict, **kw) -> tuple[str, int, str | None]:
    with pytest.raises(CascadeError) as err:
        check_platform(data, **kw)
    return err.value.code, err.value.status, err.value.detail.get("field")


def test_defaults_and_clean_fields() -> None:
    clean, password, warnings = check_platform(platform_data(charset="gb18030", transport="TCP", gb_version=2022))
    assert password == PASSWORD and "password" not in clean and warnings == []
    assert clean["username"] == LOCAL_ID and clean["charset"] == "GB18030" and clean["transport"] == "tcp"
    assert clean["gb_version"] == "2022" and clean["expires"] == 3600 and clean["keepalive_s"] == 60
    assert clean["watermark"] == "tag" and clean["enabled"] is True and 1 <= clean["ptz_level"] <= 9
    # local_id defaults to our system id
    clean, _, _ = check_platform({k: v for k, v in platform_data().items() if k != "local_id"},
                                 default_local_id=SYSTEM_ID)
    assert clean["local_id"] == SYSTEM_ID
    # SIP over TLS (sips) is a transport of its own
    clean, _, _ = check_platform(platform_data(transport=" TLS "))
    assert clean["transport"] == "tls"


@pytest.mark.parametrize(("field", "value"), [
    ("server_id", "1100000000200000001"), ("server_id", "1100000000200000000x"), ("local_id", 34020000002000000009),
    ("server_domain", "11000"), ("server_domain", "110000000a"), ("host", ""), ("host", "a b"),
    ("host", "user@host"), ("port", 0), ("port", 65536), ("port", True), ("transport", "sctp"),
    ("expires", 29), ("expires", 86401), ("keepalive_s", 4), ("keepalive_s", 3601), ("charset", "latin1"),
    ("gb_version", "2011"), ("ptz_level", 0), ("ptz_level", 10), ("watermark", "none"), ("enabled", "yes"),
    ("name", ""), ("name", "x" * 129), ("name", "a\nb"), ("username", 'a"b'),
])
def test_bad_field(field: str, value) -> None:
    code, status, named = _code(platform_data(**{field: value}))
    assert (code, status, named) == ("invalid_field", 422, field)


def test_messages_are_chinese_then_english() -> None:
    with pytest.raises(CascadeError) as err:
        check_platform(platform_data(port=70000))
    zh, en = str(err.value).split(" / ")
    assert "之间" in zh and "within" in en


def test_expires_below_standard_floor_is_a_warning() -> None:
    _, _, warnings = check_platform(platform_data(expires=600))
    assert len(warnings) == 1 and "3600" in warnings[0]


def test_password_rules() -> None:
    assert _code({k: v for k, v in platform_data().items() if k != "password"})[0] == "password_required"
    assert _code(platform_data(password="12345678"))[0] == "weak_password"
    assert _code(platform_data(password=f"x{LOCAL_ID}"))[0] == "weak_password"  # contains its identity
    with pytest.raises(CascadeError) as err:
        check_platform(platform_data(password="Short1"))
    assert "Short1" not in str(err.value) and "Short1" not in repr(err.value)


def test_unknown_fields_and_same_ids_refused() -> None:
    assert _code(platform_data(secret=1))[0] == "unknown_field"
    assert _code(platform_data(local_id=SERVER_ID))[2] == "local_id"
    assert _code(platform_data(name=None))[:2] == ("invalid_field", 422)  # required


def test_change_keeps_what_is_not_given() -> None:
    clean, _, _ = check_platform(platform_data())
    changed, password, _ = check_platform({"port": 5070, "name": None}, current=clean)
    assert changed == {**clean, "port": 5070} and password is None


def test_channel_specs() -> None:
    specs = parse_channel_specs(["34020000001310000001", {"device_id": "34020000001180000001",
                                                          "channel_id": "34020000001310000002",
                                                          "upward_id": "11000000001310000002", "name": " 大门 ",
                                                          "civil_code": "350200"}])
    assert specs[0].channel_id == "34020000001310000001" and specs[0].device_id is None
    assert (specs[1].upward_id, specs[1].name, specs[1].civil_code) == ("11000000001310000002", "大门", "350200")
    for bad in ([{"channel_id": "a/b"}], [{"channel_id": "x", "upward_id": "123"}], [{"channel_id": "x", "foo": 1}],
                [{"channel_id": "x", "civil_code": "12345"}], [3], "x"):
        with pytest.raises(CascadeError):
            parse_channel_specs(bad)
