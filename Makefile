# Sensorlake without Docker. `make up` runs the platform; `make test` runs every test.
# Both install what is missing first (Python venv, Mosquitto, Flink, Kafka and Beam jars).

PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
SL     := $(VENV)/bin/sensorlake
PYTEST_ARGS ?=

.PHONY: setup install up down status test test-unit test-integration test-reliability bench clean

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --progress-bar off -q --upgrade pip
	$(VENV)/bin/pip install --progress-bar off -e '.[test]'
	touch $@

setup: $(VENV)/.installed

install: setup
	$(SL) local install

up: install
	$(SL) local up --with-apps

down:
	$(SL) local down

status:
	$(SL) local status

test: install
	$(PY) -m pytest tests/unit tests/integration -m "not reliability" -p no:cacheprovider $(PYTEST_ARGS)

test-unit: setup
	$(PY) -m pytest tests/unit -p no:cacheprovider $(PYTEST_ARGS)

test-integration: install
	$(PY) -m pytest tests/integration -m "not reliability" -p no:cacheprovider $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .sensorlake flink/jobserver/target
