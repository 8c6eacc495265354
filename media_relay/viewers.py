"""A viewer's output, composed on the media side: who watches, what their picture gets, what an output reads.

``MediaService.open_viewer(channel, viewer)`` plans the viewer's transform (visible watermark or not, the
session tag, an encoder slot) through the :class:`ViewerTransformFactory` injected at assembly, and opens
the session; ``MediaService.open_output(session_id, output)`` then composes the source the output reads:

    the viewer's own drawn picture (``factory.draw``: decoded once per Stream, drawn and encoded per viewer)
    or the upstream as is (an H.264 transcoder for H.265 on WebRTC) with the session tag (``factory.tag``)

The same composition serves playback sessions unchanged: their reader is on a history Stream (see
:mod:`media_relay.playback`) whose units are already re-timed to wall speed, so ``draw`` (which reads
``reader.stream`` on its own) and the outputs see the playback timeline.

The factory is the watermark package's (``watermark.pipeline.WatermarkHub``); this package does not import
it. Without a factory (a bare media service in tests) the output reads the upstream as is.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from gbcore.ids import ChannelRef

if TYPE_CHECKING:
    from media_relay.outputs.flv import AccessUnitSource
    from media_relay.stream import StreamReader

__all__ = [
    "OUTPUTS",
    "TransformCapacityExceeded",
    "TransformUnavailable",
    "Viewer",
    "ViewerPlan",
    "ViewerTransformFactory",
    "compose_source",
]

OUTPUTS = ("flv", "whep")


@dataclass(frozen=True, slots=True)
class Viewer:
    """The person a viewer session is for, as the transform needs them (drawn text, tag, policy)."""

    user_id: int
    username: str
    display_name: str | None = None
    phone: str | None = None
    client_ip: str | None = None
    roles: tuple[str, ...] = ()


class TransformCapacityExceeded(Exception):
    """No per-viewer encoder is free on this node; ``limit`` is how many there are."""

    def __init__(self, limit: int, message: str | None = None) -> None:
        super().__init__(message or f"all {limit} viewer encoders are busy")
        self.limit = limit


class TransformUnavailable(Exception):
    """The viewer's transform cannot be made at all (e.g. the watermark font is missing); the message says why."""


@runtime_checkable
class ViewerPlan(Protocol):
    """What the factory decided for one viewer session."""

    @property
    def on(self) -> bool:
        """Whether the picture is redrawn for this viewer (visible watermark); else only tagged."""
        ...

    @property
    def code(self) -> str | None:
        """The short session code shown in the picture (the audit entry's ``watermark_id``)."""
        ...

    def release(self) -> None:
        """Free what the plan reserved (an encoder slot); idempotent."""
        ...


@runtime_checkable
class ViewerTransformFactory(Protocol):
    """Supplies the per-viewer transform (injected at assembly)."""

    def plan(self, viewer: Viewer, channel: ChannelRef, session_id: str, *, kind: str = "live",
             window: tuple[datetime, datetime] | None = None) -> ViewerPlan:
        """The plan for ``viewer`` watching ``channel`` in session ``session_id``, with what it needs
        reserved; ``kind`` ("live", "playback") and the playback ``window`` go into the session tag. (The
        media service passes ``kind``/``window`` only for history sessions, and only to a factory whose
        ``plan`` takes them.) Raises :class:`TransformCapacityExceeded` or :class:`TransformUnavailable`."""
        ...

    def draw(self, reader: StreamReader, plan: ViewerPlan, output: str) -> AccessUnitSource | None:
        """When ``plan.on``: the viewer's redrawn H.264 picture (tagged), reading ``reader.stream`` on its
        own; it takes ``reader`` over (closes it) and frees the plan when it closes. None when the plan
        leaves the picture as it is."""
        ...

    def tag(self, source: AccessUnitSource, plan: ViewerPlan) -> AccessUnitSource:
        """``source`` with the session tag in every keyframe (no re-encode)."""
        ...


def compose_source(reader: StreamReader, plan: ViewerPlan | None, factory: ViewerTransformFactory | None,
                   output: str) -> AccessUnitSource:
    """What ``output`` ("flv" or "whep") reads for a session on ``reader``, on every path (see the module
    docstring)."""
    if factory is not None and plan is not None and plan.on:
        drawn = factory.draw(reader, plan, output)
        if drawn is not None:
            return drawn
    source: AccessUnitSource = reader
    if output == "whep" and reader.codec == "h265":  # WebRTC carries H.264 only
        from media_relay.outputs.transcode import Transcoder

        source = Transcoder(reader)
    if factory is not None and plan is not None:
        source = factory.tag(source, plan)
    return source
