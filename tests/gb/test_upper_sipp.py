"""SIPp playing an upper platform against the real SipService (in process, UDP on 127.0.0.1).

tests/sipp/gb_upper_uas.xml challenges our REGISTER (digest, qop auth) and checks the answer (verifyauth),
accepts it, sends a Query/Catalog and then an OPTIONS; it answers and logs every MESSAGE we send (the
Response/Catalog pages, keepalives). The platform answers the catalog serially, one item per UDP MESSAGE.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from sip_server.gb import events as ev
from sip_server.gb.server import GbConfig
from sip_server.gb.upper import CatalogEntry, UpperConfig
from sip_server.service import SipService
from tests.conftest import need_tool
from tests.e2e.platform import free_port
from tests.gb.test_identity_live import until

HERE = Path(__file__).resolve().parent.parent / "sipp"
UPPER_ID = "34010000002000000001"
DOMAIN = "3401000000"
LOCAL_ID = "34020000002000000009"
PASSWORD = "Upper#pw-2025"
_PAGE_RE = re.compile(r"MESSAGE Response Catalog SN=7001 SumNum=(\d+) Num=(\d+)")


async def test_sipp_upper_registers_us_queries_the_catalog_and_gets_options_answered(tmp_path):
    sipp = need_tool("sipp")
    port = free_port("udp")
    proc = await asyncio.create_subprocess_exec(
        sipp, "-sf", str(HERE / "gb_upper_uas.xml"), "-i", "127.0.0.1", "-p", str(port), "-t", "u1",
        "-nostdin", "-timeout", "30s", "-trace_logs", "-trace_msg", "-set", "upid", UPPER_ID, "-set", "domain",
        DOMAIN, "-set", "localid", LOCAL_ID, "-set", "pw", PASSWORD,
        cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    svc = SipService(GbConfig(catalog_subscribe_expires=0, cascade_catalog_items_udp=1), host="127.0.0.1", port=0)
    events: list = []
    svc.add_listener(events.append)
    await svc.start()
    entries = [CatalogEntry(LOCAL_ID, "下级平台", "system", manufacturer="gbops", model="platform"),
               CatalogEntry("340200", "芜湖市", "region"),
               CatalogEntry("34020000001310000001", "东门堃䶮", "channel", parent_id=LOCAL_ID, longitude=118.38,
                            latitude=31.33)]

    def on_event(event):
        if isinstance(event, ev.UpperCatalogQuery):
            svc.answer_catalog(event.platform_id, event.sn, entries)

    svc.add_listener(on_event)

    def logs() -> str:
        return "".join(p.read_text("utf-8", "replace") for p in tmp_path.glob("*_logs.log"))

    try:
        await asyncio.sleep(0.3)  # SIPp listening
        svc.set_upper_platforms([UpperConfig(
            platform_id=1, server_id=UPPER_ID, server_domain=DOMAIN, host="127.0.0.1", port=port, transport="udp",
            local_id=LOCAL_ID, username=LOCAL_ID, password=PASSWORD, keepalive_s=1, name="SIPp upper")])
        assert await until(lambda: (svc.upper_status(1) or {}).get("state") == "registered", 8), (
            svc.upper_status(1), logs()[-2000:])
        assert await until(lambda: any(isinstance(e, ev.UpperCatalogSent) for e in events), 8), logs()[-3000:]
        [sent] = [e for e in events if isinstance(e, ev.UpperCatalogSent)]
        assert (sent.sn, sent.sent, sent.total, sent.error) == (7001, 3, 3, None)
        assert await until(lambda: "OPTIONS 200 Allow=" in logs(), 8), logs()[-3000:]
        text = logs()
        assert "REGISTER OK" in text and "AUTH FAILED" not in text
        assert "CATALOG QUERY answered 200" in text
        assert _PAGE_RE.findall(text) == [("3", "1")] * 3  # SumNum 3 over three MESSAGEs of one item
        [allow] = re.findall(r"OPTIONS 200 Allow=(.*)", text)
        assert "OPTIONS" in allow and "INVITE" in allow and "MESSAGE" in allow
        assert "MESSAGE Notify Keepalive" in text
        messages = "".join(p.read_text("utf-8", "replace") for p in tmp_path.glob("*_messages.log"))
        assert PASSWORD not in messages
        assert [e.state for e in events if isinstance(e, ev.UpperStateChanged)][:2] == ["registering", "registered"]
    finally:
        await svc.close()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
