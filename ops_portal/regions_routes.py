"""The administrative-division table (issue 18): GB/T 2260 civil codes in words for the console.

``GET /api/regions`` answers any logged-in user with the whole bundled table of :mod:`gbcore.regions` as
``{"version": "<the date it is current to>", "items": {"610113": "陕西省西安市雁塔区", ...}}``: every 6-digit
code with its full name (a 2- or 4-digit code is named by its code padded with zeros, an 8- or 20-digit one by
its first 6 digits).  The table changes only with the software: the answer carries an ``ETag`` and
``Cache-Control: private, no-cache``, so the browser keeps it and asks again with ``If-None-Match`` (304).
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from gbcore.regions import region_table
from ops_portal.deps import Auth
from ops_portal.schemas import error_responses

__all__ = ["RegionsOut", "router"]

router = APIRouter(tags=["regions"], responses=error_responses(401, 403))

CACHE_CONTROL = "private, no-cache"


class RegionsOut(BaseModel):
    version: str = Field(description="表的现行日期 / the date the table is current to")
    items: dict[str, str] = Field(description="6 位行政区划编码 → 全称 / 6-digit civil code -> full name")


@lru_cache(maxsize=1)
def _body() -> tuple[bytes, str]:
    """The answer's bytes and its ETag, made once."""
    table = region_table()
    body = json.dumps({"version": table.version, "items": dict(table.full)}, ensure_ascii=False,
                      separators=(",", ":")).encode("utf-8")
    return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = [tag.strip() for tag in if_none_match.split(",")]
    return "*" in tags or any(tag.removeprefix("W/") == etag for tag in tags)


@router.get("/api/regions", operation_id="regions", response_model=RegionsOut,
            summary="行政区划表 / the administrative-division table (GB/T 2260)",
            responses={304: {"description": "未变化 / not modified (If-None-Match)"}})
async def regions(request: Request, user: Auth) -> Response:
    body, etag = _body()
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL}
    if _matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)
