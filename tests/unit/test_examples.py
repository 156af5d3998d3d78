"""Every example config loads, plans and renders (with the image swapped for a reference)."""

from __future__ import annotations

from pathlib import Path

import pytest

from slurmserve import api, load_spec

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))


def test_there_are_examples_for_each_engine():
    engines = {load_spec(p, image="registry.example/x:1").engine for p in EXAMPLES}
    assert engines == {"vllm", "sglang", "trtllm"}


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_plans_and_renders(path):
    spec = load_spec(path, image="registry.example/x:1")
    plan = api.plan_cluster(spec, api.preview_allocation(spec))
    assert len(plan.nodes) == spec.nodes
    assert "#SBATCH --nodes=" in api.render_sbatch(spec)
