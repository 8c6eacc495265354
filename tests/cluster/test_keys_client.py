from __future__ import annotations

import pytest

from cluster.client import connect, redacted_url
from cluster.keys import RedisKeys


def test_keys_join_parts_under_the_prefix():
    keys = RedisKeys("gbops:")
    assert keys("node", "n1") == "gbops:node:n1"
    assert keys("nodes") == "gbops:nodes"
    assert keys("lease", "stream:34020000001320000001/34020000001310000001") == \
        "gbops:lease:stream:34020000001320000001/34020000001310000001"


@pytest.mark.parametrize("part", ["", "a b", "a\nb", "a\x00b", "tab\t", "\x7f", "nbsp\u00a0x", "\u2028"])
def test_keys_refuse_bad_parts(part):
    with pytest.raises(ValueError):
        RedisKeys("gbops:")("node", part)


def test_keys_refuse_bad_prefix_and_no_parts():
    with pytest.raises(ValueError):
        RedisKeys("gb ops:")
    with pytest.raises(ValueError):
        RedisKeys("gbops:")()


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ("redis://:s3cret@redis.example:6380/1", "redis://:***@redis.example:6380/1"),
    ("rediss://user:s3cret@[::1]:6379/0?password=s3cret", "rediss://user:***@[::1]:6379/0"),
])
def test_redacted_url_hides_the_password(url, shown):
    assert redacted_url(url) == shown
    assert "s3cret" not in redacted_url(url)


async def test_connect_returns_bytes(redis_url, keys):
    client = connect(redis_url)
    try:
        await client.set(keys("probe"), "值", px=5000)
        assert await client.get(keys("probe")) == "值".encode()
    finally:
        await client.aclose()
