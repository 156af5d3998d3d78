"""Preflight verdicts from node facts: every failure names the node, the cause and the fix."""

from __future__ import annotations

from slurmserve import load_spec
from slurmserve.images import TarballImage
from slurmserve.lifecycle.preflight import HttpPort, Preflight, Verdict, evaluate
from slurmserve.slurm.steps import parse

IMG = "registry.example/engine:1"
GOOD = {"done": "1", "address": "192.0.2.2", "ifname": "ens5", "runtime.docker": "ok 20.10.24",
        "image.docker": "absent", "tarball": "readable", "devices": "", "gpus": "8", "busy_ports": ""}


def _spec(**kw):
    kw = {"nodes": 2, "gpus_per_node": 8, "tp": 16, **kw}
    return load_spec(engine="sglang", model="m", image=IMG, **kw)


def _eval(facts, spec=None, explicit=False, tarball=None):
    return evaluate(spec or _spec(), ["a", "b"], facts, "192.0.2.1", tarball,
                    HttpPort(30000, 20011, explicit), "srun exit 0")


def test_all_good_nodes_pass_with_their_route():
    verdict = _eval({0: dict(GOOD, address="192.0.2.1"), 1: GOOD})
    assert not verdict.failures
    assert [(n.name, n.address, n.ifname) for n in verdict.nodes] == [
        ("a", "192.0.2.1", "ens5"), ("b", "192.0.2.2", "ens5")]
    assert "FAIL" not in verdict.table(["a", "b"])


def test_each_failure_names_node_cause_and_fix():
    tarball = TarballImage("/shared/x.tar", "sha256:" + "0" * 64, (), False, 1)
    facts = {0: dict(GOOD, **{"runtime.docker": "error: Cannot connect"}, gpus="4"),
             1: dict(GOOD, tarball="unreadable", address="", busy_ports="20001")}
    verdict = _eval(facts, spec=_spec(fabric="efa"), tarball=tarball)
    lines = [f.line() for f in verdict.failures]
    assert "node a: docker is not usable here (error: Cannot connect); start dockerd" in lines[0]
    assert any(line.startswith("node a: 4 GPU(s) visible, the spec needs 8") for line in lines)
    assert any("node b: cannot read the image tarball /shared/x.tar" in line for line in lines)
    assert any("node b: no address on the route to the head" in line for line in lines)
    assert any("node b: port(s) 20001 already in use" in line for line in lines)
    assert sum("uverbs" in line for line in lines) == 2  # efa without devices, both nodes
    assert "FAIL" in verdict.table(["a", "b"])


def test_a_node_that_never_reported_fails_the_step():
    verdict = _eval({0: GOOD})
    assert [f.line() for f in verdict.failures] == [
        "node b: preflight did not complete (srun exit 0); check that slurmd runs there and "
        "the node can start job steps"]


def test_taken_default_port_moves_to_the_job_port_unless_explicit():
    facts = {0: dict(GOOD, busy_ports="30000"), 1: GOOD}
    assert _eval(facts).port == 20011 and not _eval(facts).failures
    explicit = _eval(facts, explicit=True)
    assert explicit.port is None
    assert explicit.failures[0].line().startswith("node a: port(s) 30000 already in use")


def test_no_gpus_needed_with_gpus_none():
    verdict = _eval({0: dict(GOOD, gpus="none"), 1: dict(GOOD, gpus="none")},
                    spec=_spec(gpus="none", gpus_per_node=1, tp=2))
    assert not verdict.failures


def test_one_tag_naming_different_images_on_the_nodes_fails_the_odd_node():
    """Field failure 14: a registry reference pulled at different times differs per node."""
    same = {0: dict(GOOD, **{"image.docker": "present", "held_id.docker": "sha256:aaa"}),
            1: dict(GOOD, **{"image.docker": "present", "held_id.docker": "sha256:aaa"})}
    assert not _eval(same).failures
    differ = {0: dict(GOOD, **{"image.docker": "present", "held_id.docker": "sha256:aaa"}),
              1: dict(GOOD, **{"image.docker": "present", "held_id.docker": "sha256:bbb"})}
    [failure] = _eval(differ).failures
    assert failure.node == "b" and failure.check == "image"
    assert f"{IMG} is sha256:bbb here but sha256:aaa on the other nodes" in failure.line()
    assert "docker pull it everywhere, or pass a `docker save` tarball" in failure.fix
    # A tarball names its image by ID, so what a node held under the tag does not matter.
    tarball = TarballImage("/shared/x.tar", "sha256:" + "0" * 64, (), False, 1)
    assert not _eval(differ, tarball=tarball).failures


def test_the_http_port_moves_when_any_rank_that_binds_it_finds_it_taken():
    """SGLang ranks >= 1 bind a health server on the HTTP port too (engine.py)."""
    every = HttpPort(30000, 20011, False, frozenset({0, 1}))
    facts = {0: dict(GOOD), 1: dict(GOOD, busy_ports="30000")}
    verdict = evaluate(_spec(), ["a", "b"], facts, "192.0.2.1", None, every, "")
    assert verdict.port == 20011 and not verdict.failures
    facts[0] = dict(GOOD, busy_ports="20011")  # the fallback is taken on the head
    verdict = evaluate(_spec(), ["a", "b"], facts, "192.0.2.1", None, every, "")
    assert verdict.port is None
    assert [f.line() for f in verdict.failures] == [
        "node b: port(s) 30000 already in use; stop what holds them or choose another --port"]


def test_untouched_nodes_are_those_the_runtime_said_hold_nothing_of_the_job():
    """named.RUNTIME 0: the launch skips its listing there; any other count, or a runtime that
    did not say (docker's CLI path, podman), and the node is looked at again."""
    facts = parse("".join(f"SLURMSERVE_FACT\t{rank}\t{key}\t{value}\n" for rank, key, value in (
        (0, "named.docker", "0"), (1, "named.docker", "1"), (2, "runtime.docker", "ok 27"),
        (3, "named.docker", "0"), (3, "named.pyxis", "2"))))
    pre = Preflight(Verdict(), "10.0.0.1", None, facts, HttpPort(8000, 30001, False), "docker",
                    {})
    assert pre.untouched() == frozenset({0, 3})
    assert Preflight(Verdict(), "10.0.0.1", None, facts, HttpPort(8000, 30001, False), "pyxis",
                     {}).untouched() == frozenset()
