"""What the cascade domain needs from signalling, media and device control (declared here, by the consumer).

``SipService`` satisfies :class:`UpperLinks` and ``MediaService`` :class:`UpwardMedia` structurally; the
assembly adapts ``ControlService`` to :class:`ControlPort` (and, when wired, device RecordInfo to
:class:`RecordsPort`).  The dataclasses named in the signatures are the seams' (``sip_server.gb.upper``,
``media_relay.upward``); this module imports them for type checking only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from gbcore.ids import ChannelRef

if TYPE_CHECKING:
    from media_relay.upward import UpwardTarget
    from media_relay.viewers import Viewer
    from sip_server.gb.upper import CatalogEntry, UpperAnswer, UpperConfig

__all__ = ["ControlPort", "PlatformOperator", "RecordsPort", "UpperLinks", "UpwardLegLike", "UpwardMedia"]


class UpperLinks(Protocol):
    """SIP toward upper platforms (``sip_server.service.SipService``)."""

    def set_upper_platforms(self, configs: list[UpperConfig]) -> None: ...
    def upper_status(self, platform_id: int) -> dict[str, Any] | None: ...
    def answer_catalog(self, platform_id: int, sn: int, entries: Sequence[CatalogEntry]) -> None: ...
    def notify_catalog(self, platform_id: int, entries: Sequence[CatalogEntry]) -> None: ...
    def answer_device_info(self, platform_id: int, sn: int, device_id: str, fields: dict[str, str]) -> None: ...
    def answer_device_status(self, platform_id: int, sn: int, device_id: str, fields: dict[str, str]) -> None: ...
    def answer_record_info(self, platform_id: int, sn: int, device_id: str, name: str,
                           items: list[dict[str, str]]) -> None: ...
    def answer_control(self, platform_id: int, sn: int, device_id: str, ok: bool) -> None: ...
    def answer_upper_invite(self, call_id: str, status: int, answer: UpperAnswer | None = None,
                            reason: str | None = None) -> None: ...
    def bye_upper(self, call_id: str, reason: str) -> None: ...
    def upper_media_status(self, call_id: str, notify_type: str = "121") -> bool: ...
    def upper_alarm(self, platform_id: int, device_id: str, alarm: Any) -> bool: ...
    def upper_position(self, platform_id: int, device_id: str, position: Any) -> bool: ...


class UpwardLegLike(Protocol):
    """What the cascade uses of ``media_relay.upward.UpwardLeg``."""

    id: str
    channel: ChannelRef
    local_ip: str
    local_port: int
    ssrc: int

    def start(self) -> None: ...
    async def close(self, reason: str) -> None: ...
    def stats(self) -> dict[str, Any]: ...


class UpwardMedia(Protocol):
    """Media toward upper platforms (``media_relay.service.MediaService``)."""

    async def open_upward(self, channel: ChannelRef, viewer: Viewer, target: UpwardTarget, *, kind: str = "live",
                          window: tuple[datetime, datetime] | None = None, source: str = "device",
                          visible_watermark: bool = False,
                          on_end: Callable[[str], None] | None = None) -> UpwardLegLike:
        """A leg toward the upper; a live leg of the sub-stream passes ``stream="sub"`` as a further keyword
        (the main stream passes none)."""
        ...
    def upward_info(self, leg_id: str, body: bytes, content_type: str | None = None) -> bool: ...


@dataclass(frozen=True, slots=True)
class PlatformOperator:
    """An upper platform as an operator of PTZ: the control issue's priority scheme uses ``ptz_level``."""

    platform_id: int
    server_id: str
    name: str
    ptz_level: int


class ControlPort(Protocol):
    """DeviceControl from an upper, forwarded to a shared channel (the assembly adapts ``ControlService``:
    an ``Operator`` of kind "platform" at ``operator.ptz_level``, the PTZCmd decoded from ``message``).
    ``message`` is the parsed MANSCDP body; True when the command was carried out."""

    async def upper_control(self, operator: PlatformOperator, channel: ChannelRef, message: Any) -> bool: ...


class RecordsPort(Protocol):
    """RecordInfo for a shared channel (the device's, or the platform's recordings): items as MANSCDP fields.
    The cascade replaces each item's ``DeviceID`` and ``Name`` with what the upper knows."""

    async def record_items(self, channel: ChannelRef, message: Any) -> list[dict[str, str]]: ...
