# f2stream: developer entry points. `make help` lists them.
PYTHON ?= python3
VENV ?= .venv

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

STACK := deploy/stack.sh
VAR := $(abspath $(or $(F2_VAR_DIR),var))
STACK_ENV := $(VAR)/stack.env
FAUST := $(VENV)/bin/faust
# Loads the running stack's settings (ports, DSNs, secret file paths).
LOAD_ENV = test -f $(STACK_ENV) || { echo "$(STACK_ENV) not found: run make up" >&2; exit 1; }; \
	set -a; . $(STACK_ENV); set +a

.PHONY: help venv stack-install up down status clean health logs logs-kafka logs-mosquitto \
	logs-pipeline logs-ingest logs-simulator db-params db-timescale kafka-topics kafka-raw \
	kafka-decoded kafka-dead mqtt-monitor migrate demo test faults fuzz lint prometheus prometheus-down bench \
	full-setup logs-connector logs-processor logs-sink

help: ## list the targets
	@awk -F ':.*## ' '/^[a-zA-Z0-9_-]+:.*## / { printf "  %-16s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

venv: $(VENV)/.installed ## create the venv and pip install -e '.[dev]' (again when setup.cfg changes)

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

stack-install: ## apt-get install the missing services, resolve the Kafka jars
	$(STACK) install

up: ## start the local stack (Kafka, PostgreSQL x2, Mosquitto)
	$(STACK) up

down: ## stop the local stack
	$(STACK) down

status: ## one line per service of the local stack
	@$(STACK) status

clean: ## stop the local stack and remove var/ (data, logs, secrets, PKI)
	$(STACK) clean

health: ## every service of the running system as a table (from the pipeline worker's /health on :6066)
	@python3 deploy/health-table.py "http://127.0.0.1:$${F2_PIPELINE_WEB_PORT:-6066}/health"

prometheus: ## a local Prometheus on 127.0.0.1:9090 scraping both workers (F2_PROMETHEUS_PORT)
	deploy/prometheus/run.sh up

prometheus-down: ## stop the local Prometheus
	deploy/prometheus/run.sh down

