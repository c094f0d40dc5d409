# The two commands of the README:
#   make demo   set up .venv and run the pipeline on the bundled sample photos
#   make test   set up .venv and run the test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SNAKEMAKE := $(VENV)/bin/snakemake
CORES ?= 2

.PHONY: setup demo dag test clean

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

test: setup
	$(PY) -m pytest -q

clean:
	rm -rf results .snakemake
