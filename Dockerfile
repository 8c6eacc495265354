# syntax=docker/dockerfile:1
# gbops container image: one image for every role (GBOPS_ROLES / `gbops run --roles` picks what a node runs).
#   docker build -t gbops:0.1.0 .
# Three stages: the console's front-end packages (npm), a builder that installs gbops into a virtual
# environment, and a slim runtime that receives only that environment, the fonts and a non-root user.
# See docs/deploy.md.

ARG PYTHON_IMAGE=python:3.11-slim
ARG NODE_IMAGE=node:20-bookworm-slim

# --- 1. front-end assets: the HTTP-FLV player and the console map (the Makefile's versions) ---
FROM ${NODE_IMAGE} AS web
WORKDIR /web
RUN npm pack --silent mpegts.js@1.8.0 leaflet@1.9.4 \
 && mkdir -p mpegts leaflet out/leaflet/images \
 && tar xzf mpegts.js-1.8.0.tgz -C mpegts \
 && tar xzf leaflet-1.9.4.tgz -C leaflet \
 && cp mpegts/package/dist/mpegts.js out/ \
 && cp leaflet/package/dist/leaflet.js leaflet/package/dist/leaflet.css out/leaflet/ \
 && cp leaflet/package/dist/images/*.png out/leaflet/images/

# --- 2. builder: gbops and its dependencies in /opt/gbops (binary wheels; PyAV bundles its FFmpeg libs) ---
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/gbops && /opt/gbops/bin/pip install --upgrade pip wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gbcore gbcore
COPY gbops gbops
COPY sip_server sip_server
COPY media_relay media_relay
COPY device_registry device_registry
COPY ops_portal ops_portal
COPY watermark watermark
COPY audit_log audit_log
COPY deploy deploy
COPY gbsim gbsim
COPY device_control device_control
COPY alarms alarms
COPY cascade cascade
COPY security security
COPY timesync timesync
COPY cluster cluster
RUN /opt/gbops/bin/pip install . \
 && /opt/gbops/bin/python -c "import gbops.cli, deploy.entrypoint, deploy.healthcheck"
# The platform serves ops_portal/web/static beside the installed package; package-data does not carry the
# leaflet/ sub-folder, so the assets are copied in place.
COPY --from=web /web/out/ /tmp/static/
RUN site=$(/opt/gbops/bin/python -c "import ops_portal, pathlib; print(pathlib.Path(ops_portal.__file__).parent)") \
 && mkdir -p "$site/web/static" && cp -r /tmp/static/. "$site/web/static/" \
 && test -f "$site/web/static/mpegts.js" && test -f "$site/web/static/leaflet/leaflet.js"

# --- 3. runtime ---
FROM ${PYTHON_IMAGE} AS runtime
# Fonts: the visible watermark draws Simplified Chinese (watermark/font.py looks for these files first).
# tini: PID 1 that forwards SIGTERM, so `docker stop` and Kubernetes start the platform's drain.
# No ffmpeg: PyAV's wheels carry their own FFmpeg libraries; only the tests use the ffmpeg/ffprobe tools.
ARG CJK_FONTS="fonts-wqy-microhei fonts-noto-cjk"
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini ca-certificates ${CJK_FONTS} \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 gbops \
 && useradd --system --uid 10001 --gid gbops --home-dir /var/lib/gbops --shell /usr/sbin/nologin gbops \
 && mkdir -p /var/lib/gbops /var/lib/gbops-recordings /etc/gbops/keys \
 && chown gbops:gbops /var/lib/gbops /var/lib/gbops-recordings
COPY --from=build /opt/gbops /opt/gbops
ENV PATH=/opt/gbops/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    GBOPS_DATA_DIR=/var/lib/gbops \
    GBOPS_LOG_JSON=true
VOLUME ["/var/lib/gbops", "/var/lib/gbops-recordings"]
WORKDIR /var/lib/gbops
USER 10001:10001
# SIP over UDP and TCP, SIP over TLS, the portal (HTTP redirect + HTTPS), the default RTP range.
EXPOSE 5060/udp 5060/tcp 5061/tcp 8080/tcp 8443/tcp 30000-30999/udp 30000-30999/tcp
# The node's own /api/health (HTTPS when it serves HTTPS, else plain HTTP): see deploy/healthcheck.py.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-m", "deploy.healthcheck"]
# deploy.entrypoint exports the GBOPS_* secret files of /run/secrets, then execs `gbops <args>`.
ENTRYPOINT ["tini", "--", "python", "-m", "deploy.entrypoint"]
CMD ["run"]
