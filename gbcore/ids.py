"""Identifiers shared by every package: :class:`ChannelRef`, the identity of one camera.

A GB/T 28181 channel id is unique only within its device: Hikvision and Dahua NVRs ship with the same
default channel ids (``34020000001310000001`` and so on), so two NVRs of two tenants routinely report the
same channel id.  Everything that names a channel (registry keys, grants and role scopes, streams and
viewer sessions, presence, availability, tickets, downloads, reports, audit targets, the watermark tag)
therefore names the pair (device id, channel id), through this one small value type.

Text form: ``"<device_id>/<channel_id>"`` (:meth:`ChannelRef.key`), used where a single string is needed
(audit targets, the signed tag, dictionary keys in JSON).  :meth:`ChannelRef.parse` reads it back and
refuses anything else.
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = ["GB_ID_RE", "ChannelRef", "valid_gb_id"]

#: A GB/T 28181 id as accepted on the wire and in the API: digits (18 or 20 in practice), or letters and
#: digits for odd vendors; 1..32 characters, no separator.
GB_ID_RE = re.compile(r"^[0-9A-Za-z_\-]{1,32}$")


def valid_gb_id(value: str) -> bool:
    return bool(GB_ID_RE.match(value))


class ChannelRef(NamedTuple):
    """One camera: the device that reports it and its channel id within that device.

    A NamedTuple so that it is hashable, ordered (device first), cheap, and unpacks as
    ``device_id, channel_id = ref``."""

    device_id: str
    channel_id: str

    @property
    def key(self) -> str:
        """``device_id/channel_id``: the text form (audit targets, the signed tag, JSON keys)."""
        return f"{self.device_id}/{self.channel_id}"

    def __str__(self) -> str:
        return self.key

    @classmethod
    def parse(cls, text: str) -> ChannelRef:
        """The inverse of :attr:`key`; ``ValueError`` for anything that is not ``device/channel``."""
        device_id, sep, channel_id = text.partition("/")
        if not sep or not valid_gb_id(device_id) or not valid_gb_id(channel_id):
            raise ValueError(f"not a channel reference (device_id/channel_id): {text!r}")
        return cls(device_id, channel_id)

    def as_dict(self) -> dict[str, str]:
        return {"device_id": self.device_id, "channel_id": self.channel_id}
