"""Online rate from the presence history: now, and over a period.

* :func:`online_rate_now` counts the current online flags of channels (points) and devices.
* :func:`compute_period` replays the presence history of a period through
  :func:`ops_portal.availability.compute.channel_timeline`.  It reads only the period's rows plus
  each subject's last state before the period, streamed ordered by (device, id), so memory stays
  bounded by one device's rows (plus one small summary row per channel).  While it reads, it hashes
  every source row (the *source digest*): running it again over the same data gives the same
  digest and the same figures, which is how an auditor re-derives a report.

The **scope** of a computation is the intersection of the user's data scope (``scope``: an
``ops_portal.access.Scope`` or None for everything), an organisation node (with its descendants)
and a contract's service scope.  A channel is in scope when ``scope.allows(ChannelRef(device_id,
channel_id), channel_org_node_id, device_org_node_id)``: a channel is its device's (a channel id alone is
unique only within its device).
"""

from __future__ import annotations

import hashlib
import heapq
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from device_registry.org import get_org_node, org_descendants, org_node_names
from device_registry.presence import platform_runs, presence_before, stream_presence
from device_registry.queries import channel_rows, device_online_flags
from gbcore.db import utcnow
from gbcore.ids import ChannelRef

from .compute import OFFLINE, Sampler, channel_timeline, full_timeline, merge_intervals

__all__ = [
    "PERIOD_KINDS",
    "ChannelFigures",
    "NowRate",
    "PeriodResult",
    "ScopeFilter",
    "ScopeNotFound",
    "compute_period",
    "online_rate_now",
    "period_bounds",
    "resolve_scope",
]

PERIOD_KINDS = ("day", "week", "month", "year", "custom")
DEFAULT_THRESHOLD = 0.85


class ScopeNotFound(LookupError):
    """The organisation node or contract named does not exist (``what`` says which)."""

    def __init__(self, what: str, ident: Any) -> None:
        super().__init__(f"{what} {ident}")
        self.what = what
        self.ident = ident


class _ScopeLike(Protocol):
    all: bool

    def allows(self, ref: ChannelRef, channel_org_node_id: int | None, device_org_node_id: int | None) -> bool: ...


@dataclass(frozen=True)
class _OrgScope:
    """Channels of these organisation nodes (or individually listed)."""

    org_node_ids: frozenset[int]
    channel_refs: frozenset[ChannelRef] = frozenset()
    all: bool = False

    def allows(self, ref: ChannelRef, channel_org_node_id: int | None, device_org_node_id: int | None) -> bool:
        # as ops_portal.access.Scope: that device's channel, or the channel's own node, else its device's node
        if ref in self.channel_refs:
            return True
        node = channel_org_node_id if channel_org_node_id is not None else device_org_node_id
        return node is not None and node in self.org_node_ids


@dataclass(frozen=True)
class ScopeFilter:
    """What a computation covers, and the rule it is judged by."""

    parts: tuple[_ScopeLike, ...] = ()
    label: str = "全平台 / whole platform"
    threshold: float = DEFAULT_THRESHOLD
    rule: str = "time_weighted"  # or "sampled"
    sample_minutes: int = 5
    org_node_id: int | None = None
    contract_id: int | None = None
    user_scope_limited: bool = False

    @property
    def everything(self) -> bool:
        return not self.parts

    def allows(self, ref: ChannelRef, channel_org: int | None, device_org: int | None) -> bool:
        return all(p.all or p.allows(ref, channel_org, device_org) for p in self.parts)

    def describe(self) -> dict[str, Any]:
        return {"label": self.label, "org_node_id": self.org_node_id, "contract_id": self.contract_id,
                "user_scope_limited": self.user_scope_limited, "threshold": self.threshold,
                "rule": self.rule, "sample_minutes": self.sample_minutes}


