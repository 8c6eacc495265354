"""Fuzzing the MANSCDP codec: whatever the bytes, only ManscdpError may escape."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sip_server.gb import manscdp as m
from sip_server.gb.manscdp import ManscdpError
from tests.conftest import need

_VECTOR_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "vectors" / "sip"

VIEWS = (
    m.as_keepalive,
    m.as_catalog,
    m.as_device_info,
    m.as_device_status,
    m.as_record_info,
    m.as_alarm,
    m.as_mobile_position,
)

# MANSCDP_FUZZ_EXAMPLES=20000 runs a longer campaign than the default.
FUZZ = settings(
    max_examples=int(os.environ.get("MANSCDP_FUZZ_EXAMPLES", "400")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _vector_bodies() -> list[bytes]:
    """MANSCDP bodies of the shared vectors (.xml as is; .sip split at CRLFCRLF, Content-Length
    bytes), plus a few built here so the fuzzers also start from MobilePosition and notifies."""
    bodies: list[bytes] = []
    if _VECTOR_DIR.is_dir():
        for path in sorted(_VECTOR_DIR.iterdir()):
            raw = path.read_bytes()
            if path.suffix == ".xml":
                bodies.append(raw)
            elif path.suffix == ".sip":
                head, _, rest = raw.partition(b"\r\n\r\n")
                lower = head.lower()
                if b"manscdp" not in lower:
                    continue
                length = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
                bodies.append(rest[:length])
    bodies.append(
        m.build_mobile_position_notify(
            1, "34020000001320000001", time="2024-01-01T00:00:00", longitude=1, latitude=2
        )
    )
    bodies.append(
        m.build_catalog_notify(2, "1", 1, [m.CatalogItem("2", "名称", event="ADD", longitude=120.1)])
    )
    bodies.append(m.build_device_status_response(3, "1", device_time="x", alarms=[("a", "ONDUTY")]))
    return bodies


BODIES = _vector_bodies()


def exercise(body: bytes) -> None:
    """Run every entry point on *body*; anything but ManscdpError fails the test."""
    try:
        text, charset = m.decode_body(body)
    except ManscdpError:
        pass
    else:
        assert isinstance(text, str) and isinstance(charset, str)
    try:
        msg = m.parse(body)
    except ManscdpError:
        return
    assert msg.root in m.ROOTS and msg.cmd_type and msg.device_id and msg.sn >= 0
    repr(msg)
    msg.get("Status")
    msg.find("Info")
    for view in VIEWS:
        try:
            result = view(msg)
        except ManscdpError:
            continue
        repr(result)
        for item in getattr(result, "items", []):
            for attr in ("start", "end"):
                getattr(item, attr, None)


def test_vector_bodies_found() -> None:
    need(_VECTOR_DIR.is_dir(), "shared vectors not present")
    assert len(BODIES) >= 23 + 3


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes(body: bytes) -> None:
    exercise(body)


@FUZZ
@given(st.binary(max_size=64))
def test_random_bytes_behind_a_declaration(tail: bytes) -> None:
    for decl in (b'<?xml version="1.0" encoding="GB2312"?>', b'<?xml version="1.0" encoding="UTF-8"?>', b""):
        exercise(
            decl
            + b"<Notify><CmdType>Keepalive</CmdType><SN>1</SN><DeviceID>"
            + tail
            + b"</DeviceID></Notify>"
        )


def _mutate(data: st.DataObject, body: bytes) -> bytes:
    buf = bytearray(body)
    for _ in range(data.draw(st.integers(1, 8), label="mutations")):
        op = data.draw(st.sampled_from(["flip", "set", "delete", "insert", "duplicate", "truncate", "swap"]))
        n = len(buf)
        if n == 0:
            buf += data.draw(st.binary(min_size=1, max_size=8))
            continue
        i = data.draw(st.integers(0, n - 1))
        if op == "flip":
            buf[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "set":
            buf[i] = data.draw(
                st.sampled_from(list(b"<>/&;\"'=?!\x00\x80\xff\xa1 ") + [data.draw(st.integers(0, 255))])
            )
        elif op == "delete":
            j = data.draw(st.integers(i, min(n, i + 40)))
            del buf[i:j]
        elif op == "insert":
            buf[i:i] = data.draw(
                st.one_of(
                    st.binary(max_size=16),
                    st.sampled_from(
                        [
                            b"<!DOCTYPE x>",
                            b"<!ENTITY a 'b'>",
                            b"&amp;",
                            b"&#0;",
                            b"&#x110000;",
                            b"<![CDATA[x]]>",
                            b"<!-- c -->",
                            b"<?pi x?>",
                            b"<Item>",
                            b"</Item>",
                            b"<SN>",
                            b"\xef\xbb\xbf",
                            b"\xff\xfe",
                            b"\xfe\x9f",
                            b"\x95\x32\x82\x36",
                        ]
                    ),
                )
            )
        elif op == "duplicate":
            j = data.draw(st.integers(i, min(n, i + 200)))
            buf[j:j] = buf[i:j]
        elif op == "truncate":
            del buf[i:]
        elif op == "swap":
            j = data.draw(st.integers(0, n - 1))
            buf[i], buf[j] = buf[j], buf[i]
    return bytes(buf)


@FUZZ
@given(st.data())
def test_mutated_vector_bodies(data: st.DataObject) -> None:
    body = data.draw(st.sampled_from(BODIES), label="vector")
    exercise(_mutate(data, body))


@FUZZ
@given(st.sampled_from(BODIES), st.integers(0, 4096))
def test_truncated_vector_bodies(body: bytes, cut: int) -> None:
    exercise(body[:cut])


_TAGS = [
    "Query",
    "Response",
    "Notify",
    "Control",
    "CmdType",
    "SN",
    "DeviceID",
    "Keepalive",
    "Catalog",
    "DeviceInfo",
    "DeviceStatus",
    "RecordInfo",
    "Alarm",
    "MobilePosition",
    "SumNum",
    "DeviceList",
    "RecordList",
    "Item",
    "Info",
    "Alarmstatus",
    "PTZType",
    "Longitude",
    "Latitude",
    "Name",
    "Status",
    "Event",
    "StartTime",
    "AlarmTypeParam",
]
_TOKENS = (
    [f"<{t}>" for t in _TAGS]
    + [f"</{t}>" for t in _TAGS]
    + [f"<{t}/>" for t in _TAGS]
    + list(_TAGS)
    + [
        '<?xml version="1.0" encoding="GB2312"?>',
        '<?xml version="1.0" encoding="UTF-8" ?>',
        "<?xml ",
        '<DeviceList Num="2">',
        '<Alarmstatus Num="x">',
        "<!DOCTYPE a>",
        "<!ENTITY b 'c'>",
        "&lt;",
        "&#12354;",
        "&bogus;",
        "<![CDATA[",
        "]]>",
        "<!--",
        "-->",
        "1",
        "0",
        "-5",
        "1e999",
        "nan",
        "34020000001320000001",
        "2024-05-04T14:43:16",
        "大华",
        "海康摄像机",
        "䶮",
        "𠀀",
        " ",
        "\n",
        "\r\n",
        "\t",
        "=",
        '"',
        "'",
        "<",
        ">",
        "/",
    ]
)
_xmlish_text = st.lists(st.one_of(st.sampled_from(_TOKENS), st.text(max_size=4)), max_size=60).map("".join)


@FUZZ
@given(_xmlish_text, st.sampled_from(["utf-8", "gb18030", "utf-16"]))
def test_random_xmlish_text(text: str, codec: str) -> None:
    exercise(text.encode(codec, "surrogatepass"))


_leaf_text = st.text(max_size=12) | st.sampled_from(["1", "0", "ON", "120.5", "34020000001320000001", ""])


def _element(tag_strategy: st.SearchStrategy[str], depth: int) -> st.SearchStrategy[str]:
    def render(tag: str, children: list[str] | str) -> str:
        inner = children if isinstance(children, str) else "".join(children)
        return f"<{tag}>{inner}</{tag}>"

    if depth == 0:
        content: st.SearchStrategy = _leaf_text.map(lambda s: s.replace("&", "&amp;").replace("<", "&lt;"))
    else:
        content = st.one_of(
            _leaf_text.map(lambda s: s.replace("&", "&amp;").replace("<", "&lt;")),
            st.lists(_element(tag_strategy, depth - 1), max_size=4),
        )
    return st.builds(render, tag_strategy, content)


@FUZZ
@given(
    root=st.sampled_from(["Query", "Response", "Notify", "Control", "notify", "Other"]),
    cmd=st.sampled_from(_TAGS + ["", " Keepalive ", "KEEPALIVE"]),
    sn=st.one_of(st.integers(-5, 10**22).map(str), st.text(max_size=5)),
    children=st.lists(_element(st.sampled_from(_TAGS), 2), max_size=8),
    codec=st.sampled_from(["utf-8", "gb18030"]),
    decl=st.sampled_from(
        ["", '<?xml version="1.0" encoding="GB2312"?>', '<?xml version="1.0" encoding="UTF-8"?>']
    ),
)
def test_well_formed_random_structures(
    root: str, cmd: str, sn: str, children: list[str], codec: str, decl: str
) -> None:
    sn_text = sn.replace("&", "&amp;").replace("<", "&lt;")
    body = (
        f"{decl}<{root}><CmdType>{cmd}</CmdType><SN>{sn_text}</SN><DeviceID>34020000001320000001</DeviceID>"
        + "".join(children)
        + f"</{root}>"
    ).encode(codec, "surrogatepass")
    exercise(body)
