"""benchmarks/simulate.py: SLURM's tree depth, how the image terms grow with N, the check
against the sandbox's figures, and the JSON, plot and report section it feeds."""

from __future__ import annotations

import importlib.util
import json
import sys
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _module(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


sim = _module("simulate")


@pytest.mark.parametrize(("nodes", "hops"), [
    (1, 1), (16, 1), (17, 2), (256, 2),
    (257, 2),  # two hops reach 16 + 256 = 272 nodes (level 1 receives too), not 256
    (272, 2), (273, 3), (4368, 3),  # slurm.conf: "4368 nodes ... with three message hops"
    (4369, 4),
])
def test_tree_depth_at_width_16(nodes, hops):
    assert sim.depth(nodes, 16) == hops


@pytest.mark.parametrize(("nodes", "hops"), [(8, 1), (9, 2), (72, 2), (73, 3), (584, 3),
                                             (585, 4), (1000, 4)])
def test_tree_depth_at_sbcasts_width_8(nodes, hops):
    assert sim.depth(nodes, 8) == hops


def _direct_load(p, nodes: int) -> tuple[float, str]:
    return sim.node_read(p, nodes, p.image_gb, p.load_gbps, shared=True)


def test_direct_load_is_flat_below_the_shared_fs_cap_and_linear_past_it():
    p = sim.CLUSTER
    knee = p.shared_fs_gbps / p.load_gbps  # readers the shared FS serves at full speed
    below = [_direct_load(p, n) for n in (1, 10, int(knee))]
    assert {b for _, b in below} == {"node-bound"}
    assert len({s for s, _ in below}) == 1
    past = {n: _direct_load(p, n) for n in (1000, 2000, 4000)}
    assert {b for _, b in past.values()} == {"shared-FS bound"}
    assert past[2000][0] == pytest.approx(2 * past[1000][0])
    assert past[4000][0] == pytest.approx(4 * past[1000][0])


def test_sbcast_grows_with_the_trees_depth_not_with_n():
    p = sim.CLUSTER
    gb = p.image_gb
    assert sim.sbcast(p, 73, gb) == sim.sbcast(p, 584, gb)  # both three hops at width 8
    # 9 -> 4,680 nodes: 520x the nodes, 2x the hops, at most 2x the time
    assert sim.sbcast(p, 9, gb) < sim.sbcast(p, 4680, gb) <= 2 * sim.sbcast(p, 9, gb)


def test_sandbox_crowds_per_node_work_onto_its_cores_and_a_cluster_does_not():
    # the nodes and the driver's side (a node's share) on the host's 2 cores
    assert sim.crowd(sim.SANDBOX, 1) == 1.0
    assert sim.crowd(sim.SANDBOX, 2) == 1.5
    assert sim.crowd(sim.SANDBOX, 8) == 4.5
    assert sim.crowd(sim.CLUSTER, 1000) == 1.0


def test_one_reader_runs_at_its_own_measured_rate_and_many_share_the_cap():
    p = sim.SANDBOX  # its shared cap (3 cold loads at once) is below one load's own rate
    assert p.shared_fs_gbps < p.load_gbps
    assert sim.node_read(p, 1, 1.0, p.load_gbps, shared=True) == (1 / p.load_gbps, "node-bound")
    assert sim.node_read(p, 3, 1.0, p.load_gbps, shared=True) == (3 / p.shared_fs_gbps,
                                                                    "shared-FS bound")


def test_the_timeline_spans_cover_every_term_of_a_repeated_docker_job():
    for n in (1, 6, 1000):
        for p in (sim.SANDBOX, sim.CLUSTER):
            terms = sim.ready_terms(p, n, "docker direct", warm=True, check_args=False)
            spanned = [k for _, _, names in sim.SPANS for k in names]
            assert sorted(spanned) == sorted(terms)


def test_the_fitted_defaults_are_what_their_figures_give():
    fits = sim.fits()
    assert {"cli_s", "stepd_s + preflight_s", "render_s", "node_script_s", "start_s",
            "probe_s", "argcheck_s", "cleanup_s", "shared_fs_gbps"} <= set(fits)
    for name, f in fits.items():
        assert f["fitted"] == pytest.approx(f["default"], rel=0.02, abs=0.003), name


def test_rendezvous_waits_grow_towards_one_retry():
    p = sim.SANDBOX
    waits = [sim.rendezvous(p, n) for n in (1, 2, 4, 1000)]
    assert waits[0] == 0.0 and waits == sorted(waits)
    assert waits[-1] < p.rendezvous_retry_s


def test_ready_and_teardown_never_shrink_with_more_nodes():
    for mode in sim.MODES:
        rows = [r for r in sim.predict(sim.CLUSTER, sim.NODES) if r["mode"] == mode]
        for key in ("ready_s", "ready_warm_s", "teardown_s"):
            values = [r[key] for r in rows]
            assert values == sorted(values), (mode, key)


def test_the_model_reproduces_the_sandboxs_figures_within_the_stated_tolerance():
    assert sim.TOLERANCE == {"relative": 0.25, "absolute_s": 0.2}
    rows = sim.check_rows()
    kinds = {r["what"] for r in rows}
    assert any("READY" in k for k in kinds) and any("Ctrl+C" in k for k in kinds)
    assert any("sbcast" in k for k in kinds) and any("pyxis" in k for k in kinds)
    assert sum(not r["fitted"] for r in rows) >= 8  # not only the figures it was fitted to
    assert all(r["asserted"] for r in rows)  # slurmserve's load too: no open gap left
    outside = [r for r in rows if not r["within"]]
    assert not outside, outside
    # a row per kind of run, each compared with the model of that lifecycle
    counts = {what: sum(r["what"] == what for r in rows) for what in sim.NO_CHECK_ROWS}
    assert all(counts.values()), counts
    first = [r for r in rows if r["what"].endswith("argument check run (first job of the layout)")]
    assert {r["nodes"] for r in first if r["fitted"]} == set(sim.FIRST_RUNS_FITTED)
    assert any(not r["fitted"] for r in first)
    for r in rows:
        bound = max(0.2, 0.25 * r["measured_s"])
        assert r["within"] == (abs(r["model_s"] - r["measured_s"]) <= bound + 1e-3)


def test_a_worse_model_fails_the_check():
    slow = replace(sim.SANDBOX, stepd_s=0.5)  # ten times slurmstepd's assumed cost
    rows = sim.check_rows(slow)
    assert any(r["asserted"] and not r["within"] for r in rows)
    assert not sim.print_check(rows)


def test_what_dominates_at_1000_nodes():
    at = sim.results()["at_1000"]
    assert at["docker direct"]["dominant"] == "image: docker load (shared-FS bound)"
    assert at["docker direct"]["dominant_share"] > 0.9
    assert at["docker sbcast"]["dominant"] == "image: sbcast tree"
    assert at["docker sbcast"]["ready_s"] < at["docker direct"]["ready_s"] / 3
    assert at["pyxis sbcast"]["dominant"] == "image: convert once on the head"
    # warm docker: the image terms are gone, the srun steps over all nodes remain
    assert at["docker direct"]["dominant_warm"].endswith("srun step")


def test_sbcast_pays_from_fewer_nodes_on_a_slower_shared_fs():
    pays = sim.results()["sbcast_pays_from"]
    assert pays["1"] < pays["10"] < pays["100"]


def test_json_has_the_documented_keys_and_is_current():
    data = sim.results()
    assert set(data) == {"nodes", "modes", "scenarios", "at_1000", "sbcast_pays_from", "check"}
    assert data["nodes"] == [1, 2, 4, 8, 16, 100, 1000]
    assert set(data["scenarios"]) == {"cluster", "sandbox"}
    prediction = {"mode", "nodes", "ready_s", "ready_warm_s", "teardown_s", "dominant",
                  "dominant_warm", "dominant_teardown", "ready_terms", "ready_warm_terms",
                  "teardown_terms"}
    for scenario in data["scenarios"].values():
        assert {"about", "params", "predictions"} <= set(scenario)
        assert all(set(r) == prediction for r in scenario["predictions"])
    assert {(r["mode"], r["nodes"]) for r in data["scenarios"]["cluster"]["predictions"]} == \
        {(m, n) for m in sim.MODES for n in sim.NODES}
    assert set(data["at_1000"]) == set(sim.MODES)
    assert set(data["check"]) == {"tolerance", "rows", "phases", "fits"}
    assert all(set(r) == {"what", "nodes", "measured_s", "model_s", "error", "within", "fitted",
                          "asserted", "source"} for r in data["check"]["rows"])
    assert all(set(r) == {"span", "nodes", "measured_s", "model_s", "fitted", "source"}
               for r in data["check"]["phases"])
    assert {r["fitted"] for r in data["check"]["phases"]} == {True, False}  # some held out
    assert all(set(f) == {"fitted", "default", "source"} for f in data["check"]["fits"].values())
    committed = json.loads((BENCHMARKS / "results" / "simulate.json").read_text())
    assert committed == json.loads(json.dumps(data)), "re-run python benchmarks/simulate.py"


def test_terms_add_up_to_the_totals():
    for r in sim.predict(sim.CLUSTER, (1, 1000)):
        assert sum(r["ready_terms"].values()) == pytest.approx(r["ready_s"], abs=0.01)
        assert sum(r["teardown_terms"].values()) == pytest.approx(r["teardown_s"], abs=0.01)


def test_the_plot_is_valid_svg_with_a_line_per_series_and_the_measured_points():
    data = sim.results()
    root = ET.fromstring(sim.svg(data))
    ns = "{http://www.w3.org/2000/svg}"
    assert root.tag == f"{ns}svg"
    assert len(root.findall(f"{ns}polyline")) == 8
    measured = [r for r in data["check"]["rows"]
                if r["what"] in (*sim.NO_CHECK_ROWS, "Ctrl+C -> driver exited")]
    assert len(root.findall(f"{ns}circle")) == len(measured)
    assert (BENCHMARKS / "results" / "simulate.svg").read_text() == sim.svg(data)


def test_the_report_renders_the_section():
    report = _module("report")
    lines = report._simulated(sim.results())
    text = "\n".join(lines)
    assert lines[0] == "## Beyond the machine: simulated to 1,000 nodes"
    assert "![simulated](results/simulate.svg)" in text
    assert "| 1,000 | " in text and "image: sbcast tree" in text
    assert "| driver -> preflight facts | " in text  # the held-out timeline, span by span
    assert report._simulated({}) == []
