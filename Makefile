# crossmkt: `make run` (demo on SQLite, then serve), `make demo` (demo, then exit), `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RUNTIME := $(VENV)/.runtime-installed
DEV := $(VENV)/.dev-installed
HOST ?= 127.0.0.1:8000

.PHONY: run demo test serve worker beat clean

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

worker: $(RUNTIME)
	$(VENV)/bin/celery -A crossmkt_site worker --loglevel=INFO

beat: $(RUNTIME)
	$(VENV)/bin/celery -A crossmkt_site beat --loglevel=INFO

clean:
	rm -rf $(VENV) var staticfiles .pytest_cache
