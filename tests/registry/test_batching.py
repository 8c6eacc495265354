"""Property: how events are cut into batches does not change the outcome.

Applying a sequence of events one at a time, or in arbitrary batches (which exercises the
in-memory coalescing and the two keepalive write paths), must give the same devices, the
same channels and the same presence history.  (GBOPS_BATCHING_EXAMPLES=2000 for a long hunt.)
"""

from __future__ import annotations

import itertools
import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from device_registry.events import (
    CatalogReported,
    ChannelInfo,
    ChannelStatusChanged,
    DeviceRegistered,
    DeviceSeen,
    DeviceUnregistered,
    DeviceWentOffline,
)
from device_registry.models import Channel, Device, PresenceEvent

from ._support import t

_namespaces = itertools.count(1)

N_DEV = 3
N_CHAN = 4

# An abstract event: (kind, device index, payload); namespaced into real events later.
op = st.one_of(
    st.tuples(st.just("reg"), st.integers(0, N_DEV - 1), st.integers(30, 3600)),
    st.tuples(st.just("unreg"), st.integers(0, N_DEV - 1), st.none()),
    st.tuples(
        st.just("offline"),
        st.integers(0, N_DEV - 1),
        st.sampled_from(["keepalive_timeout", "registration_expired"]),
    ),
    st.tuples(st.just("seen"), st.integers(0, N_DEV - 1), st.integers(-90, 90)),
    st.tuples(
        st.just("catalog"),
        st.integers(0, N_DEV - 1),
        st.tuples(
            st.dictionaries(
                st.integers(0, N_CHAN - 1), st.sampled_from(["ON", "OFF", "OK", None]), max_size=N_CHAN
            ),
            st.booleans(),
        ),
    ),
    st.tuples(
        st.just("status"),
        st.integers(0, N_DEV - 1),
        st.tuples(st.integers(0, N_CHAN - 1), st.sampled_from(["ON", "OFF", "VLOST", "DEL", "ADD"])),
    ),
)


def _dev(ns: int, i: int) -> str:
    return f"{ns:010d}132{i:07d}"


def _chan(i: int) -> str:
    return f"3402000000131{i:07d}"


def _events(ns: int, ops: list[tuple[str, int, Any]]) -> list[object]:
    out: list[object] = []
    for step, (kind, d, payload) in enumerate(ops):
        at = t(step * 10)
        dev = _dev(ns, d)
        if kind == "reg":
            out.append(DeviceRegistered(dev, at, f"10.0.0.{d}:5060", "udp", f"<sip:{dev}@x>", payload))
        elif kind == "unreg":
            out.append(DeviceUnregistered(dev, at))
        elif kind == "offline":
            out.append(DeviceWentOffline(dev, at, payload))
        elif kind == "seen":
            out.append(DeviceSeen(dev, at.replace() if payload == 0 else t(step * 10 + payload)))
        elif kind == "catalog":
            statuses, complete = payload
            items = tuple(ChannelInfo(_chan(c), status=s, name=f"c{c}") for c, s in sorted(statuses.items()))
            out.append(CatalogReported(dev, at, items, complete, f"{len(items)}"))
        else:
            c, status = payload
            out.append(ChannelStatusChanged(dev, _chan(c), at, status))
    return out


async def _state(registry, ns: int) -> tuple[list[Any], list[Any], list[Any]]:
    prefix = f"{ns:010d}"
    async with registry.sessionmaker() as session:
        devices = [
            (
                d.device_id[10:],
                d.online,
                d.offline_reason,
                d.registered_at,
                d.register_expires_at,
                d.last_seen,
                d.catalog_state,
            )
            for d in await session.scalars(
                select(Device).where(Device.device_id.startswith(prefix)).order_by(Device.device_id)
            )
        ]
        channels = [
            (c.device_id[10:], c.channel_id, c.online, c.removed, c.removed_at, c.status, c.first_seen)
            for c in await session.scalars(
                select(Channel)
                .where(Channel.device_id.startswith(prefix))
                .order_by(Channel.device_id, Channel.channel_id)
            )
        ]
        presence = [
            (p.subject, p.device_id[10:], p.channel_id, p.online, p.at, p.reason)
            for p in await session.scalars(
                select(PresenceEvent)
                .where(PresenceEvent.device_id.startswith(prefix))
                .order_by(PresenceEvent.id)
            )
        ]
    return devices, channels, presence


@settings(
    max_examples=int(os.environ.get("GBOPS_BATCHING_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=st.lists(op, min_size=1, max_size=25), cuts=st.lists(st.integers(1, 8), min_size=1, max_size=10))
async def test_batch_boundaries_do_not_matter(registry, ops, cuts) -> None:
    one_by_one, batched = next(_namespaces), next(_namespaces)

    for ev in _events(one_by_one, ops):
        await registry.apply([ev])

    events = _events(batched, ops)
    pos = 0
    for size in itertools.cycle(cuts):
        if pos >= len(events):
            break
        await registry.apply(events[pos : pos + size])
        pos += size

    assert await _state(registry, batched) == await _state(registry, one_by_one)
