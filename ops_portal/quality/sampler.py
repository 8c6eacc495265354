"""The quality sampler: every ``interval`` seconds, one or two decoded keyframes per online channel.

For each online channel it opens a *reader* on the channel's upstream :class:`media_relay.stream.Stream`
through the :class:`media_relay.stream.StreamManager` (no viewer session, nothing shown to anyone; an
idle upstream is torn down as usual after the last reader leaves), decodes the first keyframe and the
first one at least ``freeze_gap`` seconds later with PyAV in a worker thread, and closes the reader.
:func:`record_findings` runs the detectors (:mod:`ops_portal.quality.detect`) and turns each finding
into a ``quality`` ticket (one open ticket per channel and anomaly) with the picture as a JPEG.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import av
import numpy as np
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gbcore.db import utcnow
from gbcore.ids import ChannelRef
from gbcore.log import get_logger
from gbcore.periodic import PeriodicTask
from ops_portal.quality.detect import (
    Finding,
    Planes,
    detect,
    planes_from_i420,
    sharpness,
    thumbnail,
    update_baseline,
)
from ops_portal.tickets.models import QualityBaseline, Ticket
from ops_portal.tickets.service import ActorRef, AuditBatch, add_notification, create_ticket
from ops_portal.tickets.snapshots import save_snapshot

__all__ = ["Picture", "QualitySampler", "decode_keyframe", "record_findings", "to_jpeg"]

log = get_logger("gbops.quality")

_CODEC_NAMES = {"h264": "h264", "h265": "hevc"}


@dataclass(frozen=True)
class Picture:
    """A decoded picture: its planes and the PyAV frame (for the JPEG)."""

    planes: Planes
    frame: Any


def decode_keyframe(codec: str, data: bytes, params: Any = None) -> Picture:
    """Decode one keyframe access unit (Annex B); parameter sets from ``params`` are put in front (a
    keyframe without in-band parameter sets still decodes).  CPU work: call it in a thread."""
    name = _CODEC_NAMES.get(codec)
    if name is None:
        raise ValueError(f"cannot decode {codec!r}")
    prefix = b""
    if params is not None:
        for ps in (getattr(params, "vps", None), params.sps, params.pps):
            if ps:
                prefix += b"\x00\x00\x00\x01" + ps
    ctx = av.CodecContext.create(name, "r")
    try:
        frames = list(ctx.decode(av.Packet(prefix + data)))
        frames += list(ctx.decode(None))
    finally:
        with contextlib.suppress(Exception):
            ctx.close()
    if not frames:
        raise ValueError("no picture decoded")
    frame = frames[0]
    w, h = frame.width // 2 * 2, frame.height // 2 * 2
    yuv = frame.reformat(width=w, height=h, format="yuv420p")
    return Picture(planes_from_i420(yuv.to_ndarray(), w, h), yuv)


def to_jpeg(picture: Picture | Planes, quality: int = 85) -> bytes:
    """The picture as a JPEG (Pillow)."""
    from PIL import Image

    if isinstance(picture, Picture):
        image = picture.frame.to_image()
    else:
        p = picture
        y = p.y.astype(np.float32)
        u = np.repeat(np.repeat(p.u, 2, 0), 2, 1).astype(np.float32) - 128
        v = np.repeat(np.repeat(p.v, 2, 0), 2, 1).astype(np.float32) - 128
        yy = (y - 16) * 1.164
        rgb = np.stack([yy + 1.596 * v, yy - 0.392 * u - 0.813 * v, yy + 2.017 * u], axis=-1)
        image = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


async def record_findings(
    session: AsyncSession,
    *,
    channel_id: str,
    device_id: str | None,
    pictures: Sequence[Planes],
    now: datetime,
    data_dir: Path,
    default_limit_hours: float,
    jpeg: bytes | None = None,
    min_size: tuple[int, int] | None = None,
    audit: AuditBatch | None = None,
) -> tuple[list[Finding], list[Ticket], list[dict[str, Any]]]:
    """Analyse a channel's pictures (oldest first; the last one is judged, the others are the frozen
    check's earlier samples), update its sharpness baseline with healthy pictures, and open one
    ``quality`` ticket per new finding.  Returns (findings, tickets opened, webhook payloads)."""
    last = pictures[-1]
    ref = ChannelRef(device_id or "", channel_id)  # the camera: baselines and open tickets are per device
    base = await session.get(QualityBaseline, (ref.device_id, ref.channel_id))
    findings = detect(last, previous=[thumbnail(p.y) for p in pictures[:-1]],
                      baseline=base.sharpness if base else None, baseline_samples=base.samples if base else 0,
                      min_size=min_size)
    if not findings:
        value, samples = update_baseline(base.sharpness if base else None, base.samples if base else 0,
                                         sharpness(last.y))
        if base is None:
            session.add(QualityBaseline(device_id=ref.device_id, channel_id=channel_id, sharpness=value,
                                        samples=samples, updated_at=now))
        else:
            base.sharpness, base.samples, base.updated_at = value, samples, now
        await session.flush()
        return findings, [], []
    opened: list[Ticket] = []
    payloads: list[dict[str, Any]] = []
    snapshot: str | None = None
    for finding in findings:
        key = f"quality:{ref.key}:{finding.anomaly}"
        if await session.scalar(select(Ticket.id).where(Ticket.open_key == key)) is not None:
            continue
        if snapshot is None:
            snapshot = save_snapshot(data_dir, jpeg if jpeg is not None else to_jpeg(last), "image/jpeg")
        try:
            async with session.begin_nested():
                ticket = await create_ticket(
                    session, kind="quality", source="auto_quality", now=now, default_limit_hours=default_limit_hours,
                    actor=ActorRef.system(), channel_id=channel_id, device_id=device_id,
                    note=f"视频质量检测：{finding.message}", anomaly=finding.anomaly,
                    detail={"metrics": finding.metrics}, snapshot=snapshot, open_key=key, audit=audit)
                payloads.append(await add_notification(
                    session, "ticket.opened", ticket,
                    f"通道 {ref.key} 视频质量异常（{finding.message.split(' / ')[0]}），已生成工单 #{ticket.id} / "
                    f"channel {ref.key}: video quality anomaly ({finding.anomaly}), ticket #{ticket.id} opened",
                    now))
        except IntegrityError:
            continue
        opened.append(ticket)
    return findings, opened, payloads


class QualitySampler:
    """Periodic sampling of every online channel (see the module docstring)."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        media: Any,
        *,
        interval: float,
        timeout: float,
        data_dir: Path,
        default_limit_hours: float,
        transport: str = "udp",
        freeze_gap: float = 2.0,
        concurrency: int = 2,
        audit: Any = None,
        notifier: Any = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.media = media
        self.interval = interval
        self.timeout = timeout
        self.data_dir = data_dir
        self.default_limit_hours = default_limit_hours
        self.transport = transport
        self.freeze_gap = freeze_gap
        self.concurrency = concurrency
        self.audit = audit
        self.notifier = notifier
        self.clock = clock
        self.sampled = 0
        self.failed = 0
        # the first round one interval after start, then every interval; a failed round is logged, the
        # next one comes after the interval as usual (no back-off)
        self.periodic = PeriodicTask("quality-sampler", self._round, interval=lambda: self.interval,
                                     logger=log, failure_event="quality.round_failed")

    def start(self) -> None:
        if self.interval > 0:
            self.periodic.start()

    async def close(self) -> None:
        await self.periodic.stop()

    async def grab(self, channel_id: str, device_id: str) -> list[Picture]:
        """Two keyframes at least ``freeze_gap`` apart (one if the second does not come in time)."""
        loop = asyncio.get_running_loop()
        reader = await self.media.open_reader(ChannelRef(device_id, channel_id), self.transport)
        pictures: list[Picture] = []
        try:
            deadline = loop.time() + self.timeout
            first_at: float | None = None
            while len(pictures) < 2:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    au = await asyncio.wait_for(reader.get(), left)
                except (TimeoutError, EOFError):
                    break
                if au.kind != "video" or not au.keyframe:
                    continue
                if first_at is not None and loop.time() - first_at < self.freeze_gap:
                    continue
                pictures.append(await asyncio.to_thread(decode_keyframe, au.codec, au.data, reader.params))
                first_at = loop.time()
        finally:
            reader.close()
        return pictures

    async def sample(self, channel_id: str, device_id: str, now: datetime) -> list[Ticket]:
        pictures = await self.grab(channel_id, device_id)
        if not pictures:
            raise TimeoutError(f"no keyframe from {device_id}/{channel_id}")
        from gbcore.db import begin_write
        from ops_portal.contracts import contract_for_channel

        batch = AuditBatch(self.audit)
        async with self.sessionmaker() as session:
            contract = await contract_for_channel(session, ChannelRef(device_id, channel_id), now)
            terms = contract.quality_terms if contract is not None else {}
            min_size = None
            if terms.get("min_width") or terms.get("min_height"):
                min_size = (int(terms.get("min_width") or 0), int(terms.get("min_height") or 0))
            jpeg = await asyncio.to_thread(to_jpeg, pictures[-1])
            await begin_write(session)
            _, opened, payloads = await record_findings(
                session, channel_id=channel_id, device_id=device_id, pictures=[p.planes for p in pictures],
                now=now, data_dir=self.data_dir, default_limit_hours=self.default_limit_hours, jpeg=jpeg,
                min_size=min_size, audit=batch)
            await batch.write(session)
            await session.commit()
        if self.notifier is not None:
            for payload in payloads:
                self.notifier.post(payload)
        return opened

    async def run_once(self) -> int:
        """Sample every online channel once; returns the number of tickets opened."""
        from device_registry.queries import online_channel_pairs

        async with self.sessionmaker() as session:
            rows = await online_channel_pairs(session)
        gate = asyncio.Semaphore(self.concurrency)
        opened = 0

        async def one(channel_id: str, device_id: str) -> None:
            nonlocal opened
            async with gate:
                try:
                    opened += len(await self.sample(channel_id, device_id, self.clock()))
                    self.sampled += 1
                except Exception as exc:  # offline meanwhile, refused, no media: next round
                    self.failed += 1
                    log.info("quality.sample_failed", channel=f"{device_id}/{channel_id}",
                             error=f"{type(exc).__name__}: {exc}")

        await asyncio.gather(*(one(c, d) for c, d in rows))
        return opened

    async def _round(self) -> None:
        opened = await self.run_once()
        log.info("quality.round", sampled=self.sampled, failed=self.failed, opened=opened)
