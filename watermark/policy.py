"""Who gets the visible watermark, and the audit trail of that rule.

The watermark is on for every user on every live path.  The only way to switch it off is the
``GBOPS_WATERMARK_OFF_ROLES`` setting (comma-separated role names): it is off for a user only when
*every* role the user holds is listed (a user with one listed role and one unlisted role keeps it:
the stricter rule wins).  A user without any role keeps it too.  With the watermark off the output is
still tagged (signed SEI session tag), so no URL ever hands out the untagged stream.

At platform start :func:`record_policy_change` compares the effective policy with the ``after`` of
the last ``watermark.policy_change`` entry on the audit log and appends a new entry (``before``,
``after``) when they differ, so every change of the rule is on the tamper-evident log.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from watermark.overlay import WatermarkSettings
from watermark.render import FIELDS

if TYPE_CHECKING:
    from gbcore.settings import Settings

__all__ = ["WatermarkPolicy", "parse_names", "record_policy_change", "settings_from", "POLICY_ACTION"]

POLICY_ACTION = "watermark.policy_change"


def parse_names(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """``"a, b,,c"`` -> ``("a", "b", "c")`` (order kept, duplicates dropped)."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    out: list[str] = []
    for item in items:
        name = str(item).strip()
        if name and name not in out:
            out.append(name)
    return tuple(out)


def settings_from(settings: Settings) -> WatermarkSettings:
    """The overlay look from the platform settings (``GBOPS_WATERMARK_*``)."""
    fields = parse_names(settings.watermark_fields) or FIELDS
    unknown = [f for f in fields if f not in FIELDS]
    if unknown:
        raise ValueError(f"unknown watermark field(s) {unknown}; choose among {list(FIELDS)}")
    font = settings.watermark_font_path
    return WatermarkSettings(
        enabled=True,
        font_path=str(font) if font else None,
        font_scale=settings.watermark_font_scale,
        opacity=settings.watermark_opacity,
        tiles_x=settings.watermark_tiles_x,
        tiles_y=settings.watermark_tiles_y,
        drift=settings.watermark_drift,
        fields=fields,
    )


@dataclass(frozen=True)
class WatermarkPolicy:
    off_roles: frozenset[str] = frozenset()
    look: WatermarkSettings = field(default_factory=WatermarkSettings)

    @classmethod
    def from_settings(cls, settings: Settings) -> WatermarkPolicy:
        return cls(off_roles=frozenset(parse_names(settings.watermark_off_roles)), look=settings_from(settings))

    def applies(self, roles: Iterable[str]) -> bool:
        """True when a user holding ``roles`` gets the visible watermark."""
        held = set(roles)
        return not (held and held <= self.off_roles)

    def describe(self) -> dict[str, Any]:
        """The effective policy as recorded on the audit log (JSON values only, stable order)."""
        s = self.look
        return {
            "default": "on",
            "off_roles": sorted(self.off_roles),
            "fields": list(s.fields),
            "opacity": round(float(s.opacity), 4),
            "font_scale": round(float(s.font_scale), 4),
            "tiles": [int(s.tiles_x), int(s.tiles_y)],
            "drift": round(float(s.drift), 4),
            "session_tag": "always",
        }


async def record_policy_change(audit: Any, policy: WatermarkPolicy) -> dict[str, Any] | None:
    """Append ``watermark.policy_change`` when the effective policy differs from the last one recorded;
    returns the recorded detail, or None when nothing changed."""
    from audit_log.log import Actor, Target

    _, entries = await audit.store.query(actions=[POLICY_ACTION], limit=1)
    before = None
    if entries:
        before = (entries[0].value().get("detail") or {}).get("after")
    after = policy.describe()
    if before == after:
        return None
    detail = {"before": before, "after": after}
    await audit.record(actor=Actor.system(), action=POLICY_ACTION, target=Target("setting", "watermark"),
                       detail=detail)
    return detail
