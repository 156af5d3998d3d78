"""Container runtimes behind one seam: how each node's container is run, found and stopped.

Two families:
- daemon runtimes (docker, podman): the container is not a child of the SLURM step, so it is
  named and labelled with the job ID and stopped and removed by that label;
- step-native runtimes (pyxis/enroot, apptainer): the engine is a process of the SLURM step
  inside the container, so SLURM's signals and cgroups end it; cleanup still finds any process
  left behind by the job mark in its environment (SLURMSERVE_JOB).

Each runtime is a module with the names of `Runtime` (Python: the decisions, as data) and one
template, templates/runtimes/NAME.sh.j2, defining the same shell functions (`rt_*`) that the
node, preflight, image, check and cleanup templates call. `choose` is how `--runtime auto`
picks one per site, with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..errors import SpecError

if TYPE_CHECKING:
    from ..plan import ClusterPlan, NodePlan
    from ..spec import Mount, ServeSpec

RUNTIMES = ("docker", "podman", "pyxis", "apptainer")
CHOICES = ("auto", *RUNTIMES)
# `auto`, in order: what the site's SLURM offers first, then what the nodes have.
AUTO_ORDER = ("pyxis", "apptainer", "docker", "podman")


class Runtime(Protocol):
    NAME: str
    FAMILY: str  # "daemon" | "step"
    MPI_LAUNCH: str  # how a multi-node MPI world forms: "ssh" (mpirun) | "pmix" (srun --mpi)
    EXPERIMENTAL: bool
    NATIVE_SUFFIXES: tuple[str, ...]  # image files it runs as they are (.sqsh, .sif)
    CONVERTS: bool  # a `docker save` tarball is converted once into a native file
    TOOLS: str  # what a node needs, for error messages
    FIX: str  # what to do where it does not answer
    SRUN_OPTION: str | None  # the srun option its SLURM plugin adds (pyxis: --container-image)

    def native_name(self, image_id: str) -> str:
        """The cached native file a tarball with this image ID converts to."""

    def reference(self, ref: str) -> str:
        """A registry reference (registry/name:tag) as this runtime names it."""

    def run_argv(self, spec: ServeSpec, plan: ClusterPlan, node: NodePlan, image: str,
                 env_file: str, files_dir: str | None) -> tuple[list[str], list[str]]:
        """The node's run line: options, then the image/command tail (node.sh puts the
        devices and GPUs it finds at launch between the two)."""

    def step_options(self, image: str, job_id: str, mounts: Sequence[Mount]) -> list[str]:
        """srun options for a step whose script runs inside the image (pyxis: the container
        flags); [] where the script starts containers itself."""


def _registry() -> Mapping[str, Runtime]:
    from . import apptainer, docker, podman, pyxis

    modules: tuple[Runtime, ...] = (docker, podman, pyxis, apptainer)
    return {m.NAME: m for m in modules}


_RUNTIMES: dict[str, Runtime] = {}


def get(name: str) -> Runtime:
    if not _RUNTIMES:
        _RUNTIMES.update(_registry())
    if name not in _RUNTIMES:
        raise SpecError("runtime", f"unknown runtime '{name}'",
                        "choose one of: " + ", ".join(CHOICES))
    return _RUNTIMES[name]


def for_image(image: str) -> tuple[str, ...]:
    """The runtimes that can run this image source (a native file fits only its own)."""
    owners = tuple(n for n in RUNTIMES if image.endswith(get(n).NATIVE_SUFFIXES))
    return owners or RUNTIMES


def mpi_launch(name: str) -> str:
    """How an MPI world spans nodes under runtime `name`; "ssh" while none is chosen yet
    ("" or "auto": a preview, before the site decides)."""
    return get(name).MPI_LAUNCH if name and name != "auto" else "ssh"


def candidates(spec: ServeSpec) -> tuple[str, ...]:
    """The runtimes preflight probes: the chosen one, or for auto every one fit for the image."""
    if spec.runtime != "auto":
        return (spec.runtime,)
    return tuple(n for n in AUTO_ORDER if n in for_image(spec.image))


@dataclass(frozen=True)
class Choice:
    name: str
    reason: str
    versions: dict[int, str]  # rank -> the runtime's version there


def choose(spec: ServeSpec, found: Mapping[int, Mapping[str, str]], srun_plugin: bool,
           ranks: int) -> Choice | None:
    """Pick the runtime: the one asked for, or the first of AUTO_ORDER that works on every
    node. `found` is rank -> runtime -> the probe's fact ("ok VERSION", "absent", "error: ...");
    `srun_plugin`: srun offers the option of a runtime that is a SLURM plugin (pyxis).
    None when nothing fits (preflight says why per node)."""
    def usable(name: str) -> bool:
        if get(name).SRUN_OPTION and not srun_plugin:
            return False
        return all(found.get(r, {}).get(name, "").startswith("ok") for r in range(ranks))

    def versions(name: str) -> dict[int, str]:
        return {r: found[r][name].removeprefix("ok").strip() for r in range(ranks)}

    if spec.runtime != "auto":
        return Choice(spec.runtime, "--runtime " + spec.runtime, versions(spec.runtime)) \
            if usable(spec.runtime) else None
    skipped: list[str] = []
    for name in candidates(spec):
        if usable(name):
            why = "auto: " + "; ".join([*skipped, f"{name} works on every node"])
            return Choice(name, why, versions(name))
        skipped.append(_why_not(name, found, srun_plugin, ranks))
    return None


def closest(spec: ServeSpec, found: Mapping[int, Mapping[str, str]], srun_plugin: bool,
            ranks: int) -> str | None:
    """When nothing works everywhere: the candidate that works on the most nodes (None when
    none works on any), so preflight can name the nodes where it does not."""
    scores = {n: sum(found.get(r, {}).get(n, "").startswith("ok") for r in range(ranks))
              for n in candidates(spec) if srun_plugin or not get(n).SRUN_OPTION}
    best = max(scores, key=lambda n: scores[n], default=None)
    return best if best and scores[best] else None


def none_works(names: Sequence[str], fact: Mapping[str, str], srun_plugin: bool) -> str:
    """What one node said of each candidate, when none works on every node."""
    said = [f"{n}: srun has no {get(n).SRUN_OPTION}" if get(n).SRUN_OPTION and not srun_plugin
            else f"{n}: {fact.get(f'runtime.{n}') or 'absent'}" for n in names]
    return ", ".join(said) or "none probed"


def srun_options(names: Sequence[str]) -> list[str]:
    """The srun options the candidates' SLURM plugins add (to look for in `srun --help`)."""
    return [o for n in names if (o := get(n).SRUN_OPTION)]


