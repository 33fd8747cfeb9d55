# Two entry points (see README): `make run` and `make test`. Both set up .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
VAULT ?= sample_vault

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The CPU build of torch; an unpinned torch would pull a multi-GB CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The Obsidian plugin's dev dependencies (npm registry, pinned by package-lock.json), once.
PLUGIN := plugin_bridge
PLUGIN_STAMP := $(PLUGIN)/node_modules/.ci-stamp
$(PLUGIN_STAMP): $(PLUGIN)/package-lock.json
	cd $(PLUGIN) && npm ci --no-audit --no-fund
	touch $(PLUGIN_STAMP)

# The plugin's rendering check drives Debian's chromium: installed when missing (CI runs as root).
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	@[ "$$(id -u)" = 0 ] || { echo "chromium is missing: sudo apt-get install chromium (the plugin's rendering test needs it)"; exit 1; }
	apt-get update -q && apt-get install -y -q chromium

.PHONY: install run test plugin
install: $(STAMP)

# Builds plugin_bridge/main.js; then `vault-agent plugin install --vault PATH` puts it in a vault.
plugin: $(PLUGIN_STAMP)
	cd $(PLUGIN) && npm run build

run: $(STAMP)
	$(VENV)/bin/vault-agent serve --vault $(VAULT)

test: $(STAMP) $(PLUGIN_STAMP) $(CHROMIUM)
	# The plugin: tsc --noEmit, the production build (main.js), vitest.
	cd $(PLUGIN) && npm run check
	$(PY) -m pytest
