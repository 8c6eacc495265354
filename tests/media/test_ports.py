import socket

import pytest

from media_relay.ports import NoPortsLeft, PortPool, SsrcAllocator


def test_ssrc_format_live_and_history():
    a = SsrcAllocator("3402000000")
    live, hist = a.allocate(), a.allocate(history=True)
    assert live == "0200000001" and hist == "1200000001"  # 0|1 + domain[3:8] + 4-digit sequence
    assert len(live) == 10 and live.isdigit()


def test_ssrc_never_collides_while_alive_and_is_released():
    a = SsrcAllocator("3402000000")
    got = {a.allocate() for _ in range(9999)}
    assert len(got) == 9999
    with pytest.raises(NoPortsLeft):
        a.allocate()
    a.release("0200000042")
    assert a.allocate() == "0200000042"


def test_ssrc_space_is_fresh_after_a_restart():
    # nothing persisted: a new allocator (a restart, a wiped database or Redis) starts with every value free
    assert SsrcAllocator("3402000000").in_use() == 0


def test_port_pool_skips_busy_ports_and_runs_out_clearly():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        busy = s.getsockname()[1]
        pool = PortPool(busy, busy + 1, host="127.0.0.1")
        got = pool.allocate()
        assert got == busy + 1 or got != busy
        if got == busy + 1:
            with pytest.raises(NoPortsLeft, match="RTP"):
                pool.allocate()
        pool.release(got)
        assert pool.in_use() == 0
