"""Fixtures of the output tests: ICE over loopback, so the WebRTC tests need no network interface."""

from __future__ import annotations

import pytest


@pytest.fixture
def loopback_ice(monkeypatch):
    """aioice leaves 127.0.0.1 out of the host candidates; in tests both peers are in this process."""
    import aioice.ice

    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])
