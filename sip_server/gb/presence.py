"""Which devices are online, decided from registrations and keepalives (sans-IO).

A device is online from a successful REGISTER until the first of: an unregister (``Expires: 0``), its
registration expiring, or ``misses`` keepalive intervals passing without a keepalive. The interval is
the device's own (DeviceInfo / configuration) or the platform default. A restarted node counts the misses
again from its start (:meth:`PresenceTracker.restore`): its downtime is not the devices' fault.

Timers are kept in a heap keyed by deadline. A keepalive does not touch the heap: when an entry comes
due, the real deadline is recomputed and the entry is pushed back if the device was seen since. So a
keepalive costs a dict lookup and two float stores, which keeps 10,000 devices cheap.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

KEEPALIVE_TIMEOUT = "keepalive_timeout"
REGISTRATION_EXPIRED = "registration_expired"


@dataclass(slots=True)
class DeviceState:
    device_id: str
    online: bool
    expires_at: float
    last_seen: float
    interval: float
    queued_at: float = -1.0  # deadline of this device's live heap entry (-1: none)
    restored_at: float = -1.0  # restored at this node's start and not judged since (-1: no)


class PresenceTracker:
    #: A restored device judged this many seconds after its deadline was judged by a node that could not
    #: hear it: the rest of the platform's start keeps the loop busy after the SIP sockets listen, and what
    #: the devices sent meanwhile waits in the sockets (a TCP device's new connection is read only after
    #: the timers of that turn of the loop have run).
    restore_late = 1.0

    def __init__(self, default_interval: float = 60.0, misses: int = 3) -> None:
        self.default_interval = default_interval
        self.misses = misses
        self._devices: dict[str, DeviceState] = {}
        self._heap: list[tuple[float, str]] = []

    # ------------------------------------------------------------------ queries
    def get(self, device_id: str) -> DeviceState | None:
        return self._devices.get(device_id)

    def is_online(self, device_id: str) -> bool:
        st = self._devices.get(device_id)
        return bool(st and st.online)

    def online_ids(self) -> list[str]:
        return [d for d, s in self._devices.items() if s.online]

    def online_count(self) -> int:
        return sum(1 for s in self._devices.values() if s.online)

    def deadline(self, st: DeviceState) -> float:
        return min(st.expires_at, st.last_seen + self.misses * st.interval)

    # ------------------------------------------------------------------ inputs
    def restore(self, device_id: str, *, online: bool, expires_at: float, last_seen: float,
                interval: float | None = None, restarted_at: float | None = None) -> None:
        """Load a device's state from storage at start (times on this tracker's clock).

        ``restarted_at`` (this node's start): the keepalive window starts again then.  While the node was
        down nobody could hear the device's keepalives, which is no fault of the device: counting its misses
        from its last keepalive in the store would take every device offline after a restart longer than
        the window (a false offline).  Its registration still ends when it ends: a registration that runs
        out during the downtime is a real offline (the caller does not restore it online)."""
        if restarted_at is not None:
            last_seen = max(last_seen, restarted_at)
        st = DeviceState(device_id, online, expires_at, last_seen, interval or self.default_interval)
        if restarted_at is not None:
            st.restored_at = last_seen
        self._devices[device_id] = st
        if online:
            self._schedule(st)

    def register(self, device_id: str, now: float, expires: float) -> bool:
        """A successful REGISTER. Returns True when the device was offline (a transition)."""
        st = self._devices.get(device_id)
        if st is None:
            st = DeviceState(device_id, False, 0.0, now, self.default_interval)
            self._devices[device_id] = st
        was_online = st.online
        st.online = True
        st.expires_at = now + expires
        st.last_seen = now
        self._schedule(st)
        return not was_online

    def keepalive(self, device_id: str, now: float) -> bool:
        """A keepalive. Returns False when the device has no live registration here."""
        st = self._devices.get(device_id)
        if st is None or not st.online:
            return False
        st.last_seen = now
        return True

    def unregister(self, device_id: str) -> bool:
        """Returns True when the device was online (a transition)."""
        st = self._devices.get(device_id)
        if st is None or not st.online:
            return False
        st.online = False
        return True

    def forget(self, device_id: str) -> bool:
        """Drop a device's state without a transition (its registration moved to another SIP node of the
        cluster, which judges it from now on).  Returns True when it was online here."""
        st = self._devices.pop(device_id, None)
        return bool(st and st.online)

    def set_interval(self, device_id: str, interval: float, now: float) -> None:
        st = self._devices.get(device_id)
        if st is not None and interval > 0:
            st.interval = float(interval)
            if st.online:
                self._schedule(st)

    # ------------------------------------------------------------------ timers
    def _schedule(self, st: DeviceState) -> None:
        d = self.deadline(st)
        if st.queued_at < 0 or d < st.queued_at:
            st.queued_at = d
            heapq.heappush(self._heap, (d, st.device_id))

    def get_timer(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def handle_timer(self, now: float) -> list[tuple[str, str]]:
        """Returns ``(device_id, reason)`` for each device that goes offline now."""
        out: list[tuple[str, str]] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            due, device_id = heapq.heappop(heap)
            st = self._devices.get(device_id)
            if st is None or st.queued_at != due:
                continue  # superseded by an earlier entry
            st.queued_at = -1.0
            if not st.online:
                continue
            real = self.deadline(st)
            if real <= now and st.restored_at >= 0:
                # First judgement of a restored device: when it comes late and nothing was heard from the device
                # since the restart, this node was not listening at its deadline; its window starts again now,
                # once (its registration still ends when it ends).
                unheard = st.last_seen <= st.restored_at
                st.restored_at = -1.0
                if unheard and now - real > self.restore_late:
                    st.last_seen = now
                    real = self.deadline(st)
            if real > now:
                st.queued_at = real
                heapq.heappush(heap, (real, device_id))
                continue
            st.online = False
            keepalive_deadline = st.last_seen + self.misses * st.interval
            out.append((device_id, REGISTRATION_EXPIRED if st.expires_at <= keepalive_deadline else KEEPALIVE_TIMEOUT))
        return out
