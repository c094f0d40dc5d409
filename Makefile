# The two commands of the README:
#   make demo   set up .venv and run the pipeline on the bundled sample photos
#   make test   set up .venv and run the whole test suite (what CI runs)
# While working (docs/testing.md):
#   make check  the fast tier: in-process tests only (no Snakemake runs, nothing marked slow), < 3 min
#   make lint   ruff, snakefmt --check and snakemake --lint (allow-list: .ci/snakemake-lint-allow.txt)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SNAKEMAKE := $(VENV)/bin/snakemake
CORES ?= 2

.PHONY: setup demo dag test check lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

# Show the whole DAG of the default target, then run it on `dataset` (default: samples).
demo: setup
	$(SNAKEMAKE) --cores $(CORES) -n --quiet rules
	$(SNAKEMAKE) --cores $(CORES)

dag: setup
	$(SNAKEMAKE) --cores $(CORES) -n

# The full suite; the 25 slowest tests are listed at the end (recorded in the CI log).
test: setup
	$(PY) -m pytest -q --durations=25

check: setup
	$(PY) -m pytest -q -m "not snakemake and not slow" --durations=10

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/snakefmt --check Snakefile rules
	$(PY) .ci/snakemake_lint.py

clean:
	rm -rf results .snakemake
