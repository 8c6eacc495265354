"""Health probe of this node for container runtimes (Docker ``HEALTHCHECK``, compose ``healthcheck``).

Kubernetes probes ``/api/health`` with its own HTTP(S) probes; Docker needs a command, and the image has no
curl.  The node serves HTTPS on ``GBOPS_HTTPS_PORT`` unless it runs plain HTTP (loopback or
``GBOPS_HTTP_PLAIN``), so the probe tries HTTPS first, then plain HTTP on ``GBOPS_HTTP_PORT``.  The
certificate is not verified: the probe talks to its own node on a loopback address, where a
self-signed certificate is normal.  ``--ready`` asks ``/api/health?ready=1`` (false while draining).
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping

_ANY = {"", "0.0.0.0", "::", "[::]"}


def probe_urls(env: Mapping[str, str], *, ready: bool = False) -> list[str]:
    host = env.get("GBOPS_HTTP_HOST", "").strip()
    if host in _ANY:
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    path = "/api/health?ready=1" if ready else "/api/health"
    urls = []
    https = env.get("GBOPS_HTTPS_PORT", "8443").strip()
    if https and https != "0":
        urls.append(f"https://{host}:{https}{path}")
    urls.append(f"http://{host}:{env.get('GBOPS_HTTP_PORT', '8080').strip()}{path}")
    return urls


def healthy(url: str, timeout: float) -> bool:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as answer:  # noqa: S310 (own node)
            return answer.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="probe this node's /api/health")
    parser.add_argument("--ready", action="store_true", help="readiness: false while the node drains")
    parser.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args(argv)
    for url in probe_urls(os.environ, ready=args.ready):
        if healthy(url, args.timeout):
            return 0
    print("unhealthy: /api/health did not answer 200", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