def _why_not(name: str, found: Mapping[int, Mapping[str, str]], srun_plugin: bool,
             ranks: int) -> str:
    option = get(name).SRUN_OPTION
    if option and not srun_plugin:
        return f"srun has no {option} (no {name})"
    bad = sorted({found.get(r, {}).get(name, "absent") for r in range(ranks)} - {""})
    bad = [b for b in bad if not b.startswith("ok")]
    return f"no {name} ({bad[0] if bad else 'absent'})"


# What a runtime's containers cannot do, and why (a plan's `needs` are checked against it).
UNABLE: dict[str, dict[str, str]] = {
    "pyxis": {"sshd": "an sshd inside an enroot container fails OpenSSH's privilege separation "
                      "in enroot's user namespace, so an MPI world over ssh cannot form across "
                      "nodes (slurmserve plans TRT-LLM there as srun --mpi=pmix instead); run "
                      "this plan with --runtime docker"},
}


def refusal(needs: Sequence[str], name: str) -> str | None:
    """Why runtime `name` cannot run a plan that needs `needs` (None when it can)."""
    unable = UNABLE.get(name, {})
    reasons = [unable[n] for n in needs if n in unable]
    return f"--runtime {name}: " + "; ".join(reasons) if reasons else None


def shell_context(name: str, job_id: str) -> dict[str, object]:
    """What every template that includes templates/runtimes/NAME.sh.j2 passes it."""
    from ._common import FILES_DIR, LABEL_JOB, MARK_VAR, NODE_VAR, job_label

    return {"runtime": name, "job_id": job_id, "label_key": LABEL_JOB,
            "job_label": job_label(job_id), "mark_var": MARK_VAR, "node_var": NODE_VAR,
            "files_dir": FILES_DIR}


@dataclass(frozen=True)
class ImagePlan:
    """What the runtime runs, and whether a tarball must become it first (`convert_from`)."""

    image: str  # image ID, reference, or native file path
    convert_from: str | None = None  # the tarball to convert into `image` once


def image_plan(name: str, image: str, image_id: str | None, cache_dir: str) -> ImagePlan:
    """The image as runtime `name` runs it: `image` is the spec's source, `image_id` a
    tarball's ID (None for references and native files)."""
    import os

    runtime = get(name)
    if image_id is None:
        if image.endswith(runtime.NATIVE_SUFFIXES) or image.startswith("/"):
            return ImagePlan(image)
        return ImagePlan(runtime.reference(image))
    if not runtime.CONVERTS:
        return ImagePlan(image_id)
    return ImagePlan(os.path.join(cache_dir, runtime.native_name(image_id)), convert_from=image)


def serve_mounts(spec: ServeSpec, run_dir: str) -> list[Mount]:
    """What the serving step's container sees when the step runs in the image (pyxis): the run
    directory at its own path (scripts, logs, env files, each node's files), the user's
    mounts, the HF cache."""
    from ..spec import Mount
    from ._common import HF_DIR

    mounts = [Mount(run_dir, run_dir), *spec.mounts]
    if spec.hf_cache:
        mounts.append(Mount(spec.hf_cache, HF_DIR))
    return mounts
