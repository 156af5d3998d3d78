# slurmserve: `make demo` serves a real model on the sandbox cluster; `make test` runs everything.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
SANDBOX := tests/cluster/sandbox
NODES ?= 3

.PHONY: install demo test unit lint sandbox-up sandbox-down images parsers bench clean

install:
	$(PIP) install --quiet --disable-pip-version-check -e '.[test]'

lint: install
	$(PYTHON) -m ruff check slurmserve tests containers benchmarks examples

unit: install
	$(PYTHON) -m pytest -m "not cluster and not parsers" -q

sandbox-up:
	$(SANDBOX) up --nodes $(NODES)

sandbox-down:
	$(SANDBOX) down

images:
	containers/testing/build standin
	containers/testing/build vllm-cpu

demo: install sandbox-up
	$(PYTHON) examples/sandbox_demo.py

# The parser tier's runtimes (tests/parsers): SGLang venv, vllm-cpu + standin on the build dockerd.
parsers:
	containers/testing/parsers/prepare

test: install lint sandbox-up parsers
	SLURMSERVE_PARSERS_REQUIRED=1 $(PYTHON) -m pytest -q --durations=15

bench: install sandbox-up
	$(PYTHON) benchmarks/cli_startup.py
	$(PYTHON) benchmarks/cluster.py --nodes 1,2,3
	$(PYTHON) benchmarks/report.py

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache slurmserve-logs
