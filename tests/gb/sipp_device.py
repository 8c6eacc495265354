"""SIPp playing a GB/T 28181 device against an in-process SipService (UDP on 127.0.0.1): the command line the
device scenarios share (digest REGISTER as ``device_id``, keepalives, one call, message traces in ``cwd``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.e2e.platform import free_port

SERVER_ID = "34020000002000000001"
DOMAIN = "3402000000"


async def spawn_sipp_device(sipp: str, server_port: int, *, uac: Path, ooc: Path, device_id: str, channel_id: str,
                            password: str, cwd: Path, seconds: int = 8, extra: tuple[str, ...] = ()
                            ) -> asyncio.subprocess.Process:
    port = free_port("udp")
    return await asyncio.create_subprocess_exec(
        sipp, f"127.0.0.1:{server_port}", "-sf", str(uac), "-oocsf", str(ooc), "-i", "127.0.0.1", "-p", str(port),
        "-mp", str(port + 1000), "-m", "1", "-d", str(seconds * 1000 // 4), "-nd", "-nostdin",
        "-timeout", f"{seconds}s", "-au", device_id, "-ap", password, "-set", "devid", device_id,
        "-set", "srvid", SERVER_ID, "-set", "domain", DOMAIN, "-set", "ka_count", "3", "-set", "chid", channel_id,
        "-trace_msg", "-trace_err", *extra, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
