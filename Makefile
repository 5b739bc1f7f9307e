# The two commands: `make demo` and `make test`. Each creates .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CHECKED := src tests benchmarks tools
# ruff also formats the Python blocks of the Markdown pages
FORMATTED := $(CHECKED) README.md docs
# MathJax and mermaid for the site, fetched from the npm registry (not in git: .gitignore)
VENDORED := docs/vendor/VERSIONS

.PHONY: demo test test-slow lint format bench docs clean

# pyright's PyPI wrapper fetches the pyright npm package on first use: do it here, once.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	$(BIN)/pyright --version
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/chaosgrad demo --out chaosgrad-report

# Lint, format check, types, then the tests on both cores.
test: $(STAMP) $(VENDORED)
	$(BIN)/ruff check $(CHECKED)
	$(BIN)/ruff format --check $(FORMATTED)
	$(BIN)/pyright
	$(BIN)/mkdocs build --strict --quiet --site-dir site
	$(BIN)/python -m pytest -n 2 --dist worksteal --durations=25

# The long accuracy runs are run-time bound: XLA's full optimisation (the default suite
# compiles at level 0, tests/conftest.py).
test-slow: $(STAMP)
	XLA_FLAGS="$(XLA_FLAGS) --xla_backend_optimization_level=2" \
		$(BIN)/python -m pytest -n 2 --dist worksteal -m slow

lint: $(STAMP)
	$(BIN)/ruff check $(CHECKED)
	$(BIN)/ruff format --check $(FORMATTED)
	$(BIN)/pyright

format: $(STAMP)
	$(BIN)/ruff format $(FORMATTED)
	$(BIN)/ruff check --fix $(CHECKED)

bench: $(STAMP)
	$(BIN)/python benchmarks/speed.py
	$(BIN)/python benchmarks/run.py
	$(BIN)/python benchmarks/core.py
	$(BIN)/python benchmarks/trainability.py

# The documentation site (mkdocs.yml, docs/), built offline into site/.
docs: $(STAMP) $(VENDORED)
	$(BIN)/mkdocs build --strict --site-dir site

# The pinned versions and hashes are in the script: editing it fetches again.
$(VENDORED): tools/vendor_docs_assets.py
	$(PYTHON) tools/vendor_docs_assets.py docs/vendor

clean:
	rm -rf $(VENV) chaosgrad-report .pytest_cache .ruff_cache docs/vendor
