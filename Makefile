# Two entry points for a fresh Debian/Ubuntu machine with Python 3.11:
#   make run    create .venv, install, start the platform (embedded SQLite, no Redis)
#   make test   install with the dev extras and run the whole suite
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run test lint bench clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "gbops needs Python >= 3.11 (found " + sys.version.split()[0] + ")")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e .
	@touch $@

$(VENV)/.installed-dev: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@ $(VENV)/.installed

# The HTTP-FLV player of the live page (mpegts.js, from the npm registry; optional: WHEP needs nothing).
WEBSTATIC := ops_portal/web/static
$(WEBSTATIC)/mpegts.js:
	@mkdir -p $(WEBSTATIC) build/web
	@if command -v npm >/dev/null 2>&1; then \
	  (cd build/web && npm pack --silent mpegts.js@1.8.0 >/dev/null && tar xzf mpegts.js-1.8.0.tgz) && \
	  cp build/web/package/dist/mpegts.js $@; \
	else echo "npm not found: the live page will offer WebRTC only (apt-get install npm for HTTP-FLV)"; fi

# The console's map (Leaflet, from the npm registry; served by the platform, nothing fetched at run time).
$(WEBSTATIC)/leaflet/leaflet.js:
	@if command -v npm >/dev/null 2>&1; then \
	  mkdir -p $(WEBSTATIC)/leaflet/images build/web/leaflet && \
	  (cd build/web && npm pack --silent leaflet@1.9.4 >/dev/null && tar xzf leaflet-1.9.4.tgz -C leaflet) && \
	  cp build/web/leaflet/package/dist/leaflet.css $(WEBSTATIC)/leaflet/ && \
	  cp build/web/leaflet/package/dist/images/*.png $(WEBSTATIC)/leaflet/images/ && \
	  cp build/web/leaflet/package/dist/leaflet.js $@; \
	else echo "npm not found: the console map will be unavailable (apt-get install npm)"; fi

run: $(VENV)/.installed $(WEBSTATIC)/mpegts.js $(WEBSTATIC)/leaflet/leaflet.js
	$(BIN)/gbops run

test: $(VENV)/.installed-dev $(WEBSTATIC)/mpegts.js $(WEBSTATIC)/leaflet/leaflet.js
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-dev
	$(BIN)/lint-imports --no-cache
	$(BIN)/ruff check .

bench: $(VENV)/.installed-dev
	$(BIN)/python bench/sip_register.py
	$(BIN)/python bench/relay.py
	$(BIN)/python bench/latency.py
	$(BIN)/python bench/audit.py
	$(BIN)/python bench/watermark.py
	$(BIN)/python bench/overlay.py
	$(BIN)/python bench/watermark_export.py
	$(BIN)/python bench/portal.py
	$(BIN)/python bench/recorder.py
	$(BIN)/python bench/playback.py
	$(BIN)/python bench/availability.py
	$(BIN)/python bench/check.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis *.egg-info
