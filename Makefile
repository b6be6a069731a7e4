# Sensorlake without Docker. `make up` runs the platform; `make test` runs every test.
# Both install what is missing first (Python venv, Mosquitto, Flink, Kafka and Beam jars).

PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
SL     := $(VENV)/bin/sensorlake
PYTEST_ARGS ?=

MERMAID := tools/mermaid/node_modules/.installed
RELIABILITY_SCALE ?= 4
SOAK_ARGS ?=

.PHONY: setup install tools up down status test test-unit test-integration test-reliability test-compose bench bench-soak clean

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --progress-bar off -q --upgrade pip
	$(VENV)/bin/pip install --progress-bar off -e '.[test]'
	touch $@

setup: $(VENV)/.installed

# Mermaid CLI (renders the diagrams of docs/ in the tests), with Debian's Chromium, not its own download.
$(MERMAID): tools/mermaid/package-lock.json
	cd tools/mermaid && PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error
	touch $@

tools: $(MERMAID)

install: setup
	$(SL) local install

up: install
	$(SL) local up --with-apps

down:
	$(SL) local down

status:
	$(SL) local status

# Everything: unit tests, integration tests and the short reliability suite, on one local stack;
# then, in a session of its own (the local stack stopped), `docker compose up -d` for real. Both
# run even when the first fails; `make test` fails when either does.
test: install tools
	$(PY) -m pytest tests/unit tests/integration tests/reliability -p no:cacheprovider $(PYTEST_ARGS); \
	local=$$?; \
	$(PY) -m pytest tests/compose -p no:cacheprovider $(PYTEST_ARGS); \
	compose=$$?; \
	test $$local -eq 0 && test $$compose -eq 0

test-unit: setup tools
	$(PY) -m pytest tests/unit -p no:cacheprovider $(PYTEST_ARGS)

test-integration: install
	$(PY) -m pytest tests/integration -p no:cacheprovider $(PYTEST_ARGS)

# The compose end-to-end test alone: installs docker.io, debootstrap and Compose v2 (built from the
# Go module proxy into the download cache) when missing, starts dockerd when none runs (and stops it).
test-compose: setup
	$(PY) -m pytest tests/compose -p no:cacheprovider $(PYTEST_ARGS)

# The fault suite at a larger scale (more messages, longer quiet time between faults).
test-reliability: install
	SENSORLAKE_RELIABILITY_SCALE=$(RELIABILITY_SCALE) $(PY) -m pytest tests/reliability -p no:cacheprovider -s $(PYTEST_ARGS)

# Benchmarks print their figures and write JSON to bench/results/ (never pass/fail).
bench: install
	$(PY) bench/bridge.py
	$(PY) bench/storage.py
	$(PY) bench/query.py
	$(PY) bench/state.py
	$(PY) bench/freshness.py
	$(PY) bench/pipeline.py
	$(PY) bench/soak.py

# The soak alone (issue 8: 5,000 msg/s for 30 minutes); e.g. SOAK_ARGS="--rate 1000 --minutes 4".
bench-soak: install
	$(PY) bench/soak.py $(SOAK_ARGS)

clean:
	rm -rf $(VENV) .sensorlake flink/jobserver/target
