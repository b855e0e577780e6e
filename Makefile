# shopstream — the two commands a fresh machine needs are `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: check-deploy run test test-unit test-integration test-e2e test-faults protos bench train-beauty clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch is pinned: 2.13.0 is the CPU wheel; any other spec pulls GBs of CUDA wheels.
	$(BIN)/pip install -q torch==2.13.0
	# train: torch, for `shopstream train` and the tests; the serving images leave it out (Dockerfile).
	$(BIN)/pip install -q -e '.[dev,train]'
	-$(MAKE) --no-print-directory browser
	touch $(STAMP)

## Run the whole system: embedded Kafka + Redis (unless KAFKA_BOOTSTRAP_SERVERS / REDIS_URL),
## a trained model, features + ranker + gateway, live traffic and sample recommendations.
## Prometheus for the ops view comes from Debian's package, fetched once under var/promtool when
## apt-get can (nothing is installed); without it shopstream up runs without Prometheus.
run: $(STAMP)
	-@test -x $(PROMTOOL) || $(MAKE) --no-print-directory $(PROMTOOL) >/dev/null 2>&1 \
		|| echo "==> could not fetch Debian's prometheus package (apt-get download prometheus): no Prometheus this run"
	$(BIN)/shopstream up $(ARGS)

## Unit, integration and end-to-end tests on real servers.
## promtool and Prometheus (Debian's package, unpacked under var/promtool) when apt-get can fetch
## them: the alert-rule unit tests and the e2e Prometheus check run then, and skip without them.
test: $(STAMP)
	-@test -x $(PROMTOOL) || $(MAKE) --no-print-directory $(PROMTOOL) >/dev/null 2>&1 \
		|| echo "==> could not fetch Debian's prometheus package: the promtool tests will be skipped"
	$(BIN)/python -m pytest -q

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit -q
test-integration: $(STAMP)
	$(BIN)/python -m pytest tests/integration -q
test-e2e: $(STAMP)
	$(BIN)/python -m pytest tests/e2e -q

## The whole fault-injection matrix (make test runs only its fast subset): worker, Redis, broker and
## ranker crashes, redelivery, every poison record; lost and double-applied events per scenario.
test-faults: $(STAMP)
	SHOPSTREAM_FAULTS=full $(BIN)/python -m pytest tests/faults -q -s -p no:cacheprovider

## Regenerate gen/python from proto/ (a unit test fails when they drift).
protos: $(STAMP)
	$(BIN)/python scripts/gen_protos.py

## Train on Amazon Beauty (../shared/data/beauty) with default settings.
train-beauty: $(STAMP)
	$(BIN)/shopstream train --data ../shared/data/beauty/Beauty.txt --attributes ../shared/data/beauty/Beauty_item2attributes.json

bench: $(STAMP)
	$(BIN)/python -m bench --quick

## promtool (from Debian's prometheus package, unpacked under var/, not installed) checks the
## scrape config and alert rules and runs their unit tests (deploy/prometheus/tests); the e2e
## operations test then runs the package's Prometheus against the live stack.
PROMTOOL := var/promtool/usr/bin/promtool
$(PROMTOOL):
	mkdir -p var/promtool && cd var/promtool && (apt-get download prometheus || (apt-get update -qq && apt-get download prometheus)) && dpkg -x prometheus_*.deb .
check-deploy: $(PROMTOOL) $(STAMP)
	$(PROMTOOL) check rules deploy/prometheus/alerts.yml
	$(PROMTOOL) test rules deploy/prometheus/tests/*.yml
	$(PROMTOOL) check config --syntax-only deploy/prometheus/prometheus.yml
	PATH=$(CURDIR)/var/promtool/usr/bin:$$PATH $(BIN)/python -m pytest -q tests/unit/deploy/test_alert_rules.py tests/e2e/test_operations.py

clean:
	rm -rf var .pytest_cache

## Headless Chromium and its driver for the demo page's browser test (tests/e2e/test_demo_storefront.py):
## Debian's chromium and chromium-driver, installed as root where apt-get is available (setup tries it);
## elsewhere the test is skipped and says why. selenium comes with the dev extra.
.PHONY: browser
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then \
		echo "chromium and chromedriver are installed"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; \
	else \
		echo "chromium/chromedriver missing and not installable here (needs root and apt-get): the browser test will be skipped"; \
	fi
