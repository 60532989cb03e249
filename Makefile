# Two entry points for a fresh machine (see README):
#   make run   install into .venv, then run the main job on the embedded default
#   make test  install into .venv, then run the test suite
# Both are idempotent: the venv is (re)installed only when pyproject.toml changes.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/metacam sweep

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check metacam analysis experiments tests bench
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/members.py
	$(BIN)/python bench/road.py
	$(BIN)/python bench/sweep.py
	$(BIN)/python bench/analysis.py

clean:
	rm -rf $(VENV) outputs multirun metacam-out
