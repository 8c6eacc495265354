"""Brute-force lockout for device registration (sans-IO: ``now`` is passed in).

More than ``max_failures`` wrong passwords within ``window`` seconds from one device id, or from one
source address, locks that id or address out for ``duration`` seconds. Keys are counted separately so
one attacker cycling device ids from one address is stopped too.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class _Entry:
    failures: deque[float] = field(default_factory=deque)
    locked_until: float = 0.0


class LockoutTracker:
    def __init__(self, max_failures: int = 5, window: float = 600.0, duration: float = 600.0) -> None:
        self.max_failures = max_failures
        self.window = window
        self.duration = duration
        self._entries: dict[str, _Entry] = {}
        self.lockouts_total = 0

    def locked_until(self, key: str, now: float) -> float | None:
        entry = self._entries.get(key)
        if entry is not None and entry.locked_until > now:
            return entry.locked_until
        return None

    def is_locked(self, *keys: str, now: float) -> bool:
        return any(self.locked_until(k, now) is not None for k in keys)

    def record_failure(self, key: str, now: float) -> bool:
        """Count one failure; return True when this failure locks the key out."""
        entry = self._entries.setdefault(key, _Entry())
        q = entry.failures
        q.append(now)
        while q and q[0] <= now - self.window:
            q.popleft()
        if len(q) > self.max_failures and entry.locked_until <= now:
            entry.locked_until = now + self.duration
            q.clear()
            self.lockouts_total += 1
            return True
        return False

    def record_success(self, key: str) -> None:
        entry = self._entries.get(key)
        if entry is not None and entry.locked_until == 0.0:
            del self._entries[key]

    def prune(self, now: float) -> None:
        stale = [
            k
            for k, e in self._entries.items()
            if e.locked_until <= now and (not e.failures or e.failures[-1] <= now - self.window)
        ]
        for k in stale:
            del self._entries[k]

    def __len__(self) -> int:
        return len(self._entries)
