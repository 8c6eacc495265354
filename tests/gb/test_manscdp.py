"""MANSCDP codec: real device vectors, round trips, charsets, safety, error handling."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sip_server.gb import manscdp as m
from sip_server.gb.manscdp import CatalogItem, ManscdpError, RecordItem

# ------------------------------------------------------------------------------ vector helpers

_VECTOR_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "vectors" / "sip"


def sip_body(raw: bytes) -> tuple[dict[str, str], bytes]:
    """Split a stored SIP message at the first CRLFCRLF; the body is Content-Length bytes."""
    head, sep, rest = raw.partition(b"\r\n\r\n")
    assert sep, "no blank line between headers and body"
    headers: dict[str, str] = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", headers.get("l", "0")))
    assert len(rest) >= length
    return headers, rest[:length]


def manscdp_body(path: Path) -> bytes | None:
    raw = path.read_bytes()
    if path.suffix == ".xml":
        return raw
    headers, body = sip_body(raw)
    content_type = headers.get("content-type", headers.get("c", "")).lower()
    return body if "manscdp" in content_type else None


def _vector_names() -> list[str]:
    if not _VECTOR_DIR.is_dir():
        return []
    return sorted(
        p.name for p in _VECTOR_DIR.iterdir() if p.suffix in (".xml", ".sip") and manscdp_body(p) is not None
    )


VECTOR_NAMES = _vector_names()

VIEW_BY_CMD = {
    "Keepalive": m.as_keepalive,
    "Catalog": m.as_catalog,
    "DeviceInfo": m.as_device_info,
    "DeviceStatus": m.as_device_status,
    "RecordInfo": m.as_record_info,
    "Alarm": m.as_alarm,
    "MobilePosition": m.as_mobile_position,
}
ALL_VIEWS = tuple(VIEW_BY_CMD.values())


@pytest.fixture(scope="session")
def vec(sip_vectors: Path):
    def load(name: str) -> bytes:
        body = manscdp_body(sip_vectors / name)
        assert body is not None, f"{name} carries no MANSCDP body"
        return body

    return load


# ------------------------------------------------------------------------------ every vector


def test_vector_inventory(sip_vectors: Path) -> None:
    bodies = [p.name for p in sip_vectors.iterdir() if p.suffix in (".xml", ".sip") and manscdp_body(p)]
    # 8 .xml bodies and 15 .sip files with Application/MANSCDP+xml bodies.
    assert len([n for n in bodies if n.endswith(".xml")]) == 8
    assert len([n for n in bodies if n.endswith(".sip")]) == 15


def test_vector_content_lengths_match(sip_vectors: Path) -> None:
    for path in sip_vectors.glob("*.sip"):
        headers, body = sip_body(path.read_bytes())
        if "manscdp" in headers.get("content-type", "").lower():
            rest = path.read_bytes().partition(b"\r\n\r\n")[2]
            assert len(rest) == int(headers["content-length"]), path.name


@pytest.mark.parametrize("name", VECTOR_NAMES)
def test_every_vector_parses_and_views(vec, name: str) -> None:
    msg = m.parse(vec(name))
    assert msg.root in m.ROOTS
    assert msg.cmd_type
    assert msg.sn >= 0
    assert re.fullmatch(r"\d{20}", msg.device_id)
    assert msg.charset in ("GB2312", "UTF-8")
    view = VIEW_BY_CMD.get(msg.cmd_type)
    if view is not None:
        result = view(msg)
        assert result.device_id == msg.device_id
        assert result.sn == msg.sn
    for other in ALL_VIEWS:
        if other is not view:
            with pytest.raises(ManscdpError):
                other(msg)


# ------------------------------------------------------------------------------ specific facts


def test_dahua_ipc_catalog_body_gb2312_name(vec) -> None:
    body = vec("dahua_ipc_hfw4150d_catalog_response_body.xml")
    assert "大华".encode("gb2312") in body  # raw GB2312 bytes on the wire
    msg = m.parse(body)
    assert msg.charset == "GB2312"
    page = m.as_catalog(msg)
    assert (page.sn, page.sum_num, page.num) == (1, 1, 1)
    (item,) = page.items
    assert item.name == "大华1.107"
    assert item.device_id == msg.device_id == "34020000001320000001"  # its own ID as the channel
    assert item.parent_id is None
    assert item.civil_code == "6532"
    assert item.manufacturer == "DAHUA"
    assert item.model == "IPC-HFW4150D-V2"
    assert (item.parental, item.register_way, item.secrecy, item.status) == (0, 1, 0, "ON")


def test_dahua_nvr_catalog_one_item_per_message(vec) -> None:
    body = vec("dahua_nvr_catalog_response_body_sn1_item1.xml")
    assert b'standalone="yes" ?>' in body
    page = m.as_catalog(m.parse(body))
    assert (page.sn, page.sum_num, page.num, len(page.items)) == (1, 4, 1, 1)
    item = page.items[0]
    assert item.name == "大华1.107"
    assert item.manufacturer == "General"
    assert item.ptz_type == 3
    assert item.ip_address == "192.168.1.107"
    assert item.port == 80
    assert item.parent_id == "34020000001180000001"
    assert item.raw["Password"] == ""
    assert item.raw["StreamNum"] == "2"
    assert item.raw["Info/DownloadSpeed"] == "1/2/4/8"


def test_dahua_nvr_catalog_rtsp_url_in_ipaddress(vec) -> None:
    page = m.as_catalog(m.parse(vec("dahua_nvr_catalog_response_body_sn4_item2_rtsp_ipaddress.xml")))
    assert (page.sn, page.sum_num) == (4, 4)
    (item,) = page.items
    assert item.ip_address == "rtsp://admin@192.168.1.64:554/Streaming/Channels/101"
    assert item.port == 554
    assert item.model == "DH-IVSS708-S1"
    assert item.ptz_type == 3


def test_dahua_nvr_catalog_hikvision_channel_name(vec) -> None:
    body = vec("dahua_nvr_catalog_response_body_sn4_item4.xml")
    assert "海康摄像机".encode("gb2312") in body
    page = m.as_catalog(m.parse(body))
    (item,) = page.items
    assert item.name == "1.64 海康摄像机"
    assert item.model == "DS-2CD2725EFD-IS"
    assert item.manufacturer == "General"
    assert item.device_id == "34020000001310000004"


def test_dahua_nvr_alarm_notify(vec) -> None:
    msg = m.parse(vec("dahua_nvr_alarm_notify_body.xml"))
    assert (msg.root, msg.cmd_type, msg.sn) == ("Notify", "Alarm", 9)
    alarm = m.as_alarm(msg)
    assert alarm.alarm_description == "视频动检"
    assert alarm.alarm_priority == 1
    assert alarm.alarm_method == 5
    assert alarm.alarm_type == 2
    assert alarm.event_type == 1
    assert alarm.alarm_time == "2023-08-09T07:38:35"
    assert alarm.alarm_datetime == datetime(2023, 8, 9, 7, 38, 35)
    assert alarm.longitude is None and alarm.latitude is None
    assert alarm.raw["AlarmInfo"] == "11"


def test_dahua_nvr_keepalive_single_line_standalone(vec) -> None:
    body = vec("dahua_nvr_keepalive_body.xml")
    assert b'standalone="yes" ?>' in body and b"\n" not in body.strip()
    ka = m.as_keepalive(m.parse(body))
    assert (ka.device_id, ka.sn, ka.status, ka.faulty_device_ids) == ("34020000001180000001", 279, "OK", [])


def test_hikvision_nvr_keepalive_faulty_channels(vec) -> None:
    body = vec("hikvision_nvr_keepalive_body_faulty_channels.xml")
    assert body.startswith(b'<?xml version="1.0" encoding="gb2312"?>\r\n')
    msg = m.parse(body)
    assert msg.charset == "GB2312"
    ka = m.as_keepalive(msg)
    assert ka.sn == 2034
    assert ka.status == "OK"
    assert ka.faulty_device_ids == [f"3402000000132000000{n}" for n in (2, 3, 5, 6, 7, 8)]


def test_dvr_deviceinfo_without_declaration(vec) -> None:
    body = vec("hikvision_nvr_ds7916n_deviceinfo_response_body.xml")
    assert not body.startswith(b"<?xml") and b"\t" in body
    msg = m.parse(body)
    assert msg.charset == "UTF-8"  # XML default when nothing is declared
    info = m.as_device_info(msg)
    assert info.sn == 1676965736
    assert info.device_name == "Network Video Recorder"
    assert info.device_type == "DVR"
    assert (info.manufacturer, info.model, info.firmware) == ("HIKVISION", "DS-7916N-R4", "V4.72.107")
    assert (info.max_camera, info.max_alarm, info.channel) == (16, 16, None)
    assert info.result == "OK"


def test_dahua_keepalive_space_before_decl_end(vec) -> None:
    body = vec("dahua_sd6c3230_keepalive.sip")
    assert body.startswith(b'<?xml version="1.0" encoding="GB2312" ?>\n')
    assert len(body) == 180
    msg = m.parse(body)
    assert msg.charset == "GB2312"
    ka = m.as_keepalive(msg)
    assert (ka.sn, ka.device_id, ka.status) == (539, "34020000001320000002", "OK")


def test_dahua_ipc_keepalive(vec) -> None:
    body = vec("dahua_ipc_hfw4150d_keepalive.sip")
    assert b'encoding="GB2312" ?>' in body
    ka = m.as_keepalive(m.parse(body))
    assert (ka.sn, ka.device_id) == (4, "34020000001320000001")


def test_dahua_dome_catalog_ptz_type(vec) -> None:
    page = m.as_catalog(m.parse(vec("dahua_sd6c3230_catalog_response.sip")))
    assert (page.sn, page.sum_num, page.num) == (7, 1, 1)
    (item,) = page.items
    assert item.ptz_type == 3
    assert item.parent_id == "34020000001320000002"
    assert (item.name, item.manufacturer, item.model, item.address) == (
        "DH71",
        "Dahua",
        "DH-SD-6C3230UE-HN",
        "axy",
    )
    assert item.raw["Info/PTZType"] == "3"


def test_dahua_dome_deviceinfo(vec) -> None:
    info = m.as_device_info(m.parse(vec("dahua_sd6c3230_deviceinfo_response.sip")))
    assert info.sn == 9
    assert info.device_type == "SD"
    assert info.firmware == "2.623.0000000.17.R,2019-01-19"
    assert (info.channel, info.max_camera, info.max_alarm) == (1, 1, 2)
    assert info.raw["LoginName"] == "admin"
    assert info.raw["Password"] == "******"
    assert info.raw["Port"] == "80"


def test_dahua_dome_devicestatus_alarmstatus_lowercase_s(vec) -> None:
    body = vec("dahua_sd6c3230_devicestatus_response.sip")
    assert b'<Alarmstatus Num="2">' in body
    status = m.as_device_status(m.parse(body))
    assert status.sn == 10
    assert status.result == "OK"
    assert status.online is True
    assert (status.status, status.encode, status.record) == ("OK", "ON", "OFF")
    assert status.device_time == "2024-05-17T14:24:54"
    assert status.device_datetime == datetime(2024, 5, 17, 14, 24, 54)
    assert status.alarms == [
        ("34020000001340000001", "ONDUTY"),
        ("34020000001340000002", "ONDUTY"),
    ]


def test_hikvision_nvr_recordinfo_lowercase_gb2312(vec) -> None:
    body = vec("hikvision_nvr_recordinfo_response.sip")
    assert b'encoding="gb2312"' in body
    msg = m.parse(body)
    assert msg.charset == "GB2312"
    rec = m.as_record_info(msg)
    assert (rec.sn, rec.device_id, rec.name, rec.sum_num, rec.num) == (
        18,
        "34020000001310000001",
        "IPCamera 01",
        2,
        2,
    )
    assert [i.file_path for i in rec.items] == ["1714804996_1714806986", "1714806986_1714808977"]
    first = rec.items[0]
    assert first.start == datetime(2024, 5, 4, 14, 43, 16)
    assert first.end == datetime(2024, 5, 4, 15, 16, 26)
    assert (first.type, first.secrecy, first.address) == ("time", 0, "Address 1")
    assert rec.items[1].start == first.end


def test_ezviz_recordinfo_sumnum9(vec) -> None:
    body = vec("ezviz_x5s_nvr_recordinfo_response_sumnum9.sip")
    assert len(body) == 2689
    assert body.startswith(b'<?xml version="1.0" encoding="gb2312"?>\r\n<Response>\n')
    rec = m.as_record_info(m.parse(body))
    assert rec.sn == 840887582
    assert rec.name == "Camera 01"
    assert (rec.sum_num, rec.num, len(rec.items)) == (9, 9, 9)
    assert all(i.device_id == "34020000001320000002" and i.type == "time" for i in rec.items)
    assert rec.items[0].file_path == "1591069694_1591071812"
    assert rec.items[0].start_time == "2020-06-02T11:48:14"
    assert rec.items[-1].end_time == "2020-06-02T15:58:41"
    starts = [i.start for i in rec.items]
    assert all(s is not None for s in starts) and starts == sorted(starts)
    # FilePath carries UTC epoch seconds while StartTime is local (UTC+8) wall-clock.
    epoch = int(rec.items[0].file_path.split("_")[0])
    local = datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None) + timedelta(hours=8)
    assert local == rec.items[0].start


def test_hikvision_nvr_catalog_sumnum8_num2(vec) -> None:
    body = vec("hikvision_nvr_catalog_response_sumnum8_num2.sip")
    assert b'encoding="gb2312"' in body
    page = m.as_catalog(m.parse(body))
    assert page.sn == 419315752
    assert page.sum_num == 8
    assert page.num == 2
    assert len(page.items) == 2
    assert [i.status for i in page.items] == ["ON", "OFF"]
    assert [i.name for i in page.items] == ["Camera 01", "IPCamera 02"]
    assert page.items[0].address == "192.168.254.18"
    assert page.items[0].safety_way == 0
    assert page.items[0].civil_code == "CivilCode"


def test_hikvision_ipc_catalog_civilcode10(vec) -> None:
    page = m.as_catalog(m.parse(vec("hikvision_ipc_catalog_response_civilcode10.sip")))
    (item,) = page.items
    assert item.device_id.startswith("6201")
    assert item.civil_code == "5100000000"
    assert item.parent_id == "51000000002000000001"
    assert item.safety_way == 0
    assert page.sn == 1708


@pytest.mark.parametrize(
    ("name", "charset", "sn"),
    [
        ("hikvision_ipc_keepalive_gb2312_empty_info.sip", "GB2312", 42),
        ("hikvision_ipc_keepalive_utf8_empty_info.sip", "UTF-8", 1),
    ],
)
def test_hikvision_ipc_keepalive_empty_info(vec, name: str, charset: str, sn: int) -> None:
    body = vec(name)
    assert b"<Info>\n</Info>" in body
    msg = m.parse(body)
    assert msg.charset == charset
    ka = m.as_keepalive(msg)
    assert (ka.sn, ka.status, ka.faulty_device_ids) == (sn, "OK", [])
    assert msg.fields["Info"] == ""


def test_hikvision_dome_deviceinfo_utf8(vec) -> None:
    msg = m.parse(vec("hikvision_dome_ds2de3104w_deviceinfo_response.sip"))
    assert msg.charset == "UTF-8"
    info = m.as_device_info(msg)
    assert info.device_id == "44010200491118000001"
    assert (info.device_name, info.manufacturer, info.model, info.firmware) == (
        "IP DOME",
        "Hikvision",
        "DS-2DE3104W-DE",
        "V5.4.0",
    )
    assert info.channel is None and info.device_type is None


def test_happytime_no_encoding_and_trailing_blank_line(vec) -> None:
    body = vec("happytime_gb28181sim_keepalive_via_no_branch.sip")
    assert body.startswith(b'<?xml version="1.0"?>\r\n') and body.endswith(b"</Notify>\r\n\r\n")
    ka = m.as_keepalive(m.parse(body))
    assert (ka.sn, ka.device_id, ka.status) == (2, "34020000001320000001", "OK")
    page = m.as_catalog(m.parse(vec("happytime_gb28181sim_catalog_response.sip")))
    (item,) = page.items
    assert (item.civil_code, item.owner, item.manufacturer) == ("CivilCode", "Owner", "Happytimesoft")


def test_happytime_empty_preset_list(vec) -> None:
    msg = m.parse(vec("happytime_gb28181sim_presetquery_response_empty.sip"))
    assert (msg.root, msg.cmd_type, msg.sn) == ("Response", "PresetQuery", 72677460)
    assert msg.device_id == "34020000001320000001"  # the device, not the queried channel
    preset_list = msg.find("PresetList")
    assert preset_list is not None and preset_list.get("Num") == "0" and len(preset_list) == 0


# ------------------------------------------------------------------------------ round trips

CHARSETS = ["GB2312", "GBK", "GB18030", "UTF-8"]


def _full_item(device_id: str, name: str, **kw) -> CatalogItem:
    base = dict(
        device_id=device_id,
        name=name,
        manufacturer="海康威视",
        model="DS-2CD2T47G2-L",
        owner="Owner",
        civil_code="340200",
        block="一号楼",
        address="北京市海淀区 & <东门>",
        parental=0,
        parent_id="34020000001110000001",
        business_group_id="34020000002150000001",
        safety_way=0,
        register_way=1,
        secrecy=0,
        ip_address="192.168.1.64",
        port=8000,
        status="ON",
        longitude=116.397128,
        latitude=39.916527,
        ptz_type=1,
    )
    base.update(kw)
    return CatalogItem(**base)


@pytest.mark.parametrize("charset", CHARSETS)
def test_keepalive_round_trip(charset: str) -> None:
    body = m.build_keepalive(17, "34020000001320000001", charset=charset)
    assert body.startswith(f'<?xml version="1.0" encoding="{charset}"?>'.encode())
    msg = m.parse(body)
    assert msg.charset == charset
    ka = m.as_keepalive(msg)
    assert ka == m.Keepalive("34020000001320000001", 17, "OK", [])


def test_keepalive_faulty_round_trip() -> None:
    faulty = ["34020000001320000002", "34020000001320000003"]
    body = m.build_keepalive(5, "34020000001110000001", status="ERROR", faulty_device_ids=faulty)
    ka = m.as_keepalive(m.parse(body))
    assert ka.status == "ERROR"
    assert ka.faulty_device_ids == faulty


@pytest.mark.parametrize("charset", CHARSETS)
def test_catalog_round_trip_chinese(charset: str) -> None:
    items = [
        _full_item("34020000001310000001", "大华1.107"),
        _full_item("34020000001310000002", "1.64 海康摄像机", longitude=None, latitude=None, ptz_type=None),
    ]
    body = m.build_catalog_response(99, "34020000001110000001", 8, items, charset=charset)
    if charset != "UTF-8":
        assert "海康摄像机".encode("gb2312") in body
    else:
        assert "海康摄像机".encode() in body
    msg = m.parse(body)
    assert msg.charset == charset
    page = m.as_catalog(msg)
    assert (page.sn, page.device_id, page.sum_num, page.num) == (99, "34020000001110000001", 8, 2)
    assert page.items == items  # raw is excluded from equality
    assert page.items[0].raw["Address"] == "北京市海淀区 & <东门>"
    assert not page.is_notify


@pytest.mark.parametrize("rare", ["䶮", "𠀀", "𠀀䶮"])
def test_rare_characters_survive_gb2312_declaration(rare: str) -> None:
    name = f"摄像机{rare}01"
    with pytest.raises(UnicodeEncodeError):
        name.encode("gb2312")
    body = m.build_catalog_response(1, "34020000001320000001", 1, [CatalogItem("34020000001310000001", name)])
    assert body.startswith(b'<?xml version="1.0" encoding="GB2312"?>')
    assert rare.encode("gb18030") in body
    msg = m.parse(body)
    assert msg.charset == "GB2312"
    assert m.as_catalog(msg).items[0].name == name
    ka = m.as_keepalive(m.parse(m.build_keepalive(1, "34020000001320000001", status=rare)))
    assert ka.status == rare


def test_catalog_notify_round_trip_events() -> None:
    items = [
        CatalogItem("34020000001310000001", "通道1", status="ON", event="ADD"),
        CatalogItem("34020000001310000002", event="DEL"),
        CatalogItem("34020000001310000003", "通道3", status="OFF", event="OFF"),
    ]
    page = m.as_catalog(m.parse(m.build_catalog_notify(3, "34020000001110000001", 3, items)))
    assert page.is_notify
    assert [(i.device_id, i.event) for i in page.items] == [(i.device_id, i.event) for i in items]
    assert page.items == items


@pytest.mark.parametrize("charset", CHARSETS)
def test_device_info_round_trip(charset: str) -> None:
    body = m.build_device_info_response(
        8,
        "34020000001320000001",
        device_name="大门口球机",
        manufacturer="大华",
        model="DH-SD-6C3230UE-HN",
        firmware="2.623.0000000.17.R,2019-01-19",
        channel=4,
        charset=charset,
    )
    info = m.as_device_info(m.parse(body))
    assert (info.sn, info.result, info.device_name, info.manufacturer, info.channel) == (
        8,
        "OK",
        "大门口球机",
        "大华",
        4,
    )
    assert info.firmware == "2.623.0000000.17.R,2019-01-19"
    no_channel = m.as_device_info(
        m.parse(
            m.build_device_info_response(
                1,
                "34020000001110000001",
                device_name="NVR",
                manufacturer="H",
                model="M",
                firmware="F",
                channel=None,
                device_type="NVR",
                max_camera=16,
                max_alarm=4,
            )
        )
    )
    assert (no_channel.channel, no_channel.device_type, no_channel.max_camera, no_channel.max_alarm) == (
        None,
        "NVR",
        16,
        4,
    )


def test_device_status_round_trip() -> None:
    body = m.build_device_status_response(
        11,
        "34020000001320000001",
        online=False,
        status="ERROR",
        record="ON",
        device_time=datetime(2024, 5, 17, 14, 24, 54),
        alarms=[("34020000001340000001", "ONDUTY"), ("34020000001340000002", "OFFDUTY")],
    )
    assert b'<Alarmstatus Num="2">' in body
    status = m.as_device_status(m.parse(body))
    assert (status.online, status.status, status.record, status.encode, status.result) == (
        False,
        "ERROR",
        "ON",
        "ON",
        "OK",
    )
    assert status.device_time == "2024-05-17T14:24:54"
    assert status.alarms == [("34020000001340000001", "ONDUTY"), ("34020000001340000002", "OFFDUTY")]
    plain = m.as_device_status(
        m.parse(m.build_device_status_response(1, "34020000001320000001", device_time="2024-01-01T00:00:00"))
    )
    assert (plain.online, plain.record, plain.alarms) == (True, "OFF", [])


def test_record_info_round_trip() -> None:
    items = [
        RecordItem(
            "34020000001310000001",
            name="前门",
            file_path="1714804996_1714806986",
            address="Address 1",
            start_time="2024-05-04T14:43:16",
            end_time="2024-05-04T15:16:26",
            secrecy=0,
            type="time",
            recorder_id="34020000001110000001",
            file_size=1048576,
        ),
        RecordItem("34020000001310000001", start_time="2024-05-04T15:16:26", end_time="2024-05-04T15:49:37"),
    ]
    body = m.build_record_info_response(18, "34020000001310000001", 9, items, name="前门")
    rec = m.as_record_info(m.parse(body))
    assert (rec.sn, rec.name, rec.sum_num, rec.num) == (18, "前门", 9, 2)
    assert rec.items == items
    assert rec.items[0].file_size == 1048576


def test_alarm_and_mobile_position_round_trip() -> None:
    body = m.build_alarm_notify(
        9,
        "34020000001310000001",
        alarm_priority=1,
        alarm_method=5,
        alarm_time=datetime(2023, 8, 9, 7, 38, 35),
        alarm_description="视频动检",
        longitude=121.5,
        latitude=31.25,
        alarm_type=2,
        event_type=1,
    )
    alarm = m.as_alarm(m.parse(body))
    assert (alarm.alarm_priority, alarm.alarm_method, alarm.alarm_type, alarm.event_type) == (1, 5, 2, 1)
    assert alarm.alarm_description == "视频动检"
    assert alarm.alarm_time == "2023-08-09T07:38:35"
    assert (alarm.longitude, alarm.latitude) == (121.5, 31.25)
    pos = m.as_mobile_position(
        m.parse(
            m.build_mobile_position_notify(
                3,
                "34020000001320000001",
                time="2024-01-02T03:04:05",
                longitude=-73.985,
                latitude=40.758,
                speed=12.5,
                direction=270.0,
                altitude=10.0,
            )
        )
    )
    assert pos == m.MobilePosition(
        "34020000001320000001", 3, "2024-01-02T03:04:05", -73.985, 40.758, 12.5, 270.0, 10.0
    )


def test_build_query_and_extra() -> None:
    body = m.build_query(
        "RecordInfo",
        42,
        "34020000001310000001",
        extra={
            "StartTime": "2024-05-04T00:00:00",
            "EndTime": datetime(2024, 5, 4, 23, 59, 59),
            "FilePath": None,
            "Type": "all",
            "Secrecy": 0,
            "Info": {"ControlPriority": 5},
        },
    )
    assert b"FilePath" not in body
    msg = m.parse(body)
    assert (msg.root, msg.cmd_type, msg.sn, msg.device_id, msg.charset) == (
        "Query",
        "RecordInfo",
        42,
        "34020000001310000001",
        "GB2312",
    )
    assert msg.fields["StartTime"] == "2024-05-04T00:00:00"
    assert msg.fields["EndTime"] == "2024-05-04T23:59:59"
    assert msg.fields["Type"] == "all" and msg.fields["Secrecy"] == "0"
    assert "Info" not in msg.fields  # not a simple field
    info = msg.find("Info")
    assert info is not None and info.findtext("ControlPriority") == "5"
    control = m.parse(
        m.build_message("Control", "DeviceControl", 7, "34020000001310000001", extra=[("PTZCmd", "A50F01")])
    )
    assert (control.root, control.get("ptzcmd")) == ("Control", "A50F01")


def test_builder_escapes_and_keeps_carriage_return() -> None:
    nasty = 'a&b<c>d"e\r\nf'
    msg = m.parse(m.build_query("Catalog", 1, "34020000001320000001", extra={"Note": nasty}))
    assert msg.fields["Note"] == nasty


def test_builder_refusals() -> None:
    with pytest.raises(ManscdpError):
        m.build_query("Catalog", 1, "x", charset="BIG5")
    with pytest.raises(ManscdpError):
        m.build_query("Catalog", -1, "x")
    with pytest.raises(ManscdpError):
        m.build_query("Catalog", 1, "")
    with pytest.raises(ManscdpError):
        m.build_query("Catalog", 1, "x", extra={"Bad Name": "v"})
    with pytest.raises(ManscdpError):
        m.build_query("Catalog", 1, "x", extra={"Note": "bell\x07"})
    with pytest.raises(ManscdpError):
        m.build_message("Request", "Catalog", 1, "x")
    with pytest.raises(ManscdpError):
        m.build_catalog_response(1, "x", 1, ["not an item"])  # type: ignore[list-item]


_xml_text = (
    st.text(
        alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff"),
        min_size=1,
        max_size=30,
    )
    .map(str.strip)
    .filter(bool)
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=_xml_text, address=_xml_text, charset=st.sampled_from(CHARSETS), sn=st.integers(0, 2**32))
def test_catalog_round_trip_property(name: str, address: str, charset: str, sn: int) -> None:
    item = CatalogItem("34020000001310000001", name=name, address=address, status="ON")
    msg = m.parse(m.build_catalog_response(sn, "34020000001320000001", 1, [item], charset=charset))
    assert msg.charset == charset
    assert msg.sn == sn
    got = m.as_catalog(msg).items[0]
    assert (got.name, got.address) == (name, address)


# ------------------------------------------------------------------------------ charsets


def _keepalive_text(decl: str, status: str) -> str:
    return (
        f"{decl}<Notify><CmdType>Keepalive</CmdType><SN>1</SN>"
        f"<DeviceID>34020000001320000001</DeviceID><Status>{status}</Status></Notify>"
    )


@pytest.mark.parametrize(
    ("decl", "expected"),
    [
        ('<?xml version="1.0" encoding="GB2312"?>', "GB2312"),
        ('<?xml version="1.0" encoding="gb2312"?>', "GB2312"),
        ('<?xml version="1.0" encoding="GB2312" ?>', "GB2312"),
        ('<?xml version="1.0" encoding="GB2312" standalone="yes" ?>', "GB2312"),
        ("<?xml version='1.0' encoding='GBK'?>", "GBK"),
        ('<?xml version="1.0" encoding="GB18030"?>', "GB18030"),
        ('<?xml version="1.0" encoding="euc-cn"?>', "GB2312"),
        ('\r\n  <?xml version="1.0" encoding="GB2312"?>', "GB2312"),
    ],
)
def test_declared_gb_family(decl: str, expected: str) -> None:
    body = _keepalive_text(decl, "正常").encode("gb18030")
    text, charset = m.decode_body(body)
    assert charset == expected and "正常" in text
    msg = m.parse(body)
    assert (msg.charset, msg.fields["Status"]) == (expected, "正常")


@pytest.mark.parametrize(
    "decl",
    [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<?xml version="1.0" encoding="utf8"?>',
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>',
    ],
)
def test_declared_utf8(decl: str) -> None:
    msg = m.parse(_keepalive_text(decl, "正常").encode())
    assert (msg.charset, msg.fields["Status"]) == ("UTF-8", "正常")


@pytest.mark.parametrize(
    "decl", ['<?xml version="1.0" encoding="GB2312"?>', '<?xml version="1.0" encoding="GBK"?>']
)
def test_gb_declared_but_really_utf8(decl: str) -> None:
    body = _keepalive_text(decl, "大华1.107 海康摄像机").encode("utf-8")
    with pytest.raises(UnicodeDecodeError):
        body.decode("gb2312")
    msg = m.parse(body)
    assert msg.charset == "UTF-8"
    assert msg.fields["Status"] == "大华1.107 海康摄像机"
    # Even a two-character name whose UTF-8 bytes also read as valid GB18030.
    two = _keepalive_text(decl, "中文").encode("utf-8")
    two.decode("gb18030")
    assert m.parse(two).fields["Status"] == "中文"


def test_utf8_declared_but_really_gb() -> None:
    body = _keepalive_text('<?xml version="1.0" encoding="UTF-8"?>', "视频动检").encode("gb2312")
    msg = m.parse(body)
    assert (msg.charset, msg.fields["Status"]) == ("GB18030", "视频动检")


@pytest.mark.parametrize("name", ["楼", "隆陇", "一号楼"])
def test_gb_text_that_is_also_valid_utf8_stays_gb(name: str) -> None:
    encoded = name.encode("gb2312")
    if name != "一号楼":
        encoded.decode("utf-8")  # these GB2312 bytes are valid UTF-8 as well ("楼" reads as "¥")
    for decl in ('<?xml version="1.0" encoding="GB2312"?>', ""):
        msg = m.parse(_keepalive_text(decl, name).encode("gb2312"))
        assert msg.fields["Status"] == name


def test_no_declaration_detects_gb_and_utf8() -> None:
    assert m.decode_body(_keepalive_text("", "海康").encode("gb2312"))[1] == "GB18030"
    assert m.decode_body(_keepalive_text("", "海康").encode("utf-8"))[1] == "UTF-8"
    assert m.parse(_keepalive_text("", "海康").encode("gb2312")).fields["Status"] == "海康"


def test_unknown_declared_charset_is_detected() -> None:
    body = _keepalive_text('<?xml version="1.0" encoding="ISO-8859-1"?>', "海康").encode("gb2312")
    msg = m.parse(body)
    assert (msg.charset, msg.fields["Status"]) == ("GB18030", "海康")


def test_bom_is_stripped() -> None:
    body = b"\xef\xbb\xbf" + _keepalive_text('<?xml version="1.0" encoding="UTF-8"?>', "海康").encode()
    msg = m.parse(body)
    assert (msg.charset, msg.fields["Status"]) == ("UTF-8", "海康")
    # A UTF-8 BOM wins over a GB2312 declaration.
    body = b"\xef\xbb\xbf" + _keepalive_text('<?xml version="1.0" encoding="GB2312"?>', "海康").encode()
    assert m.parse(body).fields["Status"] == "海康"
    # UTF-16 with BOM.
    body = _keepalive_text('<?xml version="1.0" encoding="UTF-16"?>', "海康").encode("utf-16")
    msg = m.parse(body)
    assert (msg.charset, msg.fields["Status"]) == ("UTF-16", "海康")


def test_undecodable_bytes_are_replaced_not_fatal() -> None:
    body = (
        _keepalive_text('<?xml version="1.0" encoding="GB2312"?>', "X")
        .encode()
        .replace(b"X", b"\xff\xff\x80")
    )
    text, charset = m.decode_body(body)
    assert charset == "GB2312" and "\ufffd" in text
    assert m.as_keepalive(m.parse(body)).device_id == "34020000001320000001"


# ------------------------------------------------------------------------------ safety


def test_billion_laughs_refused() -> None:
    entities = ['<!ENTITY lol0 "lol">'] + [f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)]
    lol = (
        '<?xml version="1.0"?>\n<!DOCTYPE lolz [\n'
        + "\n".join(entities)
        + "\n]>\n<Notify><CmdType>Keepalive</CmdType><SN>1</SN><DeviceID>&lol9;</DeviceID></Notify>"
    )
    with pytest.raises(ManscdpError, match="DOCTYPE"):
        m.parse(lol.encode())


@pytest.mark.parametrize(
    "prolog",
    [
        '<!DOCTYPE Notify [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>',
        '<!DOCTYPE Notify SYSTEM "http://example.invalid/x.dtd">',
        "<!doctype Notify>",
        "<!DOCTYPE Notify>",
    ],
)
def test_doctype_and_external_entities_refused(prolog: str) -> None:
    body = (
        '<?xml version="1.0" encoding="GB2312"?>' + prolog + "<Notify><CmdType>Keepalive</CmdType><SN>1</SN>"
        "<DeviceID>&xxe;</DeviceID></Notify>"
    ).encode()
    with pytest.raises(ManscdpError):
        m.parse(body)


def test_undefined_entity_is_an_error() -> None:
    with pytest.raises(ManscdpError):
        m.parse(_keepalive_text("", "&nope;").encode())


def test_size_cap() -> None:
    padding = b" " * (m.MAX_BODY_BYTES + 1)
    with pytest.raises(ManscdpError, match="too large"):
        m.parse(_keepalive_text("", "OK").encode() + padding)
    with pytest.raises(ManscdpError, match="too large"):
        m.decode_body(padding)


def test_deep_nesting_does_not_crash() -> None:
    deep = "<a>" * 100_000 + "</a>" * 100_000
    msg = m.parse(_keepalive_text("", "OK").replace("</Notify>", deep + "</Notify>").encode())
    assert m.as_keepalive(msg).status == "OK"


# ------------------------------------------------------------------------------ errors and tolerance


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"   ",
        b"not xml at all",
        b"<Notify>",
        b"<Notify><CmdType>Keepalive</CmdType><SN>1</SN><DeviceID>1</DeviceID>",
        b"<Request><CmdType>Keepalive</CmdType><SN>1</SN><DeviceID>1</DeviceID></Request>",
        b"<Notify><SN>1</SN><DeviceID>1</DeviceID></Notify>",
        b"<Notify><CmdType> </CmdType><SN>1</SN><DeviceID>1</DeviceID></Notify>",
        b"<Notify><CmdType>Keepalive</CmdType><DeviceID>1</DeviceID></Notify>",
        b"<Notify><CmdType>Keepalive</CmdType><SN>abc</SN><DeviceID>1</DeviceID></Notify>",
        b"<Notify><CmdType>Keepalive</CmdType><SN>-1</SN><DeviceID>1</DeviceID></Notify>",
        b"<Notify><CmdType>Keepalive</CmdType><SN>1_000</SN><DeviceID>1</DeviceID></Notify>",
        b"<Notify><CmdType>Keepalive</CmdType><SN></SN><DeviceID>1</DeviceID></Notify>",
        b"<Notify><CmdType>Keepalive</CmdType><SN>1</SN></Notify>",
        b"<Notify><CmdType>Keepalive</CmdType><SN>1</SN><DeviceID></DeviceID></Notify>",
        b'<?xml version="1.0"?><?xml version="1.0"?><Notify/>',
        b"<Notify><CmdType>Keepalive</CmdType><SN>1</SN><DeviceID>1\x00</DeviceID></Notify>",
    ],
)
def test_bad_bodies_raise_manscdp_error(body: bytes) -> None:
    with pytest.raises(ManscdpError):
        m.parse(body)


def test_non_bytes_input_is_a_manscdp_error() -> None:
    with pytest.raises(ManscdpError):
        m.parse("<Notify/>")  # type: ignore[arg-type]
    for view in ALL_VIEWS:
        with pytest.raises(ManscdpError):
            view(42)  # type: ignore[arg-type]


def test_views_accept_bytes_and_reject_wrong_kind() -> None:
    body = m.build_keepalive(1, "34020000001320000001")
    assert m.as_keepalive(body).sn == 1
    with pytest.raises(ManscdpError, match="expected"):
        m.as_catalog(body)
    query = m.parse(m.build_query("Catalog", 1, "34020000001320000001"))
    with pytest.raises(ManscdpError):
        m.as_catalog(query)  # a Query is not a catalog page
    with pytest.raises(ManscdpError):
        m.as_keepalive(m.ManscdpMessage("Notify", "Keepalive", 1, "x", "UTF-8", {}))  # no element


def test_case_tolerance() -> None:
    body = (
        b'<?xml version="1.0"?><response><cmdtype>devicestatus</cmdtype><Sn>3</Sn><DeviceId>1</DeviceId>'
        b"<ONLINE>online</ONLINE><AlarmStatus num='1'><item><deviceid>2</deviceid><dutystatus>ALARM</dutystatus>"
        b"</item></AlarmStatus></response>"
    )
    msg = m.parse(body)
    assert (msg.root, msg.cmd_type, msg.sn, msg.device_id) == ("Response", "DeviceStatus", 3, "1")
    assert msg.get("online") == "online" and msg.get("Missing", "dflt") == "dflt"
    status = m.as_device_status(msg)
    assert status.online is True
    assert status.alarms == [("2", "ALARM")]
    ka = m.parse(b"<Notify><CmdType>KeepAlive</CmdType><SN>1</SN><DeviceID>1</DeviceID></Notify>")
    assert ka.cmd_type == "Keepalive"
    assert m.as_keepalive(ka).status is None
    catalog = m.as_catalog(
        b"<Response><CmdType>Catalog</CmdType><SN>1</SN><DeviceID>1</DeviceID><SumNum>2</SumNum>"
        b"<devicelist NUM='2'><ITEM><DeviceID>5</DeviceID><ptztype>2</ptztype></ITEM></devicelist></Response>"
    )
    assert (catalog.num, catalog.items[0].ptz_type) == (2, 2)


def test_exact_name_wins_over_case_variant() -> None:
    msg = m.parse(
        b"<Notify><CmdType>Keepalive</CmdType><SN>1</SN><DeviceID>1</DeviceID>"
        b"<status>low</status><Status>EXACT</Status></Notify>"
    )
    assert m.as_keepalive(msg).status == "EXACT"
    assert msg.get("Status") == "EXACT"


def test_namespaced_root_is_tolerated() -> None:
    msg = m.parse(
        b'<Notify xmlns="urn:example"><CmdType>Keepalive</CmdType><SN>1</SN><DeviceID>9</DeviceID>'
        b"<Status>OK</Status></Notify>"
    )
    assert (msg.root, msg.device_id, m.as_keepalive(msg).status) == ("Notify", "9", "OK")


def test_broadcast_uses_target_id() -> None:
    msg = m.parse(
        b"<Notify><CmdType>Broadcast</CmdType><SN>1</SN><SourceID>34020000002000000001</SourceID>"
        b"<TargetID>34020000001370000001</TargetID></Notify>"
    )
    assert msg.device_id == "34020000001370000001"


def test_numeric_garbage_becomes_none() -> None:
    body = (
        b"<Response><CmdType>Catalog</CmdType><SN>1</SN><DeviceID>1</DeviceID><SumNum>lots</SumNum>"
        b'<DeviceList Num="x">'
        b"<Item><DeviceID>a</DeviceID><Parental>yes</Parental><Port></Port><Longitude>0</Longitude>"
        b"<Latitude>0.0</Latitude><SafetyWay>1.5</SafetyWay><Info><PTZType>ball</PTZType></Info></Item>"
        b"<Item><DeviceID>b</DeviceID><Longitude>181</Longitude><Latitude>-91</Latitude></Item>"
        b"<Item><DeviceID>c</DeviceID><Longitude>nan</Longitude><Latitude>1e999</Latitude><Port>99999999999999999999</Port></Item>"
        b"<Item><DeviceID>d</DeviceID><Longitude> 116.40 </Longitude><Latitude>-33.5</Latitude></Item>"
        b"<Item><Name>no id</Name></Item>"
        b"</DeviceList></Response>"
    )
    page = m.as_catalog(m.parse(body))
    assert page.num is None
    assert page.sum_num == 4  # SumNum unusable: falls back to what this page holds
    a, b, c, d = page.items
    assert (a.parental, a.port, a.longitude, a.latitude, a.safety_way, a.ptz_type) == (None,) * 6
    assert (b.longitude, b.latitude) == (None, None)
    assert (c.longitude, c.latitude, c.port) == (None, None, None)
    assert (d.longitude, d.latitude) == (116.4, -33.5)
    info = m.as_device_info(
        b"<Response><CmdType>DeviceInfo</CmdType><SN>1</SN><DeviceID>1</DeviceID><Channel>two</Channel>"
        b"<MaxCamera></MaxCamera><MaxAlarm>-</MaxAlarm></Response>"
    )
    assert (info.channel, info.max_camera, info.max_alarm, info.device_name) == (None, None, None, None)
    pos = m.as_mobile_position(
        b"<Notify><CmdType>MobilePosition</CmdType><SN>1</SN><DeviceID>1</DeviceID><Longitude>x</Longitude>"
        b"<Speed>fast</Speed><Direction>90</Direction></Notify>"
    )
    assert (pos.longitude, pos.latitude, pos.speed, pos.direction, pos.altitude, pos.time) == (
        None,
        None,
        None,
        90.0,
        None,
        None,
    )


def test_time_helpers() -> None:
    assert m.parse_gb_time("2024-05-04T14:43:16") == datetime(2024, 5, 4, 14, 43, 16)
    assert m.parse_gb_time(" 2024-05-04 14:43:16.250 ") == datetime(2024, 5, 4, 14, 43, 16, 250000)
    for bad in (None, "", "yesterday", "2024-13-01T00:00:00", "2024-05-04T14:43", "2024-05-04T25:00:00"):
        assert m.parse_gb_time(bad) is None
    assert m.format_gb_time(datetime(2024, 5, 4, 1, 2, 3)) == "2024-05-04T01:02:03"
    assert RecordItem("1", start_time="junk").start is None


def test_canonical_charset() -> None:
    assert m.canonical_charset("gb_2312") == "GB2312"
    assert m.canonical_charset(" Utf8 ") == "UTF-8"
    assert m.canonical_charset("CP936") == "GBK"
    assert m.canonical_charset("latin-1") is None
    assert m.canonical_charset(None) is None


def test_only_ascii_digits_count() -> None:
    with pytest.raises(ManscdpError):
        m.parse("<Notify><CmdType>Keepalive</CmdType><SN>１２</SN><DeviceID>1</DeviceID></Notify>".encode())
    info = m.as_device_info(
        "<Response><CmdType>DeviceInfo</CmdType><SN>1</SN><DeviceID>1</DeviceID><Channel>４</Channel></Response>".encode()
    )
    assert info.channel is None


def test_gb18030_encoded_bom_is_ignored() -> None:
    body = _keepalive_text('<?xml version="1.0" encoding="GB18030"?>', "海康").encode("gb18030")
    msg = m.parse("\ufeff".encode("gb18030") + body)
    assert msg.fields["Status"] == "海康"
