"""Snapshot images attached to tickets, stored as files under ``<data_dir>/tickets/``."""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

__all__ = ["IMAGE_TYPES", "image_type", "save_snapshot", "snapshot_path"]

#: Accepted uploads: media type -> file extension.
IMAGE_TYPES = {"image/jpeg": "jpg", "image/png": "png"}
_NAME_RE = re.compile(r"^[0-9a-f]{32}\.(jpg|png)$")


def image_type(data: bytes) -> str | None:
    """The media type of a JPEG or PNG image by its magic bytes, else None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    return None


def snapshot_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "tickets"


def save_snapshot(data_dir: Path, data: bytes, media_type: str) -> str:
    """Write the image under a random name (mode 0640); returns the name to store on the ticket."""
    ext = IMAGE_TYPES[media_type]
    folder = snapshot_dir(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{secrets.token_hex(16)}.{ext}"
    path = folder / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return name


def snapshot_path(data_dir: Path, name: str) -> Path | None:
    """The file of a stored snapshot name (None for a name this module did not make)."""
    if not _NAME_RE.fullmatch(name):
        return None
    return snapshot_dir(data_dir) / name
