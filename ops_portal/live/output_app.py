"""A media node's own HTTP server (issue 17): its viewers' outputs (HTTP-FLV, WHEP) and ``GET /api/health``.

In a cluster the portal places a viewer session on a media node and answers ``POST .../live`` with absolute
output URLs of that node (its ``GBOPS_PUBLIC_URL``): the video goes from the media node to the browser
without passing through the portal. The routes are the portal's own (:mod:`ops_portal.live.routes`, the
``/flv/`` and ``/whep/`` ones of ``outputs_router``), so the rule stays the same everywhere: an output URL is
served only with the session user's bearer token or the URL's single-use signed token. That token is minted
on this node when it opens the session (:func:`gbops.cluster_media.serve_media`) with this process's key and
consumed here, so it is bound to the session and user, short-lived, used once, and worth nothing on any
other node.

Cross-origin: the console is served by the portal, so the browser fetches FLV (``fetch`` of flv.js) and
POSTs WHEP offers to another origin; the answers allow any origin (no cookie is involved: the credential is
in the URL or the ``Authorization`` header) and expose the WHEP ``Location``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.routing import APIRoute

from gbcore.settings import Settings

__all__ = ["OUTPUT_PATHS", "create_output_app"]

#: The output routes a media node serves (path prefixes of ``ops_portal.live.routes.outputs_router``).
OUTPUT_PATHS = ("/flv/", "/whep/")


def _output_router() -> APIRouter:
    from ops_portal.live.routes import outputs_router

    router = APIRouter(tags=["live"])
    for route in outputs_router.routes:
        if isinstance(route, APIRoute) and route.path.startswith(OUTPUT_PATHS):
            router.routes.append(route)
    return router


def create_output_app(*, settings: Settings, sessionmaker: Any, media: Any, security: Any = None) -> FastAPI:
    """The output server of a media node: ``media`` is its :class:`media_relay.service.MediaService`;
    ``sessionmaker`` resolves a viewer's bearer token (the shared database); ``security`` the security sink
    (blocked addresses; None: none)."""
    from ops_portal.api import health_router
    from ops_portal.app import install_http_basics
    from security.events import NullSink

    app = FastAPI(title="gbops media node", openapi_url=None, docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.sessionmaker = sessionmaker
    app.state.media = media
    app.state.security = security if security is not None else NullSink()
    install_http_basics(app, settings)
    app.add_middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["GET", "POST", "DELETE"],
                       allow_headers=["Authorization", "Content-Type"], expose_headers=["Location"])
    app.include_router(health_router)
    app.include_router(_output_router())
    return app
