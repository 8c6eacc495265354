"""SIPp playing a GB/T 28181 camera with recordings against the real SipService (in process, UDP on 127.0.0.1).

The device registers with digest and keeps alive (../shared/peers/sipp/gb_dev_uac.xml); tests/sipp/
gb_dev_history_ooc.xml answers a RecordInfo query in two MESSAGEs and a Playback INVITE with SDP, then sends
MediaStatus 121 inside the call and expects the platform's 200 and BYE. SIPp's exit status says whether
every step it expected happened.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sip_server.gb.invite import MediaStatusReceived
from sip_server.gb.server import GbConfig
from sip_server.service import SipService
from tests.conftest import need_tool
from tests.e2e.platform import free_port
from tests.gb.sipp_device import spawn_sipp_device
from tests.gb.test_identity_live import until

PASSWORD = "Gate-7-camera#pw"
DEV = "34020000001320000071"
CHANNEL = "34020000001310000071"
HERE = Path(__file__).resolve().parent.parent / "sipp"


async def test_sipp_device_records_and_playback_end(shared_dir, tmp_path):
    sipp = need_tool("sipp")
    svc = SipService(GbConfig(default_password=PASSWORD, catalog_subscribe_expires=0), host="127.0.0.1", port=0)
    events: list = []
    svc.add_listener(events.append)
    await svc.start()
    seconds = 8
    proc = await spawn_sipp_device(sipp, svc.bound_port, uac=shared_dir / "peers" / "sipp" / "gb_dev_uac.xml",
                                   ooc=HERE / "gb_dev_history_ooc.xml", device_id=DEV, channel_id=CHANNEL,
                                   password=PASSWORD, cwd=tmp_path, seconds=seconds)
    try:
        assert await until(lambda: svc.is_online(DEV), 5), "the SIPp device did not register"
        t0 = datetime(2025, 1, 1, 0, 0, tzinfo=UTC)  # 08:00 Beijing
        result = await asyncio.wait_for(svc.record_info(DEV, CHANNEL, t0, t0 + timedelta(hours=2), timeout=3), 5)
        assert result.complete and result.sum_num == 3 and result.messages == 2
        assert [i.file_path for i in result.items] == ["rec001", "rec002", "rec003"]
        assert [i.type for i in result.items] == ["time", "time", "alarm"]

        start = int(t0.timestamp())
        answered = await asyncio.wait_for(svc.invite(
            DEV, CHANNEL, media_ip="127.0.0.1", media_port=free_port("udp"), ssrc="1000000071", transport="udp",
            session_name="Playback", start=start, end=start + 600), 5)
        assert answered.filesize == 1048576 and answered.ssrc == "1000000071"
        assert answered.sdp.time == f"{start} {start + 600}"
        assert await until(lambda: any(isinstance(e, MediaStatusReceived) for e in events), 5)
        [status] = [e for e in events if isinstance(e, MediaStatusReceived)]
        assert (status.call_id, status.device_id, status.channel_id, status.notify_type) == (
            answered.call_id, DEV, CHANNEL, "121")
        svc.end_session(answered.call_id, "file ended")
        out = (await asyncio.wait_for(proc.communicate(), seconds + 15))[0].decode("utf-8", "replace")
        logs = "".join(p.read_text("utf-8", "replace") for p in tmp_path.glob("*_messages.log"))
        assert proc.returncode == 0, out + logs[-4000:]
        # what SIPp saw: its MediaStatus, our 200 to it, then our BYE
        after = logs[logs.index("<NotifyType>121</NotifyType>"):]
        assert after.index("SIP/2.0 200 OK") < after.index("BYE sip:")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await svc.close()
