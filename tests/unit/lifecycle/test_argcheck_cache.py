"""The argument check's verdict, kept per image and command-line shape: a second job of the
same layout and image skips the check container; anything else checks again."""

from __future__ import annotations

import dataclasses

import pytest

from slurmserve import api
from slurmserve.lifecycle import argcheck
from slurmserve.lifecycle.argcheck import ArgsVerdict, Rejection
from slurmserve.plan import Allocation, NodeInfo

IMG = "sha256:" + "ab" * 32


def _plan(job_id: str = "4242", addresses: tuple[str, ...] = ("192.0.2.1", "192.0.2.2"),
          **fields):
    spec = api.load_spec(engine="sglang", model="org/m", image="registry.example/sglang:1",
                         nodes=2, gpus_per_node=4, tp=8, **fields)
    alloc = Allocation(job_id=job_id, nodes=tuple(
        NodeInfo(name=f"gpu-{i + 1}", address=a, ifname="ens5") for i, a in enumerate(addresses)))
    return api.plan_cluster(spec, alloc)


def test_another_job_of_the_same_layout_has_the_same_key():
    first = _plan()
    other = _plan(job_id="977", addresses=("198.51.100.7", "198.51.100.9"))
    words = " ".join(w for n in other.nodes for c in n.argv_checks for w in c.argv)
    assert "198.51.100.7" in words and "192.0.2.1" not in words  # the command lines differ
    assert argcheck.verdict_key(first, IMG, "docker") == argcheck.verdict_key(other, IMG, "docker")


@pytest.mark.parametrize("change", [
    lambda: (_plan(engine_args=("--mem-fraction-static", "0.8")), IMG, "docker"),
    lambda: (_plan(), "sha256:" + "cd" * 32, "docker"),
    lambda: (_plan(), IMG, "pyxis"),
    lambda: (_plan(addresses=("192.0.2.2", "192.0.2.1")), IMG, "docker"),  # head moved: same
])
def test_what_changes_the_key(change):
    plan, image, runtime = change()
    same = argcheck.verdict_key(plan, image, runtime) == argcheck.verdict_key(_plan(), IMG,
                                                                              "docker")
    swapped = plan.nodes[0].address == "192.0.2.2"
    assert same == swapped  # only a different address assignment keeps it


def test_an_address_inside_a_longer_word_is_not_taken_for_this_jobs():
    plan = _plan()
    tweaked = dataclasses.replace(plan, nodes=tuple(
        dataclasses.replace(n, argv_checks=tuple(
            dataclasses.replace(c, argv=(*c.argv, "--note", "192.0.2.10"))
            for c in n.argv_checks)) for n in plan.nodes))
    other = _plan(job_id="977", addresses=("198.51.100.7", "198.51.100.9"))
    tweaked_other = dataclasses.replace(other, nodes=tuple(
        dataclasses.replace(n, argv_checks=tuple(
            dataclasses.replace(c, argv=(*c.argv, "--note", "198.51.100.70"))
            for c in n.argv_checks)) for n in other.nodes))
    assert argcheck.verdict_key(tweaked, IMG, "docker") != \
        argcheck.verdict_key(tweaked_other, IMG, "docker")


def test_acceptances_are_kept_rejections_and_unchecked_are_not():
    key = argcheck.verdict_key(_plan(), IMG, "docker")
    assert argcheck.cached_verdict(key) is None
    argcheck.remember(key, ArgsVerdict(unchecked="no sglang parser in the image"))
    argcheck.remember(key, ArgsVerdict({"sglang": "0.5"}, (Rejection(0, "gpu-1", "sglang",
                                                                     "0.5", "--x", "no"),)))
    assert argcheck.cached_verdict(key) is None
    argcheck.remember(key, ArgsVerdict({"sglang": "0.5.23"}))
    kept = argcheck.cached_verdict(key)
    assert kept == ArgsVerdict({"sglang": "0.5.23"}, cached=True) and kept.summary == "sglang 0.5.23"
