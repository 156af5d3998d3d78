"""The public API is what `__all__` says, sorted, and all of it is there (httpx's
test_exported_members.py): a notebook user calls slurmserve.run, submit, status, ..."""

from __future__ import annotations

import pytest

import slurmserve
from slurmserve import api

PUBLIC = [
    "Allocation", "BenchOptions", "Cluster", "ClusterPlan", "EngineFacts", "Job", "JobRecord",
    "JobStatus", "LaunchError", "LiveLoad", "NodeInfo", "NodePlan", "NodeRecord", "Phase",
    "RecordError", "ReplicaStatus", "ServeSpec", "SlurmserveError", "SpecError", "Status",
    "allocation_defaults", "bench", "check_endpoint", "client_key", "compare_bench", "current_job",
    "describe",
    "doctor", "engine_facts", "ensure_allocation", "job_record", "load_spec", "log_paths", "logs",
    "plan_cluster", "preview_allocation", "render_sbatch", "run", "size", "sizing_catalogue",
    "spec_data", "status", "stop", "submit", "url", "wait_ready",
]


@pytest.mark.parametrize("module", [slurmserve, api], ids=["slurmserve", "api"])
def test_all_is_sorted_and_exported(module):
    assert module.__all__ == sorted(module.__all__)
    for name in module.__all__:
        assert getattr(module, name) is not None, name


def test_the_package_exports_exactly_the_public_api():
    assert sorted(slurmserve.__all__) == sorted(PUBLIC)


def test_every_api_function_is_on_the_package():
    for name in api.__all__:
        assert getattr(slurmserve, name) is getattr(api, name), name


def test_exported_members_are_defined_in_slurmserve():
    for name in slurmserve.__all__:
        member = getattr(slurmserve, name)
        assert getattr(member, "__module__", "").startswith("slurmserve"), name


def test_unknown_names_are_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'jobs'"):
        slurmserve.__getattr__("jobs")
