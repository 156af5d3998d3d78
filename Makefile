# slurmserve: `make demo` serves a real model on the sandbox cluster; `make test` runs everything.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
SANDBOX := tests/cluster/sandbox
NODES ?= 6

.PHONY: install demo test unit lint sandbox-up sandbox-down images parsers bench bench-overhead clean

# An editable install writes no bytecode; where PYTHONDONTWRITEBYTECODE is set nothing else
# does, and every command would compile slurmserve anew (0.1 s a start here).
install:
	$(PIP) install --quiet --disable-pip-version-check -e '.[test]'
	$(PYTHON) -m compileall -q slurmserve

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

# The cluster suite runs under docker; these runtime-dependent tests run again under pyxis
# (tests/cluster/test_runtimes.py covers auto, conversion, podman and GPUs for both).
PYXIS_TESTS := \
	tests/cluster/test_run.py::test_engine_through_standin \
	tests/cluster/test_run.py::test_sigint_teardown_keeps_logs_and_foreign_containers \
	tests/cluster/test_run.py::test_scancel_tears_down \
	tests/cluster/test_run.py::test_startup_failure_is_reported_fast \
	tests/cluster/test_run.py::test_two_jobs_on_the_same_nodes_do_not_collide \
	tests/cluster/test_faults.py::test_stop_in_every_phase \
	tests/cluster/test_faults.py::test_network_cut_before_the_run_fails_preflight_naming_the_node \
	tests/cluster/test_faults.py::test_port_taken_on_the_head \
	tests/cluster/test_faults.py::test_killed_head_container_fails_the_job_with_its_log \
	tests/cluster/test_faults.py::test_network_cut_while_serving \
	tests/cluster/test_faults.py::test_network_cut_while_starting \
	tests/cluster/test_faults.py::test_driver_sigkill_under_salloc \
	tests/cluster/test_faults.py::test_batch_job \
	tests/cluster/test_vllm.py::test_run_real_vllm \
	tests/cluster/test_run.py::test_killed_worker_container_fails_the_job_with_its_log \
	tests/cluster/test_replicas.py::test_replicas_behind_the_router_share_the_requests \
	tests/cluster/test_replicas.py::test_killed_replica_is_replaced_while_the_endpoint_keeps_answering \
	tests/cluster/test_replicas.py::test_restart_never_and_last_replica_failing_ends_the_run \
	tests/cluster/test_replicas.py::test_scancel_with_replicas_leaves_nothing_of_the_job \
	tests/cluster/test_chain.py::test_a_cancelled_serving_job_is_replaced_while_the_router_holds_requests

test: install lint sandbox-up parsers
	SLURMSERVE_PARSERS_REQUIRED=1 $(PYTHON) -m pytest -q --durations=15
	SLURMSERVE_TEST_RUNTIME=pyxis $(PYTHON) -m pytest -q --durations=10 $(PYXIS_TESTS)

bench: install sandbox-up
	$(PYTHON) benchmarks/cli_startup.py
	$(PYTHON) benchmarks/cluster.py --nodes 1,2,3
	$(PYTHON) benchmarks/report.py

# Issue 18's overhead in paired rounds, docker and pyxis, 1-16 nodes (about 15 minutes).
bench-overhead: install
	$(SANDBOX) up --nodes 16
	$(PYTHON) benchmarks/overhead.py --nodes 1,2,4,8,16
	$(PYTHON) benchmarks/report.py

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache slurmserve-logs
