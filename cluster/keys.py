"""Every Redis key of the cluster goes through :class:`RedisKeys`, so that one prefix separates platforms
sharing a Redis and no key part arriving from elsewhere (a node id, a lease name) can forge another key."""

from __future__ import annotations

__all__ = ["RedisKeys", "check_part"]


def check_part(part: str) -> str:
    """A key part: not empty, no whitespace and no control characters (they would let one name pose as
    another or garble ``redis-cli`` output); returns it unchanged."""
    if not isinstance(part, str) or not part:
        raise ValueError("empty Redis key part")
    for ch in part:
        if ch.isspace() or ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0:
            raise ValueError(f"invalid character in Redis key part {part!r}")
    return part


class RedisKeys:
    """``RedisKeys("gbops:")("node", "n1")`` -> ``"gbops:node:n1"``; ``keys("nodes")`` -> ``"gbops:nodes"``."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str) -> None:
        if not isinstance(prefix, str):
            raise ValueError("Redis key prefix must be a string")
        for ch in prefix:
            if ch.isspace() or ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0:
                raise ValueError(f"invalid character in Redis key prefix {prefix!r}")
        self.prefix = prefix

    def __call__(self, *parts: str) -> str:
        if not parts:
            raise ValueError("a Redis key needs at least one part")
        return self.prefix + ":".join(check_part(p) for p in parts)

    def __repr__(self) -> str:
        return f"RedisKeys({self.prefix!r})"