logs: ## the last 50 lines of every log in var/log
	@shopt -s nullglob; files=($(VAR)/log/*.log); \
	if (($${#files[@]})); then tail -n 50 "$${files[@]}"; else echo "no logs in $(VAR)/log"; fi

logs-kafka: ## the last 50 lines of the Kafka log
	tail -n 50 $(VAR)/log/kafka.log

logs-mosquitto: ## the last 50 lines of the Mosquitto log
	tail -n 50 $(VAR)/log/mosquitto.log

logs-pipeline: ## the last 50 lines of the pipeline worker's log
	tail -n 50 $(VAR)/log/pipeline.log

logs-ingest: ## the last 50 lines of the ingest worker's log
	tail -n 50 $(VAR)/log/ingest.log

logs-simulator: ## the last 50 lines of the simulator's log
	tail -n 50 $(VAR)/log/simulator.log

# The seed's names for the same things (its services are our two workers).
logs-connector: logs-ingest ## = logs-ingest: the seed's MQTT-Kafka connector is our ingest worker

logs-processor: logs-pipeline ## = logs-pipeline: the seed's data processor is decode, in the pipeline worker

logs-sink: ## = logs-pipeline: the TimescaleDB sink runs in the pipeline worker, so its lines are there
	@echo "the sink runs in the pipeline worker (faust -A f2stream worker): $(VAR)/log/pipeline.log"
	@$(MAKE) --no-print-directory logs-pipeline

# The password goes through the environment, never on a command line.
db-params: ## psql into f2_params as f2
	@$(LOAD_ENV); PGPASSWORD=$$(head -n 1 "$$F2_PARAMS_PASSWORD_FILE") \
		"$$F2_STACK_PG_BIN/psql" "$$F2_PARAMS_DSN"

db-timescale: ## psql into f2_timeseries as f2
	@$(LOAD_ENV); PGPASSWORD=$$(head -n 1 "$$F2_TIMESERIES_PASSWORD_FILE") \
		"$$F2_STACK_PG_BIN/psql" "$$F2_TIMESERIES_DSN"

kafka-topics: ## Kafka topics and their partition counts
	@$(LOAD_ENV); kcat -b "$$(sed 's|kafka://||g; s|;|,|g' <<<"$$F2_KAFKA_BROKER")" -L | \
		sed -n 's/^ *topic "\(.*\)" with \([0-9]*\) partitions:/\1 \2/p' | sort | \
		awk '{ printf "%-40s %s partitions\n", $$1, $$2 }'

kafka-raw: venv ## follow raw_iot_data, one JSON record per line
	@$(LOAD_ENV); $(FAUST) -A f2stream tail raw_iot_data

kafka-decoded: venv ## follow decoded_iot_data
	@$(LOAD_ENV); $(FAUST) -A f2stream tail decoded_iot_data

kafka-dead: venv ## follow iot_dead_letter
	@$(LOAD_ENV); $(FAUST) -A f2stream tail iot_dead_letter

# mosquitto_sub reads extra options from $XDG_CONFIG_HOME/mosquitto_sub: the
# password stays off the command line.
mqtt-monitor: ## every MQTT message on the service listener, as f2-monitor
	@$(LOAD_ENV); cfg=$$(mktemp -d); trap 'rm -rf "$$cfg"' EXIT INT TERM HUP; \
	printf -- '-u f2-monitor\n-P %s\n' "$$(head -n 1 "$$F2_VAR_DIR/secrets/mqtt_monitor_password")" \
		>"$$cfg/mosquitto_sub"; \
	XDG_CONFIG_HOME=$$cfg mosquitto_sub -h "$$F2_MQTT_HOST" -p "$$F2_MQTT_PORT" -v -t '#'

migrate: venv ## apply the database migrations to both databases
	@$(LOAD_ENV); $(FAUST) -A f2stream migrate

demo: stack-install venv ## fresh machine to rows arriving: stack, migrations, devices, workers, simulator
	bash deploy/demo.sh

full-setup: demo ## = demo (the seed's name)

# Two pytest-xdist workers, each with its own stack: the groups of tests/conftest.py keep the tests
# that share a stack on one worker, in order (--no-loadscope-reorder).
test: stack-install venv ## the whole test suite (it starts its own stacks on free ports, two workers)
	$(if $(CI),CI=$(CI)) $(VENV)/bin/pytest -n 2 --dist loadgroup --no-loadscope-reorder

# BENCH_ARGS passes options, e.g. BENCH_ARGS='--sustained-s 300 --sessions 10000' (python -m bench.run -h).
bench: stack-install venv ## throughput and latency against the bare path, each stage alone (own stack; var/bench/)
	$(VENV)/bin/python -m bench.run $(BENCH_ARGS)

# A private stack on free ports, as make test: the local stack in var/ is not touched.
faults: stack-install venv ## repeat fault scenarios under load, figures per run (SCENARIOS=all REPEAT=5)
	$(VENV)/bin/python bench/faults.py --repeat $(or $(REPEAT),5) $(or $(SCENARIOS),all)

fuzz: stack-install venv ## the long fuzzing run (FUZZ_CASES=100000 FUZZ_SEED=7)
	F2_FUZZ_CASES=$(or $(FUZZ_CASES),100000) F2_FUZZ_SEED=$(or $(FUZZ_SEED),7) \
		$(VENV)/bin/pytest tests/integration/test_fuzz.py -s -o timeout=0

lint: stack-install venv ## ruff check, ruff format --check, mypy, shellcheck
	shellcheck $$(find deploy .ci -name '*.sh' -o -name run -path '.ci/*' | sort)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/python tests/typecheck.py
