"""GB/T 2260 civil codes in words (issue 18): the bundled table and :func:`gbcore.regions.region_name`."""

from __future__ import annotations

import json
import re
from importlib import resources

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gbcore.regions import TABLE_VERSION, region_key, region_name, region_table


def _file() -> dict[str, str]:
    return json.loads(resources.files("gbcore.data").joinpath("gb2260.json").read_text("utf-8"))


def test_the_bundled_table_is_whole_and_consistent() -> None:
    data = _file()
    assert all(re.fullmatch(r"\d{6}", code) for code in data)
    provinces = [c for c in data if c.endswith("0000")]
    prefectures = [c for c in data if c.endswith("00") and not c.endswith("0000")]
    counties = [c for c in data if not c.endswith("00")]
    # 31 provinces, autonomous regions and municipalities + 台湾省, 香港, 澳门
    assert len(provinces) == 34
    assert 330 <= len(prefectures) <= 360 and 2800 <= len(counties) <= 2900
    for code in prefectures + counties:  # every level above a code is in the table
        assert code[:2] + "0000" in data, code
    for code in counties:
        assert code[:4] + "00" in data, code
    # statistics-only codes (development zones, 71-79) are not GB/T 2260 divisions
    assert not [c for c in counties if c[4] == "7"]
    assert all(re.fullmatch(r"[\u4e00-\u9fff·]+", name) for name in data.values())
    # names current to the table's date: 2021 renamings are in, the codes they replaced are not
    assert data["330113"] == "临平区" and "330103" not in data  # 杭州 下城区 merged in 2021
    assert data["610305"] == "凤翔区" and "610322" not in data
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", TABLE_VERSION)


def test_the_table_is_read_once() -> None:
    assert region_table() is region_table()
    table = region_table()
    assert len(table.names) == len(_file()) == len(table.full)
    assert re.fullmatch(r"[0-9a-f]{64}", table.digest)
    with pytest.raises(TypeError):
        table.names["999999"] = "x"  # type: ignore[index]


@pytest.mark.parametrize(
    ("code", "name"),
    [
        ("610113", "陕西省西安市雁塔区"),
        ("6101", "陕西省西安市"),
        ("610100", "陕西省西安市"),
        ("61", "陕西省"),
        ("610000", "陕西省"),
        ("6100", "陕西省"),  # no prefecture part: the province
        ("340200", "安徽省芜湖市"),
        ("3402", "安徽省芜湖市"),
        # 8 digits: the centre code of GB/T 28181 (county + grassroots unit): named by its county
        ("61011301", "陕西省西安市雁塔区"),
        ("34020000", "安徽省芜湖市"),
        ("61000000", "陕西省"),
        # a 20-digit device id: its first 8 digits
        ("34020000001320000071", "安徽省芜湖市"),
        ("61011300001310000001", "陕西省西安市雁塔区"),
        # municipalities: their 市辖区 / 县 levels only group
        ("110105", "北京市朝阳区"),
        ("1101", "北京市"),
        ("110100", "北京市"),
        ("11", "北京市"),
        ("310115", "上海市浦东新区"),
        ("120101", "天津市和平区"),
        ("500229", "重庆市城口县"),
        ("500112", "重庆市渝北区"),
        ("500200", "重庆市"),
        # counties under a province directly: the group's name only when it is asked for itself
        ("429004", "湖北省仙桃市"),
        ("419001", "河南省济源市"),
        ("4290", "湖北省省直辖县级行政区划"),
        ("659001", "新疆维吾尔自治区石河子市"),
        # prefecture-level cities without counties, autonomous prefectures
        ("441900", "广东省东莞市"),
        ("532301", "云南省楚雄彝族自治州楚雄市"),
        ("810000", "香港特别行政区"),
        ("710000", "台湾省"),
    ],
)
def test_names(code: str, name: str) -> None:
    assert region_name(code) == name


@pytest.mark.parametrize(
    "code",
    [
        "", "0", "6", "610", "61011", "6101130", "610113011", "3402000000132000007", "340200000013200000711",
        "99", "990000", "0000", "000000", "6199", "619900", "610199", "61019901",  # not in the table
        "340271",  # a statistics-only development zone code
        "330103",  # a code abolished in 2021
        " 610113", "610113 ", "61-113", "六一", "６１０１１３",  # full-width digits
        "٦١٠١١٣",  # Arabic-Indic digits: str.isdigit() but not a code
        "abcdef",
    ],
)
def test_no_name(code: str) -> None:
    assert region_name(code) is None


def test_keys() -> None:
    assert region_key("61") == "610000"
    assert region_key("6101") == "610100"
    assert region_key("61011301") == "610113"
    assert region_key("34020000001320000071") == "340200"
    assert region_key("123") is None and region_key("x1") is None
    assert region_key(None) is None  # type: ignore[arg-type]


def test_every_name_is_its_levels_joined() -> None:
    table = region_table()
    grouping = {"市辖区", "县", "省直辖县级行政区划", "自治区直辖县级行政区划"}
    for code, full in table.full.items():
        own = table.names[code]
        assert full.endswith(own) or own in grouping, (code, full)
        assert full.startswith(table.names[code[:2] + "0000"]), (code, full)
        if not code.endswith("00") and table.names[code[:4] + "00"] in grouping:
            # 北京市朝阳区, never 北京市市辖区朝阳区
            assert full == table.names[code[:2] + "0000"] + own, (code, full)


@settings(max_examples=400, deadline=None)
@given(st.one_of(
    st.text(max_size=30),
    st.text(alphabet="0123456789", max_size=24),
    st.from_regex(r"\A[1-8][0-9]{1,7}\Z"),
    st.from_regex(r"\A[1-8][0-9]{19}\Z"),
))
def test_never_raises(code: str) -> None:
    name = region_name(code)
    assert name is None or (isinstance(name, str) and name)
    if name is not None:
        assert code.isascii() and code.isdigit() and len(code) in (2, 4, 6, 8, 20)
        assert region_name(region_key(code)) == name  # type: ignore[arg-type]


@given(st.one_of(st.none(), st.integers(), st.binary(), st.lists(st.text())))
def test_not_a_string(value: object) -> None:
    assert region_name(value) is None  # type: ignore[arg-type]
