"""The watermark package's own typed configuration, built once at assembly from the platform settings.

Everything the package reads from ``GBOPS_WATERMARK_*`` and ``GBOPS_DOWNLOAD_*`` is here, typed, instead of
being looked up on the global settings with ``getattr`` and a default repeated at each use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gbcore.settings import Settings
from watermark.policy import WatermarkPolicy, settings_from

__all__ = ["WatermarkConfig"]


@dataclass(frozen=True, slots=True)
class WatermarkConfig:
    data_dir: Path  # the tag key (<data_dir>/watermark-tag.key) and the download files (<data_dir>/downloads)
    policy: WatermarkPolicy  # the look, and the roles that see no visible text
    # per-viewer live encoders
    encoders_per_core: float = 3.0
    max_encoders: int | None = None  # None: cores x encoders_per_core
    sub_stream_cost: float = 0.25  # a sub-stream viewer's encoder, in main-stream encoders
    preset: str = "ultrafast"
    crf: int = 23
    # downloads
    download_max_jobs: int = 2
    download_retention_hours: float = 72.0
    download_preset: str = "ultrafast"
    download_crf: int = 21
    download_speed: int = 4  # a=downloadspeed asked of devices
    tag_key_path: Path | None = None  # the tag key (Settings.watermark_tag_key_path; None: <data_dir>/watermark-tag.key)

    @classmethod
    def from_settings(cls, s: Settings) -> WatermarkConfig:
        return cls(data_dir=Path(s.data_dir),
                   policy=WatermarkPolicy(off_roles=frozenset(_names(s.watermark_off_roles)), look=settings_from(s)),
                   encoders_per_core=s.watermark_encoders_per_core, max_encoders=s.watermark_max_encoders,
                   sub_stream_cost=s.watermark_sub_stream_cost,
                   preset=s.watermark_preset, crf=s.watermark_crf, download_max_jobs=s.download_max_jobs,
                   download_retention_hours=s.download_retention_hours, download_preset=s.download_preset,
                   download_crf=s.download_crf, download_speed=s.download_speed,
                   tag_key_path=Path(s.watermark_tag_key_path))


def _names(value: str) -> tuple[str, ...]:
    from watermark.policy import parse_names

    return parse_names(value)
