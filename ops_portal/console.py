"""The web console: a single-page app under ``/console/`` (``/`` redirects there).

The page and its assets are public (they hold no data: every datum comes from the token-protected API).
Assets are a flat, fixed directory (``ops_portal/web/console``); names are matched against a strict
pattern, so no path can leave it.  The map tile URL (``GBOPS_MAP_TILE_URL``) reaches the page in a
``<meta>`` element and widens the Content-Security-Policy's ``img-src`` by exactly its origin.
"""

from __future__ import annotations

import html
import re
from functools import lru_cache
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from ops_portal.schemas import ApiError

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

_ASSET = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}\.(js|css|svg|png|ico)$")
_TYPES = {
    "js": "text/javascript; charset=utf-8",
    "css": "text/css; charset=utf-8",
    "svg": "image/svg+xml",
    "png": "image/png",
    "ico": "image/x-icon",
}


@lru_cache(maxsize=64)
def _read(name: str) -> bytes | None:
    node = resources.files("ops_portal").joinpath("web/console").joinpath(name)
    return node.read_bytes() if node.is_file() else None


#: The hosts of the base-map presets of the console's map page (map.js): OpenStreetMap, Tianditu (t0-t7),
#: AutoNavi (webrd01-04, webst01-04) and Tencent (rt0-3).  Only images: the tiles the browser asks for itself.
MAP_PRESET_SOURCES = ("https://tile.openstreetmap.org", "https://*.tianditu.gov.cn", "https://*.is.autonavi.com",
                      "https://*.map.gtimg.com")


def _tile_source(url: str | None) -> str:
    """The CSP source that admits the tile server: its origin (``{s}`` subdomains as ``*``)."""
    if not url:
        return ""
    parts = urlsplit(url)
    if not parts.scheme:  # a path on this server: 'self' already covers it
        return ""
    host = parts.netloc.replace("{s}", "*")
    if not re.fullmatch(r"[A-Za-z0-9.*:\[\]-]+", host):
        return f"{parts.scheme}:"
    return f"{parts.scheme}://{host}"


def _csp(tile_url: str | None, media_origins: list[str] | tuple[str, ...] = ()) -> str:
    """``media_origins``: the cluster's media nodes, whose FLV/WHEP outputs the player fetches (issue 17)."""
    tiles = _tile_source(tile_url)
    img = " ".join(["'self' data: blob:", *([tiles] if tiles else []), *MAP_PRESET_SOURCES])
    media = "".join(f" {o}" for o in media_origins)
    return ("default-src 'self'; script-src 'self'; style-src 'self'; "
            f"img-src {img}; media-src 'self' blob:{media}; "
            f"connect-src 'self'{media}; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
            "form-action 'self'")


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("/console/", status_code=307)


@router.get("/console")
async def console_no_slash() -> RedirectResponse:
    return RedirectResponse("/console/", status_code=307)


def media_origins(app: Any) -> list[str]:
    """The origins of the media nodes serving this portal's viewers (a ClusterMedia's ``origins()``; none
    in the single process, where the outputs are on this server)."""
    origins = getattr(getattr(app.state, "media", None), "origins", None)
    return list(origins()) if callable(origins) else []


@router.get("/console/")
async def console_page(request: Request) -> Response:
    """index.html with the map tile URL injected (escaped) into a meta element."""
    page = _read("index.html")
    if page is None:  # pragma: no cover - the package always ships it
        raise ApiError(404, "not_found", "控制台未安装 / the console is not installed")
    tile_url = request.app.state.settings.map_tile_url or ""
    text = page.decode("utf-8").replace("{{MAP_TILE_URL}}", html.escape(tile_url, quote=True))
    return Response(text, media_type="text/html; charset=utf-8",
                    headers={"Cache-Control": "no-store",
                             "Content-Security-Policy": _csp(tile_url, media_origins(request.app)),
                             "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"})


@router.get("/console/assets/{name}")
async def console_asset(name: str) -> Response:
    data = _read(name) if _ASSET.match(name) and name != "index.html" else None
    if data is None:
        raise ApiError(404, "not_found", "请求的资源不存在 / the requested resource does not exist")
    return Response(data, media_type=_TYPES[name.rsplit(".", 1)[1]], headers={"Cache-Control": "no-cache"})
