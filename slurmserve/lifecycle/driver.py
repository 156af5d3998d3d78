"""`slurmserve run`: preflight, distribute, launch, wait for ready, serve, tear down.

Runs inside an allocation. Every cluster-side action is one srun step over all nodes at once;
every step is interruptible; teardown always runs and removes only containers with our label.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from .. import apikey, engines, images, runner, slurm, state
from ..console import Console
from ..errors import EXIT_FAILURE, EXIT_OK, LaunchError
from ..plan import Allocation, ClusterPlan, NodeInfo
from ..render import render_template
from ..runtimes import docker
from ..spec import ServeSpec
from ..state import STOP_MARKER
from . import launch, preflight
from .health import Prober
from .logwatch import LogWatch

FACT = "SLURMSERVE_FACT"
_FAILED = re.compile(r"^slurmserve\[(\d+)@([^\]]+)\]: FAILED: (.*)$")
_STARTED = re.compile(r"^slurmserve\[(\d+)@[^\]]+\]: container \S+ started$")
SBCAST_MIN_NODES = 4  # below this, N parallel reads of the shared path cost less than a fan-out
STEP_STOP_GRACE_S = 20  # node.sh gives docker stop 10 s; srun needs a little more
GENERATE_TIMEOUT_S = 10.0
POLL_S = 0.25
FAILURE_SETTLE_S = 0.5  # gather failures of other nodes that follow the first
SERVE_STEP = "slurmserve-serve"


class Stopped(Exception):
    """The user asked to stop (Ctrl+C, SIGTERM, scancel)."""


def parse_facts(text: str) -> dict[int, dict[str, str]]:
    facts: dict[int, dict[str, str]] = {}
    for line in text.splitlines():
        parts = line.split("\t", 3)
        if len(parts) == 4 and parts[0] == FACT and parts[1].isdigit():
            facts.setdefault(int(parts[1]), {})[parts[2]] = parts[3]
    return facts


class Driver:
    def __init__(self, spec: ServeSpec, job: slurm.Job, console: Console | None = None,
                 follow_logs: bool = True, emit: Callable[[dict[str, Any]], None] | None = None
                 ) -> None:
        self.spec = spec
        self.job = job
        self.console = console or Console()
        self.follow_logs = follow_logs
        self.emit = emit or (lambda event: None)
        self.run_dir = os.path.join(os.path.abspath(spec.log_dir), job.job_id)
        self.nodes = job.nodes[: spec.nodes]
        self.stop = threading.Event()
        self.stop_reason = ""
        self.proc: subprocess.Popen[str] | None = None
        self.failed: list[tuple[int, str, str]] = []  # (rank, host, reason), in arrival order
        self.first_failure = 0.0
        self.plan: ClusterPlan | None = None
        self.bundle: launch.Launch | None = None
        self.status = "starting"
        self.started = time.monotonic()
        self.distribution: dict[str, Any] = {}
        self.phase = "start"  # named in stop messages: which phase a signal interrupted
        self.running: set[int] = set()  # ranks whose container started
        self.unchecked: list[str] = []  # nodes the last cleanup could not check

    # -- lifecycle -------------------------------------------------------------------------

    def run(self) -> int:
        if len(self.job.nodes) < self.spec.nodes:
            raise LaunchError(f"the spec needs {self.spec.nodes} nodes but job {self.job.job_id} "
                              f"has {len(self.job.nodes)}; allocate more with salloc -N")
        os.makedirs(self.run_dir, exist_ok=True)
        marker = os.path.join(self.run_dir, STOP_MARKER)
        if os.path.exists(marker):
            os.remove(marker)  # from an earlier attempt of this job (requeue)
        previous = {sig: signal.signal(sig, self._on_signal)
                    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        code = EXIT_FAILURE
        try:
            alloc, image = self.preflight()
            self.plan = engines.get(self.spec.engine).plan(self.spec, alloc)
            self.distribute(image)
            self.launch(image)
            self.wait_ready()
            self.serve()
            code = EXIT_OK if not self.failed else EXIT_FAILURE
        except Stopped:
            code = EXIT_OK
        except LaunchError as exc:
            self.status = "failed"
            self.console.error(str(exc))
            self._show_failed_log()
            code = EXIT_FAILURE
        finally:
            for sig in previous:
                signal.signal(sig, signal.SIG_IGN)
            self.teardown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return code

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if not self.stop.is_set():
            self.stop_reason = f"{signal.Signals(signum).name} during {self._phase_now()}"
            self.console.line(f"slurmserve: {self.stop_reason}, stopping")
        self.stop.set()

    def _phase_now(self) -> str:
        if self.phase == "waiting for ready" and self.plan is not None \
                and len(self.running) < len(self.plan.nodes):
            return f"launch ({len(self.running)} of {len(self.plan.nodes)} containers started)"
        return self.phase

    def _job_ended(self) -> bool:
        """The allocation is over (scancel, time limit): steps die and new ones are refused."""
        state = slurm.job_states([self.job.job_id]).get(self.job.job_id)
        if state in (slurm.JobState.RUNNING, None):
            return False
        if not self.stop.is_set():
            self.stop_reason = (f"job {self.job.job_id} was ended by SLURM ({state.value}: "
                                f"scancel, time limit or node failure) during {self._phase_now()}")
            self.stop.set()
        return True

    def _check(self) -> None:
        if not self.stop.is_set() and os.path.exists(os.path.join(self.run_dir, STOP_MARKER)):
            self.stop_reason = "slurmserve stop"
            self.stop.set()
        if self.stop.is_set():
            raise Stopped
        if self.failed:
            # One node failing often takes its peers down within moments: report them all.
            time.sleep(max(0.0, self.first_failure + FAILURE_SETTLE_S - time.monotonic()))
            raise LaunchError("; ".join(f"node {host} (rank {rank}): {reason}"
                                        for rank, host, reason in self.failed))
        if self.proc is not None and self.proc.poll() is not None:
            if self._job_ended():
                raise Stopped
            raise LaunchError(f"the serving step ended unexpectedly (srun exit {self.proc.poll()})")

    # -- steps -----------------------------------------------------------------------------

    def _step(self, name: str, script: str, on_line: Callable[[str], None] | None = None,
              timeout: float = 3600, nodes: int | None = None) -> tuple[int, str]:
        """Run a rendered script as one srun step on every node (or the first `nodes`);
        interruptible."""
        path = os.path.join(self.run_dir, f"{name}.sh")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(script)
        if self.stop.is_set():
            raise Stopped
        proc = runner.start(slurm.srun_argv(self.job, ["bash", path],
                                            nodes=nodes or len(self.nodes),
                                            label=f"slurmserve-{name}"))
        lines: list[str] = []

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line)
                if on_line:
                    on_line(line.rstrip("\n"))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            if self.stop.is_set() or time.monotonic() > deadline:
                _terminate(proc)
                reader.join(5)
                if self.stop.is_set():
                    raise Stopped
                raise LaunchError(f"{name} did not finish within {timeout:g}s")
            time.sleep(0.05)
        reader.join(5)
        if proc.returncode != 0 and (self.stop.is_set() or self._job_ended()):
            raise Stopped  # SLURM ended the step with the job: not a finding about the nodes
        return proc.returncode, "".join(lines)

    def check(self) -> tuple[preflight.Verdict, str]:
        """Run the preflight step on every node and judge it; starts nothing."""
        spec = self.spec
        head_ip = slurm.node_address(self.nodes[0])
        tarball = images.read_tarball(spec.image) if spec.image_is_tarball else None
        image = tarball.image_id if tarball else spec.image
        self.tarball = tarball
        provisional = Allocation(self.job.job_id, tuple(NodeInfo(n, head_ip) for n in self.nodes))
        draft = engines.get(spec.engine).plan(spec, provisional)
        ports = {p.rank: list(p.ports) for p in draft.nodes}
        fallback = provisional.ports.http_fallback
        if not _port_is_explicit(spec):
            ports[0].append(fallback)
        globs, _ = docker.device_globs(spec)
        script = render_template(
            "preflight.sh.j2", job_id=self.job.job_id, head_ip=head_ip,
            image_id=image, tarball=tarball.path if tarball else "",
            device_globs=list(globs), ports=ports, job_label=docker.LABEL_JOB,
            stage_dir=spec.stage_dir)
        self.phase = "preflight"
        self.console.phase("preflight", f"checking {len(self.nodes)} node(s): "
                           f"{', '.join(self.nodes)}")
        code, out = self._step("preflight", script, timeout=120)
        self.facts = parse_facts(out)
        note = f"srun exit {code}: " + (out.strip().splitlines()[-1:] or ["no output"])[0]
        verdict = preflight.evaluate(spec, list(self.nodes), self.facts, head_ip, tarball,
                                     draft.port, fallback, _port_is_explicit(spec), note)
        return verdict, image

    def preflight(self) -> tuple[Allocation, str]:
        verdict, image = self.check()
        if verdict.failures:
            raise LaunchError("preflight failed, nothing was started:\n  "
                              + "\n  ".join(f.line() for f in verdict.failures))
        if verdict.port:
            self.console.phase("preflight", f"port {self.plan_port()} is taken on "
                               f"{self.nodes[0]}; serving on this job's port {verdict.port}")
            self.spec = dataclasses.replace(self.spec, port=verdict.port)
        self._remove_leftovers(self.facts)
        summary = ", ".join(f"{i.name}={i.address}/{i.ifname}" for i in verdict.nodes)
        self.console.phase("preflight", f"ok: {summary}")
        spec = self.spec
        if spec.nodes > 1 and not spec.model_is_local and not spec.hf_cache:
            self.console.phase("preflight", f"warning: each of {spec.nodes} nodes downloads "
                               f"{spec.model} from the Hub itself (rate limits, HTTP 429): "
                               "--hf-cache DIR on a shared file system fetches it once")
        return Allocation(self.job.job_id, tuple(verdict.nodes)), image

    def plan_port(self) -> int:
        return engines.get(self.spec.engine).port(self.spec)

    def _remove_leftovers(self, facts: dict[int, dict[str, str]]) -> None:
        """Containers of ours from jobs that are over (field failure 12); others untouched."""
        jobs = {pair.rsplit("=", 1)[1] for f in facts.values()
                for pair in f.get("ours", "").split() if "=" in pair}
        jobs.discard(self.job.job_id)
        if not jobs:
            return
        states = slurm.job_states(sorted(jobs))
        finished = sorted(j for j, s in states.items() if s not in slurm.ACTIVE_STATES)
        if finished:
            removed = self.cleanup(finished)
            self.console.phase("preflight", f"removed {removed} leftover container(s) of "
                               f"finished job(s) {', '.join(finished)}")

    def distribute(self, image: str) -> None:
        self.phase = "image load"
        spec = self.spec
        missing = [r for r, f in self.facts.items() if f.get("image") != "present"]
        checks = self.plan.image_checks if self.plan else ()
        if not missing:
            self.console.phase("image", f"{image[:19]} already on every node: skipped")
            if not checks:
                return
        tarball = self.tarball
        source = tarball.path if tarball else image
        staged = False
        use_sbcast = spec.stage == "sbcast" or (
            spec.stage == "auto" and tarball is not None and len(missing) >= SBCAST_MIN_NODES)
        if tarball and use_sbcast and not self._stage_dir_is_node_local():
            self.console.phase("image", f"{spec.stage_dir} is shared between nodes, so sbcast "
                               "copies would collide: loading directly (--stage-dir sets a "
                               "node-local directory)")
            use_sbcast = False
        if tarball and use_sbcast:
            source = os.path.join(spec.stage_dir, f"slurmserve-{self.job.job_id}-image.tar"
                                  + (".gz" if tarball.compressed else ""))
            self.console.phase("image", f"sbcast {tarball.size / 1e9:.2f} GB to node-local {source}")
            runner.run(["sbcast", f"--jobid={self.job.job_id}", "--force", tarball.path, source],
                       timeout=3600, check=True)
            staged = True
        what = f"{tarball.size / 1e9:.2f} GB tarball" if tarball else "registry pull"
        if missing:
            self.console.phase("image", f"loading {image[:19]} on {len(missing)} of "
                               f"{len(self.nodes)} node(s) ({what}); others skip")
        script = render_template(
            "distribute.sh.j2", image_id=image, source=source, pull=tarball is None,
            compressed=bool(tarball and tarball.compressed), staged=staged, checks=checks,
            label=docker.job_label(self.job.job_id), load=True)
        results: dict[int, str] = {}

        def on_line(line: str) -> None:
            parts = line.split("\t", 3)
            if len(parts) != 4 or parts[0] != FACT:
                return
            rank, key, value = int(parts[1]), parts[2], parts[3]
            if key == "image":
                results[rank] = value
                unit = "s" if value.startswith("loaded") else ""
                if value != "skipped":
                    self.console.phase("image", f"{self.nodes[rank]}: {value}{unit}")

        code, out = self._step("distribute", script, on_line=on_line)
        errors = [f"node {self.nodes[r]}: {v}" for r, v in results.items() if v.startswith("error")]
        if code != 0 or errors:
            raise LaunchError("image distribution failed, nothing was started:\n  " + "\n  ".join(
                errors or [f"srun exit {code}"]) + _load_hint(" ".join(errors), tarball))
        if checks:
            findings = preflight.image_tools(list(self.nodes), checks, _check_facts(out))
            failures = [f.line() for f in findings if f.status == "fail"]
            if failures:
                raise LaunchError("image check failed, nothing was started:\n  "
                                  + "\n  ".join(failures))
            self.console.phase("image", f"checked on {len(self.nodes)} node(s): "
                               + findings[0].detail)
        if tarball and missing:
            # Each loading node reads the whole tarball; sbcast reads it once and fans out.
            # (benchmarks/cluster.py measures the real reads from /proc.)
            shared = tarball.size * (1 if staged else len(missing))
            self.distribution = {"stage": "sbcast" if staged else "direct",
                                 "nodes_loaded": len(missing), "shared_path_bytes": shared}
            self.console.phase("image", f"read {shared / 1e9:.2f} GB from {tarball.path}"
                               + (" once (sbcast fan-out)" if staged else ""))

    def check_tools(self, alloc: Allocation, image: str) -> list[preflight.Finding]:
        """`doctor`: the in-image checks on nodes that hold the image; loads nothing."""
        checks = engines.get(self.spec.engine).plan(self.spec, alloc).image_checks
        if not checks:
            return []
        script = render_template(
            "distribute.sh.j2", image_id=image, source="", pull=False, compressed=False,
            staged=False, checks=checks, label=docker.job_label(self.job.job_id),
            load=False)
        _, out = self._step("image-check", script, timeout=300)
        return preflight.image_tools(list(self.nodes), checks, _check_facts(out))

    def _stage_dir_is_node_local(self) -> bool:
        script = render_template("stage_check.sh.j2", stage_dir=self.spec.stage_dir,
                                 job_id=self.job.job_id)
        _, out = self._step("stage-check", script, timeout=60)
        counts = [f.get("markers", "") for f in parse_facts(out).values()]
        return len(counts) == len(self.nodes) and all(c == "1" for c in counts)

    def launch(self, image: str) -> None:
        assert self.plan is not None, "plan before launch"
        spec, plan = self.spec, self.plan
        self.image = image
        self.bundle = bundle = launch.build(spec, plan, self.run_dir, image)
        launch.write(bundle)  # env files and secrets 0600; removed at teardown
        if spec.hf_cache and not spec.model_is_local:
            self.prefetch(bundle.nodes[0].env_file, image)
        roles = ", ".join(f"{n.host}:{n.role}" for n in plan.nodes)
        self.console.phase("launch", f"{plan.engine} ({plan.mode}) world={plan.world_size} "
                           f"on {roles}")
        self._write_state()
        self.phase = "launch"
        if self.stop.is_set():
            raise Stopped  # no container may start after a stop was asked for
        argv = slurm.srun_argv(self.job, ["bash", bundle.script_path], nodes=len(plan.nodes),
                               label=SERVE_STEP)
        self.proc = runner.start(argv)
        threading.Thread(target=self._read_step, daemon=True).start()
        for node in bundle.nodes:  # printed only when following; always watched
            watch = LogWatch(node.host, self._rdma_expected(node.rank))
            threading.Thread(target=self._follow, args=(node.log, node.host, watch),
                             daemon=True).start()

    def prefetch(self, env_file: str, image: str) -> None:
        """Download a hub model once, on the head, into the shared --hf-cache."""
        spec = self.spec
        assert spec.hf_cache
        self.phase = "model download"
        self.console.phase("model", f"fetching {spec.model} once into {spec.hf_cache} on "
                           f"{self.nodes[0]}; every node then reads it offline")
        script = render_template(
            "prefetch.sh.j2", job_id=self.job.job_id, cache=spec.hf_cache, image=image,
            container=docker.container_name(self.job.job_id, "prefetch"), env_file=env_file,
            label=docker.job_label(self.job.job_id), hf_dir=docker.HF_DIR, model=spec.model)
        code, out = self._step("prefetch", script, nodes=1)
        if code != 0:
            said = [line for line in out.splitlines() if line.startswith("slurmserve: ")]
            last = said[-1].removeprefix("slurmserve: ") if said else \
                (out.strip().splitlines() or ["no output"])[-1]
            raise LaunchError(f"node {self.nodes[0]}: downloading {spec.model} into "
                              f"{spec.hf_cache} failed ({last}); check HF_TOKEN in --env-file "
                              "and the Hub's reachability from that node, or download it "
                              "yourself and pass the local path as MODEL")
        self.console.phase("model", f"{spec.model} is in {spec.hf_cache}")

    def _read_step(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            started = _STARTED.match(line)
            if started:  # counted before it is shown: a stop message names the right phase
                self.running.add(int(started[1]))
            self.console.line(line)
            match = _FAILED.match(line)
            if match and not self.stop.is_set():
                if not self.failed:
                    self.first_failure = time.monotonic()
                self.failed.append((int(match[1]), match[2], match[3]))

    def _rdma_expected(self, rank: int) -> bool:
        _, required = docker.device_globs(self.spec)
        return required or "uverbs" in self.facts.get(rank, {}).get("devices", "")

    def _follow(self, path: str, host: str, watch: LogWatch) -> None:
        position = 0
        while not self.stop.is_set() and self.status != "stopped":
            try:
                with open(path, encoding="utf-8", errors="replace") as fh:
                    fh.seek(position)
                    for line in fh:
                        if self.follow_logs:
                            self.console.line(f"[{host}] {line.rstrip()}")
                        for note in watch.feed(line):
                            self.console.phase("logs", note)
                    position = fh.tell()
            except FileNotFoundError:
                pass
            time.sleep(0.2)

    def wait_ready(self) -> None:
        assert self.plan is not None
        self.phase = "waiting for ready"
        plan = self.plan
        prober = Prober(plan.endpoint, plan.readiness,
                        api_key=self.bundle.api_key if self.bundle else None)
        deadline = time.monotonic() + self.spec.health_timeout
        last = "no answer yet"
        self.console.phase("ready?", f"polling {plan.endpoint}{plan.readiness.health_path}")
        while True:
            self._check()
            if time.monotonic() > deadline:
                raise LaunchError(f"not ready after {self.spec.health_timeout:g}s: {last}")
            check = prober.health(timeout=1.0)
            if check.ok:
                models, ids = prober.models()
                if models.ok and plan.model_name not in ids and not plan.readiness.exact_model_name:
                    plan = self.plan = dataclasses.replace(plan, model_name=ids[0])
                if models.ok and plan.model_name not in ids:
                    # Not ours: e.g. another job's server on this port.
                    last = (f"{plan.endpoint} serves {', '.join(ids)}, not {plan.model_name}: "
                            "is another server on this port?")
                elif models.ok:
                    generated = prober.generate(plan.model_name, timeout=GENERATE_TIMEOUT_S)
                    if generated.ok:
                        self.model = plan.model_name
                        break
                    last = (f"{plan.readiness.health_path} answers and the model is listed, but "
                            f"a 1-token completion failed: {generated.detail}")
                else:
                    last = f"/health answers but {models.detail}"
            else:
                last = f"{plan.readiness.health_path}: {check.detail}"
            self.console.status(f"waiting for ready: {last}")
            self.stop.wait(POLL_S)
        self.status = "ready"
        path = self._write_state()
        elapsed = time.monotonic() - self.started
        endpoint = plan.endpoint
        body = json.dumps({"model": self.model, "messages": [{"role": "user", "content": "Hello"}],
                           "max_tokens": 32})
        print(f"READY {endpoint} model={self.model} nodes={len(plan.nodes)} "
              f"engine={plan.engine} in {elapsed:.1f}s", flush=True)
        auth = (f' -H "Authorization: Bearer {apikey.shell_ref(self.spec.api_key)}"'
                if self.spec.api_key else "")
        print(f"  curl {endpoint}/v1/chat/completions -H 'Content-Type: application/json'{auth} "
              f"-d {shlex.quote(body)}", flush=True)
        print(f"  OPENAI_BASE_URL={endpoint}/v1", flush=True)
        print(f"  state: {path}", flush=True)
        self.emit({"event": "ready", **self._state()})

    def serve(self) -> None:
        self.phase = "serving"
        self.console.phase("serving", "Ctrl+C or scancel to stop; logs in " + self.run_dir)
        while True:
            self._check()
            self.stop.wait(POLL_S)

    # -- teardown --------------------------------------------------------------------------

    def teardown(self) -> None:
        t0 = time.monotonic()
        if self.status not in ("failed",):
            self.status = "stopping"
        if self.proc is not None and self.proc.poll() is None:
            self.console.phase("teardown", "stopping containers on every node")
            self._stop_serving_step()
        removed = 0
        ended = self.phase != "start" and self._job_ended()
        if self.phase != "start" and not ended:
            removed = self.cleanup([self.job.job_id])
        if self.bundle is not None:
            _remove_secrets(self.bundle)
        self.status = "failed" if self.status == "failed" or self.failed else "stopped"
        if self.plan is not None:
            self._write_state(removed=removed)
        reason = f" ({self.stop_reason})" if self.stop_reason else ""
        checked = [n for n in self.nodes if not any(u.startswith(f"{n}: ") for u in self.unchecked)]
        if ended:  # new steps are refused now, so no cleanup step could check
            result = "SLURM ended the job's steps; " + (
                "no container had been started" if self.proc is None else
                "each node's task stops its container on SLURM's SIGTERM (a node cut off: once "
                "it is back; the next run removes leftovers by label)")
        elif not self.unchecked:
            result = f"no container of job {self.job.job_id} left"
        else:
            result = (f"no container of job {self.job.job_id} left on "
                      f"{', '.join(checked) or 'no node'}; could not check "
                      f"{'; '.join(self.unchecked)}; the next run removes leftovers by label")
        self.console.phase("teardown", f"done in {time.monotonic() - t0:.1f}s{reason}: {result}"
                           + (f" (cleanup removed {removed})" if removed else "")
                           + f"; logs kept in {self.run_dir}")
        self.emit({"event": "stopped", **self._state()})

    def _stop_serving_step(self) -> None:
        """SIGTERM to the step's tasks (each stops its container gracefully), then force."""
        assert self.proc is not None
        step = slurm.find_step(self.job.job_id, SERVE_STEP)
        if step and slurm.signal_step(step, "TERM"):
            try:
                self.proc.wait(STEP_STOP_GRACE_S)
                return
            except subprocess.TimeoutExpired:
                self.console.phase("teardown", f"step {step} still running; forcing it")
        _terminate(self.proc)

    def cleanup(self, job_ids: list[str]) -> int:
        """Remove containers labelled with these jobs on every node: the last word."""
        script = render_template("cleanup.sh.j2", job_ids=job_ids, label_key=docker.LABEL_JOB,
                                 stage_dir=self.spec.stage_dir)
        path = os.path.join(self.run_dir, "cleanup.sh")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(script)
        try:
            result = runner.run(slurm.srun_argv(self.job, ["bash", path], nodes=len(self.nodes),
                                                label="slurmserve-cleanup"), timeout=120)
            facts = parse_facts(result.out)
        except LaunchError as exc:
            self.console.error(f"cleanup step failed: {exc}")
            facts = {}
        self.unchecked = []
        for rank, host in enumerate(self.nodes):
            fact = facts.get(rank, {})
            if "removed" not in fact:
                self.unchecked.append(
                    f"{host}: its cleanup task did not answer (unreachable?); once the node is "
                    "back, SLURM ends the step there and its task stops the container")
            elif fact.get("docker", "").startswith("error"):
                self.unchecked.append(
                    f"{host}: docker does not answer ({fact['docker'].removeprefix('error: ')}); "
                    "a stopping dockerd stops its containers")
        return sum(int(f.get("removed", "0")) for f in facts.values())

    def _show_failed_log(self) -> None:
        """The last 50 lines of each failed node's log (the first to fail comes first)."""
        if self.bundle is None:
            return
        for rank, _host, _reason in self.failed[:2]:
            node = self.bundle.nodes[rank]
            try:
                with open(node.log, encoding="utf-8", errors="replace") as fh:
                    tail = deque(fh, maxlen=50)
            except OSError:
                continue
            self.console.line(f"--- last {len(tail)} lines of {node.log} ---")
            for line in tail:
                self.console.line(line.rstrip())

    def _state(self, removed: int | None = None) -> dict[str, Any]:
        plan = self.plan
        bundle = self.bundle
        data: dict[str, Any] = {
            "job": self.job.job_id, "status": self.status, "engine": self.spec.engine,
            "model": getattr(self, "model", plan.model_name if plan else self.spec.model_name),
            "run_dir": self.run_dir, "driver_pid": os.getpid(), "driver_host": socket.gethostname(),
            "api_key": self.spec.api_key,  # where the key comes from (env:VAR, file:PATH), never it
        }
        if plan is not None and bundle is not None:
            data.update(
                image=self.image, endpoint=plan.endpoint, head=plan.head_address,
                port=plan.port, mode=plan.mode,
                nodes=[{"rank": n.rank, "host": n.host, "address": p.address,
                        "ifname": p.ifname, "role": p.role, "container": n.container,
                        "log": n.log}
                       for n, p in zip(bundle.nodes, plan.nodes, strict=True)])
        if removed is not None:
            data["cleanup_removed"] = removed
            if self.unchecked:
                data["cleanup_unchecked"] = self.unchecked
        if self.distribution:
            data["distribution"] = self.distribution
        return data

    def _write_state(self, removed: int | None = None) -> str:
        return state.write(self.run_dir, self._state(removed))


