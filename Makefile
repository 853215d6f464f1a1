# PushHub — `make run` starts the product with a demo tenant, `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
WEB_PORT ?= 8000
export WEB_PORT

.PHONY: install install-bench run test test-js js-tooling test-faults test-pgbouncer test-rabbitmq lint format sandbox messages bench bench-full clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

# Web (gunicorn) + the Celery workers of each lane + webhook worker + beat from the Procfile, on SQLite and a filesystem broker by default.
# The web process also serves the WeChat sandbox that the demo's sandbox app talks to. var/metrics (the
# Procfile's PROMETHEUS_MULTIPROC_DIR: every process's Prometheus counts) is emptied: each run counts from zero.
run: install
	mkdir -p var
	rm -rf var/metrics && mkdir -p var/metrics
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py createcachetable
	$(BIN)/python manage.py load_demo --base-url http://127.0.0.1:$(WEB_PORT)
	@echo ""
	@echo "PushHub is starting at http://127.0.0.1:$(WEB_PORT)/  (API docs: http://127.0.0.1:$(WEB_PORT)/api/docs/)"
	@echo ""
	SANDBOX_API_BASE=http://127.0.0.1:$(WEB_PORT)/sandbox/wechat PATH=$(CURDIR)/$(BIN):$$PATH \
		WEBHOOK_ALLOW_PRIVATE=$${WEBHOOK_ALLOW_PRIVATE:-1} $(BIN)/honcho start -f Procfile

test: install test-js
	$(BIN)/python -m pytest -q

# The mini-program SDK: its fake server's contract (tests/js/sdk-contract.json) is the server's OpenAPI schema
# (fails when stale: regenerate with `python -m tests.sdk_contract`), its unit tests (Node's own runner, a fake
# `wx`, no network), then the real SDK in Node against a live PushHub (tests/test_sdk_js_live.py, also in pytest).
test-js: install
	$(BIN)/python -m tests.sdk_contract --check
	@if command -v node >/dev/null 2>&1; then node --test --test-reporter=dot tests/js/; \
	else echo "node not found: skipping the SDK's JavaScript tests (install Node.js >= 18)"; fi
	$(BIN)/python -m pytest -q tests/test_sdk_js_live.py

# Their tooling, tests/js/package.json (WeChat's miniprogram-simulate and typings, TypeScript, uni-app's and Taro's
# typings): installed into tests/js/node_modules when the lockfile is newer. Without npm, the tests needing it skip.
test-js: js-tooling
js-tooling:
	@if ! command -v npm >/dev/null 2>&1; then echo "npm not found: the SDK tests that need tests/js/package.json will skip"; \
	elif [ ! tests/js/node_modules/.package-lock.json -nt tests/js/package-lock.json ]; then \
		npm ci --prefix tests/js --no-audit --no-fund --loglevel=error; fi

# Fault injection (tests/faults): 20,000-user broadcasts on the real stack (gunicorn, the Procfile's Celery workers, beat,
# a Redis of its own, PostgreSQL, the fake WeChat, the webhook worker) while WeChat errs, answers time out, the
# token is reset, a worker is SIGKILLed, Redis restarts, PostgreSQL drops its connections, and a webhook receiver
# refuses half its events (the webhook worker SIGKILLed too). Needs PostgreSQL and redis-server.
test-faults: install
	flock /tmp/pushhub-bench.lock $(BIN)/python -m tests.faults

# RabbitMQ as Celery's broker instead of Redis (README "Operations: brokers"): the delivery tests (real workers
# in test_worker.py, the broker tests) on a vhost for the tests (made with rabbitmqctl when missing), then the
# fault suite on a vhost of its own run, one scenario more (RabbitMQ closing every connection mid-broadcast).
# Redis (REDIS_URL; the fault suite's own) stays the cache. Needs RabbitMQ at RABBITMQ_HOST.
RABBITMQ_USER ?= guest
RABBITMQ_PASSWORD ?= guest
RABBITMQ_HOST ?= 127.0.0.1:5672
RABBITMQ_TEST_VHOST ?= pushhub-test
test-rabbitmq: install
	@if command -v rabbitmqctl >/dev/null 2>&1; then \
		rabbitmqctl -q add_vhost $(RABBITMQ_TEST_VHOST) 2>/dev/null || true; \
		rabbitmqctl -q set_permissions -p $(RABBITMQ_TEST_VHOST) $(RABBITMQ_USER) '.*' '.*' '.*'; fi
	CELERY_BROKER_URL=amqp://$(RABBITMQ_USER):$(RABBITMQ_PASSWORD)@$(RABBITMQ_HOST)/$(RABBITMQ_TEST_VHOST) \
		$(BIN)/python -m pytest -q tests/delivery tests/test_health.py
	FAULTS_RABBITMQ_URL=amqp://$(RABBITMQ_USER):$(RABBITMQ_PASSWORD)@$(RABBITMQ_HOST) \
		flock /tmp/pushhub-bench.lock $(BIN)/python -m tests.faults --broker amqp

# The send path's tests (tests/delivery, sends, SDK ingest, claims) through a pgbouncer of their own in transaction
# mode that resets every server connection after each transaction (tests/pgbouncer.py; README "Operations:
# pgbouncer"). Needs DATABASE_URL=postgres://… and pgbouncer (Debian's package).
test-pgbouncer: install
	$(BIN)/python -m tests.pgbouncer

# Benchmarks (bench/): PostgreSQL + Redis on this machine, their own database (pushhub_bench) and Redis db 2.
# One benchmark at a time on the machine (flock): they measure CPU and latency.
$(BIN)/.installed-bench: pyproject.toml $(BIN)/.installed
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@

install-bench: $(BIN)/.installed-bench

# BENCH_JSON=FILE: also write every figure to FILE (`python -m bench.report FILE --readme README.md` makes the
# README's generated tables from it).
bench: install-bench
	flock /tmp/pushhub-bench.lock $(BIN)/python -m bench $(if $(BENCH_JSON),--json $(BENCH_JSON))

bench-full: install-bench
	flock /tmp/pushhub-bench.lock $(BIN)/python -m bench --full $(if $(BENCH_JSON),--json $(BENCH_JSON))

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The sandbox alone on its own port (benchmarks, or pointing WECHAT_API_BASE at it).
sandbox: install
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python -m pushhub.wechat.sandbox --port 9100

# Recompile the zh-Hans translations (.po → .mo; the .mo files are committed so nothing else needs gettext).
messages:
	for po in $$(find . -path ./.venv -prune -o -name django.po -print); do msgfmt --check -o $${po%.po}.mo $$po; done

clean:
	rm -rf var/pushhub.sqlite3* var/test.sqlite3* var/celery var/staticfiles
