"""The serving spec: one validated, frozen description of what to serve and where.

A spec comes from keywords (the CLI, a notebook) and optionally a YAML file; keywords win.
Every check raises SpecError naming the field and the fix, before anything starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import engines, envfile
from .errors import SpecError
from .router import DEFAULT_ROUTE, ROUTE_CHOICES
from .runtimes import CHOICES as RUNTIME_CHOICES

FABRICS = ("auto", "efa", "ib", "tcp")
STAGES = ("auto", "direct", "sbcast")
RESTARTS = ("on-failure", "never")
TARBALL_SUFFIXES = (".tar", ".tar.gz", ".tgz")
NATIVE_IMAGE_SUFFIXES = (".sqsh", ".sif")  # enroot squashfs (pyxis), Apptainer image

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# Variable names that hold secrets: their values belong in --env-file, never in the spec (which
# rendered scripts embed) or on a command line. The word ends the name: HF_TOKEN is a secret,
# HF_TOKEN_PATH, TOKENIZERS_PARALLELISM and *_TOKEN_LATENCY are not.
_SECRET_NAME = re.compile(r"(^|_)(TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|ACCESS_KEY|SECRET_KEY|"
                          r"PRIVATE_KEY|CREDENTIALS?)$", re.IGNORECASE)
_SLURM_WORD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._,-]*$")
_SLURM_TIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$|^(UNLIMITED|unlimited|INFINITE|infinite)$")
_IMAGE_REF = re.compile(
    r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*"
    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[0-9a-f]{64})?$"
)
# sbatch options slurmserve owns; users set them through the spec's own fields.
_PROTECTED_SBATCH = {
    "--nodes": "--nodes", "-N": "--nodes", "--ntasks": "(none: one task per node)",
    "--ntasks-per-node": "(none: one task per node)", "--job-name": "--job-name",
    "-J": "--job-name", "--partition": "--partition", "-p": "--partition",
    "--account": "--account", "-A": "--account", "--time": "--time", "-t": "--time",
    "--qos": "--qos", "--gpus-per-node": "--gpus-per-node", "--exclusive": "--exclusive",
    "--output": "--log-dir", "-o": "--log-dir", "--error": "--log-dir", "-e": "--log-dir",
}


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool = False

    def __str__(self) -> str:
        return f"{self.source}:{self.target}" + (":ro" if self.read_only else "")


@dataclass(frozen=True)
class SlurmOptions:
    """Options that end up in the sbatch header."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str | None = None
    exclusive: bool = False
    sbatch_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class ServeSpec:
    """What to serve, with which engine, on how many nodes."""

    engine: str
    model: str
    image: str
    served_model_name: str | None = None
    nodes: int = 1
    gpus_per_node: int = 8
    tp: int | None = None
    pp: int | None = None
    dp: int | None = None
    ep: int | None = None
    launch_mode: str = "auto"
    host: str = "0.0.0.0"
    port: int | None = None
    mounts: tuple[Mount, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    env_file: str | None = None
    api_key: str | None = None  # where the endpoint's key comes from: env:VAR or file:PATH
    fabric: str = "auto"
    gpus: str = "all"
    health_timeout: float = 1800.0
    log_dir: str = "slurmserve-logs"
    job_name: str = "slurmserve"
    stage: str = "auto"
    stage_dir: str = "/tmp"  # node-local directory for `--stage sbcast` copies
    hf_cache: str | None = None  # shared HF cache: the head fetches a hub model once, then offline
    check_args: bool = True  # every rank's argv through the engine's own parser before launch
    runtime: str = "auto"  # container runtime (runtimes/): auto|docker|podman|pyxis|apptainer
    image_cache: str | None = None  # shared directory for converted images (.sqsh, .sif)
    replicas: int = 1  # copies of the layout, each on nodes/replicas nodes, behind one router
    ready_replicas: int = 1  # READY once this many replicas are in the router
    route: str = "prefix"  # the router's policy (router.ROUTES)
    restart: str = "on-failure"  # the watchdog's answer to a failed replica: on-failure|never
    max_restarts: int = 3  # per replica, with a doubling backoff
    name: str | None = None  # the deployment's name: `url NAME`, `status/logs/stop NAME`
    idle_timeout: float | None = None  # seconds without a request served: the run ends itself
    serve_for: float | None = None  # submit: serve this long across chained jobs (chain.py)
    handover: float | None = None  # lead before a job's --time ends: its successor is submitted
    drain_grace: float = 30.0  # a handed-over job's in-flight requests get this long to finish
    router_partition: str | None = None  # the chain's router job (CPU only): default --partition
    router_time: str | None = None  # its --time: default the chain's --time
    engine_args: tuple[str, ...] = ()
    slurm: SlurmOptions = field(default_factory=SlurmOptions)

    @property
    def replica_spec(self) -> ServeSpec:
        """The layout of one replica: what the engine plans, on nodes/replicas nodes."""
        if self.replicas == 1:
            return self
        return dataclasses.replace(self, nodes=self.nodes // self.replicas, replicas=1,
                                   ready_replicas=1)

    @property
    def env_dict(self) -> dict[str, str]:
        return dict(self.env)

    @property
    def image_is_tarball(self) -> bool:
        return self.image.endswith(TARBALL_SUFFIXES)

    @property
    def model_name(self) -> str:
        """The name clients use in requests."""
        return self.served_model_name or self.model

    @property
    def model_is_local(self) -> bool:
        """A path in the container, not a Hugging Face Hub ID."""
        return self.model.startswith(("/", "./", "../"))

    def to_dict(self) -> dict[str, Any]:
        """Plain data in the YAML layout that `load_spec` reads back."""
        data = dataclasses.asdict(self)
        data["mounts"] = [str(m) for m in self.mounts]
        data["env"] = dict(self.env)
        data["engine_args"] = list(self.engine_args)
        data["slurm"]["sbatch_args"] = list(self.slurm.sbatch_args)
        return data


SPEC_KEYS = tuple(f.name for f in dataclasses.fields(ServeSpec))
SLURM_KEYS = tuple(f.name for f in dataclasses.fields(SlurmOptions))


def load_spec(config: str | os.PathLike[str] | None = None, *,
              defaults: Mapping[str, Any] | None = None, **overrides: Any) -> ServeSpec:
    """Build a validated spec from an optional YAML file plus keyword overrides.

    Precedence: `defaults` (e.g. what the allocation implies) < YAML file < overrides.
    Overrides that are None are ignored, so CLI flags left unset keep the file's values.
    Slurm options may be given flat (partition=...) or as slurm={...}.
    """
    data = spec_data(config, defaults=defaults, **overrides)
    data["slurm"] = _slurm_options(data["slurm"])
    for required in ("engine", "model", "image"):
        if not data.get(required):
            raise SpecError(required, "is required", _REQUIRED_FIX[required])
    return _validate(data)


def spec_data(config: str | os.PathLike[str] | None = None, *,
              defaults: Mapping[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """The merged fields of `load_spec`, before validation: plain data, no file checks.

    Remote mode sends this to the login host, whose `load_spec` validates it against the
    cluster's files. `config` "-" reads the YAML (or JSON) from stdin.
    """
    data: dict[str, Any] = {**(defaults or {}), **(_read_yaml(config) if config else {})}
    slurm_data = data.pop("slurm", None) or {}
    if not isinstance(slurm_data, Mapping):
        raise SpecError("slurm", "expected a mapping of SLURM options",
                        "write slurm: {partition: gpu, time: \"04:00:00\"}")
    slurm = dict(slurm_data)
    for key, value in overrides.items():
        if value is None:
            continue
        if key in SLURM_KEYS:
            slurm[key] = value
        elif key == "slurm":
            slurm.update({k: v for k, v in dict(value).items() if v is not None})
        else:
            data[key] = value
    _reject_unknown(data, SPEC_KEYS, "")
    _reject_unknown(slurm, SLURM_KEYS, "slurm.")
    data["slurm"] = slurm
    return data


_REQUIRED_FIX = {
    "engine": "give one of: " + ", ".join(engines.ENGINES),
    "model": "give a Hugging Face id or a model path",
    "image": "pass --image with a `docker save` tarball (.tar/.tar.gz) or a registry reference",
}


def _read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    import yaml  # imported here: only --config needs it

    try:
        if str(path) == "-":
            data = yaml.safe_load(sys.stdin)
        else:
            with open(path, encoding="utf-8") as fh:
                data = yaml.safe_load(fh)
    except FileNotFoundError:
        raise SpecError("--config", f"file not found: {path}", "check the path") from None
    except OSError as exc:
        raise SpecError("--config", f"cannot read {path}: {exc.strerror}", "check the path") from None
    except UnicodeDecodeError:
        raise SpecError("--config", f"{path} is not UTF-8 text", "save it as UTF-8") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SpecError("--config", f"malformed YAML{where} in {path}", "fix the syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SpecError("--config", f"{path} must hold a mapping of spec keys", "see examples/")
    return data


def _reject_unknown(data: Mapping[str, Any], known: Sequence[str], prefix: str) -> None:
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key).replace("-", "_"), known, n=1)
            fix = f"did you mean '{prefix}{close[0]}'?" if close else "valid keys: " + ", ".join(
                known
            )
            raise SpecError(f"{prefix}{key}", "unknown key", fix)


def _validate(d: dict[str, Any]) -> ServeSpec:
    engine = _choice("engine", d["engine"], engines.ENGINES)
    spec = ServeSpec(
        engine=engine,
        model=_text("model", d["model"]),
        image=_image(d["image"]),
        served_model_name=_opt(_text, "served_model_name", d.get("served_model_name")),
        nodes=_positive("nodes", d.get("nodes", 1), "--nodes"),
        gpus_per_node=_positive("gpus_per_node", d.get("gpus_per_node", 8), "--gpus-per-node"),
        tp=_opt(_positive, "tp", d.get("tp"), "--tp"),
        pp=_opt(_positive, "pp", d.get("pp"), "--pp"),
        dp=_opt(_positive, "dp", d.get("dp"), "--dp"),
        ep=_opt(_positive, "ep", d.get("ep"), "--ep"),
        launch_mode=_name("launch_mode", d.get("launch_mode", "auto")),
        host=_text("host", d.get("host", "0.0.0.0")),
        port=_opt(_port, "port", d.get("port")),
        mounts=tuple(_mount(m) for m in _list("mounts", d.get("mounts", ()))),
        env=_env(d.get("env", ())),
        env_file=_opt(_env_file, "env_file", d.get("env_file")),
        api_key=_opt(_api_key, "api_key", d.get("api_key")),
        fabric=_choice("fabric", d.get("fabric", "auto"), FABRICS),
        gpus=_gpus(d.get("gpus", "all")),
        health_timeout=_positive_float("health_timeout", d.get("health_timeout", 1800.0)),
        log_dir=_log_dir(d.get("log_dir", "slurmserve-logs")),
        job_name=_name("job_name", d.get("job_name", "slurmserve")),
        stage=_choice("stage", d.get("stage", "auto"), STAGES),
        stage_dir=_abs_path("stage_dir", d.get("stage_dir", "/tmp")),
        hf_cache=_opt(_hf_cache, "hf_cache", d.get("hf_cache")),
        check_args=_bool("check_args", d.get("check_args", True)),
        runtime=_choice("runtime", d.get("runtime", "auto"), RUNTIME_CHOICES),
        image_cache=_opt(_image_cache, "image_cache", d.get("image_cache")),
        replicas=_positive("replicas", d.get("replicas", 1), "--replicas"),
        ready_replicas=_positive("ready_replicas", d.get("ready_replicas", 1), "--ready-replicas"),
        route=_choice("route", d.get("route", DEFAULT_ROUTE), ROUTE_CHOICES),
        restart=_choice("restart", d.get("restart", "on-failure"), RESTARTS),
        max_restarts=_count("max_restarts", d.get("max_restarts", 3), "--max-restarts"),
        name=_opt(_deployment_name, "name", d.get("name")),
        idle_timeout=_opt(_duration, "idle_timeout", d.get("idle_timeout")),
        serve_for=_opt(_duration, "serve_for", d.get("serve_for")),
        handover=_opt(_duration, "handover", d.get("handover")),
        drain_grace=_duration("drain_grace", d.get("drain_grace", 30.0)),
        router_partition=_opt(_slurm_word, "--router-partition", d.get("router_partition")),
        router_time=_opt(_slurm_time, "--router-time", d.get("router_time")),
        engine_args=tuple(_text("engine_args", a, allow_empty=True)
                          for a in _list("engine_args", d.get("engine_args", ()))),
        slurm=d["slurm"],
    )
    _runtime_fits_image(spec)
    _replicas_fit(spec)
    _chain_fits(spec)
    try:
        engines.get(spec.engine).validate(spec.replica_spec)
    except SpecError as exc:
        needed = getattr(exc, "needed_nodes", None)
        if spec.replicas == 1 or needed is None:
            raise
        per = spec.replica_spec.nodes
        raise SpecError(exc.field, f"{exc.problem.split(', but')[0]} per replica, but --nodes "
                        f"{spec.nodes} / --replicas {spec.replicas} gives each {per}",
                        f"use --nodes {needed * spec.replicas} for {spec.replicas} replicas, "
                        "or change the parallel sizes") from None
    return spec


def _replicas_fit(spec: ServeSpec) -> None:
    """N replicas of one layout: the nodes split evenly, READY within reach."""
    if spec.nodes % spec.replicas:
        raise SpecError("--replicas", f"{spec.replicas} replicas do not divide --nodes "
                        f"{spec.nodes}", f"give --nodes a multiple of {spec.replicas} (each "
                        "replica runs on nodes/replicas nodes)")
    if spec.ready_replicas > spec.replicas:
        raise SpecError("--ready-replicas", f"{spec.ready_replicas} is more than --replicas "
                        f"{spec.replicas}", f"give at most {spec.replicas}")


def _chain_fits(spec: ServeSpec) -> None:
    """--serve-for: a named deployment of jobs of --time each, handed over within each job."""
    if spec.serve_for is None:
        for flag, value in (("--handover", spec.handover), ("--router-time", spec.router_time),
                            ("--router-partition", spec.router_partition)):
            if value is not None:
                raise SpecError(flag, "only applies to a chain of jobs",
                                "add --serve-for DURATION (with submit), or drop it")
        return
    if not spec.name:
        raise SpecError("--serve-for", "needs a deployment name: its jobs are found by it",
                        "add --name NAME")
    if not spec.slurm.time or slurm_seconds(spec.slurm.time) is None:
        raise SpecError("--serve-for", "needs a finite --time: the length of each job",
                        "add --time, e.g. --time 04:00:00")
    job_s = slurm_seconds(spec.slurm.time) or 0.0
    if spec.serve_for < job_s:
        raise SpecError("--serve-for", f"{spec.serve_for:g}s is shorter than one --time "
                        f"{spec.slurm.time} ({job_s:g}s)", "serve with one job: drop "
                        "--serve-for, or give a longer duration")
    if spec.handover is not None and spec.handover >= job_s:
        raise SpecError("--handover", f"{spec.handover:g}s is not shorter than --time "
                        f"{spec.slurm.time} ({job_s:g}s)", "give a lead time under the job's "
                        "length, covering queue wait plus model start")
    router_s = slurm_seconds(spec.router_time) if spec.router_time else None
    lead = spec.handover if spec.handover is not None else min(600.0, job_s / 3)
    if router_s is not None and lead >= router_s:
        raise SpecError("--router-time", f"{spec.router_time} ({router_s:g}s) is not longer "
                        f"than the handover lead ({lead:g}s)", "give the router job a longer "
                        "--router-time (it renews itself that long before its end)")


def slurm_seconds(value: str) -> float | None:
    """A SLURM time (minutes, MM:SS, HH:MM:SS, D-HH[:MM[:SS]]) in seconds; None if unlimited."""
    if value.lower() in ("unlimited", "infinite"):
        return None
    days, _, clock = value.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    if days:  # D-HH, D-HH:MM, D-HH:MM:SS
        parts += [0] * (3 - len(parts))
        hours, minutes, seconds = parts
    elif len(parts) == 1:
        hours, minutes, seconds = 0, parts[0], 0
    elif len(parts) == 2:
        hours, minutes, seconds = 0, parts[0], parts[1]
    else:
        hours, minutes, seconds = parts
    return float(((int(days or 0) * 24 + hours) * 60 + minutes) * 60 + seconds)


def _slurm_time(name: str, value: Any) -> str:
    text = _text(name, str(value))
    if not _SLURM_TIME.match(text):
        raise SpecError(name, f"'{value}' is not a SLURM time",
                        "use minutes, HH:MM:SS or D-HH:MM:SS, e.g. 04:00:00")
    return text


def _slurm_options(d: Mapping[str, Any]) -> SlurmOptions:
    sbatch_args = tuple(_text("sbatch_args", a) for a in _list("sbatch_args", d.get("sbatch_args")))
    for arg in sbatch_args:
        if not arg.startswith("-"):
            raise SpecError("--sbatch-arg", f"'{arg}' is not an sbatch option",
                            "pass options like --sbatch-arg=--constraint=h100")
        flag = arg.split("=", 1)[0]
        if flag in _PROTECTED_SBATCH:
            raise SpecError("--sbatch-arg", f"{flag} is set by slurmserve",
                            f"use slurmserve's {_PROTECTED_SBATCH[flag]} instead")
    time = _opt(_slurm_time, "--time", d.get("time"))
    exclusive = _bool("slurm.exclusive", d.get("exclusive", False))
    return SlurmOptions(
        partition=_opt(_slurm_word, "--partition", d.get("partition")),
        account=_opt(_slurm_word, "--account", d.get("account")),
        qos=_opt(_slurm_word, "--qos", d.get("qos")),
        time=None if time is None else str(time),
        exclusive=exclusive,
        sbatch_args=sbatch_args,
    )


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise SpecError(name, f"'{value}' is not true/false", "use true or false")
    return value


def _opt(check: Any, name: str, value: Any, *args: Any) -> Any:
    return None if value is None else check(name, value, *args)


def _text(name: str, value: Any, allow_empty: bool = False) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise SpecError(name, f"expected text, got {type(value).__name__}", "give a string")
    value = str(value)
    if not value and not allow_empty:
        raise SpecError(name, "is empty", "give a value")
    if "\x00" in value or "\n" in value or "\r" in value:
        raise SpecError(name, "contains a newline or NUL byte", "remove it")
    return value


def _name(name: str, value: Any) -> str:
    value = _text(name, value)
    if not _NAME.match(value):
        raise SpecError(name, f"'{value}' has characters other than letters, digits, . _ -",
                        "use a simple name like my-job")
    return value


def _slurm_word(name: str, value: Any) -> str:
    value = _text(name, value)
    if not _SLURM_WORD.match(value):
        raise SpecError(name, f"'{value}' is not a valid SLURM name", "use letters, digits, . _ -")
    return value


def _choice(name: str, value: Any, choices: Sequence[str]) -> str:
    text = _text(name, value).lower()
    if text not in choices:
        raise SpecError(name, f"unknown value '{value}'", "choose one of: " + ", ".join(choices))
    return text


def _positive(name: str, value: Any, flag: str | None = None) -> int:
    flag = flag or name
    if isinstance(value, bool):
        raise SpecError(flag, f"'{value}' is not a whole number", "give a positive integer")
    try:
        number = int(value)
        if number != float(value):
            raise ValueError
    except (TypeError, ValueError):
        raise SpecError(flag, f"'{value}' is not a whole number", "give a positive integer") from None
    if number < 1:
        raise SpecError(flag, f"must be at least 1, got {number}", "give a positive integer")
    return number


def _count(name: str, value: Any, flag: str) -> int:
    """A whole number >= 0."""
    try:
        if isinstance(value, bool) or int(value) != float(value) or int(value) < 0:
            raise ValueError
    except (TypeError, ValueError):
        raise SpecError(flag, f"'{value}' is not a whole number >= 0", "e.g. 3, or 0 for none") \
            from None
    return int(value)


_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(name: str, value: Any) -> float:
    """Seconds from 90, 90s, 30m, 2h or 1d."""
    flag = f"--{name.replace('_', '-')}"
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", str(value))
    if isinstance(value, bool) or not match or float(match[1]) <= 0:
        raise SpecError(flag, f"'{value}' is not a duration", "e.g. 90s, 30m, 2h or 1d")
    return float(match[1]) * _UNITS[match[2]]


def _deployment_name(name: str, value: Any) -> str:
    """A deployment name: never mistaken for a job ID, safe as a file name."""
    text = _text("--name", value)
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9._-]{0,62}", text):
        raise SpecError("--name", f"'{text}' is not a deployment name",
                        "start with a letter; then letters, digits, . _ - (at most 63)")
    return text


def _abs_path(name: str, value: Any) -> str:
    path = _text(name, value)
    if not path.startswith("/"):
        raise SpecError(f"--{name.replace('_', '-')}", f"'{path}' is not an absolute path",
                        "give an absolute directory such as /scratch/cache")
    return path


def _positive_float(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SpecError(name, f"'{value}' is not a number", "give seconds, e.g. 1800") from None
    if not 0 < number < math.inf:
        raise SpecError(name, f"must be a positive finite number, got {value}",
                        "give seconds, e.g. 1800")
    return number


def _port(name: str, value: Any) -> int:
    port = _positive("--port", value)
    if not 1 <= port <= 65535:
        raise SpecError("--port", f"{port} is out of range", "use a port between 1 and 65535")
    return port


def _list(name: str, value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise SpecError(name, "expected a list", f"write {name} as a YAML list")
    return list(value)


def _image(value: Any) -> str:
    image = _text("image", value)
    if image.endswith(TARBALL_SUFFIXES):
        image = os.path.expanduser(image)
        from .images import check_tarball

        check_tarball(image)
        return image
    if image.endswith(NATIVE_IMAGE_SUFFIXES):
        image = os.path.abspath(os.path.expanduser(image))
        if not os.path.isfile(image):
            raise SpecError("image", f"{image} does not exist",
                            "check the path (it must be on a file system every node mounts)")
        return image
    if not _IMAGE_REF.match(image):
        raise SpecError("image", f"'{image}' is neither a .tar/.tar.gz file nor an image reference",
                        "pass a `docker save` tarball, a .sqsh or .sif file, or a reference "
                        "like registry/name:tag")
    return image


def _mount(value: Any) -> Mount:
    if isinstance(value, Mount):
        return value
    text = _text("mounts", value)
    parts = text.split(":")
    mode = "rw"
    if len(parts) == 3:
        mode = parts.pop()
    if len(parts) != 2 or mode not in ("ro", "rw") or not all(parts):
        raise SpecError("--mount", f"'{text}' is not SRC:DST[:ro]", "e.g. --mount /fsx:/fsx:ro")
    source, target = parts
    for path in (source, target):
        if not path.startswith("/"):
            raise SpecError("--mount", f"'{path}' in '{text}' is not an absolute path",
                            "use absolute paths on both sides")
        if "," in path:
            raise SpecError("--mount", f"'{path}' contains a comma", "rename or link the path")
    return Mount(source, target, mode == "ro")


def _env(value: Any) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if isinstance(value, Mapping):
        items = list(value.items())
    else:
        items = []
        for entry in _list("env", value):
            if isinstance(entry, (tuple, list)) and len(entry) == 2:
                items.append((entry[0], entry[1]))
                continue
            text = _text("--env", entry)
            if "=" not in text:
                raise SpecError("--env", f"'{text}' is not KEY=VALUE", "e.g. --env NCCL_DEBUG=INFO")
            items.append(tuple(text.split("=", 1)))
    result = []
    for key, val in items:
        key = _text("--env", key)
        if not envfile.KEY.match(key):
            raise SpecError("--env", f"'{key}' is not a valid variable name",
                            "use letters, digits and _, not starting with a digit")
        if _SECRET_NAME.search(key):
            raise SpecError("--env", f"{key} looks like a secret, and a value given here is "
                            "embedded in rendered scripts", f"put {key}=... in a 0600 file given "
                            "as --env-file (API keys of the endpoint: --api-key)")
        result.append((key, _text(f"env {key}", "" if val is None else val, allow_empty=True)))
    return tuple(result)


def is_secret_name(key: str) -> bool:
    """A variable name that holds a secret (HF_TOKEN, WANDB_API_KEY, ...)."""
    return bool(_SECRET_NAME.search(key))


def _api_key(name: str, value: Any) -> str:
    from . import apikey

    return apikey.parse_source(value)


def _log_dir(value: Any) -> str:
    # Per-node files are bind-mounted from it (`docker --volume SRC:DST:ro`).
    return _volume_source("log_dir", _text("log_dir", value))


def _image_cache(name: str, value: Any) -> str:
    return _volume_source(name, _abs_path(name, os.path.expanduser(_text(name, value))))


def _runtime_fits_image(spec: ServeSpec) -> None:
    """A native image file (.sqsh, .sif) runs only under its own runtime."""
    from . import runtimes

    fits = runtimes.for_image(spec.image)
    if spec.runtime != "auto" and spec.runtime not in fits:
        raise SpecError("--runtime", f"{spec.image} runs only under --runtime "
                        f"{' or '.join(fits)}, not {spec.runtime}",
                        f"pass --runtime {fits[0]}, or a `docker save` tarball or a reference")


def _hf_cache(name: str, value: Any) -> str:
    return _volume_source(name, _abs_path(name, value))  # mounted as HF_HOME in every container


def _volume_source(name: str, path: str) -> str:
    """A directory given to `docker --volume SRC:DST`: the syntax has no escape for ':' or ','."""
    if ":" in path or "," in path:
        raise SpecError(f"--{name.replace('_', '-')}", f"'{path}' contains ':' or ','",
                        "choose a directory whose path has neither")
    return path


def _env_file(name: str, value: Any) -> str:
    path = os.path.expanduser(_text("--env-file", value))
    envfile.check(path)
    return os.path.abspath(path)


def _gpus(value: Any) -> str:
    text = _text("gpus", value).replace(" ", "").lower()
    if text in ("all", "none"):
        return text
    ids = text.split(",")
    if not all(i.isdigit() for i in ids) or len(set(ids)) != len(ids):
        raise SpecError("--gpus", f"'{value}' is not all, none or a list of GPU indices",
                        "e.g. --gpus all, --gpus none or --gpus 0,1,2,3")
    return ",".join(ids)
