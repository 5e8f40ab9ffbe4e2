# crossmkt: `make run` (demo on SQLite, then serve), `make demo` (demo, then exit), `make test`,
# `make lint` (ruff, ruff format --check, mypy, import contracts; configured in pyproject.toml).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RUNTIME := $(VENV)/.runtime-installed
DEV := $(VENV)/.dev-installed
HOST ?= 127.0.0.1:8000

.PHONY: run demo test lint serve worker beat clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(RUNTIME): requirements.txt | $(PY)
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(DEV): requirements.txt requirements-dev.txt $(RUNTIME)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

demo: $(RUNTIME)
	$(PY) manage.py migrate --noinput
	$(PY) manage.py demo

run: demo
	$(PY) manage.py runserver $(HOST)

test: $(DEV)
	$(PY) -m pytest -n auto --dist loadfile

# Every tool runs even if an earlier one fails, so one run shows all the findings; any failure fails lint.
LINT_STEPS := "ruff check ." "ruff format --check ." "mypy ." "lint-imports"
lint: $(DEV)
	@status=0; for step in $(LINT_STEPS); do \
	  echo "== $$step"; $(VENV)/bin/$$step || status=1; \
	done; exit $$status

worker: $(RUNTIME)
	$(VENV)/bin/celery -A crossmkt_site worker --loglevel=INFO

beat: $(RUNTIME)
	$(VENV)/bin/celery -A crossmkt_site beat --loglevel=INFO

clean:
	rm -rf $(VENV) var staticfiles .pytest_cache