async def resolve_scope(
    session: AsyncSession,
    *,
    scope: _ScopeLike | None = None,
    org_node_id: int | None = None,
    contract_id: int | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    sample_minutes: int = 5,
    rule: str = "time_weighted",
) -> ScopeFilter:
    """Combine the user's scope, an organisation node and a contract into one filter.  The
    contract, when given, sets the threshold and the rate rule.  Raises :class:`ScopeNotFound`."""
    parts: list[_ScopeLike] = []
    labels: list[str] = []
    limited = scope is not None and not scope.all
    if limited:
        assert scope is not None
        parts.append(scope)
        labels.append("用户授权范围 / the user's scope")
    if org_node_id is not None:
        node = await get_org_node(session, org_node_id)
        if node is None:
            raise ScopeNotFound("org_node", org_node_id)
        parts.append(_OrgScope(await org_descendants(session, [org_node_id])))
        labels.append(f"组织 / organisation {node.name} (#{node.id})")
    if contract_id is not None:
        from ops_portal.contracts import contract_channel_refs, get_contract

        contract = await get_contract(session, contract_id)
        if contract is None:
            raise ScopeNotFound("contract", contract_id)
        try:
            from ops_portal.contracts import contract_scope

            cscope: Any = await contract_scope(session, contract_id)
        except ImportError:  # ops_portal.access not there: the same scope, built here
            cscope = _OrgScope(
                await org_descendants(session, [int(n) for n in contract.org_node_ids or []]),
                await contract_channel_refs(session, contract),
            )
        parts.append(cscope)
        labels.append(f"合同 / contract {contract.name} (#{contract.id})")
        threshold = float(contract.online_rate_threshold)
        rule = contract.rate_rule or "time_weighted"
        if contract.sample_minutes:
            sample_minutes = int(contract.sample_minutes)
    return ScopeFilter(
        parts=tuple(parts),
        label="；".join(labels) if labels else "全平台 / whole platform",
        threshold=threshold,
        rule=rule,
        sample_minutes=sample_minutes,
        org_node_id=org_node_id,
        contract_id=contract_id,
        user_scope_limited=limited,
    )


# ----------------------------------------------------------------------------------------- channels
@dataclass(slots=True)
class _ChannelRef:
    device_id: str
    channel_id: str
    name: str | None
    channel_org: int | None
    device_org: int | None
    first_seen: float
    removed_at: float | None
    online: bool
    device_online: bool

    @property
    def org_node_id(self) -> int | None:
        return self.channel_org if self.channel_org is not None else self.device_org


async def _load_channels(session: AsyncSession, flt: ScopeFilter) -> list[_ChannelRef]:
    out = []
    everything = flt.everything
    for r in await channel_rows(session):
        if not everything and not flt.allows(ChannelRef(r.device_id, r.channel_id), r.channel_org, r.device_org):
            continue
        gone = r.removed_at.timestamp() if r.removed and r.removed_at is not None else (0.0 if r.removed else None)
        out.append(_ChannelRef(r.device_id, r.channel_id, r.name, r.channel_org, r.device_org,
                               r.first_seen.timestamp(), gone, bool(r.online), bool(r.device_online)))
    return out


# ----------------------------------------------------------------------------------------- now
@dataclass
class NowRate:
    at: datetime
    scope: dict[str, Any]
    channels_total: int
    channels_online: int
    devices_total: int
    devices_online: int
    threshold: float
    by_org: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rate(self) -> float | None:
        return self.channels_online / self.channels_total if self.channels_total else None

    @property
    def device_rate(self) -> float | None:
        return self.devices_online / self.devices_total if self.devices_total else None

    @property
    def breach(self) -> bool:
        return self.rate is not None and self.rate < self.threshold


async def online_rate_now(session: AsyncSession, flt: ScopeFilter) -> NowRate:
    """Instantaneous online rate: online channels / channels in scope (removed channels excluded);
    devices alike (for the whole platform every device, else the devices of the channels in scope)."""
    chans = [c for c in await _load_channels(session, flt) if c.removed_at is None]
    devices: dict[str, bool] = {}
    if flt.everything:
        devices.update(await device_online_flags(session))
    else:
        for c in chans:
            devices[c.device_id] = c.device_online
    groups: dict[int | None, list[int]] = {}
    for c in chans:
        g = groups.setdefault(c.org_node_id, [0, 0])
        g[0] += 1
        g[1] += c.online
    names = await org_node_names(session) if groups else {}
    by_org = [
        {"org_node_id": k, "name": names.get(k) if k is not None else "未分组 / unassigned",
         "channels_total": t, "channels_online": o, "rate": o / t if t else None,
         "breach": bool(t) and o / t < flt.threshold}
        for k, (t, o) in sorted(groups.items(), key=lambda kv: (kv[0] is None, kv[0] or 0))
    ]
    return NowRate(
        at=utcnow(), scope=flt.describe(), channels_total=len(chans), channels_online=sum(c.online for c in chans),
        devices_total=len(devices), devices_online=sum(devices.values()), threshold=flt.threshold, by_org=by_org,
    )


# ----------------------------------------------------------------------------------------- periods
def _local_midnight(d: date, tz: ZoneInfo) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=tz).astimezone(UTC)