def _check_facts(out: str) -> dict[int, list[str]]:
    """The in-image check results per rank (several `check` facts each, unlike parse_facts)."""
    found: dict[int, list[str]] = {}
    for line in out.splitlines():
        parts = line.split("\t", 3)
        if len(parts) == 4 and parts[0] == FACT and parts[2] == "check":
            found.setdefault(int(parts[1]), []).append(parts[3])
    return found


def _load_hint(errors: str, tarball: images.TarballImage | None) -> str:
    """What to do about a failed load; the error text only picks the advice."""
    if "no space left on device" in errors:
        return ("\n  the node's docker data root is full: free space there (docker system df, "
                "docker image prune), then re-run")
    if tarball and "error: docker load failed" in errors:
        return (f"\n  {tarball.path} looks corrupt or truncated: check it with `tar tf`, "
                "re-create it with `docker save IMAGE -o FILE.tar`")
    return ""


def _port_is_explicit(spec: ServeSpec) -> bool:
    """The user chose the HTTP port (as a flag, or the engine's own --port after `--`)."""
    return spec.port is not None or any(
        a == "--port" or a.startswith("--port=") for a in spec.engine_args)


def _terminate(proc: subprocess.Popen[str], grace: float = 5.0) -> None:
    """SIGTERM srun (it forwards the signal to every task), then SIGKILL after `grace`."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _remove_secrets(bundle: launch.Launch) -> None:
    """Env files and per-job keys may hold secrets: gone at teardown (logs stay)."""
    for node in bundle.nodes:
        for path in (node.env_file, node.redact_file or ""):
            if os.path.exists(path):
                os.remove(path)
        if node.files_dir:
            secrets = os.path.join(node.files_dir, "secrets")
            if os.path.isdir(secrets):
                for name in os.listdir(secrets):
                    os.remove(os.path.join(secrets, name))
                os.rmdir(secrets)
