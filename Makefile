# Both targets create .venv and install what they need, so each works on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
# torch==2.13.0 is the CPU build that lies on these machines' disk; any other spec downloads a
# multi-GB CUDA build. pyproject.toml declares a range so users elsewhere bring their own.
TORCH ?= torch==2.13.0

.PHONY: venv demo test lint bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test,demo]"
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(PY) examples/demo.py

lint: venv
	$(VENV)/bin/ruff check lakeio tests examples benchmarks
	$(VENV)/bin/ruff format --check lakeio tests examples benchmarks

test: lint
	$(VENV)/bin/pytest -q

bench: venv
	$(PY) benchmarks/ingest.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