def period_bounds(
    kind: str,
    tz: ZoneInfo,
    *,
    on: date | None = None,
    month: str | None = None,
    year: int | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> tuple[datetime, datetime, str]:
    """UTC bounds [start, end) and a label of a day / ISO week / month / year in the display time
    zone ``tz`` (day boundaries are local midnights), or of a custom range (naive times are local)."""
    if kind == "day":
        d = on or datetime.now(tz).date()
        return _local_midnight(d, tz), _local_midnight(d + timedelta(days=1), tz), d.isoformat()
    if kind == "week":
        d = on or datetime.now(tz).date()
        monday = d - timedelta(days=d.weekday())
        iso = monday.isocalendar()
        return (_local_midnight(monday, tz), _local_midnight(monday + timedelta(days=7), tz),
                f"{iso.year}-W{iso.week:02d}")
    if kind == "month":
        if month is not None:
            y, m = (int(x) for x in month.split("-"))
        else:
            d = on or datetime.now(tz).date()
            y, m = d.year, d.month
        first = date(y, m, 1)
        nxt = date(y + (m == 12), m % 12 + 1, 1)
        return _local_midnight(first, tz), _local_midnight(nxt, tz), f"{y:04d}-{m:02d}"
    if kind == "year":
        y = year if year is not None else (on or datetime.now(tz).date()).year
        return _local_midnight(date(y, 1, 1), tz), _local_midnight(date(y + 1, 1, 1), tz), f"{y:04d}"
    if kind == "custom":
        if start is None or end is None:
            raise ValueError("a custom period needs start and end")
        s = (start if start.tzinfo else start.replace(tzinfo=tz)).astimezone(UTC)
        e = (end if end.tzinfo else end.replace(tzinfo=tz)).astimezone(UTC)
        if e <= s:
            raise ValueError("end must be after start")
        label = f"{s.astimezone(tz):%Y-%m-%d %H:%M} ~ {e.astimezone(tz):%Y-%m-%d %H:%M}"
        return s, e, label
    raise ValueError(f"unknown period kind {kind!r}")


@dataclass(slots=True)
class ChannelFigures:
    device_id: str
    channel_id: str
    name: str | None
    org_node_id: int | None
    online_s: float
    offline_s: float
    unknown_s: float
    absent_s: float
    outages: int
    longest_outage_s: float
    availability: float | None
    #: (start, end) epoch seconds of each outage within the period
    outage_list: list[tuple[float, float]] | None = None


@dataclass
class PeriodResult:
    kind: str
    label: str
    start: datetime
    end: datetime
    #: end of the computed part: min(end, time of computation)
    covered_end: datetime
    timezone: str
    scope: dict[str, Any]
    channels: list[ChannelFigures]
    online_s: float = 0.0
    offline_s: float = 0.0
    unknown_s: float = 0.0
    time_weighted_rate: float | None = None
    mean_availability: float | None = None
    sampled_rate: float | None = None
    sample_minutes: int = 5
    rule: str = "time_weighted"
    threshold: float = DEFAULT_THRESHOLD
    platform_down: list[tuple[float, float]] = field(default_factory=list)
    series_times: list[float] = field(default_factory=list)
    series_rates: list[float | None] = field(default_factory=list)
    worst: list[tuple[ChannelFigures, list[tuple[float, float, str]]]] = field(default_factory=list)
    source_sha256: str = ""
    source_rows: int = 0
    clamped: int = 0
    computed_at: datetime = field(default_factory=utcnow)

    @property
    def rate(self) -> float | None:
        """The rate the scope is judged by (its rule)."""
        return self.sampled_rate if self.rule == "sampled" else self.time_weighted_rate

    @property
    def breach(self) -> bool:
        return self.rate is not None and self.rate < self.threshold

    @property
    def platform_down_s(self) -> float:
        return sum(b - a for a, b in self.platform_down)

    def summary(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "label": self.label, "start": self.start.isoformat(), "end": self.end.isoformat(),
            "covered_end": self.covered_end.isoformat(), "timezone": self.timezone, "scope": self.scope,
            "channels": len(self.channels), "online_s": round(self.online_s, 3),
            "offline_s": round(self.offline_s, 3), "unknown_s": round(self.unknown_s, 3),
            "time_weighted_rate": self.time_weighted_rate, "mean_availability": self.mean_availability,
            "sampled_rate": self.sampled_rate, "sample_minutes": self.sample_minutes, "rule": self.rule,
            "rate": self.rate, "threshold": self.threshold, "breach": self.breach,
            "platform_down_s": round(self.platform_down_s, 3), "source_sha256": self.source_sha256,
            "source_rows": self.source_rows, "clamped": self.clamped,
        }


def _chart_step(seconds: float) -> float:
    """About 300 points, in whole minutes (at least 1)."""
    return max(60.0, math.ceil(seconds / 300 / 60) * 60.0)


async def compute_period(
    sessionmaker: async_sessionmaker[AsyncSession],
    flt: ScopeFilter,
    start: datetime,
    end: datetime,
    *,
    kind: str = "custom",
    label: str = "",
    timezone: str = "Asia/Shanghai",
    now: datetime | None = None,
    worst: int = 10,
    keep_outages: bool = True,
    progress: Callable[[float], None] | None = None,
) -> PeriodResult:
    """Figures of every channel in scope over [start, end) (see the module docstring)."""
    now = now or utcnow()
    covered_end = min(end, max(now, start))
    s, e = start.timestamp(), covered_end.timestamp()
    digest = hashlib.sha256()

    async with sessionmaker() as session:
        chans = await _load_channels(session, flt)
        chans = [c for c in chans if c.first_seen < e and (c.removed_at is None or c.removed_at > s)]

        # platform up-time
        runs = await platform_runs(session)
        up = merge_intervals(((a.timestamp(), (b or now).timestamp()) for a, b in runs), s, e)
        always_up = up == [(s, e)]
        for a, b in up:
            digest.update(f"U|{a:.3f}|{b:.3f}\n".encode())
        down = []
        c = s
        for a, b in up:
            if a > c:
                down.append((c, a))
            c = b
        if e > c:
            down.append((c, e))

        # each subject's last state before the period
        before_dev: dict[str, bool] = {}
        before_ch: dict[tuple[str, str], bool] = {}
        if chans:
            dev_states, ch_states = await presence_before(session, start)
            for dev_id, online in dev_states:
                if online is not None:
                    before_dev[dev_id] = bool(online)
                    digest.update(f"D|{dev_id}|{int(bool(online))}\n".encode())
            for dev_id, ch_id, online in ch_states:
                if online is not None:
                    before_ch[(dev_id, ch_id)] = bool(online)
                    digest.update(f"C|{dev_id}|{ch_id}|{int(bool(online))}\n".encode())

        by_device: dict[str, list[_ChannelRef]] = {}
        for ch in chans:
            by_device.setdefault(ch.device_id, []).append(ch)
            digest.update(f"P|{ch.device_id}|{ch.channel_id}|{ch.first_seen:.3f}|{ch.removed_at}\n".encode())

        pending = set(by_device)  # devices in scope not yet computed
        rule_sampler = Sampler(s, e, flt.sample_minutes * 60.0) if e > s else None
        chart_sampler = rule_sampler.with_step(_chart_step(e - s)) if rule_sampler is not None else None
        figures: list[ChannelFigures] = []
        heap: list[tuple[float, int, int, ChannelFigures, list[tuple[float, float, str]]]] = []
        totals = [0.0, 0.0, 0.0]
        avail_sum = 0.0
        avail_n = 0
        clamped = 0
        rows_seen = 0
        done_devices = 0
        n_devices = max(len(by_device), 1)

        sampler_add_full = rule_sampler.add_full if rule_sampler is not None else None

        def finish_device(dev_id: str, rows: list[Any]) -> None:
            # rows: the device's stream rows (id, subject, device, channel, online 0/1, at ms) in recorded
            # order.  A channel's transitions (compute.Transition: at, online, is_device) are its device's
            # rows and its own (a row without a channel counts for every channel of the device).
            nonlocal avail_sum, avail_n, clamped, done_devices
            done_devices += 1
            chans_of_dev = by_device[dev_id]
            per_channel: dict[str, list[tuple[float, bool, bool]]]
            if len(chans_of_dev) == 1:
                cid = chans_of_dev[0].channel_id
                per_channel = {cid: [(t / 1000.0, o == 1, subj == "device") for _i, subj, _d, c, o, t in rows
                                     if subj == "device" or c is None or c == cid]}
            else:
                per_channel = {ch.channel_id: [] for ch in chans_of_dev}
                lists = list(per_channel.values())
                for _i, subj, _d, c, o, t in rows:
                    if subj == "device" or c is None:
                        tr = (t / 1000.0, o == 1, subj == "device")
                        for lst in lists:
                            lst.append(tr)
                    else:
                        lst = per_channel.get(c)
                        if lst is not None:
                            lst.append((t / 1000.0, o == 1, False))
            dev_before = before_dev.get(dev_id)
            for ch in chans_of_dev:
                trs = per_channel[ch.channel_id]
                if always_up and ch.first_seen <= s and (ch.removed_at is None or ch.removed_at >= e):
                    # existed and watched throughout: the one-pass path (same figures)
                    tl, on_a, on_b = full_timeline(s, e, trs, dev_before, before_ch.get((dev_id, ch.channel_id)))
                    if sampler_add_full is not None:
                        sampler_add_full(on_a, on_b)
                else:
                    tl = channel_timeline(
                        s, e, trs, device_before=dev_before, channel_before=before_ch.get((dev_id, ch.channel_id)),
                        exists_from=ch.first_seen, exists_until=ch.removed_at, up=None if always_up else up,
                    )
                    if rule_sampler is not None:
                        rule_sampler.add(tl)
                clamped += tl.clamped
                online_s = tl.online_s
                offline_s = tl.offline_s
                known = online_s + offline_s
                availability = online_s / known if known > 0 else None
                fig = ChannelFigures(
                    ch.device_id, ch.channel_id, ch.name, ch.org_node_id, online_s, offline_s, tl.unknown_s,
                    tl.absent_s, tl.outages, tl.longest_outage_s, availability,
                    [(a, b) for a, b, st in tl.segments if st == OFFLINE] if keep_outages else None,
                )
                figures.append(fig)
                totals[0] += online_s
                totals[1] += offline_s
                totals[2] += tl.unknown_s
                if availability is not None:
                    avail_sum += availability
                    avail_n += 1
                if worst > 0 and offline_s > 0:
                    item = (offline_s, tl.outages, -len(figures), fig, tl.segments)
                    if len(heap) < worst:
                        heapq.heappush(heap, item)
                    elif item[:3] > heap[0][:3]:
                        heapq.heapreplace(heap, item)
            if progress is not None and done_devices % 200 == 0:
                progress(min(0.99, done_devices / n_devices))

        if e > s and chans:
            result = await stream_presence(session, start, covered_end)
            current: str | None = None
            rows: list[Any] = []
            append = rows.append
            wanted = False
            update = digest.update
            async for part in result.partitions(20000):
                # rows as plain tuples of ints and strings: the same text on every back end (each row as
                # repr(tuple(row)) would write it, formatted directly)
                update("\n".join([f"({a!r}, {b!r}, {c!r}, {d!r}, {o!r}, {t!r})" for a, b, c, d, o, t in part])
                       .encode())
                update(b"\n")
                for row in part:
                    dev_id = row[2]
                    if dev_id != current:
                        if wanted:
                            finish_device(current, rows)  # type: ignore[arg-type]
                        current = dev_id
                        wanted = dev_id in pending
                        pending.discard(dev_id)
                        rows = []
                        append = rows.append
                    if wanted:
                        append(row)
                rows_seen += len(part)
            if wanted:
                finish_device(current, rows)  # type: ignore[arg-type]
            for dev_id in by_device:
                if dev_id in pending:
                    finish_device(dev_id, [])

    figures.sort(key=lambda f: (f.device_id, f.channel_id))
    known = totals[0] + totals[1]
    res = PeriodResult(
        kind=kind, label=label, start=start, end=end, covered_end=covered_end, timezone=timezone,
        scope=flt.describe(), channels=figures, online_s=totals[0], offline_s=totals[1], unknown_s=totals[2],
        time_weighted_rate=totals[0] / known if known > 0 else None,
        mean_availability=avail_sum / avail_n if avail_n else None,
        sampled_rate=rule_sampler.rate() if rule_sampler is not None else None,
        sample_minutes=flt.sample_minutes, rule=flt.rule, threshold=flt.threshold, platform_down=down,
        source_sha256=digest.hexdigest(), source_rows=rows_seen, clamped=clamped, computed_at=now,
    )
    if chart_sampler is not None:
        online, knw = chart_sampler.counts()
        res.series_times = chart_sampler.times().tolist()
        res.series_rates = [(int(o) / int(k)) if k else None for o, k in zip(online, knw, strict=True)]
    res.worst = [(fig, segs) for *_, fig, segs in sorted(heap, reverse=True)]
    if progress is not None:
        progress(1.0)
    return res


def fmt_duration(seconds: float) -> str:
    """``1d 02:03:04`` style (days only when needed)."""
    total = int(round(seconds))
    d, rem = divmod(total, 86400)
    h, rem = divmod(rem, 3600)
    m, sec = divmod(rem, 60)
    return f"{d}d {h:02d}:{m:02d}:{sec:02d}" if d else f"{h:02d}:{m:02d}:{sec:02d}"


def iter_rows(result: PeriodResult) -> Iterable[ChannelFigures]:
    return iter(result.channels)
